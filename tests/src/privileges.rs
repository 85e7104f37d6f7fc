//! The daemon's privileges, seen from outside: the systemd unit's limits applied
//! with `setpriv` (so that a lab daemon runs as the unit would run it), and what a
//! running process may do, read from /proc/PID/task/*/status (proc(5)).

use crate::{Lab, DAEMON_UID};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The unit, as installed into the image.
pub const UNIT: &str = include_str!("../../configs/cloudpiped.service");

/// Capability numbers (linux/capability.h) the lab checks for.
pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_NET_BIND_SERVICE: u32 = 10;
pub const CAP_NET_RAW: u32 = 13;

/// The values of `Key=` in the unit's `[Service]` section, every line of it.
pub fn unit_values(key: &str) -> Vec<String> {
    let prefix = format!("{key}=");
    UNIT.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(str::to_string)
        .collect()
}

/// The capabilities named in a unit setting (`CAP_NET_ADMIN CAP_...`) as a mask.
pub fn unit_caps(key: &str) -> u64 {
    unit_values(key)
        .iter()
        .flat_map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .map(|c| match c.as_str() {
            "CAP_NET_ADMIN" => 1u64 << CAP_NET_ADMIN,
            "CAP_NET_BIND_SERVICE" => 1u64 << CAP_NET_BIND_SERVICE,
            "CAP_NET_RAW" => 1u64 << CAP_NET_RAW,
            other => {
                panic!("the lab does not know {other} (in {key}=): teach tests/src/privileges.rs")
            }
        })
        .fold(0, |m, c| m | c)
}

/// `setpriv` arguments that start a program the way the unit starts the daemon:
/// its `User=` (the lab's [`DAEMON_UID`]: the image's `cloudpipe` user does not
/// exist here) with no supplementary groups, its `AmbientCapabilities=` (which the
/// kernel needs in the inheritable set too), its `CapabilityBoundingSet=` and
/// `NoNewPrivileges=`. Seccomp and the mount namespace options are systemd's own
/// and are not applied.
pub fn setpriv_as_unit() -> Vec<String> {
    assert_eq!(
        unit_values("User"),
        ["cloudpipe"],
        "the unit runs as cloudpipe"
    );
    assert_eq!(unit_values("NoNewPrivileges"), ["yes"]);
    let list = |key: &str| {
        let caps: Vec<String> = unit_values(key)
            .iter()
            .flat_map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
            .collect();
        format!("-all,{}", caps.join(","))
    };
    let ambient = list("AmbientCapabilities");
    vec![
        "setpriv".into(),
        format!("--reuid={DAEMON_UID}"),
        format!("--regid={DAEMON_UID}"),
        "--clear-groups".into(),
        format!("--inh-caps={ambient}"),
        format!("--ambient-caps={ambient}"),
        format!("--bounding-set={}", list("CapabilityBoundingSet")),
        "--no-new-privs".into(),
    ]
}

/// What systemd's `RuntimeDirectory=wireguard` gives the unit: the control
/// directory, owned by its user, with `RuntimeDirectoryMode=`.
pub fn make_runtime_directory(lab: &Lab) -> anyhow::Result<()> {
    assert_eq!(unit_values("RuntimeDirectory"), ["wireguard"]);
    let mode = u32::from_str_radix(&unit_values("RuntimeDirectoryMode")[0], 8)?;
    let dir = lab.control_dir();
    std::fs::create_dir_all(&dir)?;
    std::os::unix::fs::chown(&dir, Some(DAEMON_UID), Some(DAEMON_UID))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// One thread's ids and capability sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThreadPrivileges {
    pub tid: String,
    /// Real, effective, saved, filesystem.
    pub uid: Vec<u32>,
    pub gid: Vec<u32>,
    pub groups: Vec<u32>,
    pub cap_inh: u64,
    pub cap_prm: u64,
    pub cap_eff: u64,
    pub cap_bnd: u64,
    pub cap_amb: u64,
    pub no_new_privs: bool,
}

/// Every thread of process `pid`.
pub fn threads(pid: u32) -> anyhow::Result<Vec<ThreadPrivileges>> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let t = t?;
        let status = std::fs::read_to_string(t.path().join("status"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
                .ok_or_else(|| anyhow::anyhow!("no {name} in /proc/{pid}/task/.../status"))
        };
        let ids = |name: &str| -> anyhow::Result<Vec<u32>> {
            Ok(field(name)?
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()?)
        };
        let mask =
            |name: &str| -> anyhow::Result<u64> { Ok(u64::from_str_radix(field(name)?, 16)?) };
        out.push(ThreadPrivileges {
            tid: t.file_name().to_string_lossy().into_owned(),
            uid: ids("Uid")?,
            gid: ids("Gid")?,
            groups: ids("Groups")?,
            cap_inh: mask("CapInh")?,
            cap_prm: mask("CapPrm")?,
            cap_eff: mask("CapEff")?,
            cap_bnd: mask("CapBnd")?,
            cap_amb: mask("CapAmb")?,
            no_new_privs: field("NoNewPrivs")? == "1",
        });
    }
    Ok(out)
}

/// A file's mode bits (0o777) and owner.
pub fn mode_and_owner(path: &Path) -> anyhow::Result<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let m =
        std::fs::symlink_metadata(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok((m.mode() & 0o777, m.uid()))
}
