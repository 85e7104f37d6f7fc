//! The mission, end to end, as reusable steps: a network made with the real
//! `cloudpipe` CLI, its payload served by the lab's metadata server, `cloudpiped`
//! booted in the appliance namespace, stock WireGuard clients outside. The tunnel
//! tests and `cloudpipe-lab demo` are both built from these steps.

use crate::wg_client::WgClient;
use crate::{bin_path, run, wait_for, Daemon, Lab, LabOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The network's name in the CLI's state, and in Neutron.
pub const NETWORK: &str = crate::NETWORK;

pub const READY_WITHIN: Duration = Duration::from_secs(20);
/// Long enough for a handshake on a loaded 2-core machine.
pub const CONNECT_WITHIN: Duration = Duration::from_secs(20);

pub fn cloudpipe(state: &Path, args: &[&str]) -> String {
    let bin = bin_path("cloudpipe").expect("cloudpipe binary (cargo build --workspace --bins)");
    run(Command::new(bin).arg("--state-dir").arg(state).args(args))
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// One network's cloudpipe in its own lab.
pub struct Mission {
    pub lab: Lab,
    pub state: PathBuf,
    pub daemon: Option<Daemon>,
}

impl Mission {
    /// `None` when the lab is skipped (not root and CLOUDPIPE_SKIP_LAB=1).
    pub fn new(create_args: &[&str]) -> Option<Mission> {
        Mission::with_options(
            LabOptions {
                dhcp: true,
                metadata: true,
                ..LabOptions::default()
            },
            create_args,
        )
    }

    /// The network made with `cloudpipe network create lab` (the lab network's
    /// subnet; endpoint: the floating IP the lab's project holds; `--mtu`: the lab
    /// network's and `--clients 5`, unless `create_args` give them), launched in
    /// Neutron from `cloudpipe openstack lab --json`.
    pub fn with_options(opts: LabOptions, create_args: &[&str]) -> Option<Mission> {
        if crate::skip_unless_root() {
            return None;
        }
        let lab = Lab::new(LabOptions {
            launch: None,
            ..opts
        })
        .expect("building the lab");
        let state = lab.dir().join("state");
        let endpoint = format!("{}:{}", lab.floating_ip(), crate::WG_PORT);
        let mtu = lab.mtu().to_string();
        let cidr = lab.subnet().to_string();
        let mut args = vec![
            "network",
            "create",
            NETWORK,
            "--cidr",
            &cidr,
            "--endpoint",
            &endpoint,
        ];
        if !create_args.contains(&"--clients") {
            args.extend(["--clients", "5"]);
        }
        if !create_args.contains(&"--mtu") {
            args.extend(["--mtu", &mtu]);
        }
        args.extend_from_slice(create_args);
        cloudpipe(&state, &args);
        let m = Mission {
            lab,
            state,
            daemon: None,
        };
        let json = m.cli(&["openstack", NETWORK, "--json"]);
        let recipe = serde_json::from_str(&json)
            .unwrap_or_else(|e| panic!("cloudpipe openstack --json: {e}: {json}"));
        m.lab.launch(&recipe).unwrap_or_else(|e| {
            panic!(
                "launching the recipe in Neutron: {e:#}
{json}"
            )
        });
        Some(m)
    }

    /// The endpoint clients are given: the floating IP and port.
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.lab.floating_ip(), crate::WG_PORT)
    }

    /// A booted network with one client, alice, connected from `outside`; also
    /// returns her config.
    pub fn with_alice(create_args: &[&str]) -> Option<(Mission, WgClient, String)> {
        Mission::with_alice_options(
            LabOptions {
                dhcp: true,
                metadata: true,
                ..LabOptions::default()
            },
            create_args,
        )
    }

    /// [`Mission::with_alice`] in a lab of these options.
    pub fn with_alice_options(
        opts: LabOptions,
        create_args: &[&str],
    ) -> Option<(Mission, WgClient, String)> {
        let mut m = Mission::with_options(opts, create_args)?;
        let conf = m.add_client("alice");
        m.boot();
        let alice = m.connect(&m.lab.outside(), "alice", &conf);
        Some((m, alice, conf))
    }

    /// A booted network with two clients connected: alice from `outside`, bob from
    /// a second external host (`home`). Returns their clients and bob's namespace.
    pub fn with_alice_and_bob(
        create_args: &[&str],
    ) -> Option<(Mission, WgClient, WgClient, String)> {
        let mut m = Mission::new(create_args)?;
        let (a, b) = (m.add_client("alice"), m.add_client("bob"));
        m.boot();
        let home = m
            .lab
            .add_external_host("home", "ext1", 100)
            .expect("second external host");
        let alice = m.connect(&m.lab.outside(), "alice", &a);
        let bob = m.connect(&home, "bob", &b);
        Some((m, alice, bob, home))
    }

    pub fn cli(&self, args: &[&str]) -> String {
        cloudpipe(&self.state, args)
    }

    pub fn add_client(&self, name: &str) -> String {
        self.cli(&["client", "add", NETWORK, name])
    }

    /// Serve the payload and boot the appliance.
    pub fn boot(&mut self) {
        let payload = self.cli(&["payload", NETWORK, "--encoding", "guest"]);
        self.lab.set_user_data(payload.as_bytes()).unwrap();
        self.publish();
        self.start_daemon();
    }

    pub fn start_daemon(&mut self) {
        let mut d = self.lab.start_daemon(&[]).expect("starting cloudpiped");
        d.wait_ready(READY_WITHIN).expect("cloudpiped ready");
        self.daemon = Some(d);
    }

    /// Publish the current clients as instance properties (what the operator does
    /// with the `openstack server set --property` commands).
    pub fn publish(&self) {
        let json = self.cli(&["publish", NETWORK, "--json"]);
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("publish --json: {e}: {json}"));
        let pairs: Vec<(String, String)> = map
            .into_iter()
            .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
            .collect();
        self.lab
            .set_meta(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .unwrap();
    }

    /// A client named `name` in namespace `ns`, connected (one ping to the tenant VM
    /// went through).
    pub fn connect(&self, ns: &str, name: &str, conf: &str) -> WgClient {
        let iface = format!("{}{}", self.lab.id(), &name[..1]);
        let c = WgClient::up(ns, &iface, conf, &self.lab.dir().join("clients"))
            .unwrap_or_else(|e| panic!("{e}"));
        wait_for(
            CONNECT_WITHIN,
            &format!("{name} reaches the tenant VM"),
            || {
                Ok(ping(
                    &self.lab,
                    ns,
                    &self.lab.tenant_vm_ip().to_string(),
                    None,
                ))
            },
        )
        .unwrap_or_else(|e| panic!("{e:#}\n{}\n{}", c.show(), self.log()));
        c
    }

    pub fn log(&self) -> String {
        self.daemon.as_ref().map(|d| d.log()).unwrap_or_default()
    }
}

/// A key pair made as on a user's device: `wg genkey`, then `wg pubkey`. Returns
/// (private, public), base64.
pub fn wg_keypair() -> (String, String) {
    let wg = |args: &[&str], input: &str| {
        use std::io::Write;
        let mut c = Command::new("wg")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("wg (wireguard-tools; scripts/install-deps)");
        c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "wg {args:?}");
        String::from_utf8(o.stdout).unwrap().trim().to_string()
    };
    let private = wg(&["genkey"], "");
    let public = wg(&["pubkey"], &private);
    (private, public)
}

/// What the user does with a config whose key stayed on the device: put the
/// private key in place of the placeholder.
pub fn with_private_key(conf: &str, private: &str) -> String {
    conf.lines()
        .map(|l| {
            if l.starts_with("PrivateKey = <") {
                format!("PrivateKey = {private}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect()
}

/// One ping (1 s timeout), optionally from a given source address.
pub fn ping(lab: &Lab, ns: &str, dst: &str, from: Option<&str>) -> bool {
    let mut cmd = vec!["ping", "-n", "-c", "1", "-W", "1"];
    if let Some(src) = from {
        cmd.extend(["-I", src]);
    }
    cmd.push(dst);
    lab.output(ns, &cmd)
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// `count` pings, all answered.
pub fn ping_all(lab: &Lab, ns: &str, dst: &str, count: u32) -> bool {
    let n = count.to_string();
    lab.output(
        ns,
        &["ping", "-n", "-q", "-c", &n, "-i", "0.2", "-W", "2", dst],
    )
    .map(|o| o.status.success())
    .unwrap_or(false)
}

/// An iperf3 server for one test in the tenant VM.
#[allow(clippy::zombie_processes)] // the lab tracks the PID, kills and reaps it
pub fn iperf_server(lab: &Lab, port: u16) {
    let p = port.to_string();
    let ip = lab.tenant_vm_ip().to_string();
    lab.spawn_with(
        &lab.tenant_vm(),
        &["iperf3", "-s", "-1", "-B", &ip, "-p", &p],
        |c| {
            c.stdout(std::process::Stdio::null());
        },
    )
    .unwrap();
    wait_for(Duration::from_secs(10), "iperf3 server listening", || {
        Ok(lab
            .exec(
                &lab.tenant_vm(),
                &["ss", "-Htln", &format!("sport = :{port}")],
            )?
            .contains(&p))
    })
    .unwrap();
}

/// An iperf3 client in `ns` sending to the tenant VM's server on `port` for
/// `seconds` in the background, reporting every second in JSON on its standard
/// output (read it with [`iperf_report`]).
pub fn iperf_client(lab: &Lab, ns: &str, port: u16, seconds: u32) -> std::process::Child {
    let (p, t) = (port.to_string(), seconds.to_string());
    let vm = lab.tenant_vm_ip().to_string();
    lab.spawn_with(
        ns,
        &["iperf3", "-c", &vm, "-p", &p, "-t", &t, "-i", "1", "-J"],
        |c| {
            c.stdout(std::process::Stdio::piped());
        },
    )
    .expect("starting iperf3")
}

/// The iperf3 client's JSON report, after checking that it succeeded.
pub fn iperf_report(out: std::process::Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "iperf3 failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&text).expect("iperf3 -J output")
}

/// Counter of packets from `src` arriving at the tenant VM.
pub fn count_from(lab: &Lab, src: &str) -> u64 {
    let out = lab
        .exec(&lab.tenant_vm(), &["nft", "list", "table", "ip", "spy"])
        .unwrap_or_default();
    out.lines()
        .find(|l| l.contains(&format!("ip saddr {src} ")))
        .and_then(|l| l.split("packets ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

pub fn spy_on(lab: &Lab, sources: &[&str]) {
    let rules: String = sources
        .iter()
        .map(|s| format!("\t\tip saddr {s} counter\n"))
        .collect();
    lab.nft(
        &lab.tenant_vm(),
        &format!("table ip spy {{\n\tchain input {{\n\t\ttype filter hook input priority 0; policy accept;\n{rules}\t}}\n}}\n"),
    )
    .unwrap();
}

/// IPv4 fragmentation seen in a namespace: fragments made (`FragCreates`), packets
/// that could not be sent unfragmented (`FragFails`) and reassemblies asked for
/// (`ReasmReqds`), summed, from its /proc/net/snmp.
pub fn fragmentation(lab: &Lab, ns: &str) -> u64 {
    let snmp = lab.exec(ns, &["cat", "/proc/net/snmp"]).unwrap_or_default();
    let mut ip = snmp.lines().filter(|l| l.starts_with("Ip:"));
    let (Some(names), Some(values)) = (ip.next(), ip.next()) else {
        panic!("no Ip: lines in {ns}'s /proc/net/snmp:\n{snmp}");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .filter(|(n, _)| matches!(*n, "FragCreates" | "FragFails" | "ReasmReqds"))
        .map(|(_, v)| v.parse::<u64>().unwrap_or(0))
        .sum()
}

/// `count` pings of `size` bytes of payload with DF set (`ping -M do`): the number
/// answered, and ping's output.
pub fn ping_df(lab: &Lab, ns: &str, dst: &str, size: u16, count: u32) -> (u32, String) {
    let (s, n) = (size.to_string(), count.to_string());
    let o = lab
        .output(
            ns,
            &[
                "ping", "-n", "-M", "do", "-s", &s, "-c", &n, "-i", "0.2", "-W", "2", dst,
            ],
        )
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let received = text
        .split(" received")
        .next()
        .and_then(|h| h.rsplit(", ").next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    (received, text)
}

/// The appliance's Prometheus metrics (the network needs `--status-port PORT`),
/// scraped with curl from the tenant VM: every sample, `name{labels}` to value.
pub fn scrape_metrics(
    lab: &Lab,
    port: u16,
) -> anyhow::Result<std::collections::BTreeMap<String, f64>> {
    let url = format!("http://{}:{port}/metrics", crate::APPLIANCE);
    let text = lab.exec(&lab.tenant_vm(), &["curl", "-sSf", "--max-time", "5", &url])?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect())
}

/// Counters of the kernel's UDP layer in `ns` (`/proc/net/snmp`, `Udp:` lines):
/// `InDatagrams`, `RcvbufErrors` (dropped for a full socket buffer), ...
pub fn udp_counters(lab: &Lab, ns: &str) -> std::collections::BTreeMap<String, u64> {
    let text = lab.exec(ns, &["cat", "/proc/net/snmp"]).unwrap_or_default();
    let udp: Vec<&str> = text.lines().filter(|l| l.starts_with("Udp:")).collect();
    match udp[..] {
        [names, values, ..] => names
            .split_whitespace()
            .zip(values.split_whitespace())
            .skip(1)
            .filter_map(|(n, v)| Some((n.to_string(), v.parse().ok()?)))
            .collect(),
        _ => Default::default(),
    }
}
