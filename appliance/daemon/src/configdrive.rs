//! The OpenStack config drive: a filesystem labelled `config-2` (ISO 9660 or vfat)
//! holding `openstack/latest/user_data`, `openstack/latest/meta_data.json` and
//! `openstack/latest/network_data.json`.
//!
//! ISO 9660 drives (Nova's default, written by `genisoimage -J -r -V config-2`) are
//! read in userspace through their Joliet tree: no mount, no CAP_SYS_ADMIN, and it
//! works on kernels without isofs. vfat drives are mounted read-only in a private
//! directory, read, and unmounted. A path to an already mounted directory also works.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The label Nova gives config drives.
pub const LABEL: &str = "config-2";
pub const USER_DATA: &str = "openstack/latest/user_data";
pub const META_DATA: &str = "openstack/latest/meta_data.json";
pub const NETWORK_DATA: &str = "openstack/latest/network_data.json";
/// Files on a config drive larger than this are not ours to read.
pub const MAX_FILE: u64 = 1024 * 1024;

const SECTOR: u64 = 2048;
/// ISO 9660 volume descriptors start at sector 16.
const ISO_VD_START: u64 = 16 * SECTOR;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    Iso9660,
    Vfat,
}

/// What a config drive held.
#[derive(Debug, Default)]
pub struct Contents {
    pub user_data: Option<Vec<u8>>,
    pub meta_data: Option<Vec<u8>>,
    pub network_data: Option<Vec<u8>>,
}

/// The filesystem label of a device or image, from its first 64 KiB.
pub fn probe_label(head: &[u8]) -> Option<(FsKind, String)> {
    // ISO 9660 primary volume descriptor: type 1, "CD001", volume id at +40 (32 bytes).
    let pvd = ISO_VD_START as usize;
    if head.len() >= pvd + 72 && &head[pvd + 1..pvd + 6] == b"CD001" && head[pvd] == 1 {
        let id = String::from_utf8_lossy(&head[pvd + 40..pvd + 72])
            .trim()
            .to_string();
        return Some((FsKind::Iso9660, id));
    }
    // FAT boot sector: 0x55AA signature; label at 43 (FAT12/16) or 71 (FAT32), each
    // after an extended boot signature 0x29 and followed by "FAT".
    if head.len() >= 512 && head[510..512] == [0x55, 0xAA] {
        for (sig, label, fstype) in [(38usize, 43usize, 54usize), (66, 71, 82)] {
            if head[sig] == 0x29 && &head[fstype..fstype + 3] == b"FAT" {
                let id = String::from_utf8_lossy(&head[label..label + 11])
                    .trim()
                    .to_string();
                return Some((FsKind::Vfat, id));
            }
        }
    }
    None
}

/// Find a block device labelled `config-2` by probing /sys/class/block (no udev or
/// blkid needed, so it works in a minimal initramfs-less image and in the lab).
pub fn find_device() -> Option<(PathBuf, FsKind)> {
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
        let Ok(head) = read_head(&dev) else { continue };
        if let Some((kind, label)) = probe_label(&head) {
            if label.eq_ignore_ascii_case(LABEL) {
                return Some((dev, kind));
            }
        }
    }
    None
}

fn read_head(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    let mut head = vec![0u8; 64 * 1024];
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
    let head = read_head(path)?;
    match probe_label(&head) {
        Some((FsKind::Iso9660, _)) => {
            let mut f = File::open(path)?;
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

/// One ISO 9660 directory record.
struct Record {
    extent: u64,
    len: u64,
    dir: bool,
    name: String,
    /// Names in this tree are UCS-2 (Joliet).
    joliet: bool,
}

/// Read `path` (slash-separated) from an ISO 9660 image through its Joliet tree,
/// falling back to the primary tree (case-insensitive, `;1` versions ignored).
pub fn iso_read_file<F: Read + Seek>(f: &mut F, path: &str) -> anyhow::Result<Option<Vec<u8>>> {
    let root = iso_root(f)?;
    let mut cur = root;
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        let entries = iso_dir(f, &cur)?;
        let want = part.to_ascii_lowercase();
        let Some(next) = entries
            .into_iter()
            .find(|e| e.name.to_ascii_lowercase() == want)
        else {
            return Ok(None);
        };
        if i + 1 < parts.len() && !next.dir {
            return Ok(None);
        }
        cur = next;
    }
    anyhow::ensure!(!cur.dir, "{path} is a directory on the config drive");
    anyhow::ensure!(
        cur.len <= MAX_FILE,
        "{path} on the config drive is larger than {MAX_FILE} bytes"
    );
    f.seek(SeekFrom::Start(cur.extent * SECTOR))?;
    let mut data = vec![0u8; cur.len as usize];
    f.read_exact(&mut data)?;
    Ok(Some(data))
}

fn iso_root<F: Read + Seek>(f: &mut F) -> anyhow::Result<Record> {
    let mut primary = None;
    // A handful of descriptors at most; stop at the terminator (type 255).
    for i in 0..32u64 {
        let mut vd = [0u8; 2048];
        f.seek(SeekFrom::Start(ISO_VD_START + i * SECTOR))?;
        f.read_exact(&mut vd)?;
        anyhow::ensure!(&vd[1..6] == b"CD001", "not an ISO 9660 volume descriptor");
        let joliet =
            vd[0] == 2 && vd[88] == 0x25 && vd[89] == 0x2F && matches!(vd[90], 0x40 | 0x43 | 0x45);
        let rec = parse_record(&vd[156..190], joliet);
        match vd[0] {
            2 if joliet => return rec.ok_or_else(|| anyhow::anyhow!("bad Joliet root record")),
            1 => primary = rec,
            255 => break,
            _ => {}
        }
    }
    primary.ok_or_else(|| anyhow::anyhow!("no ISO 9660 primary volume descriptor"))
}

fn iso_dir<F: Read + Seek>(f: &mut F, dir: &Record) -> anyhow::Result<Vec<Record>> {
    anyhow::ensure!(dir.len <= 1024 * 1024, "directory too large");
    let joliet = dir.joliet;
    f.seek(SeekFrom::Start(dir.extent * SECTOR))?;
    let mut data = vec![0u8; dir.len as usize];
    f.read_exact(&mut data)?;
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        let len = data[pos] as usize;
        if len == 0 {
            // Records do not cross sectors: skip to the next one.
            pos = (pos / SECTOR as usize + 1) * SECTOR as usize;
            continue;
        }
        if pos + len > data.len() || len < 34 {
            break;
        }
        if let Some(r) = parse_record(&data[pos..pos + len], joliet) {
            if !r.name.is_empty() {
                out.push(r);
            }
        }
        pos += len;
    }
    Ok(out)
}

fn parse_record(r: &[u8], joliet: bool) -> Option<Record> {
    if r.len() < 34 {
        return None;
    }
    let extent = u32::from_le_bytes(r[2..6].try_into().ok()?) as u64;
    let len = u32::from_le_bytes(r[10..14].try_into().ok()?) as u64;
    let dir = r[25] & 0x02 != 0;
    let name_len = r[32] as usize;
    let raw = r.get(33..33 + name_len)?;
    let name = if raw == [0] || raw == [1] {
        // "." and "..": skipped by iso_dir.
        String::new()
    } else if joliet {
        let units: Vec<u16> = raw
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16_lossy(&units)
    } else {
        String::from_utf8_lossy(raw).into_owned()
    };
    // Drop the ";1" version suffix, and the trailing dot of extension-less names.
    let name = match name.rsplit_once(';') {
        Some((n, _)) => n.trim_end_matches('.').to_string(),
        None => name,
    };
    Some(Record {
        extent,
        len,
        dir,
        name,
        joliet,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_probed() {
        let mut iso = vec![0u8; 64 * 1024];
        let p = ISO_VD_START as usize;
        iso[p] = 1;
        iso[p + 1..p + 6].copy_from_slice(b"CD001");
        iso[p + 40..p + 72].copy_from_slice(b"config-2                        ");
        assert_eq!(
            probe_label(&iso),
            Some((FsKind::Iso9660, "config-2".into()))
        );

        let mut fat = vec![0u8; 512];
        fat[510] = 0x55;
        fat[511] = 0xAA;
        fat[38] = 0x29;
        fat[43..54].copy_from_slice(b"CONFIG-2   ");
        fat[54..57].copy_from_slice(b"FAT");
        assert_eq!(probe_label(&fat), Some((FsKind::Vfat, "CONFIG-2".into())));
        assert_eq!(probe_label(&[0u8; 4096]), None);
        assert_eq!(probe_label(b"short"), None);
    }

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
        let head = read_head(&iso).unwrap();
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
