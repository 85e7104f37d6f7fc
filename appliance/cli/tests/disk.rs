//! A full disk and a read-only state directory on the operator's side: every
//! command that writes, run with each amount of free space from none up to
//! enough, either succeeds or fails with an error naming the path and leaves the
//! state exactly as it was (no half-written network or client, no temporary
//! file). Read-only, every writing command fails that way and every reading
//! command still works.
//!
//! Root only: the state directory is a small tmpfs mounted in a private mount
//! namespace that only this test's processes see (`unshare -m`, entered with
//! `nsenter`); it vanishes with the process holding it, even if the test fails.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// Size of the tmpfs: room for the template state and the filler.
const FS_SIZE: &str = "2m";
const PAGE: u64 = 4096;
/// Free pages tried before a command must have succeeded.
const MAX_PAGES: u64 = 48;

/// A tmpfs at `dir`, mounted in a mount namespace of its own held by a `sleep`.
struct Tmpfs {
    holder: Child,
    dir: PathBuf,
}

impl Tmpfs {
    fn new(tag: &str) -> Option<Tmpfs> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("cloudpipe-disk-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = format!("mount -t tmpfs -o size={FS_SIZE},mode=0755 cloudpipe-test '{}' && echo mounted && exec sleep 600", dir.display());
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare (util-linux)");
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "mounted", "the tmpfs was not mounted");
        Some(Tmpfs { holder, dir })
    }

    /// `path` (inside the mount) as the test process reaches it.
    fn outside(&self, path: &Path) -> PathBuf {
        Path::new(&format!("/proc/{}/root", self.holder.id())).join(path.strip_prefix("/").unwrap())
    }

    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// Run `cmd` inside the mount namespace.
    fn run(&self, cmd: &[&str]) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.holder.id().to_string(), "-m", "--"])
            .args(cmd)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `cloudpipe --state-dir STATE ARGS...` inside the mount namespace.
    fn cloudpipe(&self, args: &[&str]) -> Output {
        let state = self.state();
        let mut cmd = vec![
            env!("CARGO_BIN_EXE_cloudpipe"),
            "--state-dir",
            state.to_str().unwrap(),
        ];
        cmd.extend_from_slice(args);
        self.run(&cmd)
    }

    fn free_bytes(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(&self.outside(&self.dir)).unwrap();
        s.blocks_available() as u64 * s.fragment_size() as u64
    }

    /// Fill the file system so that `pages` pages stay free.
    fn fill_leaving(&self, pages: u64) -> bool {
        let filler = self.outside(&self.dir.join("filler"));
        let _ = std::fs::remove_file(&filler);
        let free = self.free_bytes();
        if free < pages * PAGE {
            return false;
        }
        std::fs::write(&filler, vec![0u8; (free - pages * PAGE) as usize]).unwrap();
        true
    }

    fn unfill(&self) {
        let _ = std::fs::remove_file(self.outside(&self.dir.join("filler")));
    }

    fn remount(&self, opt: &str) {
        let o = self.run(&[
            "mount",
            "-o",
            &format!("remount,{opt}"),
            self.dir.to_str().unwrap(),
        ]);
        assert!(
            o.status.success(),
            "remount {opt}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// Replace the state directory by a copy of `template`.
    fn load(&self, template: &Path) {
        let state = self.outside(&self.state());
        let _ = std::fs::remove_dir_all(&state);
        copy_tree(template, &state);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Our own child, by PID: the namespace and its tmpfs go with it.
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::metadata(from).unwrap().permissions()).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// Every file and folder under `root` (lock files aside: they hold no state), with
/// its mode and contents.
fn tree(root: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (u32, Vec<u8>)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let mode = e.metadata().unwrap().permissions().mode() & 0o7777;
            if e.file_type().unwrap().is_dir() {
                out.insert(format!("{rel}/"), (mode, Vec::new()));
                walk(root, &p, out);
            } else if e.file_name() != ".lock" {
                out.insert(rel, (mode, std::fs::read(&p).unwrap()));
            }
        }
    }
    walk(root, root, &mut out);
    out
}

/// A state directory made on the real disk: network net1 with clients alice and
/// bob, its payload printed (so changes since are published as properties).
fn template(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "cloudpipe-disk-template-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_cloudpipe"))
            .arg("--state-dir")
            .arg(&dir)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run(&[
        "network",
        "create",
        "net1",
        "--cidr",
        "10.0.0.0/24",
        "--endpoint",
        "198.51.100.7",
    ]);
    run(&["client", "add", "net1", "alice"]);
    run(&["client", "add", "net1", "bob"]);
    run(&["payload", "net1"]);
    run(&["client", "add", "net1", "carol"]);
    run(&["client", "revoke", "net1", "bob"]);
    dir
}

/// The commands that write, as an operator runs them.
fn writers(out: &Path) -> Vec<Vec<String>> {
    let o = out.join("dave.conf").to_string_lossy().into_owned();
    [
        vec![
            "network",
            "create",
            "net2",
            "--cidr",
            "10.1.0.0/24",
            "--endpoint",
            "198.51.100.8",
        ],
        vec!["network", "set-endpoint", "net1", "198.51.100.9"],
        vec!["client", "add", "net1", "dave"],
        vec!["client", "add", "net1", "dave", "--output", &o],
        vec!["client", "revoke", "net1", "alice"],
        vec!["payload", "net1"],
        vec!["publish", "net1"],
        vec!["publish", "net1", "--done"],
        vec!["network", "delete", "net1", "--yes"],
    ]
    .into_iter()
    .map(|c| c.into_iter().map(String::from).collect())
    .collect()
}

#[test]
fn a_full_disk_never_leaves_a_half_written_network_or_client() {
    let Some(fs) = Tmpfs::new("full") else {
        return;
    };
    let template = template("full");
    let out = fs.dir.join("out");
    std::fs::create_dir_all(fs.outside(&out)).unwrap();
    let state = fs.outside(&fs.state());
    for cmd in writers(&out) {
        let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        let mut succeeded_with = None;
        for pages in 0..=MAX_PAGES {
            fs.load(&template);
            let _ = std::fs::remove_dir_all(fs.outside(&out));
            std::fs::create_dir_all(fs.outside(&out)).unwrap();
            let before = tree(&state);
            assert!(fs.fill_leaving(pages), "the tmpfs is too small");
            let o = fs.cloudpipe(&args);
            fs.unfill();
            let err = String::from_utf8_lossy(&o.stderr).into_owned();
            // `client add --output FILE`: a config that could not be written
            // keeps the client (whole), and the error says how to print it again.
            let kept = err.contains("print its config again");
            if o.status.success() || kept {
                succeeded_with = Some(pages);
                // The state it left is whole: every network and client reads.
                let list = fs.cloudpipe(&["network", "list"]);
                assert!(
                    list.status.success(),
                    "{args:?}: {}",
                    String::from_utf8_lossy(&list.stderr)
                );
                if tree(&state).contains_key("net1/") {
                    let show = fs.cloudpipe(&["client", "list", "net1"]);
                    assert!(
                        show.status.success(),
                        "{args:?}: {}",
                        String::from_utf8_lossy(&show.stderr)
                    );
                }
                break;
            }
            assert!(
                err.contains("No space left on device"),
                "{args:?} with {pages} free pages: {err}"
            );
            assert!(
                err.contains(&fs.dir.to_string_lossy().into_owned()),
                "{args:?} with {pages} free pages: the error names no path: {err}"
            );
            let after = tree(&state);
            assert_eq!(
                after.keys().collect::<Vec<_>>(),
                before.keys().collect::<Vec<_>>(),
                "{args:?} with {pages} free pages ({err}) changed the state's files"
            );
            for (k, v) in &before {
                assert!(
                    after[k] == *v,
                    "{args:?} with {pages} free pages ({err}) changed {k}"
                );
            }
            assert!(
                std::fs::read_dir(fs.outside(&out))
                    .unwrap()
                    .next()
                    .is_none(),
                "{args:?} with {pages} free pages left a file in the output folder"
            );
        }
        let pages = succeeded_with.unwrap_or_else(|| panic!("{args:?} never succeeded"));
        eprintln!("{args:?}: fails cleanly below {pages} free pages, succeeds with {pages}");
    }
    let _ = std::fs::remove_dir_all(&template);
}

#[test]
fn a_read_only_state_directory_refuses_writes_by_name_and_still_reads() {
    let Some(fs) = Tmpfs::new("ro") else {
        return;
    };
    let template = template("ro");
    fs.load(&template);
    let state = fs.outside(&fs.state());
    let before = tree(&state);
    fs.remount("ro");
    let out = std::env::temp_dir().join(format!("cloudpipe-disk-ro-out-{}", std::process::id()));
    for cmd in writers(&out) {
        let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        // `--output` writes outside the state directory; `publish` recorded its keys
        // when the clients changed, so it has nothing to write here (it reads, below).
        if args.contains(&"--output") || args == ["publish", "net1"] {
            continue;
        }
        let o = fs.cloudpipe(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success(),
            "{args:?} succeeded on a read-only state directory"
        );
        assert!(err.contains("Read-only file system"), "{args:?}: {err}");
        assert!(
            err.contains(&fs.state().to_string_lossy().into_owned()),
            "{args:?}: the error names no path: {err}"
        );
        assert!(tree(&state) == before, "{args:?} changed the state");
    }
    for args in [
        vec!["network", "list"],
        vec!["network", "show", "net1"],
        vec!["client", "list", "net1"],
        vec!["client", "show", "net1", "alice", "--config"],
        vec!["publish", "net1", "--json"],
        vec!["publish", "net1"],
        vec!["openstack", "net1"],
    ] {
        let o = fs.cloudpipe(&args);
        assert!(
            o.status.success(),
            "{args:?} on a read-only state directory: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&template);
}

/// A write that fails midway through a command (here the clients' folder is
/// immutable, `chattr +i`, so a client file cannot be replaced) changes nothing
/// either: the files a command changes together are written all or none.
#[test]
fn a_write_failing_midway_through_a_command_changes_nothing() {
    let Some(fs) = Tmpfs::new("midway") else {
        return;
    };
    let template = template("midway");
    let state = fs.outside(&fs.state());
    let clients = fs.state().join("net1/clients");
    let clients = clients.to_str().unwrap();
    // Both rewrite bob's file last (his revocation reached the appliance, so his
    // address is released), after the network's own files.
    for args in [vec!["payload", "net1"], vec!["publish", "net1", "--done"]] {
        fs.load(&template);
        let before = tree(&state);
        let o = fs.run(&["chattr", "+i", clients]);
        assert!(
            o.status.success(),
            "chattr: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let o = fs.cloudpipe(&args);
        fs.run(&["chattr", "-i", clients]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(
            err.contains("Operation not permitted") && err.contains(clients),
            "{args:?}: {err}"
        );
        assert!(
            tree(&state) == before,
            "{args:?} ({err}) changed part of the state"
        );
    }
    let _ = std::fs::remove_dir_all(&template);
}
