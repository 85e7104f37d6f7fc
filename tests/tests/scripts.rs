//! The README's scripts as a new user meets them (root only): `scripts/install-deps`
//! waits for another apt instead of failing.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A scratch folder, removed on drop.
struct Scratch(PathBuf);
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Hold `path`'s lock the way apt and dpkg take it (a POSIX record lock, fcntl
/// F_SETLK, not flock) until the file is dropped.
fn hold_apt_lock(path: &Path) -> std::fs::File {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap();
    let lock = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    // SAFETY: a valid descriptor and a fully initialised flock struct.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLK, &lock) };
    assert_eq!(r, 0, "locking {}", path.display());
    f
}

/// Another apt holds the package lists' lock for 2 s, then dpkg's frontend lock for
/// 2 s more, while `install-deps` has a package to install: it waits for both and
/// succeeds (it used to fail at once with "Could not get lock").
///
/// apt and dpkg-query run against a private copy of the dpkg database (APT_CONFIG,
/// DPKG_ADMINDIR) in which iperf3 is half-configured, with no package sources and
/// `Debug::pkgDPkgPM` (apt prints the dpkg calls instead of making them): the
/// machine's own packages and locks are never touched, and no network is needed.
#[test]
fn install_deps_waits_for_another_apt() {
    if cloudpipe_lab::skip_unless_root() {
        return;
    }
    let d = Scratch(std::env::temp_dir().join(format!("cp-apt-{}", std::process::id())));
    let dir = |p: &str| {
        let p = d.0.join(p);
        std::fs::create_dir_all(&p).unwrap();
        p
    };
    for p in [
        "dpkg/updates",
        "dpkg/info",
        "lists/partial",
        "cache/archives/partial",
        "sources.list.d",
    ] {
        dir(p);
    }
    let status = std::fs::read_to_string("/var/lib/dpkg/status").unwrap();
    let marked = status.replace(
        "Package: iperf3\nStatus: install ok installed",
        "Package: iperf3\nStatus: install ok half-configured",
    );
    assert_ne!(marked, status, "iperf3 is installed (scripts/install-deps)");
    std::fs::write(d.0.join("dpkg/status"), marked).unwrap();
    std::fs::write(d.0.join("sources.list"), "").unwrap();
    let p = |s: &str| d.0.join(s).display().to_string();
    let conf = format!(
        "Dir::State::status \"{}\";\nDir::State::Lists \"{}\";\nDir::Cache \"{}\";\n\
         Dir::Etc::sourcelist \"{}\";\nDir::Etc::sourceparts \"{}\";\nDebug::pkgDPkgPM \"true\";\n",
        p("dpkg/status"),
        p("lists"),
        p("cache"),
        p("sources.list"),
        p("sources.list.d"),
    );
    std::fs::write(d.0.join("apt.conf"), conf).unwrap();

    let lists = hold_apt_lock(&d.0.join("lists/lock"));
    let frontend = hold_apt_lock(&d.0.join("dpkg/lock-frontend"));
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        drop(lists);
        std::thread::sleep(Duration::from_secs(2));
        drop(frontend);
    });
    let out = Command::new(repo().join("scripts/install-deps"))
        .env("APT_CONFIG", d.0.join("apt.conf"))
        .env("DPKG_ADMINDIR", d.0.join("dpkg"))
        .output()
        .unwrap();
    releaser.join().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "install-deps failed:\n{text}");
    assert!(
        text.contains("installing Debian packages: iperf3"),
        "{text}"
    );
    assert!(text.contains("waiting for another apt"), "{text}");
}

/// The README says where the binaries are and how to get `cloudpipe` on PATH, and
/// both ways work: the `export PATH=...` line as written (run from the repository,
/// after a build), and `cargo install --path DIR` names the package of the
/// `cloudpipe` binary.
#[test]
fn the_readme_puts_cloudpipe_on_path() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let export = readme
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("export PATH=") && l.contains("target/debug"))
        .unwrap_or_else(|| panic!("no `export PATH=...target/debug...` line in README.md"));
    assert!(
        readme.contains("target/debug/"),
        "the README says where the binaries are"
    );
    // The binary the line points at is the one the build made.
    cloudpipe_lab::bin_path("cloudpipe").expect("cargo build --workspace --bins first");
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{export}; command -v cloudpipe && cloudpipe --version"
        ))
        .current_dir(repo())
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("/target/debug/cloudpipe") && out.contains("cloudpipe "),
        "{out}"
    );

    let install = readme
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("cargo install"))
        .expect("a `cargo install` line in README.md");
    let path = install
        .split_whitespace()
        .skip_while(|w| *w != "--path")
        .nth(1)
        .expect("cargo install --path DIR");
    let manifest = std::fs::read_to_string(repo().join(path).join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains("[[bin]]\nname = \"cloudpipe\""),
        "{path} does not build the cloudpipe binary"
    );
}
