#!/usr/bin/env python3
"""Throughput, packet rate, CPU per GB and memory of the tunnel, side by side.

Run by scripts/bench (which installs the peers and builds the binaries). Every
configuration gets a fresh copy of the lab's routed topology (outside -- router with
the floating IP's DNAT -- appliance namespace -- tenant VM), its server in the
appliance namespace and its client outside, and the same iperf3 runs:

  tcp_up    one TCP stream, client to tenant VM       (Mbit/s at the receiver)
  tcp_down  one TCP stream, tenant VM to client (-R)  (Mbit/s at the receiver)
  tcp_4     four TCP streams, client to tenant VM     (Mbit/s at the receiver)
  udp_64    UDP with 64-byte payloads, unlimited rate, 4 MiB receive buffer
            (packets/s at the receiver)

For each run the server process's CPU seconds (utime + stime of all its threads,
from /proc) are read before and after, giving CPU seconds per GB moved; its
resident memory is read at the end. Configurations run interleaved: round 1 of every
configuration, then round 2, and so on, so that a slow minute of the machine hurts
all of them alike. Results: median, min and max per test, and the ratio of
cloudpipe to each peer, as JSON and as a Markdown table.

Traffic stays inside the namespaces the lab creates; every process started is ended
by PID and every lab is torn down, also on failure or Ctrl-C.
"""

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAB = os.path.join(ROOT, "target/debug/cloudpipe-lab")
CLOUDPIPED = os.path.join(ROOT, "target/release/cloudpiped")
CLOUDPIPE = os.path.join(ROOT, "target/release/cloudpipe")
PEERS_BIN = os.environ.get("CLOUDPIPE_BENCH_PEERS", "/opt/cloudpipe-bench/bin")
BORINGTUN = os.path.join(PEERS_BIN, "boringtun-cli")
GOTATUN = os.path.join(PEERS_BIN, "gotatun")

# Neutron's picks, set from `cloudpipe-lab up` for the lab of the run (Lab.__init__).
FLOATING_IP = None
TENANT_VM = None
CLIENT_ADDR = "10.77.0.240"  # alice in tests/src/payloads.rs
SUBNET = "10.77.0.0/24"
OVPN_NET = ("10.8.0.1", "10.8.0.2")
OVPN_NET_CIDR = "10.8.0.0/24"
# The lab's outside network (tests/src/lib.rs), the source of the bare path.
OUTSIDE_CIDR = "203.0.113.0/24"
# Who cloudpiped serves as after set-up, as in the lab's tests (tests/src/lib.rs
# DAEMON_USER): the unprivileged serving phase the image's unit runs, measured.
DAEMON_USER = "4001194:4001194"
# The lab network's MTU less WireGuard's 80 (set by Lab.__init__).
MTU = None
TESTS = ["tcp_up", "tcp_down", "tcp_4", "udp_64"]

# (name, server, client, note)
CONFIGS = [
    ("cloudpipe", "cloudpiped", "cloudpipe-up", "like for like"),
    ("cloudpipe-10k", "cloudpiped-10k", "cloudpipe-up", "like for like, 10,000 more peers configured"),
    ("boringtun", "boringtun", "boringtun", "like for like, default threads"),
    ("boringtun-1", "boringtun-1", "boringtun-1", "like for like, --threads 1"),
    ("gotatun", "gotatun", "gotatun", "like for like"),
    ("wireguard-go", "wireguard-go", "wireguard-go", "like for like"),
    ("openvpn", "openvpn", "openvpn", "UDP 1194, AES-256-GCM (TLS mode)"),
    ("cloudpiped+bt1", "cloudpiped", "boringtun-1", "fixed client: boringtun-cli --threads 1"),
    ("boringtun+bt1", "boringtun", "boringtun-1", "fixed client: boringtun-cli --threads 1"),
    ("gotatun+bt1", "gotatun", "boringtun-1", "fixed client: boringtun-cli --threads 1"),
    ("wireguard-go+bt1", "wireguard-go", "boringtun-1", "fixed client: boringtun-cli --threads 1"),
    ("bare", None, None, "no VPN: the ceiling"),
]


def log(*a):
    print("bench:", *a, file=sys.stderr, flush=True)


def sh(*cmd, check=True, capture=True, inp=None, env=None):
    r = subprocess.run(cmd, input=inp, text=True, capture_output=capture, env=env)
    if check and r.returncode != 0:
        raise RuntimeError(f"{cmd}: exit {r.returncode}: {r.stderr.strip()}")
    return r.stdout if capture else ""


def ns_exec(ns, *cmd, **kw):
    return sh("ip", "netns", "exec", ns, *cmd, **kw)


def cpu_seconds(pid):
    """utime + stime of every thread of `pid`, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def pubkey(private):
    return sh("wg", "pubkey", inp=private).strip()


class Lab:
    """One lab (namespaces), its processes, and teardown."""

    def __init__(self, work):
        # To a file, not a pipe: the lab's metadata server keeps its stdout open.
        with tempfile.TemporaryFile("w+") as f:
            # OpenVPN's clients (10.8.0.0/24) leave the appliance's port with their
            # own sources: Neutron's port security must allow them.
            subprocess.run([LAB, "up", "--keep", "--dhcp", "--metadata", "--payload",
                            "--allow", OVPN_NET_CIDR,
                            # The tenant VM's security group admits its own network
                            # only: OpenVPN's (routed, as Nova's cloudpipe was) and
                            # the outside's, for the path with no VPN, are opened
                            # as an operator of either would.
                            "--vm-allow", OVPN_NET_CIDR, "--vm-allow", OUTSIDE_CIDR], stdout=f,
                           stderr=subprocess.DEVNULL, check=True)
            f.seek(0)
            out = f.read()
        values = {l.split()[0]: l.split()[1] for l in out.splitlines() if len(l.split()) == 2}
        self.id = values["router"].rsplit("-router", 1)[0]
        global FLOATING_IP, TENANT_VM, MTU
        FLOATING_IP, TENANT_VM = values["floating-ip"], values["tenant-vm-ip"]
        MTU = int(values["mtu"]) - 80
        self.appliance, self.outside, self.vm = (f"{self.id}-{r}" for r in ("cloudpipe", "outside", "tenant-vm"))
        self.work = tempfile.mkdtemp(prefix=f"{self.id}-", dir=work)
        self.procs = []

    def spawn(self, ns, cmd, env=None, name="proc"):
        logf = open(os.path.join(self.work, f"{name}.log"), "w")
        full_env = dict(os.environ, **(env or {}))
        p = subprocess.Popen(["ip", "netns", "exec", ns] + cmd, stdout=logf, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, env=full_env)
        self.procs.append(p)
        return p

    def down(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        sh(LAB, "down", self.id, check=False)


def wait_for(what, cond, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


class Keys:
    def __init__(self):
        payload = json.loads(sh(LAB, "payload", "--json"))
        self.server = payload["private_key"]
        alice = next(p for p in payload["peers"] if p["address"] == CLIENT_ADDR)
        self.psk = alice["preshared_key"]
        # tests/src/payloads.rs: alice's key is 32 bytes of 2.
        import base64
        self.client = base64.b64encode(bytes([2] * 32)).decode()
        assert pubkey(self.client) == alice["public_key"], "alice's key in tests/src/payloads.rs changed"
        self.server_pub = pubkey(self.server)
        self.client_pub = alice["public_key"]


def uapi_sock(iface):
    return f"/var/run/wireguard/{iface}.sock"


def start_wg_userspace(lab, ns, kind, iface):
    """A userspace WireGuard implementation with a UAPI socket, in the foreground."""
    if kind == "wireguard-go":
        p = lab.spawn(ns, ["wireguard-go", iface], env={"WG_PROCESS_FOREGROUND": "1", "LOG_LEVEL": "error"}, name=iface)
    elif kind.startswith("boringtun"):
        threads = ["--threads", "1"] if kind == "boringtun-1" else []
        p = lab.spawn(ns, [BORINGTUN, "--foreground", "--disable-drop-privileges", *threads, iface], name=iface)
    elif kind == "gotatun":
        p = lab.spawn(ns, [GOTATUN, "--foreground", "--disable-drop-privileges", iface], name=iface)
    else:
        raise ValueError(kind)
    wait_for(f"{kind} UAPI socket", lambda: os.path.exists(uapi_sock(iface)) or p.poll() is not None)
    if p.poll() is not None:
        raise RuntimeError(f"{kind} exited: " + open(os.path.join(lab.work, f"{iface}.log")).read())
    return p


def setconf(lab, ns, iface, text):
    path = os.path.join(lab.work, f"{iface}.setconf")
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)
    ns_exec(ns, "wg", "setconf", iface, path)


EXTRA_PEERS = 10_000


def add_peers(lab, n):
    """`wg addconf` n peers that never connect (random keys, one /32 each) to the
    running cloudpiped through its control socket; returns the seconds it took."""
    import base64
    path = os.path.join(lab.work, "extra-peers.conf")
    with open(path, "w") as f:
        for i in range(n):
            key = base64.b64encode(os.urandom(32)).decode()
            f.write(f"[Peer]\nPublicKey = {key}\nAllowedIPs = 10.100.{i // 250}.{i % 250 + 1}/32\n")
    t0 = time.time()
    ns_exec(lab.appliance, "wg", "addconf", "cloudpipe0", path)
    took = time.time() - t0
    count = len(ns_exec(lab.appliance, "wg", "show", "cloudpipe0", "peers").split())
    if count < n:
        raise RuntimeError(f"only {count} peers after adding {n}")
    return took


def start_server(lab, kind, keys):
    """The server side in the appliance namespace; returns its process."""
    ns = lab.appliance
    if os.environ.get("BENCH_GRO", "1") == "1":
        # A VM's virtio-net NIC does GRO by default; the lab's veth does not until
        # asked. The same for every implementation (only those that ask for UDP_GRO
        # on their socket see coalesced datagrams).
        sh("ip", "netns", "exec", ns, "ethtool", "-K", "eth0", "gro", "on")
    if kind == "cloudpiped-10k":
        p = start_server(lab, "cloudpiped", keys)
        lab.extra_peers_s = add_peers(lab, EXTRA_PEERS)
        return p
    if kind == "cloudpiped":
        p = lab.spawn(ns, [CLOUDPIPED, "--user", DAEMON_USER, "--config-drive", "none",
                            "--poll-interval", "0"],
                      env={"CLOUDPIPED_LOG": os.environ.get("CLOUDPIPED_LOG", "warn")}, name="cloudpiped")
        wait_for("cloudpiped's TUN device",
                 lambda: sh("ip", "-n", ns, "link", "show", "cloudpipe0", check=False) != "" or p.poll() is not None)
        if p.poll() is not None:
            raise RuntimeError("cloudpiped exited: " + open(os.path.join(lab.work, "cloudpiped.log")).read())
        time.sleep(0.3)
        return p
    if kind == "openvpn":
        return start_openvpn(lab, server=True)
    iface = f"{lab.id}s"
    p = start_wg_userspace(lab, ns, kind, iface)
    setconf(lab, ns, iface, f"[Interface]\nPrivateKey = {keys.server}\nListenPort = 1194\n"
                            f"[Peer]\nPublicKey = {keys.client_pub}\nPresharedKey = {keys.psk}\nAllowedIPs = {CLIENT_ADDR}/32\n")
    sh("ip", "-n", ns, "link", "set", iface, "mtu", str(MTU), "up")
    sh("ip", "-n", ns, "route", "add", f"{CLIENT_ADDR}/32", "dev", iface)
    sh("ip", "-n", ns, "neigh", "add", "proxy", CLIENT_ADDR, "dev", "eth0")
    ns_exec(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    return p


def start_client(lab, kind, keys):
    ns = lab.outside
    if kind == "openvpn":
        return start_openvpn(lab, server=False)
    iface = f"{lab.id}c"
    if kind == "cloudpipe-up":
        conf = os.path.join(lab.work, f"{iface}.conf")
        with open(conf, "w") as f:
            f.write(f"[Interface]\nPrivateKey = {keys.client}\nAddress = {CLIENT_ADDR}/32\nMTU = {MTU}\n\n"
                    f"[Peer]\nPublicKey = {keys.server_pub}\nPresharedKey = {keys.psk}\n"
                    f"Endpoint = {FLOATING_IP}:1194\nAllowedIPs = {SUBNET}\nPersistentKeepalive = 25\n")
        os.chmod(conf, 0o600)
        p = lab.spawn(ns, [CLOUDPIPE, "up", conf], name="cloudpipe-up")
        wait_for("cloudpipe up", lambda: sh("ip", "-n", ns, "link", "show", iface, check=False) != "" or p.poll() is not None)
        if p.poll() is not None:
            raise RuntimeError("cloudpipe up exited: " + open(os.path.join(lab.work, "cloudpipe-up.log")).read())
        return p
    p = start_wg_userspace(lab, ns, kind, iface)
    setconf(lab, ns, iface, f"[Interface]\nPrivateKey = {keys.client}\n[Peer]\nPublicKey = {keys.server_pub}\n"
                            f"PresharedKey = {keys.psk}\nEndpoint = {FLOATING_IP}:1194\nAllowedIPs = {SUBNET}\n"
                            "PersistentKeepalive = 25\n")
    sh("ip", "-n", ns, "addr", "add", f"{CLIENT_ADDR}/32", "dev", iface)
    sh("ip", "-n", ns, "link", "set", iface, "mtu", str(MTU), "up")
    sh("ip", "-n", ns, "route", "add", SUBNET, "dev", iface)
    return p


PKI = {}


def make_pki(work):
    """A CA, a server and a client certificate (EC P-256) for OpenVPN's TLS mode."""
    if PKI:
        return PKI
    d = tempfile.mkdtemp(prefix="ovpn-pki-", dir=work)
    o = lambda *a: sh("openssl", *a)  # noqa: E731
    o("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
      "-subj", "/CN=bench-ca", "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.crt")
    for who in ("server", "client"):
        o("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", f"/CN={who}",
          "-keyout", f"{d}/{who}.key", "-out", f"{d}/{who}.csr")
        ext = f"{d}/{who}.ext"
        with open(ext, "w") as f:
            # --remote-cert-tls checks both the key usage and the extended one.
            f.write("keyUsage=critical,digitalSignature,keyAgreement\n")
            f.write("extendedKeyUsage=" + ("serverAuth" if who == "server" else "clientAuth") + "\n")
        o("x509", "-req", "-in", f"{d}/{who}.csr", "-CA", f"{d}/ca.crt", "-CAkey", f"{d}/ca.key",
          "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", f"{d}/{who}.crt")
    PKI["dir"] = d
    return PKI


def start_openvpn(lab, server):
    d = PKI["dir"]
    who = "server" if server else "client"
    common = ["openvpn", "--dev", f"{lab.id}{'s' if server else 'c'}", "--dev-type", "tun", "--proto", "udp",
              "--ca", f"{d}/ca.crt", "--cert", f"{d}/{who}.crt", "--key", f"{d}/{who}.key",
              "--data-ciphers", "AES-256-GCM", "--verb", "1", "--ping", "10"]
    if server:
        ns_exec(lab.appliance, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        sh("ip", "-n", lab.vm, "route", "add", "10.8.0.0/24", "via", "10.77.0.2")
        p = lab.spawn(lab.appliance, common + ["--tls-server", "--dh", "none", "--lport", "1194",
                                              "--ifconfig", OVPN_NET[0], OVPN_NET[1]], name="openvpn-server")
    else:
        p = lab.spawn(lab.outside, common + ["--tls-client", "--remote", FLOATING_IP, "1194", "--nobind",
                                            "--remote-cert-tls", "server",
                                            "--ifconfig", OVPN_NET[1], OVPN_NET[0],
                                            "--route", "10.77.0.0", "255.255.255.0"], name="openvpn-client")
    return p


def iperf(lab, test, secs):
    """One iperf3 run; returns (value, bytes moved)."""
    srv = subprocess.Popen(["ip", "netns", "exec", lab.vm, "iperf3", "-s", "-1", "-B", TENANT_VM],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for("iperf3 server", lambda: "5201" in ns_exec(lab.vm, "ss", "-Htln", "sport = :5201"))
        args = ["iperf3", "-c", TENANT_VM, "-t", str(secs), "-J"]
        if test == "tcp_down":
            args.append("-R")
        elif test == "tcp_4":
            args += ["-P", "4"]
        elif test == "udp_64":
            # -w: a 4 MiB receive buffer at the tenant VM (both iperf3 ends take it),
            # so that the test counts what the tunnel delivers rather than what a
            # default-sized socket absorbs of a burst (implementations that
            # coalesce UDP on the TUN side, like wireguard-go's, deliver in bursts).
            args += ["-u", "-l", "64", "-b", "0", "-w", "4M"]
        r = json.loads(ns_exec(lab.outside, *args, check=False) or "{}")
        if "error" in r or "end" not in r:
            raise RuntimeError(f"iperf3 {test}: {r.get('error', 'no report')}")
        end = r["end"]
        if test == "udp_64":
            s = end["sum"]
            got = s["packets"] - s["lost_packets"]
            return got / s["seconds"], s["bytes"]
        s = end["sum_received"]
        return s["bits_per_second"] / 1e6, s["bytes"]
    finally:
        if srv.poll() is None:
            srv.kill()
        srv.wait()


def connectivity(lab, client_kind):
    """Wait until the tunnel is up: the tenant VM reaches the client's tunnel
    address, which nothing but the tunnel routes (the lab's router would carry the
    client's own traffic to the tenant VM without it)."""
    if client_kind is None:
        target, ns = TENANT_VM, lab.outside
    else:
        target, ns = (OVPN_NET[1] if client_kind == "openvpn" else CLIENT_ADDR), lab.vm
    def ping(ns, target):
        return subprocess.run(["ip", "netns", "exec", ns, "ping", "-c1", "-W1", target],
                              capture_output=True).returncode == 0

    # The client's own packet first: a client handshakes when it has something to send.
    wait_for("the tunnel carries a ping", lambda: ping(lab.outside, TENANT_VM) and ping(ns, target), timeout=30)
    if client_kind == "openvpn":
        # OpenVPN adds its route to the tenant subnet once TLS is done: wait for it,
        # or iperf3 would take the lab router's direct path.
        wait_for("OpenVPN's route", lambda: "dev" in sh("ip", "-n", lab.outside, "route", "show", "10.77.0.0/24"))


def run_round(cfg, keys, args, work):
    name, server_kind, client_kind, _ = cfg
    lab = Lab(work)
    out = {}
    try:
        server = start_server(lab, server_kind, keys) if server_kind else None
        if client_kind:
            start_client(lab, client_kind, keys)
        connectivity(lab, client_kind)
        for test in args.tests:
            before = cpu_seconds(server.pid) if server else 0.0
            value, moved = iperf(lab, test, args.seconds)
            cpu = (cpu_seconds(server.pid) - before) if server else None
            out[test] = {"value": value, "bytes": moved,
                         "cpu_s_per_gb": (cpu / (moved / 1e9)) if (cpu is not None and moved) else None}
        out["rss_mib"] = rss_mib(server.pid) if server else None
        if hasattr(lab, "extra_peers_s"):
            out["extra_peers_s"] = lab.extra_peers_s
    finally:
        lab.down()
    return out


def summarize(samples):
    vals = [s for s in samples if s is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=int(os.environ.get("RUNS", 5)))
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("SECONDS_PER_RUN", 10)))
    ap.add_argument("--only", default=os.environ.get("ONLY", ""), help="comma-separated configuration names")
    ap.add_argument("--tests", default=os.environ.get("TESTS", ",".join(TESTS)))
    ap.add_argument("--out", default=os.environ.get("BENCH_OUT", os.path.join(ROOT, "target/bench")))
    args = ap.parse_args()
    args.tests = [t for t in args.tests.split(",") if t]
    configs = [c for c in CONFIGS if not args.only or c[0] in args.only.split(",")]
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="cloudpipe-bench-")
    keys = Keys()
    if any("openvpn" in (c[1] or "") for c in configs):
        make_pki(work)
    results = {c[0]: [] for c in configs}
    started = time.time()
    try:
        for r in range(args.runs):
            for cfg in configs:
                log(f"round {r + 1}/{args.runs}: {cfg[0]}")
                try:
                    results[cfg[0]].append(run_round(cfg, keys, args, work))
                except Exception as e:  # one configuration failing must not sink the others
                    log(f"  {cfg[0]} failed: {e}")
                    results[cfg[0]].append({"error": str(e)})
    finally:
        sh("rm", "-rf", work, check=False)
    report = build_report(configs, results, args, time.time() - started)
    with open(os.path.join(args.out, "bench.json"), "w") as f:
        json.dump(report, f, indent=2)
    md = markdown(report)
    with open(os.path.join(args.out, "bench.md"), "w") as f:
        f.write(md)
    print(md)
    log(f"wrote {args.out}/bench.json and bench.md")


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    return {"cpu": cpu, "cpus": os.cpu_count(), "kernel": platform.release(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def build_report(configs, results, args, elapsed):
    rep = {"machine": machine(), "runs": args.runs, "seconds_per_run": args.seconds,
           "elapsed_s": round(elapsed), "units": {"tcp_*": "Mbit/s", "udp_64": "packets/s",
                                                   "cpu_s_per_gb": "server CPU seconds per GB", "rss_mib": "MiB"},
           "configs": {}}
    for name, server, client, note in configs:
        runs = results[name]
        entry = {"server": server, "client": client, "note": note,
                 "errors": [r["error"] for r in runs if "error" in r]}
        ok = [r for r in runs if "error" not in r]
        for t in args.tests:
            entry[t] = summarize([r[t]["value"] for r in ok if t in r])
            entry[t + "_cpu_s_per_gb"] = summarize([r[t]["cpu_s_per_gb"] for r in ok if t in r])
        entry["rss_mib"] = summarize([r.get("rss_mib") for r in ok])
        entry["extra_peers_s"] = summarize([r.get("extra_peers_s") for r in ok])
        rep["configs"][name] = entry
    # Ratios of cloudpipe to each peer, by the medians.
    ratios = {}
    for ours, pairs in (("cloudpipe", ["boringtun", "boringtun-1", "gotatun", "wireguard-go", "openvpn"]),
                        ("cloudpipe-10k", ["cloudpipe"]),
                        ("cloudpiped+bt1", ["boringtun+bt1", "gotatun+bt1", "wireguard-go+bt1"])):
        a = rep["configs"].get(ours)
        if not a:
            continue
        for other in pairs:
            b = rep["configs"].get(other)
            if not b:
                continue
            r = {}
            for t in args.tests:
                if a.get(t) and b.get(t) and b[t]["median"]:
                    r[t] = round(a[t]["median"] / b[t]["median"], 2)
                ka, kb = a.get(t + "_cpu_s_per_gb"), b.get(t + "_cpu_s_per_gb")
                if ka and kb and kb["median"]:
                    r[t + "_cpu_per_gb"] = round(ka["median"] / kb["median"], 2)
            ratios[f"{ours} / {other}"] = r
    rep["ratios"] = ratios
    return rep


def fmt(s, digits=0):
    if not s:
        return "-"
    f = f"{{:.{digits}f}}"
    return f"{f.format(s['median'])} ({f.format(s['min'])}-{f.format(s['max'])})"


def markdown(rep):
    m = rep["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cpus']} CPUs, {m['memory_gib']} GiB, Linux {m['kernel']}. "
             f"{rep['runs']} runs of {rep['seconds_per_run']} s per test, interleaved; median (min-max). "
             f"Total {rep['elapsed_s']} s.", "",
             "| configuration | server / client | TCP up Mbit/s | TCP down Mbit/s | TCP x4 Mbit/s | UDP 64 B pkt/s "
             "| server CPU s/GB (up) | server CPU s/GB (down) | server RSS MiB |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, e in rep["configs"].items():
        who = f"{e['server'] or '-'} / {e['client'] or '-'}"
        err = f" (failed {len(e['errors'])}x)" if e["errors"] else ""
        lines.append(f"| {name}{err} | {who} | {fmt(e.get('tcp_up'))} | {fmt(e.get('tcp_down'))} | "
                     f"{fmt(e.get('tcp_4'))} | {fmt(e.get('udp_64'))} | {fmt(e.get('tcp_up_cpu_s_per_gb'), 1)} | "
                     f"{fmt(e.get('tcp_down_cpu_s_per_gb'), 1)} | {fmt(e.get('rss_mib'), 1)} |")
    lines += ["", "| ratio (medians) | TCP up | TCP down | TCP x4 | UDP 64 B | CPU/GB up | CPU/GB down |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for k, r in rep["ratios"].items():
        lines.append(f"| {k} | {r.get('tcp_up', '-')} | {r.get('tcp_down', '-')} | {r.get('tcp_4', '-')} | "
                     f"{r.get('udp_64', '-')} | {r.get('tcp_up_cpu_per_gb', '-')} | {r.get('tcp_down_cpu_per_gb', '-')} |")
    scale = rep["configs"].get("cloudpipe-10k", {})
    if scale.get("extra_peers_s"):
        lines += ["", f"cloudpipe-10k: {EXTRA_PEERS} peers added to the running appliance with `wg addconf` in "
                      f"{fmt(scale['extra_peers_s'], 2)} s; server RSS {fmt(scale.get('rss_mib'), 1)} MiB."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
