//! The state directory: one folder per network, like an easy-rsa PKI.
//!
//! ```text
//! STATE/.lock                    held while networks are created, listed, deleted
//! STATE/NET/.lock                held for the whole of any command on NET
//! STATE/NET/network.json         the network (no secrets); written last on create
//! STATE/NET/server.key           the appliance's private key (0600)
//! STATE/NET/clients/NAME.json    one client, with its keys (0600)
//! STATE/NET/baseline.json        public keys in the payload last printed (what the
//!                                booted appliance knows)
//! STATE/NET/published.json       instance properties last marked published
//! ```
//!
//! Every write is atomic (temp file with its final mode, fsync, rename, fsync of the
//! directory), so a crash at any point leaves the previous state readable, and
//! concurrent commands are serialised by `flock`.

use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const DEFAULT_STATE_DIR: &str = "/var/lib/cloudpipe";

/// An exclusive lock, released when dropped.
pub struct Lock(#[allow(dead_code)] Flock<File>);

fn lock(path: &Path) -> Result<Lock> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("opening lock {}", path.display()))?;
    Flock::lock(f, FlockArg::LockExclusive)
        .map(Lock)
        .map_err(|(_, e)| anyhow::anyhow!("locking {}: {e}", path.display()))
}

pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn open(root: PathBuf) -> Result<Self> {
        create_dir(&root)?;
        Ok(Self { root })
    }

    /// Serialise commands that create, list or delete networks.
    pub fn lock(&self) -> Result<Lock> {
        lock(&self.root.join(".lock"))
    }

    pub fn network_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Names of networks that exist (have a `network.json`).
    pub fn networks(&self) -> Result<Vec<String>> {
        let mut v: Vec<String> = std::fs::read_dir(&self.root)
            .with_context(|| format!("reading {}", self.root.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("network.json").exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        v.sort();
        Ok(v)
    }
}

pub fn create_dir(path: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("creating {}", path.display()))
}

/// Lock a network's folder for the whole command.
pub fn lock_network(dir: &Path) -> Result<Lock> {
    if !dir.join("network.json").exists() {
        bail!(
            "no network {:?} in this state directory",
            dir.file_name().unwrap_or_default()
        );
    }
    lock(&dir.join(".lock"))
}

pub fn lock_new_network(dir: &Path) -> Result<Lock> {
    create_dir(dir)?;
    lock(&dir.join(".lock"))
}

/// Write `bytes` to `path` atomically with `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().context("path has a parent")?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::anyhow!("writing {}: {e}", path.display())
    })
}

pub fn write_json(path: &Path, value: &impl Serialize, mode: u32) -> Result<()> {
    let mut text = serde_json::to_vec_pretty(value)?;
    text.push(b'\n');
    write_atomic(path, &text, mode)
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Read `path` if it exists.
pub fn read_json_opt<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    if path.exists() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_write_sets_mode_and_replaces() {
        let d = std::env::temp_dir().join(format!("cp-state-test-{}", std::process::id()));
        create_dir(&d).unwrap();
        let p = d.join("x.json");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::read_dir(&d).unwrap().count(),
            1,
            "no temp files left"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
