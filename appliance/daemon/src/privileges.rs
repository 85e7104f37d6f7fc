//! Least privilege after set-up: no root, one capability.
//!
//! Set-up (TUN device, addresses, routes, forwarding, proxy ARP or the NAT table,
//! UDP 1194, the control socket and the status listener) needs CAP_NET_ADMIN,
//! CAP_NET_RAW for the ARP probes of `dad` (a packet socket), and
//! CAP_NET_BIND_SERVICE for a `status_port` below 1024. Serving needs CAP_NET_ADMIN
//! only: proxy neighbour entries and routes come and go with clients, and a clean
//! stop deletes the TUN device and the NAT table. Nothing else.
//!
//! Two ways in, one state out ([`drop_after_setup`]):
//! - started as root (the lab, a hand-run daemon): after set-up the process
//!   becomes [`RunAs`] (`--user`, default `cloudpipe`; a name or `UID:GID`), with
//!   no supplementary groups, and drops every capability but CAP_NET_ADMIN from
//!   every set, the bounding set included (so nothing can be regained by exec);
//! - started unprivileged with ambient capabilities (the systemd unit:
//!   `User=cloudpipe`, `AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW
//!   CAP_NET_BIND_SERVICE`):
//!   there is no root to give up; every capability but CAP_NET_ADMIN leaves the
//!   effective, permitted, inheritable and ambient sets. The bounding set stays the
//!   unit's (lowering it needs CAP_SETPCAP, which the unit does not grant); with
//!   no_new_privs and a non-root user nothing in it can be gained.
//!
//! Either way no_new_privs is set and [`verify`] reads every thread's
//! /proc/self/task/*/status. Capabilities and user ids are per thread on Linux:
//! the caller drops them while the process has a single thread (the set-up
//! runtime is shut down first), and every thread created afterwards inherits them.
//!
//! The one program the daemon runs, `nft` (masquerade mode), gets CAP_NET_ADMIN
//! through the ambient set of the child only ([`ambient_for_child`]); the daemon's
//! own ambient and inheritable sets stay empty.

use nix::unistd::{Gid, Uid};

/// `CAP_NET_ADMIN` (linux/capability.h).
pub const CAP_NET_ADMIN: u32 = 12;
/// `CAP_SETPCAP`: needed to lower the bounding set.
const CAP_SETPCAP: u32 = 8;
/// `CAP_SYS_ADMIN`: mounting (a vfat config drive).
pub const CAP_SYS_ADMIN: u32 = 21;
/// The capabilities kept after set-up.
pub const KEEP: &[u32] = &[CAP_NET_ADMIN];
/// The user a daemon started as root becomes, unless `--user` says otherwise: the
/// image element creates it (sysusers.d), the unit names it.
pub const DEFAULT_USER: &str = "cloudpipe";
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Who the daemon runs as after set-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub uid: Uid,
    pub gid: Gid,
    /// The name given, or `UID:GID`.
    pub name: String,
}

impl RunAs {
    /// `NAME` (looked up in the user database, with its primary group) or
    /// `UID:GID` (need not exist: a fixed id pair owns nothing else).
    pub fn parse(s: &str) -> anyhow::Result<RunAs> {
        if let Some((u, g)) = s.split_once(':') {
            let (Ok(uid), Ok(gid)) = (u.parse::<u32>(), g.parse::<u32>()) else {
                anyhow::bail!("--user {s:?}: expected a user name or UID:GID (two numbers)");
            };
            return Ok(RunAs {
                uid: Uid::from_raw(uid),
                gid: Gid::from_raw(gid),
                name: s.to_string(),
            });
        }
        match nix::unistd::User::from_name(s) {
            Ok(Some(u)) => Ok(RunAs {
                uid: u.uid,
                gid: u.gid,
                name: s.to_string(),
            }),
            Ok(None) => anyhow::bail!(
                "--user {s}: no such user. Create it (useradd --system --no-create-home \
                 --shell /usr/sbin/nologin {s}, as the image does), or pass --user UID:GID, \
                 or --user root to keep uid 0 (with CAP_NET_ADMIN only)"
            ),
            Err(e) => anyhow::bail!("--user {s}: looking it up: {e}"),
        }
    }

    pub fn is_root(&self) -> bool {
        self.uid.is_root()
    }
}

/// Where the process stands after [`drop_after_setup`], for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub uid: u32,
    pub gid: u32,
    /// The bounding set could be lowered to [`KEEP`] (started as root).
    pub bounding_lowered: bool,
}

/// Become `user` (when started as root) and keep only [`KEEP`]. Requires a
/// single-threaded process for the result to hold process-wide. Started as
/// another user, `user` must be that user (or `None`).
pub fn drop_after_setup(user: Option<&RunAs>) -> anyhow::Result<Dropped> {
    let threads = std::fs::read_dir("/proc/self/task")?.count();
    anyhow::ensure!(
        threads == 1,
        "dropping privileges needs a single-threaded process, found {threads} threads"
    );
    let started_as_root = nix::unistd::geteuid().is_root();
    let caps = capget()?;
    // Lowering the bounding set needs CAP_SETPCAP (root has it; the unit does not
    // grant it).
    let bounding_lowered = caps.effective & bit(CAP_SETPCAP) != 0;
    if bounding_lowered {
        for cap in 0..=last_cap() {
            // SAFETY: prctl with integer arguments only.
            let in_bounding =
                unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0, 0, 0) } == 1;
            if KEEP.contains(&cap) || !in_bounding {
                continue;
            }
            // SAFETY: prctl with integer arguments only.
            let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            if r != 0 {
                anyhow::bail!("PR_CAPBSET_DROP {cap}: {}", std::io::Error::last_os_error());
            }
        }
    }
    match user {
        Some(u) if started_as_root && !u.is_root() => become_user(u)?,
        Some(u) if !started_as_root && u.uid != nix::unistd::getuid() => anyhow::bail!(
            "--user {}: started as uid {} without root, so cannot become uid {}; start as root, or as that user",
            u.name,
            nix::unistd::getuid(),
            u.uid
        ),
        _ => {}
    }
    // SAFETY: integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        );
    }
    // What we may keep is what we still hold (capset cannot add to permitted).
    let held = capget()?.permitted;
    let keep = KEEP.iter().fold(0, |m, &c| m | bit(c)) & held;
    capset(Caps {
        effective: keep,
        permitted: keep,
        inheritable: 0,
    })?;
    // SAFETY: integer arguments only.
    let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if r != 0 {
        anyhow::bail!("PR_SET_NO_NEW_PRIVS: {}", std::io::Error::last_os_error());
    }
    verify(bounding_lowered)?;
    Ok(Dropped {
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        bounding_lowered,
    })
}

/// Root to `u`, keeping the permitted capabilities across the change of ids
/// (PR_SET_KEEPCAPS; the effective set is emptied by the kernel and set again by
/// the caller). No supplementary groups: the config drive and the payload were
/// read while root, and what is read again later is kept open.
fn become_user(u: &RunAs) -> anyhow::Result<()> {
    // SAFETY: integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
        anyhow::bail!("PR_SET_KEEPCAPS: {}", std::io::Error::last_os_error());
    }
    nix::unistd::setgroups(&[]).map_err(|e| anyhow::anyhow!("setgroups: {e}"))?;
    nix::unistd::setresgid(u.gid, u.gid, u.gid)
        .map_err(|e| anyhow::anyhow!("setresgid {}: {e}", u.gid))?;
    nix::unistd::setresuid(u.uid, u.uid, u.uid)
        .map_err(|e| anyhow::anyhow!("setresuid {}: {e}", u.uid))?;
    // SAFETY: integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    Ok(())
}

/// Check that no thread holds a capability outside [`KEEP`] in its effective,
/// permitted, inheritable or ambient set (and bounding set, when it could be
/// lowered), that every thread has no_new_privs and that all its ids are the
/// process's.
pub fn verify(bounding_lowered: bool) -> anyhow::Result<()> {
    let allowed = KEEP.iter().fold(0, |m, &c| m | bit(c));
    let (uid, gid) = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    for t in std::fs::read_dir("/proc/self/task")? {
        let status = std::fs::read_to_string(t?.path().join("status"))?;
        let s = ProcStatus::parse(&status);
        let mut sets = vec![
            ("CapEff", s.cap_eff),
            ("CapPrm", s.cap_prm),
            ("CapInh", s.cap_inh),
            ("CapAmb", s.cap_amb),
        ];
        if bounding_lowered {
            sets.push(("CapBnd", s.cap_bnd));
        }
        for (field, v) in sets {
            anyhow::ensure!(v & !allowed == 0, "a thread still has {field} {v:#x}");
        }
        anyhow::ensure!(s.no_new_privs, "a thread lacks no_new_privs");
        anyhow::ensure!(
            s.uids.iter().all(|&u| u == uid) && s.gids.iter().all(|&g| g == gid),
            "a thread's ids differ: uids {:?} gids {:?}",
            s.uids,
            s.gids
        );
    }
    Ok(())
}

/// The fields of /proc/PID/status (proc(5)) that say what a process may do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcStatus {
    /// Real, effective, saved set and filesystem ids.
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
    pub groups: Vec<u32>,
    pub cap_inh: u64,
    pub cap_prm: u64,
    pub cap_eff: u64,
    pub cap_bnd: u64,
    pub cap_amb: u64,
    pub no_new_privs: bool,
}

impl ProcStatus {
    pub fn parse(status: &str) -> ProcStatus {
        let mut s = ProcStatus::default();
        let numbers = |v: &str| {
            v.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        };
        let hex = |v: &str| u64::from_str_radix(v.trim(), 16).unwrap_or(u64::MAX);
        for line in status.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            match k {
                "Uid" => s.uids = numbers(v),
                "Gid" => s.gids = numbers(v),
                "Groups" => s.groups = numbers(v),
                "CapInh" => s.cap_inh = hex(v),
                "CapPrm" => s.cap_prm = hex(v),
                "CapEff" => s.cap_eff = hex(v),
                "CapBnd" => s.cap_bnd = hex(v),
                "CapAmb" => s.cap_amb = hex(v),
                "NoNewPrivs" => s.no_new_privs = v.trim() == "1",
                _ => {}
            }
        }
        s
    }
}

/// In a child between fork and exec (`CommandExt::pre_exec`): raise [`KEEP`] into
/// the inheritable and ambient sets, so that a program run without root (`nft`)
/// keeps CAP_NET_ADMIN across exec. Only capabilities still permitted are raised;
/// the parent's sets do not change. Async-signal-safe: two syscalls.
pub fn ambient_for_child() -> std::io::Result<()> {
    let caps = capget()?;
    let keep = KEEP.iter().fold(0, |m, &c| m | bit(c)) & caps.permitted;
    capset(Caps {
        inheritable: keep,
        ..caps
    })?;
    for &cap in KEEP {
        if keep & bit(cap) != 0 {
            // SAFETY: integer arguments only.
            let r = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    cap as libc::c_ulong,
                    0,
                    0,
                )
            };
            if r != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Whether this thread holds `cap` in its effective set.
pub fn has(cap: u32) -> bool {
    capget().is_ok_and(|c| c.effective & bit(cap) != 0)
}

fn bit(cap: u32) -> u64 {
    1u64 << cap
}

/// The highest capability number the kernel knows (CAP_LAST_CAP), found by
/// asking for the bounding bit of each: /proc/sys may be hidden from the daemon.
fn last_cap() -> u32 {
    // SAFETY: prctl with integer arguments only; EINVAL past the last one.
    (0..64u32)
        .take_while(
            |&c| unsafe { libc::prctl(libc::PR_CAPBSET_READ, c as libc::c_ulong, 0, 0, 0) } >= 0,
        )
        .last()
        .unwrap_or(0)
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// This thread's capability sets, 64 bits each.
#[derive(Debug, Clone, Copy)]
struct Caps {
    effective: u64,
    permitted: u64,
    inheritable: u64,
}

fn capget() -> std::io::Result<Caps> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: hdr and data are valid, correctly laid out (repr(C)) and live for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut hdr as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let join = |f: fn(&CapData) -> u32| u64::from(f(&data[0])) | u64::from(f(&data[1])) << 32;
    Ok(Caps {
        effective: join(|d| d.effective),
        permitted: join(|d| d.permitted),
        inheritable: join(|d| d.inheritable),
    })
}

fn capset(c: Caps) -> std::io::Result<()> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let split = |v: u64| [v as u32, (v >> 32) as u32];
    let (e, p, i) = (split(c.effective), split(c.permitted), split(c.inheritable));
    let data = [
        CapData {
            effective: e[0],
            permitted: p[0],
            inheritable: i[0],
        },
        CapData {
            effective: e[1],
            permitted: p[1],
            inheritable: i[1],
        },
    ];
    // SAFETY: hdr and data are valid, correctly laid out (repr(C)) and live for the call.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_names_or_id_pairs() {
        let u = RunAs::parse("61194:61195").unwrap();
        assert_eq!((u.uid.as_raw(), u.gid.as_raw()), (61194, 61195));
        assert!(RunAs::parse("root").unwrap().is_root());
        for bad in ["1:x", ":", "12:"] {
            assert!(RunAs::parse(bad).is_err(), "{bad}");
        }
        let missing = RunAs::parse("no-such-user-cloudpipe")
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("useradd") && missing.contains("UID:GID"),
            "{missing}"
        );
    }

    #[test]
    fn proc_status_is_read() {
        let s = ProcStatus::parse(
            "Name:\tcloudpiped\nUid:\t61194\t61194\t61194\t61194\nGid:\t61194\t61194\t61194\t61194\n\
             Groups:\t\nCapInh:\t0000000000000000\nCapPrm:\t0000000000001000\n\
             CapEff:\t0000000000001000\nCapBnd:\t0000000000001000\nCapAmb:\t0000000000000000\n\
             NoNewPrivs:\t1\n",
        );
        assert_eq!(s.uids, vec![61194; 4]);
        assert!(s.groups.is_empty());
        assert_eq!((s.cap_eff, s.cap_prm, s.cap_amb), (1 << 12, 1 << 12, 0));
        assert!(s.no_new_privs);
    }

    #[test]
    fn this_thread_reads_its_own_sets() {
        let c = capget().unwrap();
        let s = ProcStatus::parse(&std::fs::read_to_string("/proc/thread-self/status").unwrap());
        assert_eq!(
            (c.effective, c.permitted, c.inheritable),
            (s.cap_eff, s.cap_prm, s.cap_inh)
        );
        assert!(
            last_cap() >= 37,
            "CAP_AUDIT_READ (37) exists since Linux 3.16"
        );
    }
}
