//! A stock WireGuard client for lab tests: Debian's `wireguard-go` (userspace, the
//! kernel here has no WireGuard module) configured with `wg setconf` from the config
//! `cloudpipe client add` printed, after `wg-quick strip`, and the addresses and
//! routes wg-quick would add, set with `ip`.
//!
//! The client process is ours: it is started in the foreground and ended by PID when
//! the [`WgClient`] is dropped, even when a test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// UAPI sockets live in the file system, shared by every namespace: interface names
/// must therefore be unique per lab, not just per namespace.
const UAPI_DIR: &str = "/var/run/wireguard";

pub struct WgClient {
    ns: String,
    iface: String,
    child: Child,
    workdir: PathBuf,
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn in_ns(ns: &str, args: &[&str]) -> Result<String, String> {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).args(args);
    run(&mut c)
}

/// The values of `key` in a wg-quick config's `[Interface]` section.
fn interface_values(conf: &str, key: &str) -> Vec<String> {
    let mut in_interface = false;
    let mut out = Vec::new();
    for line in conf.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.starts_with('[') {
            in_interface = line.eq_ignore_ascii_case("[interface]");
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            if in_interface && k.trim().eq_ignore_ascii_case(key) {
                out.extend(
                    v.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty()),
                );
            }
        }
    }
    out
}

/// A client whose endpoint lies inside its own AllowedIPs sends its encrypted
/// packets into its own tunnel and reaches nothing: every lab client is checked for
/// it before it starts (wg-quick and the apps exclude the endpoint from a default
/// route only).
fn check_endpoint_outside_routes(conf: &str) -> Result<(), String> {
    let routes: Vec<ipnetwork::Ipv4Network> = allowed_ips(conf)
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    let endpoint = conf
        .lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("endpoint"))
        .map(|(_, v)| v.trim().to_string());
    match endpoint.map(|e| cloudpipe_core::client_config::endpoint_route(&e, &routes)) {
        Some(cloudpipe_core::client_config::EndpointRoute::Inside(n)) => Err(format!(
            "the client's endpoint is inside its AllowedIPs {n}: it would loop its own packets into the tunnel:\n{conf}"
        )),
        _ => Ok(()),
    }
}

/// Every `AllowedIPs` of the config's peers.
fn allowed_ips(conf: &str) -> Vec<String> {
    conf.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case("allowedips"))
        .flat_map(|(_, v)| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

impl WgClient {
    /// Bring up interface `iface` in namespace `ns` from a wg-quick config.
    pub fn up(ns: &str, iface: &str, wg_quick_conf: &str, workdir: &Path) -> Result<Self, String> {
        check_endpoint_outside_routes(wg_quick_conf)?;
        std::fs::create_dir_all(workdir).map_err(|e| e.to_string())?;
        let conf_path = workdir.join(format!("{iface}.conf"));
        write_private(&conf_path, wg_quick_conf)?;
        // wg-quick strip: what `wg setconf` accepts, exactly as wg-quick computes it.
        let stripped = run(Command::new("wg-quick").arg("strip").arg(&conf_path))?;
        let stripped_path = workdir.join(format!("{iface}.stripped"));
        write_private(&stripped_path, &stripped)?;

        let log = std::fs::File::create(workdir.join(format!("{iface}.log")))
            .map_err(|e| e.to_string())?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "wireguard-go", iface])
            .env("WG_PROCESS_FOREGROUND", "1")
            .env("LOG_LEVEL", "error")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting wireguard-go: {e}"))?;
        let client = WgClient {
            ns: ns.to_string(),
            iface: iface.to_string(),
            child,
            workdir: workdir.to_path_buf(),
        };
        let sock = Path::new(UAPI_DIR).join(format!("{iface}.sock"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            if Instant::now() > deadline {
                return Err(format!("wireguard-go did not create {}", sock.display()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        in_ns(
            ns,
            &["wg", "setconf", iface, stripped_path.to_str().unwrap()],
        )?;
        for addr in interface_values(wg_quick_conf, "Address") {
            in_ns(ns, &["ip", "address", "add", &addr, "dev", iface])?;
        }
        let mtu = interface_values(wg_quick_conf, "MTU")
            .pop()
            .unwrap_or_else(|| "1420".into());
        in_ns(ns, &["ip", "link", "set", iface, "mtu", &mtu, "up"])?;
        for net in allowed_ips(wg_quick_conf) {
            in_ns(ns, &["ip", "route", "replace", &net, "dev", iface])?;
        }
        Ok(client)
    }

    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// Seconds since the epoch of the latest handshake, if any.
    pub fn latest_handshake(&self) -> Option<u64> {
        let out = in_ns(&self.ns, &["wg", "show", &self.iface, "latest-handshakes"]).ok()?;
        let t: u64 = out.split_whitespace().nth(1)?.parse().ok()?;
        (t > 0).then_some(t)
    }

    /// Bytes received and sent through the tunnel, as `wg show transfer` counts them.
    pub fn transfer(&self) -> (u64, u64) {
        let out = in_ns(&self.ns, &["wg", "show", &self.iface, "transfer"]).unwrap_or_default();
        let mut it = out
            .split_whitespace()
            .skip(1)
            .map(|s| s.parse().unwrap_or(0));
        (it.next().unwrap_or(0), it.next().unwrap_or(0))
    }

    /// The client's public key (base64).
    pub fn public_key(&self) -> String {
        in_ns(&self.ns, &["wg", "show", &self.iface, "public-key"])
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    }

    /// The UDP port the client sends from.
    pub fn listen_port(&self) -> Option<u16> {
        in_ns(&self.ns, &["wg", "show", &self.iface, "listen-port"])
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Add `addr/prefix` to the client's interface (a network behind the client).
    pub fn add_address(&self, cidr: &str) -> Result<(), String> {
        in_ns(
            &self.ns,
            &["ip", "address", "add", cidr, "dev", &self.iface],
        )
        .map(|_| ())
    }

    /// Move to another UDP source port: from the server's side, exactly what a NAT
    /// rebinding looks like.
    pub fn set_listen_port(&self, port: u16) -> Result<(), String> {
        in_ns(
            &self.ns,
            &["wg", "set", &self.iface, "listen-port", &port.to_string()],
        )
        .map(|_| ())
    }

    /// `wg show IFACE` for test logs and the demo.
    pub fn show(&self) -> String {
        in_ns(&self.ns, &["wg", "show", &self.iface]).unwrap_or_else(|e| e)
    }
}

impl Drop for WgClient {
    fn drop(&mut self) {
        // Our own child, by PID: SIGTERM lets wireguard-go remove its socket.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(Path::new(UAPI_DIR).join(format!("{}.sock", self.iface)));
        for ext in ["conf", "stripped"] {
            let _ = std::fs::remove_file(self.workdir.join(format!("{}.{ext}", self.iface)));
        }
    }
}

fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(text.as_bytes()).map_err(|e| e.to_string())
}

impl crate::Lab {
    /// Another external user's machine: namespace `<id>-<suffix>` on its own link to
    /// the router (`<link>` there, 198.51.100.0/24 style addressing given by the
    /// caller), default route via the router, so it reaches the floating IP.
    /// Torn down with the lab.
    pub fn add_external_host(
        &self,
        suffix: &str,
        link: &str,
        subnet_third: u8,
    ) -> anyhow::Result<String> {
        let ns = format!("{}-{suffix}", self.id());
        crate::run(Command::new("ip").args(["netns", "add", &ns]))?;
        self.created.lock().unwrap().push(ns.clone());
        let r = self.router();
        self.ip(&ns, "link set lo up")?;
        self.ip(
            &r,
            &format!("link add {link} type veth peer name eth0 netns {ns}"),
        )?;
        self.ip(
            &r,
            &format!("addr add 198.51.{subnet_third}.1/24 dev {link}"),
        )?;
        self.ip(&r, &format!("link set {link} up"))?;
        self.ip(
            &ns,
            &format!("addr add 198.51.{subnet_third}.2/24 dev eth0"),
        )?;
        self.ip(&ns, "link set eth0 up")?;
        self.ip(
            &ns,
            &format!("route add default via 198.51.{subnet_third}.1"),
        )?;
        Ok(ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = "[Interface]\nAddress = 10.77.0.250/32\nPrivateKey = x\nDNS = 10.77.0.1\n\n[Peer]\nPublicKey = y\nAllowedIPs = 10.77.0.0/24, 192.168.50.0/24\nEndpoint = 203.0.113.10:1194\n";

    #[test]
    fn a_config_routing_its_own_endpoint_into_the_tunnel_is_refused() {
        assert!(check_endpoint_outside_routes(CONF).is_ok());
        let loopy = CONF.replace("192.168.50.0/24", "203.0.113.0/24");
        let e = check_endpoint_outside_routes(&loopy).unwrap_err();
        assert!(e.contains("inside its AllowedIPs 203.0.113.0/24"), "{e}");
    }

    #[test]
    fn reads_wg_quick_fields() {
        assert_eq!(interface_values(CONF, "Address"), vec!["10.77.0.250/32"]);
        assert_eq!(interface_values(CONF, "MTU"), Vec::<String>::new());
        assert_eq!(allowed_ips(CONF), vec!["10.77.0.0/24", "192.168.50.0/24"]);
    }
}
