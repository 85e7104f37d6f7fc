//! The state directory: one folder per network, like an easy-rsa PKI.
//!
//! ```text
//! STATE/.lock                    held while networks are created, listed, deleted
//! STATE/NET/.lock                held for the whole of any command on NET
//! STATE/NET/network.json         the network (no secrets)
//! STATE/NET/server.key           the appliance's private key (0600)
//! STATE/NET/clients/NAME.json    one client, with its keys (0600; no private key
//!                                when it was made on the user's device); a client
//!                                of several networks has a file in each, with the
//!                                same key pair
//! STATE/NET/baseline.json        public keys in the payload last printed (what the
//!                                booted appliance knows)
//! STATE/NET/published.json       instance properties last marked published
//! STATE/NET/printed.json         property keys printed since, perhaps set
//! ```
//!
//! Every write is atomic (temp file with its final mode, fsync, rename, fsync of the
//! directory), so a crash at any point leaves the previous state readable, and
//! concurrent commands are serialised by `flock`. Files a command changes together
//! go through one [`Batch`] (all written before any is renamed) and a new network's
//! folder appears whole ([`create_dir_atomic`]): a full disk or a read-only file
//! system fails a command before it changes anything. On a read-only file system
//! commands take no lock, so the reading ones still work.

use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const DEFAULT_STATE_DIR: &str = "/var/lib/cloudpipe";

/// An exclusive lock, released when dropped; none on a read-only file system,
/// where nothing can change.
pub struct Lock(#[allow(dead_code)] Option<Flock<File>>);

fn lock(path: &Path) -> Result<Lock> {
    use std::os::unix::fs::MetadataExt;
    loop {
        let f = match OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)
        {
            Ok(f) => f,
            // Reading commands still work on a read-only state directory (a backup,
            // a full disk remounted read-only); writing ones fail at their first
            // write, naming the file.
            Err(e) if e.raw_os_error() == Some(nix::libc::EROFS) => return Ok(Lock(None)),
            Err(e) => return Err(anyhow::anyhow!("opening lock {}: {e}", path.display())),
        };
        let held = Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, e)| anyhow::anyhow!("locking {}: {e}", path.display()))?;
        // While we waited, the folder may have been deleted (and even created again):
        // a lock on a file no longer at `path` excludes nobody.
        let ours = held.metadata()?;
        match std::fs::metadata(path) {
            Ok(now) if now.dev() == ours.dev() && now.ino() == ours.ino() => {
                return Ok(Lock(Some(held)))
            }
            _ => continue,
        }
    }
}

pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Create (0700) or open the state directory, which this user must be able to
    /// write: every command takes a lock in it.
    pub fn open(root: PathBuf) -> Result<Self> {
        if root.exists() && !root.is_dir() {
            bail!(
                "the state directory {} is a file, not a folder: --state-dir (or \
                 CLOUDPIPE_STATE_DIR) names the folder that holds every network",
                root.display()
            );
        }
        let usable = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .and_then(|()| {
                nix::unistd::access(
                    &root,
                    nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
                )
                .map_err(std::io::Error::from)
            });
        match usable {
            Ok(()) => Ok(Self { root }),
            // A read-only file system (a backup, a full disk remounted read-only):
            // reading commands work, writing ones fail at their first write, naming it.
            Err(e) if e.raw_os_error() == Some(nix::libc::EROFS) && root.is_dir() => {
                Ok(Self { root })
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => bail!(
                "cannot use the state directory {} (permission denied): it holds every \
                 network's keys and the default one needs root. Run as root, or keep the \
                 state in a directory of your own with --state-dir DIR or \
                 CLOUDPIPE_STATE_DIR=DIR",
                root.display()
            ),
            Err(e) => Err(e).with_context(|| format!("creating {}", root.display())),
        }
    }

    /// Serialise commands that create, list or delete networks.
    pub fn lock(&self) -> Result<Lock> {
        lock(&self.root.join(".lock"))
    }

    pub fn network_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Names of networks that exist (have a `network.json`).
    pub fn networks(&self) -> Result<Vec<String>> {
        let mut v: Vec<String> = std::fs::read_dir(&self.root)
            .with_context(|| format!("reading {}", self.root.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
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
    let lock = lock(&dir.join(".lock"))?;
    // A `network delete` may have won the race for the lock.
    if !dir.join("network.json").exists() {
        bail!(
            "network {:?} was deleted while this command waited for it",
            dir.file_name().unwrap_or_default()
        );
    }
    Ok(lock)
}

/// The directory holding `path` (`.` for a bare file name such as `--output a.conf`).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Write `bytes` to `path` atomically with `mode`: a temporary file in the same
/// directory, created with its final mode, synced, renamed over `path`, and the
/// directory synced so the rename itself survives a crash.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut b = Batch::new();
    b.write(path, bytes, mode)?;
    b.commit()
}

/// Like [`write_atomic`], but never replaces an existing file: the finished
/// temporary file is hard-linked to `path`, which fails if `path` exists (even one
/// created a moment ago by someone else).
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut b = Batch::new();
    b.write_new(path, bytes, mode)?;
    b.commit()
}

/// The error for an output file that is there already.
pub fn exists_error(path: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "{} exists already: choose another file, or add --force to replace it",
        path.display()
    )
}

/// Files changed together, all or none: [`Batch::write`] writes each to a
/// temporary file beside it (final mode, synced) at once; [`Batch::commit`]
/// puts them in place only when every one was written. A full disk or a
/// read-only file system fails while writing the temporary files, and then no file
/// changes (the temporary ones are removed when the batch is dropped). Renames and
/// links need no room, so a commit does not fail for want of space.
#[derive(Default)]
pub struct Batch {
    /// Temporary file, final path, whether an existing file there is replaced; in
    /// the order written.
    staged: Vec<(PathBuf, PathBuf, bool)>,
    /// Outputs that are not regular files (`/dev/stdout`, `/dev/null`, a pipe):
    /// written into at commit, after the renames. A rename over them would put a
    /// regular file in place of the device (as root, in /dev).
    direct: Vec<(PathBuf, Vec<u8>)>,
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Write `bytes` for `path` (mode `mode`) to a temporary file; on commit it
    /// replaces whatever is at `path`. An error names `path`.
    pub fn write(&mut self, path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
        self.stage(path, bytes, mode, true)
    }

    /// Like [`Batch::write`], but the commit fails with [`exists_error`] (changing
    /// nothing) if a file is at `path` by then.
    pub fn write_new(&mut self, path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
        self.stage(path, bytes, mode, false)
    }

    fn stage(&mut self, path: &Path, bytes: &[u8], mode: u32, replace: bool) -> Result<()> {
        if let Ok(meta) = std::fs::metadata(path) {
            let kind = meta.file_type();
            if kind.is_dir() {
                bail!("{} is a folder: name a file to write", path.display());
            }
            if !kind.is_file() {
                if !replace {
                    return Err(exists_error(path));
                }
                self.direct.push((path.to_path_buf(), bytes.to_vec()));
                return Ok(());
            }
        }
        let name = path
            .file_name()
            .with_context(|| format!("{} is not a file name", path.display()))?;
        let tmp = parent_dir(path).join(format!(
            ".{}.tmp.{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let write = || -> std::io::Result<()> {
            // A leftover of a crashed run that had our PID: never ours to keep.
            let _ = std::fs::remove_file(&tmp);
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()
        };
        match write() {
            Ok(()) => {
                self.staged.push((tmp, path.to_path_buf(), replace));
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(anyhow::anyhow!("writing {}: {e}", path.display()))
            }
        }
    }

    /// [`Batch::write`] of `value` as pretty JSON.
    pub fn write_json(&mut self, path: &Path, value: &impl Serialize, mode: u32) -> Result<()> {
        let mut text = serde_json::to_vec_pretty(value)?;
        text.push(b'\n');
        self.write(path, &text, mode)
    }

    /// Put every file in place, then sync their folders. New files come first (a
    /// hard link fails if something is at the path), so that one found there
    /// undoes the links made and leaves every replaced file as it was.
    pub fn commit(mut self) -> Result<()> {
        let mut staged = std::mem::take(&mut self.staged);
        staged.sort_by_key(|(_, _, replace)| *replace);
        let cleanup = |from: &[(PathBuf, PathBuf, bool)]| {
            for (t, _, _) in from {
                let _ = std::fs::remove_file(t);
            }
        };
        let mut linked: Vec<&Path> = Vec::new();
        let mut dirs: Vec<&Path> = Vec::new();
        for (i, (tmp, path, replace)) in staged.iter().enumerate() {
            let placed = if *replace {
                std::fs::rename(tmp, path)
            } else {
                std::fs::hard_link(tmp, path).and_then(|()| std::fs::remove_file(tmp))
            };
            if let Err(e) = placed {
                cleanup(&staged[i..]);
                if !*replace {
                    for l in &linked {
                        let _ = std::fs::remove_file(l);
                    }
                }
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    return Err(exists_error(path));
                }
                bail!("writing {}: {e}", path.display());
            }
            if !*replace {
                linked.push(path);
            }
            let dir = parent_dir(path);
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        for dir in dirs {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .with_context(|| format!("syncing {}", dir.display()))?;
        }
        for (path, bytes) in std::mem::take(&mut self.direct) {
            OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|mut f| f.write_all(&bytes))
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        for (tmp, _, _) in &self.staged {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Create a network's folder whole or not at all: `fill` writes its files into a
/// hidden folder beside it (never listed as a network), which is renamed into place
/// when `fill` succeeded; on any error it is removed. A folder already at `dir` is
/// a crash's leftover without `network.json` (the caller checked) and is replaced.
/// Hold the state directory's lock.
pub fn create_dir_atomic(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = parent_dir(dir);
    let name = dir
        .file_name()
        .with_context(|| format!("{} is not a folder name", dir.display()))?;
    let staging = parent.join(format!(
        ".creating.{}.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    let result = create_dir(&staging)
        .and_then(|()| fill(&staging))
        .and_then(|()| {
            if dir.exists() {
                std::fs::remove_dir_all(dir)
                    .with_context(|| format!("removing {}", dir.display()))?;
            }
            std::fs::rename(&staging, dir)
                .and_then(|()| File::open(parent)?.sync_all())
                .with_context(|| format!("creating {}", dir.display()))
        });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

/// Remove a network's folder so that a crash midway never leaves half a network:
/// rename it out of the way (atomic), sync the state directory, then delete.
pub fn remove_dir_atomic(dir: &Path) -> Result<()> {
    let parent = parent_dir(dir);
    let name = dir
        .file_name()
        .with_context(|| format!("{} is not a folder name", dir.display()))?;
    // Network names never start with '.', so this name is never listed as a network.
    let doomed = parent.join(format!(
        ".deleted.{}.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&doomed);
    std::fs::rename(dir, &doomed)
        .and_then(|()| File::open(parent)?.sync_all())
        .with_context(|| format!("removing {}", dir.display()))?;
    std::fs::remove_dir_all(&doomed).with_context(|| format!("removing {}", doomed.display()))
}

pub fn write_json(path: &Path, value: &impl Serialize, mode: u32) -> Result<()> {
    let mut b = Batch::new();
    b.write_json(path, value, mode)?;
    b.commit()
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

    fn temp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cp-state-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        create_dir(&d).unwrap();
        d
    }

    #[test]
    fn bare_file_names_are_written_in_the_current_directory() {
        assert_eq!(parent_dir(Path::new("a.conf")), Path::new("."));
        assert_eq!(parent_dir(Path::new("/x/a.conf")), Path::new("/x"));
        assert!(write_atomic(Path::new("/"), b"x", 0o600).is_err());
    }

    #[test]
    fn a_stale_temp_file_does_not_block_writes() {
        let d = temp("stale");
        let p = d.join("x.json");
        let tmp = d.join(format!(".x.json.tmp.{}", std::process::id()));
        std::fs::write(&tmp, b"half").unwrap();
        write_atomic(&p, b"whole", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"whole");
        assert!(!tmp.exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn removed_folders_vanish_and_are_never_listed() {
        let d = temp("rm");
        let state = StateDir::open(d.clone()).unwrap();
        let net = state.network_dir("n1");
        create_dir(&net.join("clients")).unwrap();
        std::fs::write(net.join("network.json"), b"{}").unwrap();
        // A half-removed folder from a crash is hidden.
        let doomed = d.join(".deleted.n2.1");
        create_dir(&doomed).unwrap();
        std::fs::write(doomed.join("network.json"), b"{}").unwrap();
        assert_eq!(state.networks().unwrap(), vec!["n1".to_string()]);
        remove_dir_atomic(&net).unwrap();
        assert!(!net.exists());
        assert!(state.networks().unwrap().is_empty());
        assert!(lock_network(&net).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn locks_exclude_each_other() {
        let d = temp("lock");
        let p = d.join(".lock");
        let held = lock(&p).unwrap();
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        let again = Flock::lock(f, FlockArg::LockExclusiveNonblock);
        assert!(again.is_err(), "a second exclusive lock was granted");
        drop(held);
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        assert!(Flock::lock(f, FlockArg::LockExclusiveNonblock).is_ok());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_device_or_pipe_is_written_into_never_replaced() {
        let d = temp("fifo");
        let p = d.join("out");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // The read end first, without blocking, so that the write finds a reader.
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let mut reader = OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(&p)
            .unwrap();
        write_atomic(&p, b"payload", 0o600).unwrap();
        let mut got = Vec::new();
        let _ = reader.read_to_end(&mut got);
        assert_eq!(got, b"payload");
        use std::os::unix::fs::FileTypeExt;
        assert!(
            std::fs::metadata(&p).unwrap().file_type().is_fifo(),
            "replaced"
        );
        assert_eq!(
            std::fs::read_dir(&d).unwrap().count(),
            1,
            "no temp file left"
        );
        let e = write_atomic(&d, b"x", 0o600).unwrap_err();
        assert!(e.to_string().contains("is a folder"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn new_files_never_replace() {
        let d = temp("new");
        let p = d.join("a.conf");
        write_new(&p, b"one", 0o600).unwrap();
        let e = write_new(&p, b"two", 0o600).unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        assert_eq!(
            std::fs::read_dir(&d).unwrap().count(),
            1,
            "no temp file left"
        );
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

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
