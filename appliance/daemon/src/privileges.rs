//! Dropping privileges after setup.
//!
//! The daemon stays uid 0 but keeps one capability, CAP_NET_ADMIN: after boot it
//! still adds and removes proxy neighbour entries, deletes its TUN device and its
//! nftables table on stop. Everything else goes, from every set (effective,
//! permitted, inheritable, ambient and the bounding set, so nothing can be regained
//! by exec, e.g. of `nft`), and no_new_privs is set.
//!
//! Capabilities are per thread on Linux. The caller drops them while the process has
//! a single thread (the setup runtime is shut down first) and every thread created
//! afterwards inherits the reduced sets; [`verify`] checks all threads.

/// `CAP_NET_ADMIN` (linux/capability.h).
pub const CAP_NET_ADMIN: u32 = 12;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

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

/// Keep only `keep` (capability numbers). Requires a single-threaded process for the
/// result to hold process-wide.
pub fn drop_all_but(keep: &[u32]) -> anyhow::Result<()> {
    let threads = std::fs::read_dir("/proc/self/task")?.count();
    anyhow::ensure!(
        threads == 1,
        "dropping capabilities needs a single-threaded process, found {threads} threads"
    );
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")?
        .trim()
        .parse()?;
    for cap in 0..=last {
        // Caps already outside the bounding set (a unit's CapabilityBoundingSet=)
        // need no drop, and dropping needs CAP_SETPCAP, which such a unit may lack.
        // SAFETY: prctl with integer arguments only.
        let in_bounding =
            unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0, 0, 0) } == 1;
        if keep.contains(&cap) || !in_bounding {
            continue;
        }
        // SAFETY: prctl with integer arguments only.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if r != 0 {
            anyhow::bail!("PR_CAPBSET_DROP {cap}: {}", std::io::Error::last_os_error());
        }
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
    let mut data = [CapData::default(); 2];
    for &cap in keep {
        let (i, bit) = ((cap / 32) as usize, 1u32 << (cap % 32));
        data[i].effective |= bit;
        data[i].permitted |= bit;
    }
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    // SAFETY: hdr and data are valid, correctly laid out (repr(C)) and live for the call.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) };
    if r != 0 {
        anyhow::bail!("capset: {}", std::io::Error::last_os_error());
    }
    // SAFETY: integer arguments only.
    let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if r != 0 {
        anyhow::bail!("PR_SET_NO_NEW_PRIVS: {}", std::io::Error::last_os_error());
    }
    verify(keep)
}

/// Check that no thread of this process holds a capability outside `keep`.
pub fn verify(keep: &[u32]) -> anyhow::Result<()> {
    let allowed: u64 = keep.iter().fold(0, |m, c| m | (1u64 << c));
    for t in std::fs::read_dir("/proc/self/task")? {
        let status = std::fs::read_to_string(t?.path().join("status"))?;
        for line in status.lines() {
            for field in ["CapEff:", "CapPrm:", "CapBnd:"] {
                if let Some(hex) = line.strip_prefix(field) {
                    let v = u64::from_str_radix(hex.trim(), 16)?;
                    anyhow::ensure!(v & !allowed == 0, "a thread still has {field} {v:#x}");
                }
            }
        }
    }
    Ok(())
}

/// Whether this process can drop capabilities at all (root or CAP_SETPCAP).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
