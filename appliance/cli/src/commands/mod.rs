//! One module per command group; this one dispatches.

mod client;
mod network;
mod openstack;
mod payload;
mod publish;
mod status;
mod up;

use crate::cli::{Cli, Command, PayloadArgs, PayloadCmd};
use crate::model::Network;
use crate::state::StateDir;
use anyhow::{Context, Result};
use std::io::Read;
use std::path::Path;

pub fn run(cli: Cli) -> Result<()> {
    // Inspecting a payload needs no state directory (nor the right to create one).
    if let Command::Payload(PayloadArgs {
        inspect: Some(PayloadCmd::Inspect { file }),
        ..
    }) = &cli.command
    {
        return payload::inspect(file);
    }
    // The client mode runs from a wg-quick file alone.
    let command = match cli.command {
        Command::Up(args) => return up::up(args),
        Command::Down(args) => return up::down(args),
        // On the appliance: the control socket alone.
        Command::Status(args) if !args.all => return status::run(None, args),
        other => other,
    };
    let state = StateDir::open(cli.state_dir)?;
    match command {
        Command::Up(_) | Command::Down(_) => unreachable!("handled above"),
        Command::Status(args) => status::run(Some(&state), args),
        Command::Network(cmd) => network::run(&state, cmd),
        Command::Client(cmd) => client::run(&state, cmd),
        Command::Payload(args) => payload::run(&state, args),
        Command::Publish(args) => publish::run(&state, args),
        Command::Openstack(args) => openstack::run(&state, args),
    }
}

/// Lock and load a network by name.
fn open(state: &StateDir, name: &str) -> Result<Network> {
    cloudpipe_core::config::check_name(name)
        .map_err(|r| anyhow::anyhow!("network name {name:?}: {r}"))?;
    Network::open(state.network_dir(name))
}

/// `1 client`, `2 clients`: a count that agrees in number.
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Rows under a header, in columns aligned with spaces (two between columns).
fn table(header: &[&str], rows: &[Vec<String>]) -> Result<String> {
    use std::io::Write;
    let mut tw = tabwriter::TabWriter::new(Vec::new()).padding(2);
    for row in std::iter::once(header.iter().map(|h| h.to_string()).collect()).chain(rows.to_vec())
    {
        writeln!(tw, "{}", row.join("\t"))?;
    }
    let bytes = tw.into_inner().context("aligning a table")?;
    // Trailing padding of the last column is never wanted.
    Ok(String::from_utf8(bytes)?
        .lines()
        .map(|l| format!("{}\n", l.trim_end()))
        .collect())
}

/// Return the addresses of revoked clients that still hold theirs (their
/// revocation has now reached the appliance); the indices of those changed.
fn release_revoked(net: &mut Network) -> Vec<usize> {
    use crate::model::Status;
    let mut changed = Vec::new();
    for (i, c) in net.clients.iter_mut().enumerate() {
        if c.status == (Status::Revoked { released: false }) {
            c.status = Status::Revoked { released: true };
            changed.push(i);
        }
    }
    changed
}

/// The server name the `openstack` command gives the appliance.
fn server_name(network: &str) -> String {
    format!("cloudpipe-{network}")
}

/// Shell-quote a word for printed commands.
fn sh(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Read a payload file (`-` for standard input), never more than the decoder looks
/// at plus one byte, so an oversized input is reported rather than slurped.
fn read_payload(file: &Path) -> Result<Vec<u8>> {
    let limit = cloudpipe_core::payload::MAX_INPUT as u64 + 1;
    let mut bytes = Vec::new();
    if file.as_os_str() == "-" {
        std::io::stdin()
            .take(limit)
            .read_to_end(&mut bytes)
            .context("reading standard input")?;
    } else {
        std::fs::File::open(file)
            .and_then(|f| f.take(limit).read_to_end(&mut bytes))
            .with_context(|| format!("reading {}", file.display()))?;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(sh("cloudpipe-net1"), "cloudpipe-net1");
        assert_eq!(sh("ip-address=10.0.0.250/31"), "ip-address=10.0.0.250/31");
        assert_eq!(sh("a b"), "'a b'");
        assert_eq!(sh(""), "''");
        assert_eq!(sh("it's"), "'it'\\''s'");
        assert_eq!(sh("$(rm -rf /)"), "'$(rm -rf /)'");
        // base64 keys carry '+', '/' and '='.
        assert_eq!(sh("k=v1 ab+/c="), "'k=v1 ab+/c='");
    }

    #[test]
    fn counts_agree_in_number() {
        assert_eq!(count(0, "client", "clients"), "0 clients");
        assert_eq!(count(1, "client", "clients"), "1 client");
        assert_eq!(count(2, "address", "addresses"), "2 addresses");
    }

    #[test]
    fn tables_have_a_header_and_aligned_columns() {
        let t = table(
            &["NAME", "ADDRESS"],
            &[
                vec!["alice".into(), "10.0.0.250".into()],
                vec!["a-much-longer-name".into(), "10.0.0.251".into()],
            ],
        )
        .unwrap();
        assert_eq!(
            t,
            "NAME                ADDRESS\n\
             alice               10.0.0.250\n\
             a-much-longer-name  10.0.0.251\n"
        );
    }

    #[test]
    fn payload_reads_are_bounded() {
        let p = std::env::temp_dir().join(format!("cp-read-{}", std::process::id()));
        std::fs::write(&p, vec![b'A'; cloudpipe_core::payload::MAX_INPUT + 100]).unwrap();
        let got = read_payload(&p).unwrap();
        assert_eq!(got.len(), cloudpipe_core::payload::MAX_INPUT + 1);
        std::fs::remove_file(&p).unwrap();
        assert!(read_payload(&p)
            .unwrap_err()
            .to_string()
            .contains("reading"));
    }
}
