//! The cloudpipe network lab: a miniature Neutron built from network namespaces.
//!
//! ```text
//!   outside (203.0.113.2) --ext0-- router --br0-- cloudpipe (eth0, the appliance VM, .2)
//!                                  | 10.77.0.1 gw  \-- tenant-vm (eth0, 10.77.0.10)
//!                                  | 169.254.169.254 metadata server (on lo)
//!                                  | floating IP 203.0.113.10: udp 1194 DNAT -> 10.77.0.2
//! ```
//!
//! [`Lab::new`] builds it with unique namespace names; dropping the [`Lab`] kills
//! every process it started (by PID) and deletes its namespaces, also when a test
//! panics. Only traffic between these namespaces is ever sent.
//!
//! The lab runs binaries from the workspace's target directory (`cloudpiped`, and
//! `cloudpipe-lab` for the metadata server): `cargo build -p cloudpiped -p
//! cloudpipe-lab` first (scripts/test does).

pub mod client_mode;
pub mod daemon;
pub mod demo;
pub mod metadata_server;
pub mod mission;
pub mod netns;
pub mod payloads;
pub mod wg_client;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use daemon::Daemon;

/// The tenant subnet.
pub const SUBNET: &str = "10.77.0.0/24";
pub const PREFIX: u8 = 24;
/// The router's address on the tenant bridge: the subnet's gateway.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The appliance's fixed IP (its Neutron port).
pub const APPLIANCE: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// A tenant VM on the same subnet.
pub const TENANT_VM: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);
/// The metadata service, on the router's loopback.
pub const METADATA_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
pub const METADATA_URL: &str = "http://169.254.169.254";
/// The router's external address.
pub const EXTERNAL_GATEWAY: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// An external user.
pub const OUTSIDE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
/// The floating IP whose UDP 1194 is forwarded to the appliance.
pub const FLOATING_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const WG_PORT: u16 = 1194;
/// Interface names inside the namespaces.
pub const BRIDGE: &str = "br0";
pub const EXTERNAL_IF: &str = "ext0";
pub const VM_IF: &str = "eth0";
/// The daemon's TUN device.
pub const TUN: &str = "cloudpipe0";
/// Prefix of every lab namespace name: `cp<pid>x<n>-<role>`.
pub const NS_PREFIX: &str = "cp";

/// The namespaces of a lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Router,
    Cloudpipe,
    TenantVm,
    Outside,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Router, Role::Cloudpipe, Role::TenantVm, Role::Outside];
    pub fn suffix(self) -> &'static str {
        match self {
            Role::Router => "router",
            Role::Cloudpipe => "cloudpipe",
            Role::TenantVm => "tenant-vm",
            Role::Outside => "outside",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.suffix() == s)
    }
}

#[derive(Debug, Clone, Default)]
pub struct LabOptions {
    /// Play the DHCP client's part: give the appliance's eth0 10.77.0.2/24 and a
    /// default route via .1 before the daemon runs.
    pub dhcp: bool,
    /// Start the metadata server at once (else call [`Lab::start_metadata`]).
    pub metadata: bool,
}

/// Exit the test early (returning `true`) when not root and CLOUDPIPE_SKIP_LAB=1;
/// fail with a clear message when not root otherwise.
pub fn skip_unless_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return false;
    }
    if std::env::var("CLOUDPIPE_SKIP_LAB").is_ok_and(|v| v == "1") {
        eprintln!("lab test skipped: not root and CLOUDPIPE_SKIP_LAB=1");
        return true;
    }
    panic!("the lab tests need root (network namespaces, veth, TUN); run as root or set CLOUDPIPE_SKIP_LAB=1 to skip them");
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub struct Lab {
    id: String,
    dir: PathBuf,
    pids: Mutex<Vec<u32>>,
    metadata_pid: Mutex<Option<u32>>,
    created: Mutex<Vec<String>>,
    keep: bool,
}

impl Lab {
    /// Build the whole lab. On error everything built so far is torn down.
    pub fn new(opts: LabOptions) -> anyhow::Result<Lab> {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let id = format!("{NS_PREFIX}{}x{n}", std::process::id());
        let dir = std::env::temp_dir().join(format!("cloudpipe-lab-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("metadata"))?;
        let lab = Lab {
            id,
            dir,
            pids: Mutex::new(Vec::new()),
            metadata_pid: Mutex::new(None),
            created: Mutex::new(Vec::new()),
            keep: false,
        };
        lab.build(&opts)?;
        if opts.metadata {
            lab.start_metadata()?;
        }
        Ok(lab)
    }

    /// This lab's id (`cp<pid>x<n>`), the prefix of its namespace names.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A scratch directory, deleted with the lab.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn ns(&self, role: Role) -> String {
        format!("{}-{}", self.id, role.suffix())
    }
    pub fn router(&self) -> String {
        self.ns(Role::Router)
    }
    pub fn cloudpipe(&self) -> String {
        self.ns(Role::Cloudpipe)
    }
    pub fn tenant_vm(&self) -> String {
        self.ns(Role::TenantVm)
    }
    pub fn outside(&self) -> String {
        self.ns(Role::Outside)
    }

    fn build(&self, opts: &LabOptions) -> anyhow::Result<()> {
        let (r, c, t, o) = (
            self.router(),
            self.cloudpipe(),
            self.tenant_vm(),
            self.outside(),
        );
        for ns in [&r, &c, &t, &o] {
            run(Command::new("ip").args(["netns", "add", ns]))?;
            self.created.lock().unwrap().push(ns.clone());
            self.ip(ns, "link set lo up")?;
        }
        // Router: the tenant subnet's gateway, the metadata address, forwarding.
        self.ip(&r, "link add br0 type bridge")?;
        self.ip(&r, "addr add 10.77.0.1/24 dev br0")?;
        self.ip(&r, "link set br0 up")?;
        self.ip(&r, "addr add 169.254.169.254/32 dev lo")?;
        self.exec(&r, &["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])?;
        // VMs on the bridge.
        for (port, ns) in [("vcp", &c), ("vtv", &t)] {
            self.ip(
                &r,
                &format!("link add {port} type veth peer name eth0 netns {ns}"),
            )?;
            self.ip(&r, &format!("link set {port} master br0 up"))?;
            self.ip(ns, "link set eth0 up")?;
        }
        self.ip(&t, "addr add 10.77.0.10/24 dev eth0")?;
        self.ip(&t, "route add default via 10.77.0.1")?;
        if opts.dhcp {
            self.ip(&c, "addr add 10.77.0.2/24 dev eth0")?;
            self.ip(&c, "route add default via 10.77.0.1")?;
        }
        // The outside world and the floating IP.
        self.ip(
            &r,
            &format!("link add ext0 type veth peer name eth0 netns {o}"),
        )?;
        self.ip(&r, "addr add 203.0.113.1/24 dev ext0")?;
        self.ip(&r, "addr add 203.0.113.10/32 dev ext0")?;
        self.ip(&r, "link set ext0 up")?;
        self.ip(&o, "addr add 203.0.113.2/24 dev eth0")?;
        self.ip(&o, "link set eth0 up")?;
        self.ip(&o, "route add default via 203.0.113.1")?;
        self.nft(
            &r,
            "table ip lab {\n\
             \tchain prerouting {\n\
             \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
             \t\tip daddr 203.0.113.10 udp dport 1194 dnat to 10.77.0.2:1194\n\
             \t}\n\
             }\n",
        )?;
        Ok(())
    }

    /// `ip -n NS ARGS...` (ARGS split on spaces).
    pub fn ip(&self, ns: &str, args: &str) -> anyhow::Result<String> {
        run(Command::new("ip")
            .arg("-n")
            .arg(ns)
            .args(args.split_whitespace()))
    }

    /// Load an nftables script in `ns`.
    pub fn nft(&self, ns: &str, script: &str) -> anyhow::Result<()> {
        let path = self.dir.join(format!(
            "nft-{}.nft",
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::write(&path, script)?;
        self.exec(ns, &["nft", "-f", path.to_str().expect("utf-8 temp path")])?;
        Ok(())
    }

    /// Run `cmd` in `ns` to completion; its stdout, or an error with its stderr.
    pub fn exec(&self, ns: &str, cmd: &[&str]) -> anyhow::Result<String> {
        run(Command::new("ip").args(["netns", "exec", ns]).args(cmd))
    }

    /// Run `cmd` in `ns` to completion, whatever its status.
    pub fn output(&self, ns: &str, cmd: &[&str]) -> anyhow::Result<Output> {
        Ok(Command::new("ip")
            .args(["netns", "exec", ns])
            .args(cmd)
            .stdin(Stdio::null())
            .output()?)
    }

    /// Start `cmd` in `ns`; the lab kills it by PID when dropped. `ip netns exec`
    /// execs the command, so the child's PID is the command's.
    pub fn spawn(&self, ns: &str, cmd: &[&str]) -> anyhow::Result<Child> {
        self.spawn_with(ns, cmd, |_| {})
    }

    /// Like [`Lab::spawn`], with a hook to set environment, stdio and so on.
    pub fn spawn_with(
        &self,
        ns: &str,
        cmd: &[&str],
        f: impl FnOnce(&mut Command),
    ) -> anyhow::Result<Child> {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).args(cmd).stdin(Stdio::null());
        f(&mut c);
        let child = c
            .spawn()
            .map_err(|e| anyhow::anyhow!("spawning {cmd:?} in {ns}: {e}"))?;
        self.track(child.id());
        Ok(child)
    }

    /// Have the lab kill `pid` when dropped.
    pub fn track(&self, pid: u32) {
        self.pids.lock().unwrap().push(pid);
    }

    /// The directory the metadata server serves from: `user_data`, `meta_data.json`
    /// and `mode` are read on every request, so tests may rewrite them at any time.
    pub fn metadata_dir(&self) -> PathBuf {
        self.dir.join("metadata")
    }

    pub fn set_user_data(&self, bytes: &[u8]) -> anyhow::Result<()> {
        write_atomic(&self.metadata_dir().join("user_data"), bytes)
    }

    pub fn remove_user_data(&self) -> anyhow::Result<()> {
        match std::fs::remove_file(self.metadata_dir().join("user_data")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Write `meta_data.json` with this `meta` map (instance properties).
    pub fn set_meta<'a>(
        &self,
        meta: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> anyhow::Result<()> {
        let meta: serde_json::Map<String, serde_json::Value> = meta
            .into_iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
            .collect();
        let doc = serde_json::json!({
            "uuid": format!("00000000-0000-4000-8000-{:012}", std::process::id()),
            "hostname": "cloudpipe",
            "name": "cloudpipe",
            "project_id": "lab",
            "meta": meta,
        });
        write_atomic(
            &self.metadata_dir().join("meta_data.json"),
            doc.to_string().as_bytes(),
        )
    }

    /// How the metadata server misbehaves, see [`metadata_server::Mode`].
    pub fn set_metadata_mode(&self, mode: metadata_server::Mode) -> anyhow::Result<()> {
        write_atomic(&self.metadata_dir().join("mode"), mode.as_str().as_bytes())
    }

    /// Start the metadata server in the router namespace on 169.254.169.254:80 and
    /// wait until it accepts connections.
    pub fn start_metadata(&self) -> anyhow::Result<()> {
        let bin = bin_path("cloudpipe-lab")?;
        let dir = self.metadata_dir();
        let child = self.spawn_with(
            &self.router(),
            &[
                bin.to_str().expect("utf-8 path"),
                "metadata-server",
                "--dir",
                dir.to_str().expect("utf-8 path"),
                "--listen",
                "169.254.169.254:80",
            ],
            |c| {
                c.stdout(Stdio::null());
            },
        )?;
        *self.metadata_pid.lock().unwrap() = Some(child.id());
        let r = self.router();
        wait_for(Duration::from_secs(10), "metadata server listening", || {
            Ok(self
                .exec(&r, &["ss", "-Htln", "sport = :80"])?
                .contains("169.254.169.254:80"))
        })
    }

    /// Stop the metadata server (the appliance then sees connection refused).
    pub fn stop_metadata(&self) {
        if let Some(pid) = self.metadata_pid.lock().unwrap().take() {
            kill_child(pid);
        }
    }

    /// Leave namespaces and processes in place when dropped (`cloudpipe-lab up --keep`).
    pub fn keep(mut self) -> String {
        self.keep = true;
        self.id.clone()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        for pid in self.pids.lock().unwrap().drain(..) {
            kill_child(pid);
        }
        for ns in self.created.lock().unwrap().drain(..).rev() {
            // Processes someone else started in our namespaces (none should exist).
            if let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        // SAFETY: plain syscall on a PID living in our namespace.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Kill `pid` if it is still our child (unreaped or running), then reap it.
pub fn kill_child(pid: u32) {
    let ours = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // The command name may hold spaces: fields start after the last ')'.
            let rest = &s[s.rfind(')')? + 2..];
            rest.split_whitespace().nth(1)?.parse::<u32>().ok()
        })
        == Some(std::process::id());
    if ours {
        // SAFETY: plain syscalls on our own child's PID.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
            libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
        }
    }
}

/// Run a command to completion; stdout, or an error naming it with its stderr.
pub fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        anyhow::bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Poll `cond` every 50 ms until it holds or `timeout` passes.
pub fn wait_for(
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match cond() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "timed out after {timeout:?} waiting for {what}{}",
                last_err
                    .map(|e| format!(" (last error: {e:#})"))
                    .unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// A workspace binary: `$CLOUDPIPE_BIN_DIR/NAME`, else next to the running test or
/// tool (`target/<profile>/` for `target/<profile>/deps/<test>`), else
/// `$CARGO_TARGET_DIR/debug` or `<workspace>/target/debug`.
pub fn bin_path(name: &str) -> anyhow::Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(d) = std::env::var_os("CLOUDPIPE_BIN_DIR") {
        candidates.push(PathBuf::from(d).join(name));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            candidates.push(dir.join(name));
            if let Some(up) = dir.parent() {
                candidates.push(up.join(name));
            }
        }
    }
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(d).join("debug").join(name));
    }
    candidates.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/debug")
            .join(name),
    );
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{name} not found (looked in {candidates:?}): run `cargo build -p cloudpiped -p cloudpipe-lab` first"
            )
        })
}
