//! The client mode (`cloudpipe up` / `cloudpipe down`) in the lab: against the
//! appliance with the config `cloudpipe client add` printed, and against a stock
//! wireguard-go server (root only; see tests/README.md).

use cloudpipe_lab::client_mode::UpClient;
use cloudpipe_lab::mission::{iperf_report, iperf_server, ping, ping_all, Mission, CONNECT_WITHIN};
use cloudpipe_lab::wait_for;
use std::time::Duration;

#[test]
fn cloudpipe_up_reaches_the_tenant_vm_through_the_appliance_and_down_removes_it() {
    let Some(mut m) = Mission::new(&[]) else {
        return;
    };
    let conf = m.add_client("alice");
    m.boot();
    let outside = m.lab.outside();
    let iface = format!("{}u", m.lab.id());
    let up = UpClient::start(&m.lab, &outside, &iface, &conf, &[]).unwrap();
    wait_for(CONNECT_WITHIN, "alice reaches the tenant VM", || {
        Ok(ping(
            &m.lab,
            &outside,
            &m.lab.tenant_vm_ip().to_string(),
            None,
        ))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}\n{}", up.log(), m.log()));
    assert!(
        ping_all(&m.lab, &m.lab.tenant_vm(), "10.77.0.250", 5),
        "tenant VM to the client"
    );
    // The interface carries what the file says.
    let addr = m
        .lab
        .ip(&outside, &format!("-4 addr show dev {iface}"))
        .unwrap();
    assert!(addr.contains("10.77.0.250/32"), "{addr}");
    let route = m.lab.ip(&outside, "route show 10.77.0.0/24").unwrap();
    assert!(route.contains(&format!("dev {iface}")), "{route}");

    // A TCP transfer both ways through the client's forwarding core.
    for reverse in [false, true] {
        iperf_server(&m.lab, 5201);
        let vm = m.lab.tenant_vm_ip().to_string();
        let mut args = vec!["iperf3", "-c", &vm, "-n", "50M", "-J"];
        if reverse {
            args.push("-R");
        }
        let report = iperf_report(m.lab.output(&outside, &args).unwrap());
        let sent = report["end"]["sum_sent"]["bytes"].as_u64().unwrap();
        let received = report["end"]["sum_received"]["bytes"].as_u64().unwrap();
        assert!(sent >= 50 << 20, "reverse={reverse}: {sent} bytes sent");
        // The receiver's count stops when the sender's last byte is acknowledged
        // in its interval report; nearly all of it is there.
        assert!(
            received >= 45 << 20,
            "reverse={reverse}: {received} bytes received"
        );
    }

    let (said, status) = up.down(&m.lab).unwrap();
    assert!(said.contains(&format!("{iface} down")), "{said}");
    assert!(
        status.success(),
        "`cloudpipe up` exits 0 after down: {status}"
    );
    let gone = m
        .lab
        .output(&outside, &["ip", "link", "show", &iface])
        .unwrap();
    assert!(!gone.status.success(), "the interface is removed");
    // The client's pool address is reachable only through the tunnel.
    assert!(!ping(&m.lab, &m.lab.tenant_vm(), "10.77.0.250", None));
}

#[test]
fn cloudpipe_up_works_against_a_wireguard_go_server() {
    let Some(m) = Mission::new(&[]) else { return };
    let (server_ns, outside) = (m.lab.cloudpipe(), m.lab.outside());
    let wg = |args: &[&str]| m.lab.exec(&server_ns, args).unwrap();
    let server_key = wg(&["wg", "genkey"]).trim().to_string();
    let client_key = wg(&["wg", "genkey"]).trim().to_string();
    let pubkey = |k: &str| {
        let out = std::process::Command::new("wg")
            .arg("pubkey")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(k.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    // wireguard-go plays the server in the appliance's namespace, behind the
    // floating IP's UDP 1194 forward.
    let siface = format!("{}s", m.lab.id());
    let server = m
        .lab
        .spawn_with(&server_ns, &["wireguard-go", &siface], |c| {
            c.env("WG_PROCESS_FOREGROUND", "1")
                .stdout(std::process::Stdio::null());
        })
        .unwrap();
    wait_for(Duration::from_secs(10), "wireguard-go socket", || {
        Ok(std::path::Path::new(&format!("/var/run/wireguard/{siface}.sock")).exists())
    })
    .unwrap();
    let sconf = m.lab.dir().join("server.conf");
    std::fs::write(
        &sconf,
        format!(
            "[Interface]\nPrivateKey = {server_key}\nListenPort = 1194\n[Peer]\nPublicKey = {}\nAllowedIPs = 10.99.0.2/32\n",
            pubkey(&client_key)
        ),
    )
    .unwrap();
    wg(&["wg", "setconf", &siface, sconf.to_str().unwrap()]);
    wg(&["ip", "addr", "add", "10.99.0.1/24", "dev", &siface]);
    wg(&["ip", "link", "set", &siface, "up"]);

    let conf = format!(
        "[Interface]\nPrivateKey = {client_key}\nAddress = 10.99.0.2/32\n\n[Peer]\nPublicKey = {}\n\
         Endpoint = {}\nAllowedIPs = 10.99.0.0/24\nPersistentKeepalive = 25\n",
        pubkey(&server_key),
        m.endpoint()
    );
    let iface = format!("{}w", m.lab.id());
    let up = UpClient::start(&m.lab, &outside, &iface, &conf, &["--workers", "1"]).unwrap();
    wait_for(
        CONNECT_WITHIN,
        "the client reaches the wireguard-go server",
        || Ok(ping(&m.lab, &outside, "10.99.0.1", None)),
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", up.log()));
    assert!(
        ping_all(&m.lab, &server_ns, "10.99.0.2", 5),
        "server to client"
    );
    let shown = wg(&["wg", "show", &siface, "latest-handshakes"]);
    let ts: u64 = shown.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(ts > 0, "wireguard-go saw a handshake: {shown}");
    up.down(&m.lab).unwrap();
    drop(server);
}
