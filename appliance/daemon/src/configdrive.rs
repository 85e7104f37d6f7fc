//! The OpenStack config drive: a filesystem labelled `config-2` (ISO 9660 or vfat)
//! holding `openstack/latest/user_data`, `openstack/latest/meta_data.json` and
//! `openstack/latest/network_data.json`.
//!
//! ISO 9660 drives (Nova's default, written by `genisoimage -J -r -V config-2`) are
//! read in userspace through their Joliet tree (cloudpipe-core's
//! `metadata::config_drive`, fuzzed): no mount, no CAP_SYS_ADMIN, and it works on
//! kernels without isofs. vfat drives are mounted read-only in a private
//! directory, read, and unmounted: that needs CAP_SYS_ADMIN, which only a daemon
//! started as root has (the systemd unit does not grant it; Nova writes ISO 9660
//! unless `config_drive_format = vfat`). A path to an already mounted directory
//! also works. This module is the I/O: finding the device, opening it, mounting.
//!
//! A device read at boot stays open: after set-up the daemon is no longer root and
//! may not open it again, but it re-reads `meta_data.json` from it.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Devices and images opened so far, by path (see the module docs).
static OPENED: Mutex<Vec<(PathBuf, File)>> = Mutex::new(Vec::new());

/// `path` opened for reading: a new handle on the file opened the first time.
fn open(path: &Path) -> std::io::Result<File> {
    let mut opened = OPENED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, f)) = opened.iter().find(|(p, _)| p == path) {
        return f.try_clone();
    }
    let f = File::open(path)?;
    opened.push((path.to_path_buf(), f.try_clone()?));
    Ok(f)
}

pub use cloudpipe_core::metadata::config_drive::{
    iso_read_file, probe_label, FsKind, LABEL, MAX_FILE, META_DATA, NETWORK_DATA, PROBE_LEN,
    USER_DATA,
};

/// What a config drive held.
#[derive(Debug, Default)]
pub struct Contents {
    pub user_data: Option<Vec<u8>>,
    pub meta_data: Option<Vec<u8>>,
    pub network_data: Option<Vec<u8>>,
}

/// udev's links to a device by filesystem label (60-persistent-storage.rules); FAT
/// labels are upper case.
const BY_LABEL: [&str; 2] = ["/dev/disk/by-label/config-2", "/dev/disk/by-label/CONFIG-2"];

/// Find a block device labelled `config-2`: udev's by-label link (the only way in
/// under the unit, whose private /dev holds that node and no other disk), else by
/// probing /sys/class/block (no udev or blkid needed, so it works in a minimal
/// initramfs-less image and in the lab). Either way the label is checked here.
pub fn find_device() -> Option<(PathBuf, FsKind)> {
    for link in BY_LABEL.map(PathBuf::from) {
        if let Some(kind) = labelled_config_drive(&link) {
            return Some((link, kind));
        }
    }
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/block")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        // Skip devices with no media (size 0), e.g. unused loop devices.
        let size = std::fs::read_to_string(format!("/sys/class/block/{name}/size"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if size == 0 {
            continue;
        }
        let dev = PathBuf::from("/dev").join(&name);
        if let Some(kind) = labelled_config_drive(&dev) {
            return Some((dev, kind));
        }
    }
    None
}

/// The filesystem of `dev` if its label is `config-2`. Not kept open (see `open`):
/// most devices probed are not the drive.
fn labelled_config_drive(dev: &Path) -> Option<FsKind> {
    let head = File::open(dev).and_then(read_head).ok()?;
    let (kind, label) = probe_label(&head)?;
    label.eq_ignore_ascii_case(LABEL).then_some(kind)
}

/// The first [`PROBE_LEN`] bytes of `f` (fewer if it is shorter), from the start.
fn read_head(mut f: File) -> std::io::Result<Vec<u8>> {
    use std::io::{Seek, SeekFrom};
    f.seek(SeekFrom::Start(0))?;
    let mut head = vec![0u8; PROBE_LEN];
    let mut n = 0;
    while n < head.len() {
        let r = f.read(&mut head[n..])?;
        if r == 0 {
            break;
        }
        n += r;
    }
    head.truncate(n);
    Ok(head)
}

/// Read the payload files from `path`: a directory (a mounted drive), or a device or
/// image file holding ISO 9660 or vfat.
pub fn read(path: &Path, mount_dir: &Path) -> anyhow::Result<Contents> {
    if path.is_dir() {
        return Ok(Contents {
            user_data: read_small(&path.join(USER_DATA))?,
            meta_data: read_small(&path.join(META_DATA))?,
            network_data: read_small(&path.join(NETWORK_DATA))?,
        });
    }
    let head = read_head(open(path)?)?;
    match probe_label(&head) {
        Some((FsKind::Iso9660, _)) => {
            let mut f = open(path)?;
            Ok(Contents {
                user_data: iso_read_file(&mut f, USER_DATA)?,
                meta_data: iso_read_file(&mut f, META_DATA)?,
                network_data: iso_read_file(&mut f, NETWORK_DATA)?,
            })
        }
        Some((FsKind::Vfat, _)) => read_vfat(path, mount_dir),
        None => anyhow::bail!("{} holds neither ISO 9660 nor vfat", path.display()),
    }
}

fn read_small(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    match File::open(path) {
        Ok(f) => {
            let mut v = Vec::new();
            f.take(MAX_FILE + 1).read_to_end(&mut v)?;
            anyhow::ensure!(
                v.len() as u64 <= MAX_FILE,
                "{} is larger than {MAX_FILE} bytes",
                path.display()
            );
            Ok(Some(v))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
    }
}

fn read_vfat(dev: &Path, mount_dir: &Path) -> anyhow::Result<Contents> {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    anyhow::ensure!(
        crate::privileges::has(crate::privileges::CAP_SYS_ADMIN),
        "{} is a vfat config drive: mounting it needs CAP_SYS_ADMIN, which cloudpiped \
         has only when started as root (not under its unit); give the instance an ISO \
         9660 config drive (Nova's default, config_drive_format = iso9660)",
        dev.display()
    );
    std::fs::create_dir_all(mount_dir)?;
    mount(
        Some(dev),
        mount_dir,
        Some("vfat"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| anyhow::anyhow!("mounting {} read-only as vfat: {e}", dev.display()))?;
    let contents = (|| {
        Ok::<_, anyhow::Error>(Contents {
            user_data: read_small(&mount_dir.join(USER_DATA))?,
            meta_data: read_small(&mount_dir.join(META_DATA))?,
            network_data: read_small(&mount_dir.join(NETWORK_DATA))?,
        })
    })();
    let _ = umount2(mount_dir, MntFlags::MNT_DETACH);
    contents
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Build a config drive the way Nova does (`genisoimage -J -r -V config-2`) and
    /// read it back through the Joliet tree. Skipped when genisoimage is missing.
    #[test]
    fn reads_a_genisoimage_config_drive() {
        let dir = std::env::temp_dir().join(format!("cloudpiped-iso-{}", std::process::id()));
        let tree = dir.join("tree");
        std::fs::create_dir_all(tree.join("openstack/latest")).unwrap();
        std::fs::create_dir_all(tree.join("ec2/latest")).unwrap();
        let long = "A".repeat(5000);
        std::fs::write(tree.join(USER_DATA), &long).unwrap();
        std::fs::write(tree.join(META_DATA), b"{\"meta\":{}}").unwrap();
        // An already mounted drive, given as a directory.
        let c = read(&tree, &dir.join("mnt")).unwrap();
        assert_eq!(c.user_data.as_deref(), Some(long.as_bytes()));
        let iso = dir.join("cd.iso");
        let built = std::process::Command::new("genisoimage")
            .args(["-quiet", "-J", "-r", "-V", "config-2", "-o"])
            .arg(&iso)
            .arg(&tree)
            .status();
        if !built.is_ok_and(|s| s.success()) {
            eprintln!("genisoimage not available: skipped");
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
        let head = read_head(File::open(&iso).unwrap()).unwrap();
        assert_eq!(probe_label(&head), Some((FsKind::Iso9660, LABEL.into())));
        let c = read(&iso, &dir.join("mnt")).unwrap();
        assert_eq!(c.user_data.as_deref(), Some(long.as_bytes()));
        assert_eq!(c.meta_data.as_deref(), Some(&b"{\"meta\":{}}"[..]));
        let mut f = File::open(&iso).unwrap();
        assert_eq!(
            iso_read_file(&mut f, "openstack/latest/missing").unwrap(),
            None
        );
        assert_eq!(
            iso_read_file(&mut f, "nope/latest/user_data").unwrap(),
            None
        );
        // Garbage and truncation are errors, not panics.
        let bytes = std::fs::read(&iso).unwrap();
        for cut in [40_000usize, 34_000, 16 * 2048 + 100] {
            let mut c = std::io::Cursor::new(bytes[..cut.min(bytes.len())].to_vec());
            let _ = iso_read_file(&mut c, USER_DATA);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
