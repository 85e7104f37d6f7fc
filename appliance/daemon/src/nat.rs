//! Masquerade mode: client traffic leaves the tenant interface with the appliance's
//! own address, for ports without allowed-address-pairs. One nftables table,
//! `ip cloudpipe`, owned by the daemon: written atomically with `nft -f -` (replacing
//! any leftover from an earlier run) and deleted on a clean stop.

use ipnetwork::Ipv4Network;
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

pub const TABLE: &str = "cloudpipe";

/// The ruleset: delete-and-recreate in one transaction, so a restart never
/// duplicates rules and the old set stays if the new one fails to load.
pub fn ruleset(tenant_if: &str, pool: &[Ipv4Network], address: Ipv4Addr) -> String {
    let set = pool
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "table ip {TABLE} {{}}\n\
         delete table ip {TABLE}\n\
         table ip {TABLE} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\toifname \"{tenant_if}\" ip saddr {{ {set} }} snat to {address}\n\
         \t}}\n\
         }}\n"
    )
}

pub fn apply(script: &str) -> anyhow::Result<()> {
    nft(script)
}

/// Remove the table; absent is fine.
pub fn remove() -> anyhow::Result<()> {
    nft(&format!("table ip {TABLE} {{}}\ndelete table ip {TABLE}\n"))
}

fn nft(script: &str) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new("nft");
    // After set-up the daemon is no longer root: nft keeps CAP_NET_ADMIN across
    // exec only through the child's ambient set.
    // SAFETY: the hook runs between fork and exec and makes only the capget,
    // capset and prctl syscalls (async-signal-safe, no allocation, no locks).
    unsafe { cmd.pre_exec(crate::privileges::ambient_for_child) };
    let mut child = cmd
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("running nft: {e}"))?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "nft failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_is_atomic_and_names_the_pool() {
        let s = ruleset(
            "eth0",
            &[
                "10.0.0.248/30".parse().unwrap(),
                "10.0.0.252/31".parse().unwrap(),
            ],
            "10.0.0.2".parse().unwrap(),
        );
        assert!(s.starts_with("table ip cloudpipe {}\ndelete table ip cloudpipe\n"));
        assert!(s.contains(
            "oifname \"eth0\" ip saddr { 10.0.0.248/30, 10.0.0.252/31 } snat to 10.0.0.2"
        ));
    }
}
