//! `cloudpipe publish`: client changes reach a running appliance as instance
//! properties (user-data cannot change after boot).
//!
//! The CLI cannot see the instance, so it keeps two records: the properties last
//! confirmed with `publish --done` (`published.json`), and the property keys it has
//! printed `set` commands for since (`printed.json`), which the operator may have
//! run without confirming. A key in either that is no longer wanted is unset, so a
//! revoked client never survives on the appliance through a half-confirmed publish.

use super::{count, open, release_revoked, server_name, sh};
use crate::cli::PublishArgs;
use crate::model::Network;
use crate::state::{Batch, StateDir};
use anyhow::Result;
use cloudpipe_core::overlay::{property_changes, KEY_PREFIX};
use std::collections::{BTreeMap, BTreeSet};

pub fn run(state: &StateDir, args: PublishArgs) -> Result<()> {
    let mut net = open(state, &args.network)?;
    let desired = net.desired_properties()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&desired)?);
        return Ok(());
    }
    if args.done {
        let mut b = Batch::new();
        net.set_published_properties(&mut b, &desired)?;
        net.set_printed_keys(&mut b, &BTreeSet::new())?;
        let released = release_revoked(&mut net);
        for &i in &released {
            net.save_client(&mut b, &net.clients[i])?;
        }
        b.commit()?;
        eprintln!(
            "recorded as published; {} returned to the pool",
            count(released.len(), "revoked address", "revoked addresses")
        );
        return Ok(());
    }
    if net.baseline()?.is_none() {
        eprintln!(
            "nothing to publish: no payload was printed for {} yet, so no appliance runs; \
             its clients go into the payload itself (`cloudpipe payload {}`)",
            net.name(),
            net.name()
        );
        return Ok(());
    }
    let mut b = Batch::new();
    let commands = record_commands(&net, &net.desired_properties()?, &mut b)?;
    b.commit()?;
    if commands.is_empty() {
        eprintln!("nothing to publish: the instance's properties are up to date");
    } else {
        eprintln!(
            "run these, then `cloudpipe publish {} --done` to record it",
            net.name()
        );
    }
    for c in commands {
        println!("{c}");
    }
    Ok(())
}

/// The commands that bring the instance from what may be on it to `desired` (the
/// network's [`Network::desired_properties`]), recording in `b` the keys they set
/// as possibly published.
fn record_commands(
    net: &Network,
    desired: &BTreeMap<String, String>,
    b: &mut Batch,
) -> Result<Vec<String>> {
    let mut printed = net.printed_keys()?;
    let published = net.published_properties()?;
    let cmds = commands(&server_name(net.name()), &published, &printed, desired);
    let (set, _) = property_changes(&published, desired);
    let before = printed.len();
    printed.extend(set.into_iter().map(|(k, _)| k));
    if printed.len() != before {
        net.set_printed_keys(b, &printed)?;
    }
    Ok(cmds)
}

/// The `openstack server set/unset` commands that take an instance whose properties
/// are `published` (plus, perhaps, the `printed` keys) to `desired`.
pub fn commands(
    server: &str,
    published: &BTreeMap<String, String>,
    printed: &BTreeSet<String>,
    desired: &BTreeMap<String, String>,
) -> Vec<String> {
    let (set, unset) = property_changes(published, desired);
    let mut out = Vec::new();
    if !set.is_empty() {
        let props: Vec<String> = set
            .iter()
            .map(|(k, v)| format!("--property {}", sh(&format!("{k}={v}"))))
            .collect();
        out.push(format!("openstack server set {} {server}", props.join(" ")));
    }
    if !unset.is_empty() {
        let props: Vec<String> = unset
            .iter()
            .map(|k| format!("--property {}", sh(k)))
            .collect();
        out.push(format!(
            "openstack server unset {} {server}",
            props.join(" ")
        ));
    }
    // Keys printed earlier but never confirmed may or may not be on the instance;
    // one command each, since unsetting a missing key fails (and would stop the rest).
    let maybe: Vec<&String> = printed
        .iter()
        .filter(|k| k.starts_with(KEY_PREFIX))
        .filter(|k| !published.contains_key(*k) && !desired.contains_key(*k))
        .collect();
    if !maybe.is_empty() {
        out.push(
            "# set by an earlier, unconfirmed publish: a 'not found' error below is harmless"
                .to_string(),
        );
        for k in maybe {
            out.push(format!(
                "openstack server unset --property {} {server}",
                sh(k)
            ));
        }
    }
    out
}

/// After a client change (already in `net`, staged in `b`): the lines that tell
/// the operator how to publish it, if an appliance may be running (a payload was
/// printed); the keys they set are recorded in `b`. Print them once `b` is
/// committed.
pub fn hint(net: &Network, b: &mut Batch) -> Result<Vec<String>> {
    if net.baseline()?.is_none() {
        return Ok(Vec::new());
    }
    // The change itself is stored anyway: a change that cannot be published (too
    // many properties) is a warning here, and an error from `cloudpipe publish`.
    let desired = match net.desired_properties() {
        Ok(d) => d,
        Err(e) => {
            return Ok(vec![format!(
                "warning: the running appliance cannot get this change as properties: {e:#}"
            )])
        }
    };
    let cmds = record_commands(net, &desired, b)?;
    let mut lines = Vec::new();
    if cmds.is_empty() {
        lines.push(format!(
            "nothing to publish; run `cloudpipe publish {} --done` to return revoked addresses to the pool",
            net.name()
        ));
    } else {
        lines.push(format!(
            "publish this change to the running appliance, then run `cloudpipe publish {} --done`:",
            net.name()
        ));
        lines.extend(cmds.into_iter().map(|c| format!("  {c}")));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn nothing_changed_prints_nothing() {
        let m = map(&[("cloudpipe-add-0", "v1 a K - 10.0.0.250")]);
        assert!(commands("cloudpipe-n", &m, &BTreeSet::new(), &m).is_empty());
    }

    #[test]
    fn sets_and_unsets_are_quoted_for_the_shell() {
        let published = map(&[("cloudpipe-add-0", "v1 a K - 10.0.0.250"), ("owner", "x")]);
        let desired = map(&[("cloudpipe-revoke-0", "v1 K")]);
        let c = commands("cloudpipe-n", &published, &BTreeSet::new(), &desired);
        assert_eq!(
            c,
            vec![
                "openstack server set --property 'cloudpipe-revoke-0=v1 K' cloudpipe-n",
                "openstack server unset --property cloudpipe-add-0 cloudpipe-n",
            ]
        );
    }

    #[test]
    fn unconfirmed_keys_are_unset_one_by_one() {
        // add-0 and add-1 were printed (perhaps run) but never confirmed; now only
        // add-0 is wanted, with another value.
        let printed: BTreeSet<String> = ["cloudpipe-add-0", "cloudpipe-add-1", "other"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let desired = map(&[("cloudpipe-add-0", "v1 d K - 10.0.0.250")]);
        let c = commands("cloudpipe-n", &BTreeMap::new(), &printed, &desired);
        assert_eq!(c.len(), 3, "{c:?}");
        assert!(c[0].starts_with("openstack server set --property 'cloudpipe-add-0=v1 d"));
        assert!(c[1].starts_with('#'));
        assert_eq!(
            c[2],
            "openstack server unset --property cloudpipe-add-1 cloudpipe-n"
        );
    }
}
