//! Floods and load in the lab (root only; see tests/README.md), each bounded in
//! count and time and sent only between the lab's namespaces:
//!
//! - a handshake-initiation flood from many source addresses (`cloudpipe-lab
//!   flood --kind initiation`): cookie replies counted in `/metrics` and on the
//!   wire, the appliance's memory bounded, an established client's iperf3 transfer
//!   keeping at least half its unloaded throughput, a new client connecting;
//! - garbage, unknown-index, replayed and forged data packets as fast as the
//!   machine sends them: dropped and counted by reason, other clients untouched;
//! - 1,000 clients with real handshakes on the project's own core
//!   ([`cloudpipe_lab::swarm`]), each pinging the tenant VM.
//!
//! Every figure is printed (`--nocapture` shows them); the assertions are the
//! issue's bounds.

use cloudpipe_lab::mission::{
    iperf_report, iperf_server, ping, ping_all, scrape_metrics, udp_counters, Mission,
};
use cloudpipe_lab::{bin_path, proc_stats, LabOptions};
use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const STATUS_PORT: u16 = 9100;
/// The flood's paced rate: the aim.
const FLOOD_RATE: u64 = 20_000;
/// How much the appliance's resident memory may grow under a flood. Nothing in
/// the cookie path keeps state per source or per message; a leak would show here.
const RSS_GROWTH_KIB: u64 = 16 * 1024;

fn metric(m: &BTreeMap<String, f64>, name: &str) -> f64 {
    m.get(name).copied().unwrap_or(0.0)
}

fn dropped(m: &BTreeMap<String, f64>, reason: &str) -> f64 {
    metric(
        m,
        &format!("cloudpipe_packets_dropped_total{{reason=\"{reason}\"}}"),
    )
}

/// Start `cloudpipe-lab flood ARGS...` in the outside namespace (killed with the
/// lab if the test fails first).
fn start_flood(m: &Mission, args: &[&str]) -> Child {
    let bin = bin_path("cloudpipe-lab").expect("cloudpipe-lab binary");
    let mut cmd = vec![bin.to_str().unwrap(), "flood"];
    cmd.extend_from_slice(args);
    m.lab
        .spawn_with(&m.lab.outside(), &cmd, |c| {
            c.stdout(Stdio::piped()).stderr(Stdio::piped());
        })
        .expect("starting the flood")
}

/// End a flood early (SIGTERM: it stops and reports) or wait for it; its report.
fn finish_flood(child: Child, early: bool) -> serde_json::Value {
    if early {
        signal(&child, libc::SIGTERM);
    }
    let out = child.wait_with_output().expect("waiting for the flood");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "flood failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("flood report {text:?}: {e}"))
}

/// The tenant VM's address (Neutron's pick from the allocation pool).
fn vm(m: &Mission) -> String {
    m.lab.tenant_vm_ip().to_string()
}

/// The appliance's UDP port behind the floating IP, for `flood --target`.
fn target(m: &Mission) -> String {
    format!("{}:{}", m.lab.floating_ip(), cloudpipe_lab::WG_PORT)
}

/// One iperf3 run of `seconds` from `ns` to the tenant VM: received bits/s.
fn iperf(m: &Mission, ns: &str, port: u16, seconds: u32) -> f64 {
    iperf_server(&m.lab, port);
    let (p, t) = (port.to_string(), seconds.to_string());
    let out = m
        .lab
        .output(ns, &["iperf3", "-c", &vm(m), "-p", &p, "-t", &t, "-J"])
        .unwrap();
    iperf_report(out)["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap()
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn mbits(v: &[f64]) -> Vec<f64> {
    v.iter().map(|b| b / 1e6).collect()
}

/// Signal our own child (a flood) by PID.
fn signal(child: &Child, sig: i32) {
    // SAFETY: plain syscall on our own unreaped child.
    unsafe { libc::kill(child.id() as i32, sig) };
}

/// Cookie replies seen arriving in the outside namespace (UDP from port 1194 whose
/// first payload byte is 3, the cookie reply's message type).
fn count_cookie_replies_on_the_wire(m: &Mission) {
    m.lab
        .nft(
            &m.lab.outside(),
            "table ip wire {\n\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n\t\tudp sport 1194 @th,64,8 3 counter\n\t}\n}\n",
        )
        .unwrap();
}

fn cookie_replies_on_the_wire(m: &Mission) -> u64 {
    let out = m
        .lab
        .exec(&m.lab.outside(), &["nft", "list", "table", "ip", "wire"])
        .unwrap();
    out.split("packets ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter in {out}"))
}

/// A network with a status listener whose payload holds `clients`, booted; their
/// configs, in order.
fn booted_with(clients: &[&str]) -> Option<(Mission, Vec<String>)> {
    let port = STATUS_PORT.to_string();
    let mut m = Mission::new(&["--status-port", &port])?;
    let confs = clients.iter().map(|c| m.add_client(c)).collect();
    m.boot();
    Some((m, confs))
}

#[test]
fn a_handshake_flood_gets_cookie_replies_and_spares_the_clients() {
    let Some((m, confs)) = booted_with(&["alice", "bob"]) else {
        return;
    };
    let (alice_conf, bob_conf) = (&confs[0], &confs[1]);
    let outside = m.lab.outside();
    let _alice = m.connect(&outside, "alice", alice_conf);
    let home = m.lab.add_external_host("home", "ext1", 100).unwrap();
    let pid = m.daemon.as_ref().unwrap().pid();
    let server_key = m
        .cli(&["network", "show", "lab"])
        .lines()
        .find_map(|l| l.strip_prefix("public key:"))
        .map(|k| k.trim().to_string())
        .expect("network show prints the public key");
    let sources = m.lab.add_flood_sources(256).unwrap();
    count_cookie_replies_on_the_wire(&m);

    let rss_before = proc_stats(pid).unwrap();
    let before = scrape_metrics(&m.lab, STATUS_PORT).unwrap();

    let to = target(&m);
    let initiations = |rate: &str, seconds: &str| {
        let args = [
            "--kind",
            "initiation",
            "--target",
            &to,
            "--server-key",
            &server_key,
            "--sources",
            &sources,
            "--rate",
            rate,
            "--seconds",
            seconds,
        ];
        start_flood(&m, &args)
    };
    // Paced at the aim, from 256 addresses, until stopped.
    let flood = initiations(&FLOOD_RATE.to_string(), "110");
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let mut rss_during = vec![proc_stats(pid).unwrap()];
    // A new client connects during the flood: its first initiation gets a cookie
    // reply, its retry carries MAC2 and is answered (whitepaper 5.4.7).
    let t = Instant::now();
    let _bob = m.connect(&home, "bob", bob_conf);
    let bob_took = t.elapsed();
    rss_during.push(proc_stats(pid).unwrap());
    // Alice's throughput with the flood paused (SIGSTOP) and running, in turns, so
    // that whatever else the machine runs weighs on both alike; medians compared.
    let (mut unloaded, mut loaded) = (Vec::new(), Vec::new());
    for round in 0..3u16 {
        signal(&flood, libc::SIGSTOP);
        std::thread::sleep(Duration::from_millis(500));
        unloaded.push(iperf(&m, &outside, 5201 + 2 * round, 3));
        signal(&flood, libc::SIGCONT);
        std::thread::sleep(Duration::from_millis(500));
        loaded.push(iperf(&m, &outside, 5202 + 2 * round, 3));
        rss_during.push(proc_stats(pid).unwrap());
    }
    let mid = scrape_metrics(&m.lab, STATUS_PORT).unwrap();
    let flood_lasted = started.elapsed();
    let report = finish_flood(flood, true);
    std::thread::sleep(Duration::from_secs(2));
    let after = scrape_metrics(&m.lab, STATUS_PORT).unwrap();
    let rss_after = proc_stats(pid).unwrap();

    // The highest rate this machine generates, briefly, unpaced.
    let max_before = scrape_metrics(&m.lab, STATUS_PORT).unwrap();
    let max = finish_flood(initiations("0", "3"), false);
    std::thread::sleep(Duration::from_secs(1));
    let max_after = scrape_metrics(&m.lab, STATUS_PORT).unwrap();
    let rss_max = proc_stats(pid).unwrap();

    let cookies = metric(&after, "cloudpipe_cookie_replies_total")
        - metric(&before, "cloudpipe_cookie_replies_total");
    let limited = dropped(&after, "rate_limited") - dropped(&before, "rate_limited");
    let wire = cookie_replies_on_the_wire(&m);
    let sent = report["sent"].as_f64().unwrap();
    let (baseline, under) = (median(&unloaded), median(&loaded));
    let max_cookies = metric(&max_after, "cloudpipe_cookie_replies_total")
        - metric(&max_before, "cloudpipe_cookie_replies_total");
    eprintln!(
        "paced flood: {report}\n  lasted {flood_lasted:?}; cookie replies {cookies} (/metrics), \
         {wire} on the wire; rate_limited drops {limited}; handshakes completed meanwhile {}\n  \
         bob connected {bob_took:?} into the flood\n  iperf3 Mbit/s: unloaded {:.0?}, under the \
         flood {:.0?}: medians {:.0} and {:.0} ({:.0}%)\n  RSS KiB before {}, during {:?}, after {}\n\
         unpaced flood: {max}\n  cookie replies {max_cookies}; RSS after {} KiB, peak {} KiB",
        metric(&mid, "cloudpipe_handshakes_total") - metric(&before, "cloudpipe_handshakes_total"),
        mbits(&unloaded),
        mbits(&loaded),
        baseline / 1e6,
        under / 1e6,
        100.0 * under / baseline,
        rss_before.rss_kib,
        rss_during.iter().map(|s| s.rss_kib).collect::<Vec<_>>(),
        rss_after.rss_kib,
        rss_max.rss_kib,
        rss_max.hwm_kib,
    );

    // Most initiations were answered with a cookie reply (the rest were within the
    // limit, or lost in a full socket buffer), and the replies went out.
    assert!(
        sent > 0.0 && cookies >= 0.5 * sent,
        "{cookies} cookie replies for {sent} initiations"
    );
    assert!(
        limited >= cookies,
        "every cookie reply is a rate-limited drop"
    );
    assert!(
        wire as f64 >= 0.9 * (cookies + max_cookies),
        "{wire} cookie replies arrived of {} sent",
        cookies + max_cookies
    );
    assert!(
        max_cookies > 0.0,
        "the unpaced flood got cookie replies too"
    );
    // Memory stays bounded.
    for s in rss_during.iter().chain([&rss_after, &rss_max]) {
        assert!(
            s.rss_kib <= rss_before.rss_kib + RSS_GROWTH_KIB,
            "RSS grew from {} KiB to {} KiB",
            rss_before.rss_kib,
            s.rss_kib
        );
    }
    // The established client keeps at least half its throughput.
    assert!(
        under >= 0.5 * baseline,
        "iperf3 under the flood: {:.0?} Mbit/s, unloaded {:.0?} Mbit/s",
        mbits(&loaded),
        mbits(&unloaded)
    );
    assert!(ping_all(&m.lab, &outside, &vm(&m), 3));
    assert!(ping_all(&m.lab, &home, &vm(&m), 3));
}

#[test]
fn garbage_and_replayed_data_are_dropped_by_reason_and_touch_nobody_else() {
    // Mallory: the session whose data packets the flood replays and forges.
    let Some((m, confs)) = booted_with(&["alice", "mallory"]) else {
        return;
    };
    let home = m.lab.add_external_host("home", "ext1", 100).unwrap();
    let alice = m.connect(&home, "alice", &confs[0]);
    let mallory = m.lab.dir().join("mallory.conf");
    std::fs::write(&mallory, &confs[1]).unwrap();
    let sources = m.lab.add_flood_sources(64).unwrap();
    let appliance = m.lab.cloudpipe();

    for (kind, reason) in [
        ("garbage", "malformed"),
        ("unknown-index", "unknown_index"),
        ("replay", "replay"),
        ("bad-mac", "bad_mac"),
    ] {
        let handshake = alice.latest_handshake();
        let before = scrape_metrics(&m.lab, STATUS_PORT).unwrap();
        let udp_before = udp_counters(&m.lab, &appliance);
        // Alice pings the tenant VM all through the flood.
        let pinger = m
            .lab
            .spawn_with(
                &home,
                &[
                    "ping",
                    "-n",
                    "-q",
                    "-c",
                    "25",
                    "-i",
                    "0.2",
                    "-W",
                    "2",
                    &vm(&m),
                ],
                |c| {
                    c.stdout(Stdio::piped());
                },
            )
            .unwrap();
        let (to, tenant_vm) = (target(&m), vm(&m));
        let mut args = vec![
            "--kind",
            kind,
            "--target",
            &to,
            "--sources",
            &sources,
            "--rate",
            "0",
            "--seconds",
            "4",
        ];
        let conf = mallory.to_str().unwrap();
        if kind != "garbage" {
            args.extend(["--client-config", conf, "--ping", &tenant_vm]);
        }
        let report = finish_flood(start_flood(&m, &args), false);
        let pings = pinger.wait_with_output().unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let after = scrape_metrics(&m.lab, STATUS_PORT).unwrap();
        let udp_after = udp_counters(&m.lab, &appliance);

        let sent = report["sent"].as_f64().unwrap();
        let counted = dropped(&after, reason) - dropped(&before, reason);
        let received = metric(&after, "cloudpipe_datagrams_received_total")
            - metric(&before, "cloudpipe_datagrams_received_total");
        let overflow = udp_after.get("RcvbufErrors").copied().unwrap_or(0) as f64
            - udp_before.get("RcvbufErrors").copied().unwrap_or(0) as f64;
        let others: Vec<(String, f64)> = after
            .iter()
            .filter(|(k, _)| k.starts_with("cloudpipe_packets_dropped_total{"))
            .filter(|(k, _)| !k.contains(&format!("\"{reason}\"")))
            .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
            .filter(|(_, d)| *d > 0.0)
            .collect();
        let ping_text = String::from_utf8_lossy(&pings.stdout).into_owned();
        eprintln!(
            "{kind}: {report}\n  dropped as {reason}: {counted}; datagrams the daemon read {received}; \
             lost in a full socket buffer {overflow}; other drops {others:?}\n  alice: {}",
            ping_text.lines().filter(|l| l.contains("transmitted")).collect::<String>()
        );
        // What the daemon read was dropped for this reason (a few datagrams are
        // alice's and mallory's own traffic), and what was sent reached it or the
        // kernel's socket buffer.
        assert!(counted > 0.0, "{kind}: nothing counted as {reason}");
        assert!(
            counted >= 0.95 * (received - 200.0),
            "{kind}: {counted} counted as {reason} of {received} read"
        );
        assert!(
            received + overflow >= 0.8 * sent,
            "{kind}: {sent} sent, {received} read, {overflow} overflowed"
        );
        if kind != "garbage" {
            assert_eq!(
                report["session_ok"],
                serde_json::Value::Bool(true),
                "{kind}: the replayed session broke"
            );
        }
        // Alice: every ping answered, and her session was never restarted.
        assert!(pings.status.success(), "{kind}: alice's pings: {ping_text}");
        assert!(
            ping_text.contains("25 received"),
            "{kind}: alice lost pings: {ping_text}"
        );
        assert_eq!(
            alice.latest_handshake(),
            handshake,
            "{kind}: alice had to handshake again"
        );
    }
    let log = m.log();
    assert!(
        !log.lines().any(|l| l.contains("ERROR")),
        "errors logged:\n{log}"
    );
    assert!(ping(&m.lab, &home, &vm(&m), None));
}

/// Raise this process's open-file limit to its hard limit (1,000 sockets).
fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

/// The appliance's side of a client config: a `wg addconf` [Peer] section.
fn peer_section(conf: &str) -> String {
    let c = cloudpipe_core::wg_quick::parse(conf).unwrap();
    let p = &c.peers[0];
    format!(
        "[Peer]\nPublicKey = {}\nPresharedKey = {}\nAllowedIPs = {}\n\n",
        c.interface.private_key.public_key(),
        p.preshared_key.as_ref().unwrap().to_base64(),
        c.interface.addresses[0]
    )
}

#[test]
fn a_thousand_clients_handshake_and_ping_the_tenant_vm() {
    const CLIENTS: usize = 1000;
    let port = STATUS_PORT.to_string();
    let Some(mut m) = Mission::with_options(
        LabOptions {
            dhcp: true,
            metadata: true,
            // 2,046 hosts: room for a pool of 1,000 (Nova's top-N rule).
            cidr: Some("10.77.0.0/21".parse().unwrap()),
            ..LabOptions::default()
        },
        &["--clients", "1000", "--status-port", &port],
    ) else {
        return;
    };
    // Booted with no client: the baseline is empty.
    m.boot();
    let pid = m.daemon.as_ref().unwrap().pid();
    let idle = proc_stats(pid).unwrap();

    let t = Instant::now();
    let confs: Vec<String> = (0..CLIENTS)
        .map(|i| m.add_client(&format!("c{i}")))
        .collect();
    let added_in = t.elapsed();

    // What Nova's limits allow: neither the payload (65,535 bytes of user-data)
    // nor the instance properties (128 metadata items) carry 1,000 clients.
    let cli = bin_path("cloudpipe").unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(&cli)
            .arg("--state-dir")
            .arg(&m.state)
            .args(args)
            .output()
            .unwrap()
    };
    let payload = run(&["payload", "lab"]);
    let payload_err = String::from_utf8_lossy(&payload.stderr).into_owned();
    assert!(
        !payload.status.success() && payload_err.contains("over Nova's"),
        "{payload_err}"
    );
    let publish = run(&["publish", "lab"]);
    let publish_err = String::from_utf8_lossy(&publish.stderr).into_owned();
    assert!(
        !publish.status.success() && publish_err.contains("more than Nova's 128"),
        "{publish_err}"
    );

    // So the operator adds them on the appliance, through the control socket.
    let peers: String = confs.iter().map(|c| peer_section(c)).collect();
    let file = m.lab.dir().join("thousand.conf");
    std::fs::write(&file, peers).unwrap();
    let t = Instant::now();
    m.lab
        .wg_ok(&["addconf", "cloudpipe0", file.to_str().unwrap()]);
    let set_in = t.elapsed();
    let proxies = m.lab.ip(&m.lab.cloudpipe(), "neigh show proxy").unwrap();
    assert_eq!(
        proxies.lines().count(),
        CLIENTS,
        "one proxy entry per client"
    );
    let configured = proc_stats(pid).unwrap();

    raise_nofile();
    let sockets = cloudpipe_lab::netns::run_in(&m.lab.outside(), || {
        (0..CLIENTS)
            .map(|_| Ok(std::net::UdpSocket::bind("0.0.0.0:0")?))
            .collect::<anyhow::Result<Vec<_>>>()
    })
    .unwrap();
    let members = confs
        .iter()
        .zip(sockets)
        .enumerate()
        .map(|(i, (c, s))| cloudpipe_lab::swarm::Member::from_config(&format!("c{i}"), c, s))
        .collect::<anyhow::Result<Vec<_>>>()
        .unwrap();
    let mut swarm = cloudpipe_lab::swarm::Swarm::new(members);
    let t = Instant::now();
    let report = swarm
        .ping_all(
            m.lab.tenant_vm_ip(),
            Duration::from_secs(180),
            Duration::from_secs(2),
            Duration::from_millis(1),
        )
        .unwrap();
    let took = t.elapsed();
    let connected = proc_stats(pid).unwrap();
    let metrics = scrape_metrics(&m.lab, STATUS_PORT).unwrap();
    let mib = |k: u64| k as f64 / 1024.0;
    eprintln!(
        "{CLIENTS} clients: added with the CLI in {added_in:?}; payload: {}; publish: {}\n  \
         wg addconf of {CLIENTS} peers in {set_in:?}\n  all pinging: {} answered in {took:?} \
         (median {:?}, 90% {:?}, last {:?}), {} echo requests\n  handshakes {}, cookie replies {}\n  \
         appliance RSS {:.1} MiB idle, {:.1} MiB with {CLIENTS} peers, {:.1} MiB all connected \
         (peak {:.1} MiB); CPU {:?} to configure, {:?} for the handshakes and pings; threads {}",
        payload_err.trim(),
        publish_err.trim(),
        report.answered,
        report.quantile(0.5),
        report.quantile(0.9),
        report.quantile(1.0),
        report.requests,
        metric(&metrics, "cloudpipe_handshakes_total"),
        metric(&metrics, "cloudpipe_cookie_replies_total"),
        mib(idle.rss_kib),
        mib(configured.rss_kib),
        mib(connected.rss_kib),
        mib(connected.hwm_kib),
        configured.cpu - idle.cpu,
        connected.cpu - configured.cpu,
        connected.threads,
    );
    assert_eq!(
        report.answered,
        CLIENTS,
        "silent: {:?}\n{}",
        report.silent,
        m.log()
    );
    assert!(metric(&metrics, "cloudpipe_handshakes_total") >= CLIENTS as f64);
    assert_eq!(metric(&metrics, "cloudpipe_peers"), CLIENTS as f64);
}
