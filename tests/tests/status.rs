//! Live status for tenants and operators in the lab (root only): `cloudpipe status`
//! on the appliance through its control socket; the status listener
//! (`network create --status-port`) read by `cloudpipe status --all` and `network
//! show --live` from a tenant VM and through the tunnel; `/metrics` scraped with
//! curl.

use cloudpipe_lab::mission::{ping, ping_all, Mission, NETWORK};
use cloudpipe_lab::{bin_path, wait_for, Lab};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

const STATUS_PORT: &str = "9100";

/// Run the real `cloudpipe` CLI in namespace `ns` with the mission's state
/// directory: exit status, stdout, stderr.
fn cli_in(m: &Mission, ns: &str, args: &[&str]) -> (bool, String, String) {
    let bin = bin_path("cloudpipe").expect("cloudpipe binary");
    let state = m.state.to_str().unwrap().to_string();
    let mut cmd = vec![bin.to_str().unwrap(), "--state-dir", state.as_str()];
    cmd.extend_from_slice(args);
    let out = m.lab.output(ns, &cmd).expect("running cloudpipe");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_in(m: &Mission, ns: &str, args: &[&str]) -> Value {
    let (ok, out, err) = cli_in(m, ns, args);
    assert!(ok, "cloudpipe {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The report of `network` in `status --all --json`.
fn report<'a>(all: &'a Value, network: &str) -> &'a Value {
    all.as_array()
        .unwrap()
        .iter()
        .find(|r| r["network"] == network)
        .unwrap_or_else(|| panic!("no report for {network}: {all}"))
}

fn client<'a>(clients: &'a Value, name: &str) -> &'a Value {
    clients
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no client {name}: {clients}"))
}

/// `curl` in `ns`: (HTTP status, body).
fn curl(lab: &Lab, ns: &str, url: &str, source: Option<&str>) -> (u16, String) {
    let mut cmd = vec!["curl", "-sS", "--max-time", "5", "-w", "\n%{http_code}"];
    if let Some(s) = source {
        cmd.extend(["--interface", s]);
    }
    cmd.push(url);
    let out = lab.output(ns, &cmd).expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Prometheus text: `name{labels}` -> value, for the samples (not comments).
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

#[test]
fn cloudpipe_status_on_the_appliance_reads_the_control_socket() {
    let Some((m, alice, _)) = Mission::with_alice(&[]) else {
        return;
    };
    let sock = m.lab.control_socket();
    let sock = sock.to_str().unwrap();
    let c = m.lab.cloudpipe();
    let (ok, out, err) = cli_in(&m, &c, &["status", "--socket", sock]);
    assert!(ok, "{err}");
    for want in [
        "network:     lab (10.77.0.0/24, appliance 10.77.0.2, proxy-arp)",
        &format!("endpoint:    {}:1194 (UDP 1194)", m.lab.floating_ip()),
        // The lab network's MTU (1450) less WireGuard's 80.
        &format!("tunnel MTU:  {}", m.lab.mtu() - 80),
        "pool:        10.77.0.250-10.77.0.254: 1 used, 4 free",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    let row = out
        .lines()
        .find(|l| l.trim_start().starts_with("alice"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        row.contains("10.77.0.250") && row.ends_with("online"),
        "{row}"
    );
    assert!(
        row.contains(&format!("203.0.113.2:{}", alice.listen_port().unwrap())),
        "{row}"
    );
    assert!(row.contains(" ago") || row.contains(" now "), "{row}");

    let s = json_in(&m, &c, &["status", "--json", "--socket", sock]);
    let server_key = m
        .lab
        .output(&m.lab.outside(), &["wg", "show", alice.iface(), "peers"])
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap();
    assert_eq!(s["public_key"], server_key.as_str());
    assert_eq!(s["pool"]["used"], 1);
    let a = client(&s["clients"], "alice");
    assert_eq!(a["state"], "online");
    assert_eq!(a["public_key"], alice.public_key().as_str());
    assert!(a["rx_bytes"].as_u64().unwrap() > 0 && a["tx_bytes"].as_u64().unwrap() > 0);

    // No daemon there: a clear error, not a guess from files.
    let (ok, _, err) = cli_in(&m, &c, &["status", "--socket", "/nonexistent/x.sock"]);
    assert!(!ok);
    assert!(
        err.contains("cannot reach cloudpiped at /nonexistent/x.sock"),
        "{err}"
    );
}

#[test]
fn status_all_merges_stored_and_live_views_from_a_tenant_vm_and_through_the_tunnel() {
    let Some((m, alice, bob, home)) = Mission::with_alice_and_bob(&["--status-port", STATUS_PORT])
    else {
        return;
    };
    // A second network whose appliance is nowhere to be reached, and a client
    // added but never published.
    m.cli(&[
        "network",
        "create",
        "far",
        "--cidr",
        "10.88.0.0/24",
        "--status-port",
        STATUS_PORT,
        "--endpoint",
        "203.0.113.20",
    ]);
    m.cli(&["client", "add", NETWORK, "carol"]);
    let t = m.lab.tenant_vm();
    let all = json_in(&m, &t, &["status", "--all", "--json"]);
    let lab = report(&all, NETWORK);
    assert_eq!(lab["reachable"], true, "{lab}");
    assert_eq!(lab["url"], "http://10.77.0.2:9100/status");
    let a = client(&lab["clients"], "alice");
    assert_eq!(
        (&a["stored"], &a["state"]),
        (&"active".into(), &"online".into()),
        "{a}"
    );
    // The tenant VM sees every client's endpoint.
    assert_eq!(
        a["endpoint"],
        format!("203.0.113.2:{}", alice.listen_port().unwrap()).as_str()
    );
    assert_eq!(
        client(&lab["clients"], "bob")["endpoint"],
        format!("198.51.100.2:{}", bob.listen_port().unwrap()).as_str()
    );
    let carol = client(&lab["clients"], "carol");
    assert!(carol["state"].is_null(), "{carol}");
    assert!(
        carol["note"].as_str().unwrap().contains("publish"),
        "{carol}"
    );
    let far = report(&all, "far");
    assert_eq!(far["reachable"], false);
    assert!(
        far["error"]
            .as_str()
            .unwrap()
            .contains("http://10.88.0.2:9100/status"),
        "{far}"
    );

    // Transfer rises as alice talks.
    let rx0 = a["rx_bytes"].as_u64().unwrap();
    assert!(ping_all(
        &m.lab,
        &m.lab.outside(),
        &m.lab.tenant_vm_ip().to_string(),
        5
    ));
    let all = json_in(&m, &t, &["status", "--all", "--json"]);
    let rx1 = client(&report(&all, NETWORK)["clients"], "alice")["rx_bytes"]
        .as_u64()
        .unwrap();
    assert!(rx1 >= rx0 + 5 * 84, "alice rx {rx0} -> {rx1}");

    // The human form names the unreachable network.
    let (ok, out, err) = cli_in(&m, &t, &["status", "--all"]);
    assert!(ok, "{err}");
    assert!(out.contains("network far: NOT REACHABLE"), "{out}");
    assert!(err.contains("not reachable: far"), "{err}");
    let (ok, out, err) = cli_in(&m, &t, &["network", "show", NETWORK, "--live"]);
    assert!(ok, "{err}");
    let live = out
        .split("live from")
        .nth(1)
        .unwrap_or_else(|| panic!("{out}"));
    let row = live
        .lines()
        .find(|l| l.trim_start().starts_with("alice"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(row.ends_with("online"), "{out}");

    // Through the tunnel, alice sees her own endpoint, not bob's.
    let all = json_in(&m, &m.lab.outside(), &["status", "--all", "--json"]);
    let lab = report(&all, NETWORK);
    assert_eq!(lab["reachable"], true, "{lab}");
    assert!(client(&lab["clients"], "alice")["endpoint"].is_string());
    assert!(
        client(&lab["clients"], "bob")["endpoint"].is_null(),
        "{lab}"
    );
    let all = json_in(&m, &home, &["status", "--all", "--json"]);
    let lab = report(&all, NETWORK);
    assert!(
        client(&lab["clients"], "alice")["endpoint"].is_null(),
        "{lab}"
    );
    assert!(client(&lab["clients"], "bob")["endpoint"].is_string());

    // Anyone else is refused: the router, from its external address. Neutron's
    // security group drops it first (the recipe opens the port to the tenant subnet
    // only); with a rule that lets the world in, the daemon still says 403.
    let outside_ip = m.lab.router_ip().to_string();
    let (code, body) = curl(
        &m.lab,
        &m.lab.router(),
        "http://10.77.0.2:9100/status",
        Some(&outside_ip),
    );
    assert_eq!(code, 0, "the security group let it through: {body}");
    m.lab
        .add_ingress_rule("cloudpipe-lab", "tcp", 9100, "0.0.0.0/0".parse().unwrap())
        .unwrap();
    let (code, body) = curl(
        &m.lab,
        &m.lab.router(),
        "http://10.77.0.2:9100/status",
        Some(&outside_ip),
    );
    assert_eq!(code, 403, "{body}");
}

#[test]
fn metrics_scraped_with_curl_count_traffic_and_a_spoofed_packet() {
    let Some((m, alice, _)) = Mission::with_alice(&["--status-port", STATUS_PORT]) else {
        return;
    };
    let t = m.lab.tenant_vm();
    let url = "http://10.77.0.2:9100/metrics";
    let scrape = || {
        let (code, body) = curl(&m.lab, &t, url, None);
        assert_eq!(code, 200, "{body}");
        samples(&body)
    };
    let key = alice.public_key();
    let rx = |s: &BTreeMap<String, f64>| {
        s[&format!("cloudpipe_peer_receive_bytes_total{{peer=\"alice\",public_key=\"{key}\"}}")]
    };
    let spoofed = "cloudpipe_packets_dropped_total{reason=\"spoofed_source\"}";
    let before = scrape();
    assert!(before["cloudpipe_handshakes_total"] >= 1.0, "{before:?}");
    assert_eq!(before["cloudpipe_pool_addresses{state=\"used\"}"], 1.0);
    assert_eq!(before["cloudpipe_pool_addresses{state=\"free\"}"], 4.0);
    assert_eq!(before["cloudpipe_peers"], 1.0);
    let handshake = before[&format!(
        "cloudpipe_peer_latest_handshake_timestamp_seconds{{peer=\"alice\",public_key=\"{key}\"}}"
    )];
    assert!(handshake > 1.7e9, "{handshake}");

    // Alice sends from an address that is not hers: dropped and counted.
    m.lab
        .ip(
            &m.lab.outside(),
            &format!("addr add 10.77.0.99/32 dev {}", alice.iface()),
        )
        .unwrap();
    assert!(!ping(
        &m.lab,
        &m.lab.outside(),
        &m.lab.tenant_vm_ip().to_string(),
        Some("10.77.0.99")
    ));
    assert!(ping_all(
        &m.lab,
        &m.lab.outside(),
        &m.lab.tenant_vm_ip().to_string(),
        3
    ));
    let after = scrape();
    assert!(
        after[spoofed] >= before[spoofed] + 1.0,
        "{spoofed}: {} -> {}",
        before[spoofed],
        after[spoofed]
    );
    assert!(
        rx(&after) > rx(&before),
        "{} -> {}",
        rx(&before),
        rx(&after)
    );
    // Metadata polls (every second in the lab) are counted.
    wait_for(Duration::from_secs(10), "metadata polls counted", || {
        Ok(scrape()["cloudpipe_metadata_polls_total{result=\"unchanged\"}"] >= 2.0)
    })
    .unwrap();
    let (code, _) = curl(&m.lab, &t, "http://10.77.0.2:9100/nowhere", None);
    assert_eq!(code, 404);
}
