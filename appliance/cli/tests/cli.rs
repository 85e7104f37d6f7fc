//! The `cloudpipe` binary, run as an operator runs it, against a temporary state
//! directory.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

struct State(PathBuf);

impl State {
    fn new(tag: &str) -> State {
        let d = std::env::temp_dir().join(format!("cloudpipe-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        State(d)
    }
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_cloudpipe"))
            .arg("--state-dir")
            .arg(&self.0)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
    /// Run, expect success, return stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }
    /// Run, expect failure, return stderr.
    fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(!o.status.success(), "{args:?} should fail");
        String::from_utf8(o.stderr).unwrap()
    }
    fn create(&self, extra: &[&str]) {
        let mut a = vec![
            "network",
            "create",
            "net1",
            "--cidr",
            "10.0.0.0/24",
            "--endpoint",
            "198.51.100.7",
        ];
        a.extend_from_slice(extra);
        self.ok(&a);
    }
}

/// Run the binary with `input` on standard input.
fn run_with_stdin(state_dir: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cloudpipe"))
        .arg("--state-dir")
        .arg(state_dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// A Nova cloudpipe payload zip (`nova/cloudpipe/pipelib.py`'s members) with this
/// rendered `autorun.sh`.
fn nova_zip(autorun: &str) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let deflated = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in [
        ("autorun.sh", autorun.as_bytes()),
        ("crl.pem", b"crl"),
        ("server.key", b"key"),
        ("ca.crt", b"ca"),
        ("server.crt", b"crt"),
    ] {
        w.start_file(name, deflated).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

impl Drop for State {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn value<'a>(conf: &'a str, key: &str) -> &'a str {
    conf.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("{key} missing in\n{conf}"))
}

/// A table's cells, cut where the header's words start: so a value shifted out of
/// its column, or a missing header, fails the comparison.
fn columns(table: &str) -> Vec<Vec<String>> {
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default();
    let mut starts = vec![0];
    let b = header.as_bytes();
    for i in 1..b.len() {
        // A column starts after two spaces (one space may be inside a header).
        if b[i] != b' ' && i >= 2 && b[i - 1] == b' ' && b[i - 2] == b' ' {
            starts.push(i);
        }
    }
    std::iter::once(header)
        .chain(lines)
        .map(|l| {
            starts
                .iter()
                .enumerate()
                .map(|(k, &a)| {
                    let z = starts.get(k + 1).copied().unwrap_or(l.len()).min(l.len());
                    let cell = l.get(a.min(l.len())..z).unwrap_or_default();
                    assert!(
                        a == 0 || l.as_bytes().get(a - 1).is_none_or(|c| *c == b' '),
                        "a cell runs into column {k} of:\n{table}"
                    );
                    cell.trim().to_string()
                })
                .collect()
        })
        .collect()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn network_lifecycle() {
    let s = State::new("life");
    s.create(&[
        "--clients",
        "3",
        "--route",
        "192.168.50.0/24",
        "--dns",
        "10.0.0.1",
    ]);
    assert!(s
        .fails(&["network", "create", "net1", "--cidr", "10.0.0.0/24"])
        .contains("already exists"));
    let list = s.ok(&["network", "list"]);
    assert_eq!(
        columns(&list),
        [
            ["NETWORK", "SUBNET", "APPLIANCE", "CLIENTS", "ENDPOINT"],
            [
                "net1",
                "10.0.0.0/24",
                "10.0.0.2",
                "0 of 3",
                "198.51.100.7:1194"
            ]
        ],
        "{list}"
    );
    let show = s.ok(&["network", "show", "net1"]);
    assert!(
        show.contains("pool:             10.0.0.252-10.0.0.254 (3 addresses)"),
        "{show}"
    );
    assert!(
        show.contains("client routes:    10.0.0.0/24, 192.168.50.0/24"),
        "{show}"
    );
    let key = std::fs::read_to_string(s.0.join("net1/server.key")).unwrap();
    assert!(
        !show.contains(key.trim()),
        "network show must not print the private key"
    );
    assert_eq!(mode(&s.0.join("net1/server.key")), 0o600);
    assert_eq!(mode(&s.0.join("net1")), 0o700);
    assert!(s.fails(&["network", "delete", "net1"]).contains("--yes"));
    s.ok(&["network", "delete", "net1", "--yes"]);
    assert_eq!(s.ok(&["network", "list"]), "");
    assert!(s.fails(&["network", "show", "net1"]).contains("no network"));
}

#[test]
fn bad_network_options_are_clear_errors() {
    let s = State::new("bad");
    let e = s.fails(&["network", "create", "n", "--cidr", "10.0.0.5/24"]);
    assert!(e.contains("host bits"), "{e}");
    let e = s.fails(&[
        "network",
        "create",
        "n",
        "--cidr",
        "10.0.0.0/29",
        "--clients",
        "9",
    ]);
    assert!(e.contains("--clients") && e.contains("at most 4"), "{e}");
    let e = s.fails(&["network", "create", "../x", "--cidr", "10.0.0.0/24"]);
    assert!(e.contains("network name"), "{e}");
    let e = s.fails(&[
        "network",
        "create",
        "n",
        "--cidr",
        "10.0.0.0/24",
        "--mode",
        "bridge",
    ]);
    assert!(e.contains("proxy-arp"), "{e}");
    let e = s.fails(&[
        "network",
        "create",
        "n",
        "--cidr",
        "10.0.0.0/24",
        "--endpoint",
        "h:0",
    ]);
    assert!(e.contains("port"), "{e}");
    for (flag, value, want) in [
        ("--port", "0", "--port: must not be 0"),
        ("--mtu", "100", "--mtu: 100 is outside"),
        (
            "--route",
            "10.9.0.1/16",
            "--route[0]: \"10.9.0.1/16\" has host bits set",
        ),
        (
            "--address",
            "10.0.1.2",
            "--address: 10.0.1.2 is outside 10.0.0.0/24",
        ),
    ] {
        let e = s.fails(&[
            "network",
            "create",
            "n",
            "--cidr",
            "10.0.0.0/24",
            flag,
            value,
        ]);
        assert!(e.contains(want), "{flag} {value}: {e}");
    }
    assert!(s.ok(&["network", "list"]).is_empty(), "nothing was created");
}

#[test]
fn client_add_renders_a_config_matching_the_network() {
    let s = State::new("add");
    s.create(&["--route", "192.168.50.0/24"]);
    let conf = s.ok(&["client", "add", "net1", "alice"]);
    assert_eq!(value(&conf, "Address"), "10.0.0.250/32");
    assert_eq!(value(&conf, "Endpoint"), "198.51.100.7:1194");
    assert_eq!(value(&conf, "AllowedIPs"), "10.0.0.0/24, 192.168.50.0/24");
    let show = s.ok(&["network", "show", "net1"]);
    assert!(
        show.contains(&format!("public key:       {}", value(&conf, "PublicKey"))),
        "{show}"
    );
    assert_eq!(s.ok(&["client", "show", "net1", "alice", "--config"]), conf);
    assert_eq!(mode(&s.0.join("net1/clients/alice.json")), 0o600);
    assert!(s
        .fails(&["client", "add", "net1", "alice"])
        .contains("already exists"));

    let out = s.0.join("bob.conf");
    assert_eq!(
        s.ok(&[
            "client",
            "add",
            "net1",
            "bob",
            "--output",
            out.to_str().unwrap()
        ]),
        ""
    );
    assert_eq!(mode(&out), 0o600);
    assert_eq!(
        value(&std::fs::read_to_string(&out).unwrap(), "Address"),
        "10.0.0.251/32"
    );

    let png = s.0.join("carol.png");
    let qr = s.ok(&[
        "client",
        "add",
        "net1",
        "carol",
        "--qr",
        "--qr-png",
        png.to_str().unwrap(),
    ]);
    assert!(
        qr.contains('█') && !qr.contains("PrivateKey"),
        "--qr prints the code instead of the text"
    );
    assert_eq!(&std::fs::read(&png).unwrap()[..4], b"\x89PNG");
}

#[test]
fn client_add_without_endpoint_says_how_to_set_it() {
    let s = State::new("noep");
    s.ok(&["network", "create", "net1", "--cidr", "10.0.0.0/24"]);
    let e = s.fails(&["client", "add", "net1", "alice"]);
    assert!(e.contains("set-endpoint"), "{e}");
    s.ok(&["network", "set-endpoint", "net1", "vpn.example.org"]);
    let conf = s.ok(&["client", "add", "net1", "alice"]);
    assert_eq!(value(&conf, "Endpoint"), "vpn.example.org:1194");
    let o = s.run(&["network", "set-endpoint", "net1", "[2001:db8::7]:51820"]);
    assert!(o.status.success());
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(said.contains("old endpoint"), "{said}");
    let conf = s.ok(&["client", "show", "net1", "alice", "--config"]);
    assert_eq!(value(&conf, "Endpoint"), "[2001:db8::7]:51820");
}

#[test]
fn pool_exhaustion_and_revocation_release_after_publishing() {
    let s = State::new("pool");
    s.create(&["--clients", "2"]);
    s.ok(&["client", "add", "net1", "a"]);
    s.ok(&["client", "add", "net1", "b"]);
    let e = s.fails(&["client", "add", "net1", "c"]);
    assert!(e.contains("full"), "{e}");

    // Before any payload, nothing runs with these clients: revoking frees at once.
    s.ok(&["client", "revoke", "net1", "a"]);
    let conf = s.ok(&["client", "add", "net1", "c"]);
    assert_eq!(value(&conf, "Address"), "10.0.0.253/32");

    // Once a payload was printed, the appliance knows b: its address stays taken
    // until the revocation is published.
    s.ok(&["payload", "net1"]);
    let o = s.run(&["client", "revoke", "net1", "b"]);
    let hint = String::from_utf8_lossy(&o.stderr);
    assert!(
        hint.contains("openstack server set --property") && hint.contains("cloudpipe-revoke-0"),
        "{hint}"
    );
    assert!(s.fails(&["client", "add", "net1", "d"]).contains("full"));
    let props: serde_json::Value =
        serde_json::from_str(&s.ok(&["publish", "net1", "--json"])).unwrap();
    assert!(
        props["cloudpipe-revoke-0"]
            .as_str()
            .unwrap()
            .starts_with("v1 "),
        "{props}"
    );
    s.ok(&["publish", "net1", "--done"]);
    assert_eq!(
        s.run(&["publish", "net1"]).stdout,
        b"",
        "nothing left to publish"
    );
    let conf = s.ok(&["client", "add", "net1", "d"]);
    assert_eq!(value(&conf, "Address"), "10.0.0.254/32");
    // ... and adding d after boot is itself a change to publish.
    let cmds = s.ok(&["publish", "net1"]);
    assert!(cmds.contains("cloudpipe-add-0=v1 d "), "{cmds}");
}

#[test]
fn concurrent_adds_never_share_an_address() {
    let s = State::new("race");
    s.create(&["--clients", "5"]);
    let children: Vec<_> = (0..8)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_cloudpipe"))
                .arg("--state-dir")
                .arg(&s.0)
                .args(["client", "add", "net1", &format!("c{i}")])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut addrs = Vec::new();
    let mut failures = 0;
    for c in children {
        let o = c.wait_with_output().unwrap();
        if o.status.success() {
            addrs.push(value(&String::from_utf8(o.stdout).unwrap(), "Address").to_string());
        } else {
            assert!(String::from_utf8_lossy(&o.stderr).contains("full"));
            failures += 1;
        }
    }
    assert_eq!((addrs.len(), failures), (5, 3));
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 5, "an address was handed out twice: {addrs:?}");
}

#[test]
fn payload_encodings_and_inspect_redact_secrets() {
    let s = State::new("payload");
    s.create(&[]);
    let conf = s.ok(&["client", "add", "net1", "alice"]);
    let server_key = std::fs::read_to_string(s.0.join("net1/server.key")).unwrap();
    for enc in ["nova", "guest"] {
        let p = s.0.join(format!("p.{enc}"));
        s.ok(&[
            "payload",
            "net1",
            "--encoding",
            enc,
            "--output",
            p.to_str().unwrap(),
        ]);
        let text = s.ok(&["payload", "inspect", p.to_str().unwrap()]);
        assert!(text.contains("\"network\": \"net1\""), "{text}");
        assert!(text.contains("<redacted>"));
        assert!(!text.contains(server_key.trim()), "server key leaked");
        assert!(!text.contains(value(&conf, "PresharedKey")), "psk leaked");
    }
    let guest = s.ok(&["payload", "net1"]);
    assert!(guest.lines().all(|l| l.len() <= 76));
    let zip = s.0.join("p.zip");
    s.ok(&[
        "payload",
        "net1",
        "--encoding",
        "zip",
        "--output",
        zip.to_str().unwrap(),
    ]);
    assert_eq!(&std::fs::read(&zip).unwrap()[..2], b"PK");
    assert_eq!(mode(&zip), 0o600);

    // Stdin, and garbage; no state directory is needed (nor created).
    let nowhere = s.0.join("not/created");
    let o = run_with_stdin(
        &nowhere,
        &["payload", "inspect", "-"],
        b"definitely not a payload",
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("neither a zip nor base64"));
    assert!(!nowhere.exists());
}

#[test]
fn oversized_payload_says_how_many_clients_fit() {
    let s = State::new("big");
    s.ok(&[
        "network",
        "create",
        "big",
        "--cidr",
        "10.0.0.0/16",
        "--clients",
        "700",
        "--endpoint",
        "vpn",
    ]);
    for i in 0..600 {
        s.ok(&["client", "add", "big", &format!("client-{i:03}")]);
    }
    let e = s.fails(&["payload", "big"]);
    assert!(
        e.contains("over Nova's 65535") && e.contains("of the 600 active clients fit"),
        "{e}"
    );
}

#[test]
fn import_nova_payload() {
    let s = State::new("nova");
    let autorun = "#!/bin/sh\nDHCP_LOWER=`echo $BROADCAST | awk -F. '{print $1\".\"$2\".\"$3\".\" $4 - 7 }'`\n\
                   echo \"push \\\"route 10.10.0.0 255.255.0.0 $GATEWAY\\\"\" >> server.conf\n";
    let f = s.0.with_extension("nova.zip");
    std::fs::create_dir_all(f.parent().unwrap()).unwrap();
    std::fs::write(&f, nova_zip(autorun)).unwrap();
    let inspect = s.ok(&["payload", "inspect", f.to_str().unwrap()]);
    assert!(
        inspect.contains("Nova") && inspect.contains("import-nova"),
        "{inspect}"
    );
    s.ok(&[
        "network",
        "import-nova",
        "old",
        "--cidr",
        "10.0.0.0/24",
        "--endpoint",
        "vpn",
        f.to_str().unwrap(),
    ]);
    let show = s.ok(&["network", "show", "old"]);
    assert!(
        show.contains("pool:             10.0.0.248-10.0.0.254 (7 addresses)"),
        "{show}"
    );
    assert!(
        show.contains("10.10.0.0/16") && show.contains("client-to-client: on"),
        "{show}"
    );
    // The imported network works like any other: a client routes the DMZ too, and
    // its payload is a cloudpipe v1 one.
    let conf = s.ok(&["client", "add", "old", "alice"]);
    assert_eq!(value(&conf, "Address"), "10.0.0.248/32");
    assert_eq!(value(&conf, "AllowedIPs"), "10.0.0.0/24, 10.10.0.0/16");
    let p = s.0.join("old.guest");
    s.ok(&["payload", "old", "--output", p.to_str().unwrap()]);
    assert!(s
        .ok(&["payload", "inspect", p.to_str().unwrap()])
        .contains("valid: yes (1 client;"));
    let e = s.fails(&[
        "network",
        "import-nova",
        "again",
        "--cidr",
        "10.0.0.0/24",
        p.to_str().unwrap(),
    ]);
    assert!(e.contains("already a cloudpipe v1 payload"), "{e}");
    std::fs::remove_file(f).unwrap();
}

/// Nova's API form (base64 twice) of Nova's own bootscript, read from standard input.
#[test]
fn import_nova_api_encoding_from_stdin() {
    use base64::Engine as _;
    // As rendered from bootscript.template with num_vpn=5, dmz 10.10.0.0/16
    // (the NOVA_AUTORUN of cloudpipe-core's payload tests).
    let autorun = r#"#!/bin/sh
export LC_ALL=C
export VPN_IP=`ifconfig  | grep 'inet addr:'| grep -v '127.0.0.1' | cut -d: -f2 | awk '{print $1}'`
export BROADCAST=`ifconfig  | grep 'inet addr:'| grep -v '127.0.0.1' | cut -d: -f3 | awk '{print $1}'`
DHCP_LOWER=`echo $BROADCAST | awk -F. '{print $1"."$2"."$3"." $4 - 5 }'`
DHCP_UPPER=`echo $BROADCAST | awk -F. '{print $1"."$2"."$3"." $4 - 1 }'`
echo "push \"route 10.10.0.0 255.255.0.0 $GATEWAY\"" >> server.conf
echo "duplicate-cn" >> server.conf
echo "client-to-client" >> server.conf
/etc/init.d/openvpn start
"#;
    let b64 = base64::engine::general_purpose::STANDARD;
    let nova = b64.encode(b64.encode(nova_zip(autorun)));
    let s = State::new("novastdin");
    let o = run_with_stdin(
        &s.0,
        &[
            "network",
            "import-nova",
            "old",
            "--cidr",
            "10.1.2.0/24",
            "-",
        ],
        nova.as_bytes(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let show = s.ok(&["network", "show", "old"]);
    for needle in [
        "subnet:           10.1.2.0/24",
        "pool:             10.1.2.250-10.1.2.254 (5 addresses)",
        "client routes:    10.1.2.0/24, 10.10.0.0/16",
        "client-to-client: on",
    ] {
        assert!(show.contains(needle), "{needle} missing:\n{show}");
    }
}

#[test]
fn state_dir_flag_anywhere_and_from_the_environment() {
    let s = State::new("where");
    s.create(&[]);
    let run = |args: &[&str], env: Option<&Path>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cloudpipe"));
        c.args(args);
        match env {
            Some(p) => c.env("CLOUDPIPE_STATE_DIR", p),
            None => c.env_remove("CLOUDPIPE_STATE_DIR"),
        };
        let o = c.output().unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    let dir = s.0.to_str().unwrap();
    let first = |list: String| columns(&list)[1][0].clone();
    assert_eq!(
        first(run(&["network", "list", "--state-dir", dir], None)),
        "net1"
    );
    assert_eq!(
        first(run(&["--state-dir", dir, "network", "list"], None)),
        "net1"
    );
    assert_eq!(first(run(&["network", "list"], Some(&s.0))), "net1");
}

#[test]
fn openstack_commands_cover_port_security_and_floating_ip() {
    let s = State::new("os");
    s.create(&[]);
    let out = s.ok(&["openstack", "net1"]);
    // Nothing Neutron's default policy refuses a project member.
    for admin_only in [
        "--floating-ip-address",
        "--provider-",
        "--project ",
        "--share",
    ] {
        assert!(
            !out.contains(admin_only),
            "{admin_only} needs admin:\n{out}"
        );
    }
    for needle in [
        "--protocol udp --dst-port 1194",
        "--protocol icmp",
        "ip-address=10.0.0.2",
        // The pool .250-.254 in one pair (the /29's .248, .249 are reserved with it).
        "--allowed-address ip-address=10.0.0.248/29 cloudpipe-net1",
        // The endpoint is a floating IP the project holds: attached, not created with
        // an address (admin-only under Neutron's default policy).
        "openstack floating ip set --port cloudpipe-net1 198.51.100.7",
        "--subnet-range 10.0.0.0/24",
        "--user-data cloudpipe-net1.user-data",
        "cloudpipe payload net1 --encoding guest",
    ] {
        assert!(out.contains(needle), "{needle} missing:\n{out}");
    }
    let s = State::new("os2");
    s.ok(&[
        "network",
        "create",
        "net1",
        "--cidr",
        "10.0.0.0/24",
        "--mode",
        "masquerade",
        "--port",
        "51820",
    ]);
    let out = s.ok(&["openstack", "net1", "--network-id", "tenant-net"]);
    assert!(!out.contains("--allowed-address"), "{out}");
    for needle in [
        "--protocol udp --dst-port 51820",
        "--network tenant-net",
        "FLOATING_IP=$(openstack floating ip create public -f value -c floating_ip_address)",
        "openstack floating ip set --port cloudpipe-net1 \"$FLOATING_IP\"",
        "cloudpipe network set-endpoint net1 \"$FLOATING_IP:51820\"",
    ] {
        assert!(out.contains(needle), "{needle} missing:\n{out}");
    }
}

/// The printed commands, without comments, joined where a line continues.
fn commands(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn allowed_address_pairs_never_exceed_neutrons_ten_per_port() {
    // Every pool a /24 can have, and a /22's: at most 10 pairs, each holding only
    // pool addresses or ones reserved with them, never the gateway.
    for (cidr, max) in [("10.0.0.0/24", 251), ("10.0.0.0/22", 1019)] {
        for clients in (1..=max).step_by(if max > 300 { 37 } else { 1 }) {
            let s = State::new(&format!("pairs{clients}"));
            let n = clients.to_string();
            s.ok(&["network", "create", "m", "--cidr", cidr, "--clients", &n]);
            let out = s.ok(&["openstack", "m", "--json"]);
            let r: serde_json::Value = serde_json::from_str(&out).unwrap();
            let pairs = r["port"]["allowed_address_pairs"].as_array().unwrap();
            assert!(
                (1..=10).contains(&pairs.len()),
                "{cidr} with {clients} clients: {} pairs",
                pairs.len()
            );
            for p in pairs {
                let net: ipnetwork::Ipv4Network =
                    p["ip_address"].as_str().unwrap().parse().unwrap();
                assert!(
                    !net.contains("10.0.0.1".parse().unwrap()),
                    "{net} holds the gateway"
                );
            }
        }
    }
    // The issue's case: 126 clients, which exactly takes 12 blocks.
    let s = State::new("pairs126");
    s.ok(&[
        "network",
        "create",
        "m",
        "--cidr",
        "10.0.0.0/24",
        "--clients",
        "126",
    ]);
    let out = s.ok(&["openstack", "m"]);
    assert_eq!(out.matches("--allowed-address ").count(), 1, "{out}");
    assert!(
        out.contains("--allowed-address ip-address=10.0.0.128/25"),
        "{out}"
    );
}

#[test]
fn a_pool_that_needs_more_than_ten_pairs_is_refused_at_create() {
    let s = State::new("pairsmax");
    // A /16 pool starting right above the appliance: 15 blocks avoid the gateway.
    let e = s.fails(&[
        "network",
        "create",
        "m",
        "--cidr",
        "10.0.0.0/16",
        "--clients",
        "65532",
    ]);
    assert!(
        e.contains("--clients 65532")
            && e.contains("needs 15 allowed address pairs")
            && e.contains("max_allowed_address_pair"),
        "{e}"
    );
    assert!(s.ok(&["network", "list"]).is_empty());
    // Masquerade needs no pairs: the same pool is fine.
    s.ok(&[
        "network",
        "create",
        "m",
        "--cidr",
        "10.0.0.0/16",
        "--clients",
        "65532",
        "--mode",
        "masquerade",
    ]);
}

#[test]
fn the_recipe_reserves_the_pool_and_checks_mtu_and_the_dot_2() {
    let s = State::new("reserve");
    s.create(&["--route", "192.168.50.0/24", "--mtu", "1442"]);
    let out = s.ok(&["openstack", "net1"]);
    let cmds = commands(&out);
    let has = |needle: &str| cmds.iter().any(|c| c.contains(needle));
    // Neutron's default pool less .2 and the pairs' /29.
    assert!(
        has("openstack subnet set --no-allocation-pool --allocation-pool start=10.0.0.3,end=10.0.0.247 $(openstack subnet list --network net1 --subnet-range 10.0.0.0/24 -f value -c ID)"),
        "{out}"
    );
    // The check for a port (DHCP's) holding .2, and the way out.
    assert!(
        has("openstack port list --network net1 --fixed-ip ip-address=10.0.0.2"),
        "{out}"
    );
    assert!(out.contains("--address"), "{out}");
    // The MTU the configs were made for, and how to read Neutron's.
    assert!(has("openstack network show net1 -c mtu -f value"), "{out}");
    assert!(
        out.contains("must be 1442") && out.contains("MTU = 1362"),
        "{out}"
    );
    // The tenant subnet and the pushed route reach the clients through the group.
    for from in ["10.0.0.0/24", "192.168.50.0/24"] {
        assert!(
            has(&format!(
                "--ingress --ethertype IPv4 --protocol any --remote-ip {from}"
            )),
            "{from}:\n{out}"
        );
    }
    let conf = s.ok(&["client", "add", "net1", "alice"]);
    assert_eq!(value(&conf, "MTU"), "1362");
    // network create says how to read the tenant network's MTU.
    let o = s.run(&["network", "create", "n2", "--cidr", "10.1.0.0/24"]);
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        said.contains("clients get MTU 1370, for a tenant network of MTU 1450")
            && said.contains("openstack network show -c mtu"),
        "{said}"
    );
}

#[test]
fn the_json_recipe_names_the_same_resources_as_the_commands() {
    for mode in ["proxy-arp", "masquerade"] {
        let s = State::new(&format!("json-{mode}"));
        s.create(&["--mode", mode, "--route", "192.168.50.0/24"]);
        let text = s.ok(&["openstack", "net1", "--network-id", "tenant-net"]);
        let json = s.ok(&["openstack", "net1", "--network-id", "tenant-net", "--json"]);
        let r: serde_json::Value = serde_json::from_str(&json).unwrap();
        let cmds = commands(&text);
        let find = |prefix: &str| -> Vec<&String> {
            cmds.iter().filter(|c| c.starts_with(prefix)).collect()
        };
        let sg = r["security_group"]["name"].as_str().unwrap();
        assert_eq!(find("openstack security group create").len(), 1, "{text}");
        assert!(find("openstack security group create")[0].ends_with(&format!(" {sg}")));
        let rules = find("openstack security group rule create");
        let want = r["security_group"]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), want.len(), "{text}\n{json}");
        for (c, w) in rules.iter().zip(want) {
            let proto = w["protocol"].as_str().unwrap_or("any");
            assert!(c.contains(&format!("--protocol {proto} ")), "{c} vs {w}");
            assert!(
                c.contains(&format!(
                    "--remote-ip {} ",
                    w["remote_ip_prefix"].as_str().unwrap()
                )),
                "{c}"
            );
            if let Some(p) = w["port_range_min"].as_u64() {
                assert!(c.contains(&format!("--dst-port {p} ")), "{c}");
            }
            assert!(c.ends_with(&format!(" {sg}")), "{c}");
        }
        let port = r["port"]["name"].as_str().unwrap();
        let pc = find("openstack port create");
        assert_eq!(pc.len(), 1);
        let pc = pc[0];
        assert!(pc.ends_with(&format!(" {port}")), "{pc}");
        assert!(
            pc.contains(&format!("--network {}", r["network"].as_str().unwrap())),
            "{pc}"
        );
        assert!(pc.contains(&format!(
            "ip-address={}",
            r["port"]["fixed_ips"][0]["ip_address"].as_str().unwrap()
        )));
        assert!(pc.contains(&format!("--security-group {sg}")), "{pc}");
        let pairs = r["port"]["allowed_address_pairs"].as_array().unwrap();
        assert_eq!(pc.matches("--allowed-address").count(), pairs.len(), "{pc}");
        for p in pairs {
            assert!(pc.contains(&format!(
                "--allowed-address ip-address={}",
                p["ip_address"].as_str().unwrap()
            )));
        }
        let pools: Vec<String> = r["subnet"]["allocation_pools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                format!(
                    "--allocation-pool start={},end={}",
                    p["start"].as_str().unwrap(),
                    p["end"].as_str().unwrap()
                )
            })
            .collect();
        let subnet_set = find("openstack subnet set");
        assert_eq!(subnet_set.len(), 1);
        assert!(
            subnet_set[0].contains(&format!("--no-allocation-pool {} ", pools.join(" "))),
            "{}",
            subnet_set[0]
        );
        assert!(subnet_set[0].contains(&format!(
            "--subnet-range {}",
            r["subnet"]["cidr"].as_str().unwrap()
        )));
        let fip = &r["floating_ip"];
        let attach = find("openstack floating ip set");
        assert_eq!(attach.len(), 1);
        assert!(attach[0].starts_with(&format!(
            "openstack floating ip set --port {} ",
            fip["port"].as_str().unwrap()
        )));
        match fip["floating_ip_address"].as_str() {
            Some(a) => assert!(attach[0].ends_with(a), "{}", attach[0]),
            None => assert!(
                find("FLOATING_IP=$(openstack floating ip create ")[0]
                    .contains(fip["floating_network"].as_str().unwrap()),
                "{text}"
            ),
        }
        let server = &r["server"];
        let sc = find("openstack server create");
        assert_eq!(sc.len(), 1);
        for (flag, key) in [
            ("--image", "image"),
            ("--flavor", "flavor"),
            ("--port", "port"),
            ("--user-data", "user_data"),
        ] {
            assert!(
                sc[0].contains(&format!("{flag} {}", server[key].as_str().unwrap())),
                "{}",
                sc[0]
            );
        }
        assert!(sc[0].ends_with(&format!(" {}", server["name"].as_str().unwrap())));
        let payload = find("cloudpipe payload");
        assert!(
            payload[0].contains(&format!(
                "--encoding {} --output {}",
                server["user_data_encoding"].as_str().unwrap(),
                server["user_data"].as_str().unwrap()
            )),
            "{}",
            payload[0]
        );
    }
}

#[test]
fn an_endpoint_inside_what_clients_route_through_the_tunnel_is_refused() {
    let s = State::new("loopy");
    let e = s.fails(&[
        "network",
        "create",
        "loopy",
        "--cidr",
        "10.77.0.0/24",
        "--endpoint",
        "203.0.113.10",
        "--route",
        "203.0.113.0/24",
    ]);
    assert!(
        e.contains("--endpoint 203.0.113.10:1194 is inside --route 203.0.113.0/24")
            && e.contains("use an endpoint outside it"),
        "{e}"
    );
    // Inside the tenant subnet itself, which every client routes.
    let e = s.fails(&[
        "network",
        "create",
        "loopy",
        "--cidr",
        "10.77.0.0/24",
        "--endpoint",
        "10.77.0.9",
    ]);
    assert!(e.contains("inside the tenant subnet 10.77.0.0/24"), "{e}");
    assert!(s.ok(&["network", "list"]).is_empty(), "nothing was created");
    // A default route is fine: clients exclude their endpoint from it themselves.
    s.ok(&[
        "network",
        "create",
        "full",
        "--cidr",
        "10.77.0.0/24",
        "--endpoint",
        "203.0.113.10",
        "--route",
        "0.0.0.0/0",
    ]);
    // set-endpoint checks the same.
    s.ok(&[
        "network",
        "create",
        "n",
        "--cidr",
        "10.0.0.0/24",
        "--route",
        "198.51.100.0/24",
    ]);
    let e = s.fails(&["network", "set-endpoint", "n", "198.51.100.20:51820"]);
    assert!(
        e.contains("inside the network's pushed route 198.51.100.0/24"),
        "{e}"
    );
    // A name cannot be checked: a warning that says what it must not resolve to.
    let o = s.run(&["network", "set-endpoint", "n", "vpn.example.org"]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("warning") && err.contains("10.0.0.0/24, 198.51.100.0/24"),
        "{err}"
    );
}

#[test]
fn import_nova_without_vpn_clients_takes_a_pool_size() {
    let s = State::new("nova0");
    let autorun = "#!/bin/sh\nDHCP_LOWER=`echo $BROADCAST | awk -F. '{print $1\".\"$2\".\"$3\".\" $4 - 0 }'`\n";
    let f = s.0.with_extension("nova0.zip");
    std::fs::create_dir_all(f.parent().unwrap()).unwrap();
    std::fs::write(&f, nova_zip(autorun)).unwrap();
    let path = f.to_str().unwrap();
    let o = s.run(&[
        "network",
        "import-nova",
        "old",
        "--cidr",
        "10.0.0.0/24",
        path,
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("cnt_vpn_clients = 0") && err.contains("--clients N"),
        "{err}"
    );
    assert!(s.ok(&["network", "show", "old"]).contains("(5 addresses)"));
    s.ok(&[
        "network",
        "import-nova",
        "older",
        "--cidr",
        "10.0.0.0/24",
        "--clients",
        "9",
        path,
    ]);
    assert!(s
        .ok(&["network", "show", "older"])
        .contains("10.0.0.246-10.0.0.254 (9 addresses)"));
    // An error about the pool names import-nova's own option.
    let e = s.fails(&[
        "network",
        "import-nova",
        "tiny",
        "--cidr",
        "10.0.0.0/29",
        "--clients",
        "9",
        path,
    ]);
    assert!(e.contains("--clients") && e.contains("at most 4"), "{e}");
    std::fs::remove_file(f).unwrap();
}

#[test]
fn gzipped_user_data_is_named_as_gzip() {
    use std::io::Write as _;
    let s = State::new("gzip");
    s.create(&[]);
    let p = s.0.join("net1.guest");
    s.ok(&["payload", "net1", "--output", p.to_str().unwrap()]);
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(&std::fs::read(&p).unwrap()).unwrap();
    let gz = s.0.join("net1.guest.gz");
    std::fs::write(&gz, e.finish().unwrap()).unwrap();
    let o = s.run(&["payload", "inspect", gz.to_str().unwrap()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!o.status.success());
    assert!(
        text.contains("gzip-compressed") && text.contains("gunzip"),
        "{text}"
    );
    assert!(!text.contains("Invalid symbol"), "{text}");
    let e = s.fails(&[
        "network",
        "import-nova",
        "x",
        "--cidr",
        "10.1.0.0/24",
        gz.to_str().unwrap(),
    ]);
    assert!(e.contains("gzip-compressed"), "{e}");
}

/// A wireguard-go interface in a network namespace of our own, torn down on drop
/// (even when the test fails).
struct WgNamespace {
    ns: String,
    iface: String,
    daemon: Option<std::process::Child>,
}

impl WgNamespace {
    /// Create the namespace and start wireguard-go in the foreground; return once
    /// it says its UAPI socket is listening (its own log line, not a timer).
    /// `tag` (one letter) tells apart the tests of this process running at once.
    fn start(tag: &str) -> WgNamespace {
        use std::io::BufRead;
        let pid = std::process::id();
        let mut me = WgNamespace {
            ns: format!("cpcli-{pid}{tag}"),
            // UAPI sockets (/var/run/wireguard/IFACE.sock) are shared by every
            // namespace: the name must be unique on the machine.
            iface: format!("cpw{pid}{tag}"),
            daemon: None,
        };
        let _ = std::fs::remove_file(me.socket());
        let st = Command::new("ip")
            .args(["netns", "add", &me.ns])
            .status()
            .unwrap();
        assert!(st.success(), "ip netns add {}", me.ns);
        // `ip netns exec` execs wireguard-go: the child's PID is the daemon's.
        let mut child = Command::new("ip")
            .args(["netns", "exec", &me.ns, "wireguard-go", &me.iface])
            .env("WG_PROCESS_FOREGROUND", "1")
            .env("LOG_LEVEL", "verbose")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        me.daemon = Some(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains("UAPI listener started") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(std::time::Duration::from_secs(20))
            .expect("wireguard-go did not report its UAPI listener");
        me
    }

    fn socket(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/wireguard/{}.sock", self.iface))
    }

    /// Run `wg ARGS...` inside the namespace.
    fn wg(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns, "wg"])
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for WgNamespace {
    fn drop(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            // SIGTERM lets wireguard-go remove its UAPI socket; then reap it.
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(self.socket());
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// `wg setconf`, from Debian's wireguard-tools, accepts the stripped config on a
/// wireguard-go interface in a namespace of our own, and the interface then holds
/// the client's key pair and the server as its peer.
/// Root and the WireGuard tools, or the test is skipped (saying why).
fn can_run_wireguard(test: &str) -> bool {
    let have = |b: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {b}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped {test}: needs root (network namespaces)");
        return false;
    }
    if let Some(missing) = ["wg", "wireguard-go", "ip"].into_iter().find(|b| !have(b)) {
        eprintln!("skipped {test}: {missing} is not installed (scripts/install-deps)");
        return false;
    }
    true
}

#[test]
fn wg_setconf_accepts_the_stripped_config() {
    if !can_run_wireguard("wg_setconf_accepts_the_stripped_config") {
        return;
    }
    let s = State::new("wg");
    s.create(&[
        "--dns",
        "10.0.0.1",
        "--mtu",
        "1380",
        "--route",
        "192.168.50.0/24",
    ]);
    let conf = s.ok(&["client", "add", "net1", "alice"]);
    let stripped = cloudpipe_core::client_config::strip(&conf);
    let file = s.0.join("alice.stripped");
    std::fs::write(&file, &stripped).unwrap();

    let ns = WgNamespace::start("a");
    let o = ns.wg(&["setconf", &ns.iface, file.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "wg setconf: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let shown = String::from_utf8(ns.wg(&["showconf", &ns.iface]).stdout).unwrap();
    let server_key = value(&conf, "PublicKey");
    assert!(
        shown.contains(&format!("PublicKey = {server_key}")),
        "{shown}"
    );
    assert!(shown.contains("Endpoint = 198.51.100.7:1194"), "{shown}");
    assert!(
        shown.contains("AllowedIPs = 10.0.0.0/24, 192.168.50.0/24"),
        "{shown}"
    );
    assert!(shown.contains("PersistentKeepalive = 25"), "{shown}");
    let show = s.ok(&["network", "show", "net1"]);
    assert!(show.contains(&format!("public key:       {server_key}")));
    // The interface's own public key, derived by wg from the config's private key,
    // is the one the network stored for alice.
    let own = String::from_utf8(ns.wg(&["show", &ns.iface, "public-key"]).stdout).unwrap();
    let listed = s.ok(&["client", "list", "net1"]);
    assert_eq!(columns(&listed)[1][4], own.trim(), "{listed}");

    // The unstripped file is refused: it is a wg-quick file, not a wg one.
    let raw = s.0.join("alice.conf");
    std::fs::write(&raw, &conf).unwrap();
    let o = ns.wg(&["setconf", &ns.iface, raw.to_str().unwrap()]);
    assert!(!o.status.success(), "wg setconf took Address/DNS/MTU");
}

#[test]
fn output_to_a_bare_file_name_lands_in_the_current_directory() {
    let s = State::new("cwd");
    s.create(&[]);
    let o = Command::new(env!("CARGO_BIN_EXE_cloudpipe"))
        .current_dir(&s.0)
        .args(["--state-dir", "."])
        .args(["client", "add", "net1", "alice", "--output", "alice.conf"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let conf = std::fs::read_to_string(s.0.join("alice.conf")).unwrap();
    assert_eq!(value(&conf, "Address"), "10.0.0.250/32");
    assert_eq!(mode(&s.0.join("alice.conf")), 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(&s.0)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// An add printed after boot (and perhaps run) but never confirmed with `--done`,
/// then revoked: the next publish unsets it, and its address waits for `--done`.
#[test]
fn unconfirmed_add_then_revoke_is_unset_and_holds_its_address() {
    let s = State::new("unconf");
    s.create(&["--clients", "2"]);
    s.ok(&["client", "add", "net1", "a"]);
    s.ok(&["payload", "net1"]);
    let o = s.run(&["client", "add", "net1", "carol"]);
    assert!(o.status.success());
    let hint = String::from_utf8_lossy(&o.stderr);
    assert!(hint.contains("cloudpipe-add-0=v1 carol "), "{hint}");
    let conf = String::from_utf8(o.stdout).unwrap();
    assert_eq!(value(&conf, "Address"), "10.0.0.254/32");
    let appliance = |name: &str| {
        let show = s.ok(&["client", "show", "net1", name]);
        show.lines()
            .find_map(|l| l.strip_prefix("appliance:  "))
            .unwrap()
            .to_string()
    };
    assert_eq!(appliance("a"), "in the payload it booted with");
    assert!(appliance("carol").contains("not yet published"));
    // The operator ran the printed command but forgot `publish --done`.
    s.ok(&["client", "revoke", "net1", "carol"]);
    assert!(appliance("carol").contains("revocation not yet published"));
    let cmds = s.ok(&["publish", "net1"]);
    assert!(
        cmds.contains("openstack server unset --property cloudpipe-add-0 cloudpipe-net1"),
        "{cmds}"
    );
    assert_eq!(
        s.ok(&["publish", "net1", "--json"]).trim(),
        "{}",
        "nothing is wanted on the instance"
    );
    assert!(s.fails(&["client", "add", "net1", "d"]).contains("full"));
    assert!(s
        .fails(&["client", "show", "net1", "carol", "--config"])
        .contains("revoked"));
    s.ok(&["publish", "net1", "--done"]);
    assert_eq!(appliance("carol"), "does not know it");
    assert_eq!(s.ok(&["publish", "net1"]), "");
    let conf = s.ok(&["client", "add", "net1", "d"]);
    assert_eq!(value(&conf, "Address"), "10.0.0.254/32");
    s.ok(&["publish", "net1", "--done"]);
    assert_eq!(appliance("d"), "added since boot, published");
}

#[test]
fn inspect_says_whether_the_payload_validates() {
    let s = State::new("valid");
    s.create(&[]);
    s.ok(&["client", "add", "net1", "alice"]);
    let p = s.0.join("p.guest");
    s.ok(&["payload", "net1", "--output", p.to_str().unwrap()]);
    let text = s.ok(&["payload", "inspect", p.to_str().unwrap()]);
    let show = s.ok(&["network", "show", "net1"]);
    let server_pub = show
        .lines()
        .find_map(|l| l.strip_prefix("public key:       "))
        .unwrap();
    assert!(
        text.contains(&format!(
            "valid: yes (1 client; server public key {server_pub})"
        )),
        "{text}"
    );

    // A config that decodes but puts a peer outside the pool.
    let server_key = std::fs::read_to_string(s.0.join("net1/server.key")).unwrap();
    let json = format!(
        r#"{{"version":1,"network":"n","cidr":"10.0.0.0/24","private_key":"{}",
            "peers":[{{"name":"x","public_key":"{server_pub}","preshared_key":"{}","address":"10.0.0.9"}}]}}"#,
        server_key.trim(),
        server_key.trim()
    );
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    w.start_file("cloudpipe.json", zip::write::SimpleFileOptions::default())
        .unwrap();
    w.write_all(json.as_bytes()).unwrap();
    let bad = s.0.join("bad.zip");
    std::fs::write(&bad, w.finish().unwrap().into_inner()).unwrap();
    let o = s.run(&["payload", "inspect", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8(o.stdout).unwrap();
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(out.contains("valid: no (peers[0]."), "{out}");
    assert!(err.contains("not valid: peers[0]."), "{err}");
    assert!(!out.contains(server_key.trim()) && !err.contains(server_key.trim()));
    assert_eq!(out.matches("<redacted>").count(), 2, "{out}");
}

#[test]
fn exit_status_is_2_for_usage_and_1_for_errors() {
    let s = State::new("exit");
    assert_eq!(s.run(&["network", "frobnicate"]).status.code(), Some(2));
    assert_eq!(
        s.run(&["client", "add", "net1"]).status.code(),
        Some(2),
        "missing NAME"
    );
    let o = s.run(&["network", "show", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "one-line error: {err}");
    assert!(err.starts_with("cloudpipe: "), "{err}");
}

/// Private keys appear only in the client config that was asked for.
#[test]
fn secrets_stay_out_of_every_listing() {
    let s = State::new("secrets");
    s.create(&[]);
    s.ok(&["payload", "net1"]);
    let o = s.run(&["client", "add", "net1", "alice"]);
    let conf = String::from_utf8(o.stdout).unwrap();
    let hint = String::from_utf8(o.stderr).unwrap();
    let server_key = std::fs::read_to_string(s.0.join("net1/server.key")).unwrap();
    let secrets = [
        server_key.trim().to_string(),
        value(&conf, "PrivateKey").to_string(),
        value(&conf, "PresharedKey").to_string(),
    ];
    let props = s.ok(&["publish", "net1", "--json"]);
    let p = s.0.join("p");
    s.ok(&["payload", "net1", "--output", p.to_str().unwrap()]);
    // The published add carries the preshared key (the appliance needs it, as the
    // payload does); never a private key.
    for out in [&hint, &props] {
        assert!(out.contains(&secrets[2]), "{out}");
        assert!(
            !out.contains(&secrets[0]) && !out.contains(&secrets[1]),
            "{out}"
        );
    }
    let outputs = [
        s.ok(&["network", "show", "net1"]),
        s.ok(&["network", "list"]),
        s.ok(&["client", "list", "net1"]),
        s.ok(&["client", "show", "net1", "alice"]),
        s.ok(&["openstack", "net1"]),
        s.ok(&["payload", "inspect", p.to_str().unwrap()]),
    ];
    for out in &outputs {
        for secret in &secrets {
            assert!(!out.contains(secret.as_str()), "secret in:\n{out}");
        }
    }
    for f in [
        "network.json",
        "server.key",
        "clients/alice.json",
        "baseline.json",
    ] {
        assert_eq!(mode(&s.0.join("net1").join(f)), 0o600, "{f}");
    }
    assert_eq!(mode(&s.0.join("net1/clients")), 0o700);
    assert_eq!(mode(&p), 0o600);
}

#[test]
fn delete_leaves_nothing_behind() {
    let s = State::new("del");
    s.create(&[]);
    s.ok(&["client", "add", "net1", "alice"]);
    s.ok(&["network", "delete", "net1", "--yes"]);
    let left: Vec<_> = std::fs::read_dir(&s.0)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".lock")
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // The name is free again, with new keys.
    s.create(&[]);
    assert!(s.ok(&["client", "list", "net1"]).is_empty());
}

/// Nova allows 128 metadata items: the 129th client added after boot is stored
/// (it goes into the next payload) with a warning, and `publish` refuses clearly.
#[test]
fn overlay_beyond_novas_metadata_quota_is_a_warning_then_an_error() {
    let s = State::new("quota");
    s.create(&["--clients", "200"]);
    s.ok(&["payload", "net1"]);
    for i in 0..128 {
        s.ok(&["client", "add", "net1", &format!("c{i}")]);
    }
    let o = s.run(&["client", "add", "net1", "c128"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("warning") && err.contains("128"), "{err}");
    assert!(value(&String::from_utf8_lossy(&o.stdout), "Address").ends_with("/32"));
    let e = s.fails(&["publish", "net1"]);
    assert!(e.contains("more than Nova's 128"), "{e}");
    // A new payload carries every client: nothing is left to publish.
    s.ok(&["payload", "net1"]);
    assert_eq!(s.ok(&["publish", "net1", "--json"]).trim(), "{}");
}

#[test]
fn list_shows_the_readable_networks_when_one_is_damaged() {
    let s = State::new("damaged");
    s.create(&[]);
    s.ok(&["network", "create", "net2", "--cidr", "10.0.1.0/24"]);
    std::fs::write(s.0.join("net1/network.json"), b"{ half").unwrap();
    let o = s.run(&["network", "list"]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8(o.stdout).unwrap();
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(columns(&out)[1][..2], ["net2", "10.0.1.0/24"], "{out}");
    assert!(err.contains("network net1: parsing"), "{err}");
}

#[test]
fn a_failed_output_keeps_the_client_and_says_how_to_get_the_config() {
    let s = State::new("outfail");
    s.create(&[]);
    let bad = s.0.join("no/such/dir/alice.conf");
    let e = s.fails(&[
        "client",
        "add",
        "net1",
        "alice",
        "--output",
        bad.to_str().unwrap(),
    ]);
    assert!(
        e.contains("client show net1 alice --config") && e.contains("10.0.0.250"),
        "{e}"
    );
    let conf = s.ok(&["client", "show", "net1", "alice", "--config"]);
    assert_eq!(value(&conf, "Address"), "10.0.0.250/32");
    let o = Command::new(env!("CARGO_BIN_EXE_cloudpipe"))
        .arg("--state-dir")
        .arg(&s.0)
        .args(["client", "add", "net1", "bob"])
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "an error, not a panic");
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("client show net1 bob --config"), "{e}");
}

/// What a crash can leave behind (a network folder without network.json, temp
/// files, a folder half deleted) is never taken for state.
#[test]
fn crash_leftovers_are_ignored() {
    let s = State::new("crash");
    std::fs::create_dir_all(s.0.join("net1")).unwrap();
    std::fs::write(s.0.join("net1/server.key"), b"garbage\n").unwrap();
    std::fs::create_dir_all(s.0.join(".deleted.old.42")).unwrap();
    std::fs::write(s.0.join(".deleted.old.42/network.json"), b"{}").unwrap();
    assert_eq!(s.ok(&["network", "list"]), "");
    assert!(s.fails(&["client", "list", "net1"]).contains("no network"));
    s.create(&[]);
    std::fs::create_dir_all(s.0.join("net1/clients")).unwrap();
    std::fs::write(s.0.join("net1/clients/.alice.json.tmp.999"), b"{ half").unwrap();
    let conf = s.ok(&["client", "add", "net1", "alice"]);
    assert_eq!(value(&conf, "Address"), "10.0.0.250/32");
    assert_eq!(columns(&s.ok(&["network", "list"]))[1][0], "net1");
}

#[test]
fn concurrent_creates_of_one_name_make_one_network() {
    let s = State::new("race-create");
    std::fs::create_dir_all(&s.0).unwrap();
    let children: Vec<_> = (0..4)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_cloudpipe"))
                .arg("--state-dir")
                .arg(&s.0)
                .args(["network", "create", "net1", "--cidr", "10.0.0.0/24"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut ok = 0;
    for c in children {
        let o = c.wait_with_output().unwrap();
        if o.status.success() {
            ok += 1;
        } else {
            let e = String::from_utf8_lossy(&o.stderr);
            assert!(e.contains("already exists"), "{e}");
        }
    }
    assert_eq!(ok, 1);
    // The surviving server key is the one the network shows.
    let key = std::fs::read_to_string(s.0.join("net1/server.key")).unwrap();
    assert!(key.trim().len() == 44);
    s.ok(&["network", "show", "net1"]);
}

/// A payload that did not get out is not the baseline: clients revoked before stay
/// pending, and nothing is recorded.
#[test]
fn a_payload_that_was_not_written_records_nothing() {
    let s = State::new("full");
    s.create(&[]);
    s.ok(&["client", "add", "net1", "a"]);
    let o = Command::new(env!("CARGO_BIN_EXE_cloudpipe"))
        .arg("--state-dir")
        .arg(&s.0)
        .args(["payload", "net1"])
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("writing the payload to standard output"), "{e}");
    assert!(!s.0.join("net1/baseline.json").exists());
    let bad = s.0.join("no/such/dir/p");
    s.fails(&["payload", "net1", "--output", bad.to_str().unwrap()]);
    assert!(!s.0.join("net1/baseline.json").exists());
}

/// Random client lifecycles against a naive model of the pool: adds take the lowest
/// address no client holds; a revoked client holds its address until a payload or
/// `publish --done` (at once when no payload was printed yet).
#[test]
fn client_lifecycles_follow_the_naive_model() {
    #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Debug)]
    enum St {
        Active,
        Held,
        Released,
    }
    let s = State::new("model");
    s.create(&["--clients", "4"]);
    let pool: Vec<String> = (251..=254).map(|o| format!("10.0.0.{o}")).collect();
    let mut model: Vec<(String, String, St)> = Vec::new(); // name, address, status
    let mut baseline = false;
    // How often each interesting case came up: [pool full, held, freed at once].
    let mut seen = [0; 3];
    let mut seed: u64 = 0x5eed_c10d;
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    for step in 0..60 {
        match next(10) {
            0..=4 => {
                let name = format!("c{step}");
                let held: Vec<&String> = model
                    .iter()
                    .filter(|c| c.2 != St::Released)
                    .map(|c| &c.1)
                    .collect();
                let want = pool.iter().find(|a| !held.contains(a)).cloned();
                let o = s.run(&["client", "add", "net1", &name]);
                match want {
                    Some(addr) => {
                        assert!(o.status.success(), "step {step}: add failed");
                        let conf = String::from_utf8(o.stdout).unwrap();
                        assert_eq!(value(&conf, "Address"), format!("{addr}/32"), "step {step}");
                        model.push((name, addr, St::Active));
                    }
                    None => {
                        assert!(!o.status.success(), "step {step}: pool should be full");
                        assert!(String::from_utf8_lossy(&o.stderr).contains("full"));
                        seen[0] += 1;
                    }
                }
            }
            5..=7 => {
                let active: Vec<usize> = (0..model.len())
                    .filter(|&i| model[i].2 == St::Active)
                    .collect();
                if active.is_empty() {
                    continue;
                }
                let i = active[next(active.len() as u64) as usize];
                s.ok(&["client", "revoke", "net1", &model[i].0]);
                model[i].2 = if baseline { St::Held } else { St::Released };
                seen[if baseline { 1 } else { 2 }] += 1;
            }
            8 => {
                s.ok(&["payload", "net1"]);
                baseline = true;
                for c in model.iter_mut().filter(|c| c.2 == St::Held) {
                    c.2 = St::Released;
                }
            }
            _ => {
                s.ok(&["publish", "net1", "--done"]);
                for c in model.iter_mut().filter(|c| c.2 == St::Held) {
                    c.2 = St::Released;
                }
            }
        }
        // The stored clients are the model's.
        let listed = s.ok(&["client", "list", "net1"]);
        let mut got: Vec<(String, String, St)> = columns(&listed)
            .into_iter()
            .skip(1)
            .map(|f| {
                let st = match f[2].as_str() {
                    "active" => St::Active,
                    "revoked" => St::Released,
                    _ => St::Held,
                };
                (f[0].clone(), f[1].clone(), st)
            })
            .collect();
        got.sort();
        let mut want = model.clone();
        want.sort();
        assert_eq!(got, want, "after step {step}");
    }
    assert!(seen.iter().all(|&n| n > 0), "cases not covered: {seen:?}");
}

#[test]
fn status_port_and_endpoint_travel_in_the_payload() {
    let s = State::new("status-port");
    let e = s.fails(&[
        "network",
        "create",
        "net1",
        "--cidr",
        "10.0.0.0/24",
        "--status-port",
        "0",
    ]);
    assert!(e.contains("--status-port"), "{e}");
    s.create(&["--status-port", "9100"]);
    let show = s.ok(&["network", "show", "net1"]);
    assert!(show.contains("http://10.0.0.2:9100/status"), "{show}");
    let payload = s.ok(&["payload", "net1"]);
    let inspected = run_with_stdin(&s.0, &["payload", "inspect", "-"], payload.as_bytes());
    let text = String::from_utf8_lossy(&inspected.stdout);
    assert!(text.contains("\"status_port\": 9100"), "{text}");
    assert!(
        text.contains("\"endpoint\": \"198.51.100.7:1194\""),
        "{text}"
    );
    // The recipe opens the port to the tenant subnet only.
    let recipe = s.ok(&["openstack", "net1"]);
    assert!(
        recipe.contains(
            "--ingress --ethertype IPv4 --protocol tcp --dst-port 9100 --remote-ip 10.0.0.0/24 --description"
        ),
        "{recipe}"
    );
    let plain = State::new("status-port-off");
    plain.create(&[]);
    assert!(!plain.ok(&["openstack", "net1"]).contains("--protocol tcp"));
}

/// `--state-dir` naming a file says so, instead of "File exists (os error 17)".
#[test]
fn a_state_dir_that_is_a_file_is_named() {
    let s = State::new("statefile");
    std::fs::write(&s.0, b"not a folder").unwrap();
    let e = s.fails(&["network", "list"]);
    assert!(
        e.contains("is a file, not a folder") && e.contains("--state-dir"),
        "{e}"
    );
    assert_eq!(std::fs::read(&s.0).unwrap(), b"not a folder");
    std::fs::remove_file(&s.0).unwrap();
}

/// What a new user types first, and the errors that say what is wrong and how to
/// write it instead.
#[test]
fn create_mistakes_are_named_with_the_fix() {
    let s = State::new("mistakes");
    let e = s.fails(&["network", "create", "n", "--cidr", "10.20.30.0"]);
    assert!(
        e.contains("prefix length is missing") && e.contains("10.20.30.0/24"),
        "{e}"
    );
    // Not a tenant subnet at all: the whole internet, multicast, loopback.
    for cidr in ["0.0.0.0/0", "224.0.0.0/24", "127.0.0.0/8", "169.254.0.0/16"] {
        let e = s.fails(&["network", "create", "n", "--cidr", cidr]);
        assert!(e.contains("--cidr") || e.contains("cidr"), "{cidr}: {e}");
        assert!(
            e.contains("unicast") && e.contains("10.0.0.0/24"),
            "{cidr}: {e}"
        );
    }
    let e = s.fails(&[
        "network",
        "create",
        "n",
        "--cidr",
        "10.20.30.0/24",
        "--clients",
        "0",
    ]);
    assert!(
        e.contains("--clients: a pool holds at least 1 client"),
        "{e}"
    );
    let e = s.fails(&[
        "network",
        "create",
        "n",
        "--cidr",
        "10.20.30.0/24",
        "--endpoint",
        "https://vpn.example.com",
    ]);
    assert!(
        e.contains("is a URL")
            && e.contains("host name or address")
            && e.contains("\"vpn.example.com\""),
        "{e}"
    );
    assert!(s.ok(&["network", "list"]).is_empty(), "nothing was created");
    s.create(&[]);
    let e = s.fails(&["network", "set-endpoint", "net1", "udp://203.0.113.9:1194"]);
    assert!(
        e.contains("is a URL") && e.contains("203.0.113.9:1194"),
        "{e}"
    );
}

/// `--output` and `--qr-png` never replace a file unless --force, and a refusal
/// adds nothing.
#[test]
fn output_files_are_replaced_only_with_force() {
    let s = State::new("force");
    s.create(&[]);
    let conf = s.0.join("bob.conf");
    let png = s.0.join("bob.png");
    for (flag, path) in [("--output", &conf), ("--qr-png", &png)] {
        std::fs::write(path, b"keep me").unwrap();
        let e = s.fails(&["client", "add", "net1", "bob", flag, path.to_str().unwrap()]);
        assert!(
            e.contains(&path.display().to_string()) && e.contains("--force"),
            "{e}"
        );
        assert_eq!(std::fs::read(path).unwrap(), b"keep me");
        assert!(
            s.ok(&["client", "list", "net1"]).is_empty(),
            "bob was added"
        );
    }
    s.ok(&[
        "client",
        "add",
        "net1",
        "bob",
        "--output",
        conf.to_str().unwrap(),
        "--qr-png",
        png.to_str().unwrap(),
        "--force",
    ]);
    assert_eq!(
        value(&std::fs::read_to_string(&conf).unwrap(), "Address"),
        "10.0.0.250/32"
    );
    assert_eq!(&std::fs::read(&png).unwrap()[..4], b"\x89PNG");
    assert_eq!(mode(&conf), 0o600);
    assert_eq!(mode(&png), 0o600);
}

/// `--encoding zip` to a terminal is refused (binary), as the help says; to a pipe
/// it is written. The terminal is a real pseudo-terminal (util-linux `script`).
#[test]
fn zip_payload_is_refused_on_a_terminal() {
    let s = State::new("tty");
    s.create(&[]);
    let cmd = format!(
        "{} --state-dir {} payload net1 --encoding zip",
        env!("CARGO_BIN_EXE_cloudpipe"),
        s.0.display()
    );
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let seen = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{seen}");
    assert!(seen.contains("binary: use --output FILE"), "{seen}");
    assert!(!seen.contains("PK"), "zip bytes reached the terminal");
    assert!(!s.0.join("net1/baseline.json").exists());
    let piped = s.run(&["payload", "net1", "--encoding", "zip"]);
    assert!(piped.status.success());
    assert_eq!(&piped.stdout[..2], b"PK");
}

/// Read the QR code in a PNG back, as a phone's scanner would.
fn scan_png(bytes: &[u8]) -> String {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let (w, h) = (info.width as usize, info.height as usize);
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| buf[y * w + x]);
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code");
    grids[0].decode().expect("the QR code decodes").1
}

/// The blueprint's "retrieve credentials": the config again, as text, terminal QR
/// code or PNG, while the client is active.
#[test]
fn client_show_gives_the_credentials_again() {
    let s = State::new("again");
    s.create(&[]);
    let conf = s.ok(&["client", "add", "net1", "alice"]);
    assert_eq!(s.ok(&["client", "show", "net1", "alice", "--config"]), conf);
    let qr = s.ok(&["client", "show", "net1", "alice", "--qr"]);
    assert!(qr.contains('█') && !qr.contains("PrivateKey"), "{qr}");
    let png = s.0.join("alice.png");
    let out = s.ok(&[
        "client",
        "show",
        "net1",
        "alice",
        "--qr-png",
        png.to_str().unwrap(),
    ]);
    assert!(
        !out.contains("PrivateKey"),
        "--qr-png alone puts the config in the PNG, not on standard output: {out}"
    );
    assert_eq!(scan_png(&std::fs::read(&png).unwrap()), conf);
    assert_eq!(mode(&png), 0o600);
    s.ok(&["client", "revoke", "net1", "alice"]);
    for flag in ["--config", "--qr"] {
        let e = s.fails(&["client", "show", "net1", "alice", flag]);
        assert!(e.contains("revoked"), "{e}");
    }
}

/// Not root, no state directory of one's own: the error names --state-dir and
/// CLOUDPIPE_STATE_DIR instead of a bare "Permission denied". Root only (it runs the
/// CLI as nobody with setpriv).
#[test]
fn a_user_without_a_writable_state_dir_is_told_where_to_keep_state() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run the CLI as another user");
        return;
    }
    let s = State::new("perm");
    // Root's, 0700: nobody can neither create it nor write into it.
    std::fs::create_dir_all(&s.0).unwrap();
    std::fs::set_permissions(&s.0, std::fs::Permissions::from_mode(0o700)).unwrap();
    for dir in [s.0.clone(), s.0.join("inner")] {
        let o = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                env!("CARGO_BIN_EXE_cloudpipe"),
                "network",
                "list",
            ])
            .env("CLOUDPIPE_STATE_DIR", &dir)
            .output()
            .unwrap();
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{e}");
        assert!(
            e.contains(&dir.display().to_string())
                && e.contains("--state-dir")
                && e.contains("CLOUDPIPE_STATE_DIR"),
            "{e}"
        );
    }
}

/// Lists have a header and aligned columns; every count agrees in number.
#[test]
fn lists_have_headers_aligned_columns_and_counts_that_agree() {
    let s = State::new("lists");
    let o = s.run(&[
        "network",
        "create",
        "net1",
        "--cidr",
        "10.0.0.0/24",
        "--clients",
        "2",
        "--endpoint",
        "vpn",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("(2 clients)"));
    let o = s.run(&[
        "network",
        "create",
        "a-longer-name",
        "--cidr",
        "10.0.1.0/24",
        "--clients",
        "1",
    ]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("(1 client)"),
        "{o:?}"
    );
    let show = s.ok(&["network", "show", "a-longer-name"]);
    assert!(show.contains("10.0.1.254-10.0.1.254 (1 address)"), "{show}");
    let list = s.ok(&["network", "list"]);
    assert_eq!(
        columns(&list),
        [
            ["NETWORK", "SUBNET", "APPLIANCE", "CLIENTS", "ENDPOINT"],
            [
                "a-longer-name",
                "10.0.1.0/24",
                "10.0.1.2",
                "0 of 1",
                "(none)"
            ],
            ["net1", "10.0.0.0/24", "10.0.0.2", "0 of 2", "vpn:1194"],
        ],
        "{list}"
    );

    let alice = s.ok(&["client", "add", "net1", "alice-with-a-long-name"]);
    s.ok(&["client", "add", "net1", "bob"]);
    let list = s.ok(&["client", "list", "net1"]);
    let rows = columns(&list);
    let first3: Vec<&[String]> = rows.iter().map(|r| &r[..3]).collect();
    assert_eq!(
        first3,
        [
            ["NAME", "ADDRESS", "STATUS"],
            ["alice-with-a-long-name", "10.0.0.253", "active"],
            ["bob", "10.0.0.254", "active"],
        ],
        "{list}"
    );
    assert_eq!(rows[0][3..], ["NETWORKS", "PUBLIC KEY"]);
    assert_eq!(rows[2][3], "net1");
    let shown = s.ok(&["client", "show", "net1", "bob"]);
    assert!(
        shown.contains(&format!("public key: {}\n", rows[2][4])),
        "{list}"
    );
    assert!(!list.contains('\t') && !list.contains(value(&alice, "PrivateKey")));

    s.ok(&["client", "revoke", "net1", "bob"]);
    let o = s.run(&["payload", "net1"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("payload for net1: 1 client,"),
        "{o:?}"
    );
    s.ok(&["client", "revoke", "net1", "alice-with-a-long-name"]);
    let o = s.run(&["publish", "net1", "--done"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("1 revoked address returned"),
        "{o:?}"
    );
}

/// wg-quick and the apps name the tunnel after the config file: the CLI suggests
/// and writes only names they take (`[a-zA-Z0-9_=+.-]{1,15}` then `.conf`).
#[test]
fn config_file_names_work_as_interface_names() {
    let s = State::new("ifname");
    s.ok(&[
        "network",
        "create",
        "a-network-name-of-31-characters",
        "--cidr",
        "10.0.0.0/24",
        "--endpoint",
        "vpn",
    ]);
    let net = "a-network-name-of-31-characters";
    for bad in [
        "a-network-name-of-31-characters.conf",
        "alice@home.conf",
        "alice.txt",
    ] {
        let path = s.0.join(bad);
        let e = s.fails(&[
            "client",
            "add",
            net,
            "alice",
            "--output",
            path.to_str().unwrap(),
        ]);
        assert!(
            e.contains("name the tunnel after the file")
                && e.contains(&format!("{}.conf", s.0.join("a-network-name-").display())),
            "{e}"
        );
        assert!(!path.exists());
    }
    assert!(
        s.ok(&["client", "list", net]).is_empty(),
        "nothing was added"
    );
    let o = s.run(&["client", "add", net, "alice"]);
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        said.contains("save the config as a-network-name-.conf"),
        "{said}"
    );
    let ok = s.0.join("a-network-name-.conf");
    s.ok(&[
        "client",
        "add",
        net,
        "bob",
        "--output",
        ok.to_str().unwrap(),
    ]);
    // wg-quick itself takes the name (it parses the file before any interface work;
    // `strip` does only that).
    let o = Command::new("wg-quick")
        .arg("strip")
        .arg(&ok)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `wg ARGS` with `input` on standard input; its standard output, trimmed.
fn wg_tool(args: &[&str], input: &str) -> String {
    let mut child = Command::new("wg")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "wg {args:?}");
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// A key made by `wg genkey` on "the user's device": the CLI registers its public
/// half, never holds the private one, and prints a config with a placeholder that
/// wg refuses until the key is put in, after which `wg setconf` takes it and the
/// interface has exactly the registered public key.
#[test]
fn a_key_made_on_the_device_never_reaches_the_cli() {
    if !can_run_wireguard("a_key_made_on_the_device_never_reaches_the_cli") {
        return;
    }
    let private = wg_tool(&["genkey"], "");
    let public = wg_tool(&["pubkey"], &private);
    let s = State::new("ownkey");
    s.create(&["--route", "192.168.50.0/24"]);
    let e = s.fails(&["client", "add", "net1", "dave", "--public-key", "not-a-key"]);
    assert!(e.contains("--public-key") && e.contains("wg pubkey"), "{e}");
    // A well-formed key no handshake can use (all zeros: a low-order point).
    let zero = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let e = s.fails(&["client", "add", "net1", "dave", "--public-key", zero]);
    assert!(e.contains("low-order") && e.contains("wg pubkey"), "{e}");
    assert!(
        s.ok(&["client", "list", "net1"]).lines().count() <= 1,
        "dave was added"
    );
    let e = s.fails(&[
        "client",
        "add",
        "net1",
        "dave",
        "--public-key",
        &public,
        "--qr",
    ]);
    assert!(e.contains("stays on its device"), "{e}");
    let o = s.run(&["client", "add", "net1", "dave", "--public-key", &public]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let conf = String::from_utf8(o.stdout.clone()).unwrap();
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("stays on the device"),
        "{o:?}"
    );
    let placeholder = format!("<the private key of {public}>");
    assert_eq!(value(&conf, "PrivateKey"), placeholder);
    assert_eq!(value(&conf, "Address"), "10.0.0.250/32");
    assert_eq!(s.ok(&["client", "show", "net1", "dave", "--config"]), conf);
    assert!(s
        .ok(&["client", "show", "net1", "dave"])
        .contains("made on the client's device"));
    // The private key is nowhere in the state directory; the public one is.
    let mut found_public = false;
    for f in walk(&s.0) {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        assert!(
            !text.contains(&private),
            "{} holds the private key",
            f.display()
        );
        found_public |= text.contains(&public);
    }
    assert!(found_public);
    // In the payload the appliance boots with, dave is an ordinary peer.
    let p = s.0.join("p");
    s.ok(&["payload", "net1", "--output", p.to_str().unwrap()]);
    assert!(s
        .ok(&["payload", "inspect", p.to_str().unwrap()])
        .contains(&format!("\"public_key\": \"{public}\"")));

    let ns = WgNamespace::start("d");
    let file = s.0.join("dave.stripped");
    std::fs::write(&file, cloudpipe_core::client_config::strip(&conf)).unwrap();
    let o = ns.wg(&["setconf", &ns.iface, file.to_str().unwrap()]);
    assert!(!o.status.success(), "wg took the placeholder as a key");
    let done = conf.replace(&placeholder, &private);
    std::fs::write(&file, cloudpipe_core::client_config::strip(&done)).unwrap();
    let o = ns.wg(&["setconf", &ns.iface, file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let own = String::from_utf8(ns.wg(&["show", &ns.iface, "public-key"]).stdout).unwrap();
    assert_eq!(own.trim(), public);
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The blueprint's use case 2: one user in several networks gets one key pair, an
/// address in each pool and one wg-quick file with a [Peer] per appliance;
/// destinations that would overlap are refused naming both networks; revoking in
/// one network leaves the others; `client list` shows the networks.
#[test]
fn one_client_in_several_networks_has_one_key_and_one_config() {
    let s = State::new("multi");
    let net = |name: &str, cidr: &str, extra: &[&str]| {
        let mut a = vec!["network", "create", name, "--cidr", cidr, "--endpoint"];
        let ep = format!("{name}.example.org");
        a.push(&ep);
        a.extend_from_slice(extra);
        s.ok(&a);
    };
    net("web", "10.1.0.0/24", &[]);
    net("db", "10.2.0.0/24", &["--route", "192.168.50.0/24"]);
    let pubkey = |n: &str| {
        s.ok(&["network", "show", n])
            .lines()
            .find_map(|l| l.strip_prefix("public key:       ").map(str::to_string))
            .unwrap()
    };
    let o = s.run(&["client", "add", "web,db", "alice"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let conf = String::from_utf8(o.stdout).unwrap();
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        said.contains("added client alice to web (10.1.0.250), db (10.2.0.250)")
            && said.contains("save the config as db+web.conf"),
        "{said}"
    );
    // db pushes a route outside its subnet: its address comes first, the one the
    // kernel gives that route's traffic.
    assert_eq!(value(&conf, "Address"), "10.2.0.250/24, 10.1.0.250/24");
    assert_eq!(conf.matches("PrivateKey = ").count(), 1);
    let peers: Vec<(&str, &str, &str)> = conf
        .split("[Peer]")
        .skip(1)
        .map(|p| {
            (
                value(p, "PublicKey"),
                value(p, "Endpoint"),
                value(p, "AllowedIPs"),
            )
        })
        .collect();
    let (web_key, db_key) = (pubkey("web"), pubkey("db"));
    assert_eq!(
        peers,
        [
            (
                db_key.as_str(),
                "db.example.org:1194",
                "10.2.0.0/24, 192.168.50.0/24"
            ),
            (web_key.as_str(), "web.example.org:1194", "10.1.0.0/24"),
        ]
    );
    let stripped = Command::new("sh")
        .arg("-c")
        .arg("f=$(mktemp -d)/db+web.conf; cat > \"$f\"; wg-quick strip \"$f\"")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(conf.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(
        stripped.status.success(),
        "wg-quick strip refused the config"
    );
    assert_eq!(
        String::from_utf8_lossy(&stripped.stdout)
            .matches("[Peer]")
            .count(),
        2
    );
    // One key pair: the same public key in both networks, and in both payloads.
    let web_list = columns(&s.ok(&["client", "list", "web"]));
    let db_list = columns(&s.ok(&["client", "list", "db"]));
    assert_eq!(
        web_list[1][..4],
        ["alice", "10.1.0.250", "active", "db,web"]
    );
    assert_eq!(db_list[1][..4], ["alice", "10.2.0.250", "active", "db,web"]);
    assert_eq!(web_list[1][4], db_list[1][4]);
    for n in ["web", "db"] {
        assert_eq!(s.ok(&["client", "show", n, "alice", "--config"]), conf);
    }

    // Overlapping destinations are refused, naming both networks; nothing is added.
    net("dup", "10.1.0.0/25", &[]);
    let e = s.fails(&["client", "add", "dup", "alice"]);
    assert!(
        e.contains("network dup's subnet 10.1.0.0/25 overlaps network web's subnet 10.1.0.0/24"),
        "{e}"
    );
    net("ext", "10.4.0.0/24", &["--route", "172.16.0.0/12"]);
    let e = s.fails(&["client", "add", "ext,db", "bob"]);
    assert!(e.contains("networks db and ext both push routes"), "{e}");
    for n in ["dup", "ext"] {
        assert!(s.ok(&["client", "list", n]).is_empty(), "added to {n}");
    }
    let e = s.fails(&["client", "add", "web,nope", "bob"]);
    assert!(e.contains("no network \"nope\""), "{e}");
    assert_eq!(
        columns(&s.ok(&["client", "list", "web"])).len(),
        2,
        "bob added"
    );

    // Revoked in db, alice keeps web: her config is now web alone.
    let o = s.run(&["client", "revoke", "db", "alice"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("alice stays a client of web"),
        "{o:?}"
    );
    let web_only = s.ok(&["client", "show", "web", "alice", "--config"]);
    assert_eq!(value(&web_only, "Address"), "10.1.0.250/32");
    assert_eq!(web_only.matches("[Peer]").count(), 1);
    assert_eq!(value(&web_only, "PublicKey"), web_key);
    assert_eq!(value(&web_only, "PrivateKey"), value(&conf, "PrivateKey"));
    assert_eq!(columns(&s.ok(&["client", "list", "web"]))[1][3], "web");
    assert!(s
        .fails(&["client", "show", "db", "alice", "--config"])
        .contains("revoked"));

    // Joining another network later keeps the key; the config covers both.
    net("lab", "10.3.0.0/24", &[]);
    let o = s.run(&["client", "add", "lab", "alice"]);
    let joined = String::from_utf8(o.stdout.clone()).unwrap();
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("replaces the one alice had"),
        "{o:?}"
    );
    assert_eq!(value(&joined, "PrivateKey"), value(&conf, "PrivateKey"));
    assert_eq!(value(&joined, "Address"), "10.3.0.250/24, 10.1.0.250/24");
    // A key belongs to one client.
    let alice_pub = &columns(&s.ok(&["client", "list", "web"]))[1][4];
    let e = s.fails(&["client", "add", "lab", "carol", "--public-key", alice_pub]);
    assert!(e.contains("client \"alice\"'s"), "{e}");
}

/// Every config the CLI accepts reaches the device as a file, and as a QR code when
/// one can hold it: a long config gets the lower error-correction level that fits;
/// one too long for any QR code is refused with its size and the way that works,
/// before the client is added.
#[test]
fn long_configs_get_a_qr_code_that_fits_or_a_clear_no() {
    let s = State::new("longqr");
    let routes = |n: usize| -> Vec<String> {
        (0..n)
            .flat_map(|i| {
                [
                    "--route".to_string(),
                    format!("10.{}.{}.0/24", 100 + i / 256, i % 256),
                ]
            })
            .collect()
    };
    let create = |name: &str, cidr: &str, n: usize| {
        let mut a: Vec<String> = [
            "network",
            "create",
            name,
            "--cidr",
            cidr,
            "--endpoint",
            "vpn",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(routes(n));
        s.ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    };
    // About 2500 bytes: past what a QR code holds at level M (2331), within L.
    create("long", "10.0.0.0/24", 145);
    let png = s.0.join("long.png");
    let o = s.run(&[
        "client",
        "add",
        "long",
        "alice",
        "--qr-png",
        png.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let conf = s.ok(&["client", "show", "long", "alice", "--config"]);
    assert!(conf.len() > 2331, "{}", conf.len());
    assert_eq!(scan_png(&std::fs::read(&png).unwrap()), conf);

    create("longer", "10.1.0.0/24", 230);
    let e = s.fails(&["client", "add", "longer", "bob", "--qr"]);
    assert!(
        e.contains("more than any QR code holds (2953 bytes") && e.contains("--output"),
        "{e}"
    );
    assert!(
        s.ok(&["client", "list", "longer"]).is_empty(),
        "bob was added"
    );
    let file = s.0.join("longer.conf");
    s.ok(&[
        "client",
        "add",
        "longer",
        "bob",
        "--output",
        file.to_str().unwrap(),
    ]);
    assert!(std::fs::read_to_string(&file).unwrap().len() > 2953);
}

/// Commands that lock several networks (adds to two networks, lists and shows that
/// look at every network, revokes that look at the others) run at once without
/// waiting on each other in a cycle: all finish.
#[test]
fn commands_across_networks_never_deadlock() {
    let s = State::new("deadlock");
    for (n, cidr) in [("a", "10.1.0.0/24"), ("b", "10.2.0.0/24")] {
        s.ok(&[
            "network",
            "create",
            n,
            "--cidr",
            cidr,
            "--clients",
            "60",
            "--endpoint",
            "vpn",
        ]);
    }
    s.ok(&["client", "add", "a,b", "first"]);
    let spawn = |args: Vec<String>| {
        Command::new(env!("CARGO_BIN_EXE_cloudpipe"))
            .arg("--state-dir")
            .arg(&s.0)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut children = Vec::new();
    for i in 0..12 {
        let args: Vec<&str> = match i % 4 {
            0 => vec!["client", "list", "b"],
            1 => vec!["client", "list", "a"],
            2 => vec!["client", "show", "b", "first", "--config"],
            _ => vec!["client", "add", "a,b", "x"],
        };
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        if let Some(last) = args.last_mut().filter(|a| *a == "x") {
            *last = format!("c{i}");
        }
        children.push(spawn(args));
    }
    children.push(spawn(
        ["client", "revoke", "b", "first"]
            .map(String::from)
            .to_vec(),
    ));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !children.is_empty() {
        children.retain_mut(|c| c.try_wait().unwrap().is_none());
        if std::time::Instant::now() > deadline {
            // Ours, by PID: none is left waiting after the test.
            for c in &mut children {
                let _ = c.kill();
                let _ = c.wait();
            }
            panic!(
                "{} commands still wait after 60 s: a lock cycle",
                children.len()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let list = columns(&s.ok(&["client", "list", "a"]));
    assert_eq!(list.len(), 5, "first and three adds: {list:?}");
}
