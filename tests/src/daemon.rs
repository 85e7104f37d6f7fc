//! Running `cloudpiped` in the lab's `cloudpipe` namespace, with a NOTIFY_SOCKET the
//! test listens on and stderr captured to a file.

use crate::{bin_path, kill_child, Lab};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static N: AtomicUsize = AtomicUsize::new(0);

/// Flags the lab passes unless the caller gives them: no config drive (other tests'
/// images must not be picked up), the lab's metadata server, short timeouts, and
/// the unprivileged user to become after set-up.
pub const DEFAULT_FLAGS: [(&str, &str); 6] = [
    ("--user", crate::DAEMON_USER),
    ("--config-drive", "none"),
    ("--metadata-url", crate::METADATA_URL),
    ("--boot-timeout", "30"),
    ("--request-timeout", "2"),
    ("--poll-interval", "1"),
];

pub struct Daemon {
    child: Option<Child>,
    pid: u32,
    notify: UnixDatagram,
    log: PathBuf,
    messages: Vec<String>,
    started: Instant,
}

/// How a daemon ended.
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    pub status: ExitStatus,
    /// Wall time from start to exit.
    pub elapsed: Duration,
    /// Peak resident memory, KiB.
    pub max_rss_kib: i64,
}

impl Lab {
    /// Start `cloudpiped` in the `cloudpipe` namespace with `args` (plus
    /// [`DEFAULT_FLAGS`] not overridden there).
    pub fn start_daemon(&self, args: &[&str]) -> anyhow::Result<Daemon> {
        self.start_daemon_with(&[], args)
    }

    /// Like [`Lab::start_daemon`], run through `wrapper` (e.g. `setpriv ...`).
    pub fn start_daemon_with(&self, wrapper: &[&str], args: &[&str]) -> anyhow::Result<Daemon> {
        self.start_daemon_in(&self.cloudpipe(), wrapper, args)
    }

    /// Start `cloudpiped` in the appliance namespace of tenant network `index`; its
    /// control socket goes to [`Lab::control_dir_on`].
    pub fn start_daemon_on(&self, index: usize, args: &[&str]) -> anyhow::Result<Daemon> {
        if index == 0 || args.iter().any(|a| a.starts_with("--control-dir")) {
            return self.start_daemon_in(&self.network(index).cloudpipe, &[], args);
        }
        let dir = self.control_dir_on(index);
        let dir = dir.to_str().expect("utf-8 path");
        let mut all = vec!["--control-dir", dir];
        all.extend_from_slice(args);
        self.start_daemon_in(&self.network(index).cloudpipe, &[], &all)
    }

    /// Where network `index`'s daemon puts its control socket (the first network's:
    /// [`Lab::control_dir`]): one directory per appliance, the sockets being named
    /// after the TUN device.
    pub fn control_dir_on(&self, index: usize) -> PathBuf {
        match index {
            0 => self.control_dir(),
            i => self.dir().join(format!("wireguard{i}")),
        }
    }

    fn start_daemon_in(&self, ns: &str, wrapper: &[&str], args: &[&str]) -> anyhow::Result<Daemon> {
        let n = N.fetch_add(1, Ordering::SeqCst);
        let bin = bin_path("cloudpiped")?;
        let sock_path = self.dir().join(format!("notify-{n}.sock"));
        let notify = UnixDatagram::bind(&sock_path)?;
        notify.set_nonblocking(true)?;
        // The daemon sends READY=1 after giving up root, as systemd's own
        // notification socket allows (it is writable by all).
        std::fs::set_permissions(&sock_path, std::fs::Permissions::from_mode(0o777))?;
        let log = self.dir().join(format!("cloudpiped-{n}.log"));
        let logf = std::fs::File::create(&log)?;
        let run_dir = self.dir().join(format!("run-{n}"));
        let mut cmd: Vec<String> = wrapper.iter().map(|s| s.to_string()).collect();
        cmd.push(bin.to_string_lossy().into_owned());
        for (flag, value) in DEFAULT_FLAGS {
            if !args
                .iter()
                .any(|a| *a == flag || a.starts_with(&format!("{flag}=")))
            {
                cmd.push(flag.into());
                cmd.push(value.into());
            }
        }
        cmd.push("--runtime-dir".into());
        cmd.push(run_dir.to_string_lossy().into_owned());
        // The control socket goes to the lab's own directory: /var/run/wireguard is
        // shared by every namespace (and every test running at once).
        if !args.iter().any(|a| a.starts_with("--control-dir")) {
            cmd.push("--control-dir".into());
            cmd.push(self.control_dir().to_string_lossy().into_owned());
        }
        cmd.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = cmd.iter().map(|s| s.as_str()).collect();
        let child = self.spawn_with(ns, &refs, |c| {
            c.env("NOTIFY_SOCKET", &sock_path)
                .env("CLOUDPIPED_LOG", "debug")
                .stdout(Stdio::null())
                .stderr(logf);
        })?;
        Ok(Daemon {
            pid: child.id(),
            child: Some(child),
            notify,
            log,
            messages: Vec::new(),
            started: Instant::now(),
        })
    }
}

impl Lab {
    /// Where the lab's daemons put their control socket (`cloudpipe0.sock`).
    pub fn control_dir(&self) -> PathBuf {
        self.dir().join("wireguard")
    }

    /// The lab daemon's control socket.
    pub fn control_socket(&self) -> PathBuf {
        self.control_dir().join(format!("{}.sock", crate::TUN))
    }

    /// Run stock `wg ARGS...` against the lab's daemon, in the appliance namespace:
    /// `wg` only looks in /var/run/wireguard, so the lab's control directory is
    /// bind-mounted there, in the private mount namespace `ip netns exec` gives the
    /// command (nothing outside sees the mount). Its output, whatever its status.
    pub fn wg(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        // The mount point; wireguard-go creates it too.
        std::fs::create_dir_all(WG_RUN_DIR)?;
        let dir = self.control_dir();
        let mut cmd = vec![
            "sh",
            "-c",
            "mount --bind \"$0\" /run/wireguard && exec wg \"$@\"",
            dir.to_str().expect("utf-8 lab path"),
        ];
        cmd.extend_from_slice(args);
        self.output(&self.cloudpipe(), &cmd)
    }

    /// [`Lab::wg`] that must succeed: its standard output.
    pub fn wg_ok(&self, args: &[&str]) -> String {
        let out = self.wg(args).expect("running wg");
        assert!(
            out.status.success(),
            "wg {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Where `wg` looks for userspace implementations' sockets.
const WG_RUN_DIR: &str = "/run/wireguard";

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// sd_notify messages received so far.
    pub fn notifications(&mut self) -> &[String] {
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.notify.recv(&mut buf) {
            self.messages
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        &self.messages
    }

    /// Wait for READY=1; fails early (with the log) if the daemon exits first.
    pub fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let deadline = Instant::now() + timeout;
        loop {
            if self
                .notifications()
                .iter()
                .any(|m| m.lines().any(|l| l == "READY=1"))
            {
                return Ok(self.started.elapsed());
            }
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    anyhow::bail!(
                        "cloudpiped exited with {status} before READY=1:\n{}",
                        self.log()
                    );
                }
            }
            if Instant::now() >= deadline {
                anyhow::bail!("no READY=1 within {timeout:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: i32) {
        if self.child.is_some() {
            // SAFETY: plain syscall on our unreaped child.
            unsafe { libc::kill(self.pid as i32, sig) };
        }
    }

    /// Wait for the daemon to exit (killing it after `timeout`), with its peak memory.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<Exit> {
        match self.wait_exit_within(timeout) {
            Ok(exit) => Ok(exit),
            Err(e) => {
                if self.child.take().is_some() {
                    kill_child(self.pid);
                }
                Err(e)
            }
        }
    }

    /// Wait up to `timeout` for the daemon to exit; an error (and the daemon left
    /// running) if it has not.
    pub fn wait_exit_within(&mut self, timeout: Duration) -> anyhow::Result<Exit> {
        let deadline = Instant::now() + timeout;
        if self.child.is_none() {
            anyhow::bail!("already waited for");
        }
        let pid = self.pid as i32;
        loop {
            let mut status = 0;
            // SAFETY: zeroed rusage is a valid out-parameter.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: our own child; pointers valid for the call.
            let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
            if r == pid {
                use std::os::unix::process::ExitStatusExt;
                // Reaped: the Child must not wait or kill again.
                std::mem::forget(self.child.take());
                return Ok(Exit {
                    status: ExitStatus::from_raw(status),
                    elapsed: self.started.elapsed(),
                    max_rss_kib: ru.ru_maxrss,
                });
            }
            if r < 0 {
                anyhow::bail!("wait4: {}", std::io::Error::last_os_error());
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "cloudpiped did not exit within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(&mut self, timeout: Duration) -> anyhow::Result<Exit> {
        self.signal(libc::SIGTERM);
        self.wait_exit(timeout)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.take().is_some() {
            kill_child(self.pid);
        }
    }
}
