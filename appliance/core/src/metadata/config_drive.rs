//! The OpenStack config drive's filesystem, read from its bytes: which filesystem
//! and label a block device holds ([`probe_label`]), and files out of an ISO 9660
//! image ([`iso_read_file`]), the format Nova writes by default
//! (`genisoimage -J -r -V config-2`).
//!
//! ISO 9660 (ECMA-119): 2048-byte sectors; volume descriptors from sector 16 on
//! (type 1 primary, type 2 supplementary, 255 terminator); a directory is an extent
//! of variable-length records that do not cross sectors. Joliet is a supplementary
//! descriptor with escape sequence `%/@`, `%/C` or `%/E` whose names are UCS-2
//! big-endian. The Joliet tree is preferred (its names are the real ones), the
//! primary tree is the fallback (names compared case-insensitively, `;1` dropped).
//!
//! Bounded whatever the image holds: at most 32 volume descriptors, files and
//! directories of at most [`MAX_FILE`] bytes, one directory per path component
//! (a directory that points at itself cannot loop), and never more memory than
//! the image has bytes to give.

use std::io::{Read, Seek, SeekFrom};

/// The label Nova gives config drives.
pub const LABEL: &str = "config-2";
/// The payload on a config drive.
pub const USER_DATA: &str = "openstack/latest/user_data";
/// The instance's metadata on a config drive.
pub const META_DATA: &str = "openstack/latest/meta_data.json";
/// The instance's network configuration on a config drive (links with their MTU).
pub const NETWORK_DATA: &str = "openstack/latest/network_data.json";
/// Files on a config drive larger than this are not ours to read.
pub const MAX_FILE: u64 = 1024 * 1024;
/// Bytes from the start of a device that [`probe_label`] needs to see.
pub const PROBE_LEN: usize = 64 * 1024;

/// ISO 9660 logical sector size.
pub const SECTOR: u64 = 2048;
/// ISO 9660 volume descriptors start at sector 16 (the system area is before).
pub const ISO_VD_START: u64 = 16 * SECTOR;
/// Volume descriptors read before giving up on a terminator: those that fit in the
/// first [`PROBE_LEN`] bytes, so that the probe and the reader see the same set.
const MAX_DESCRIPTORS: u64 = PROBE_LEN as u64 / SECTOR - ISO_VD_START / SECTOR;
/// The fixed part of a directory record, before its name (ECMA-119 9.1).
const RECORD_MIN: usize = 33;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    Iso9660,
    Vfat,
}

/// A config drive that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error("not an ISO 9660 image: {0}")]
    NotIso(&'static str),
    #[error("{path} is a directory on the config drive")]
    IsDirectory { path: String },
    #[error("{path} on the config drive is {len} bytes, more than {MAX_FILE}")]
    TooLarge { path: String, len: u64 },
    #[error("a directory on the config drive is {0} bytes, more than {MAX_FILE}")]
    DirectoryTooLarge(u64),
    #[error("the config drive ends early: {0}")]
    Truncated(&'static str),
    #[error("reading the config drive: {0}")]
    Io(#[from] std::io::Error),
}

/// The filesystem and label of a device or image, from its first [`PROBE_LEN`]
/// bytes (fewer is fine: a short head finds nothing).
pub fn probe_label(head: &[u8]) -> Option<(FsKind, String)> {
    // ISO 9660: the descriptor set from sector 16 holds a primary volume descriptor
    // (type 1, "CD001"), whose volume id is at +40 (32 bytes).
    for i in 0..MAX_DESCRIPTORS {
        let at = (ISO_VD_START + i * SECTOR) as usize;
        let Some(vd) = head.get(at..at + 72) else {
            break;
        };
        if &vd[1..6] != b"CD001" || vd[0] == 255 {
            break;
        }
        if vd[0] == 1 {
            let id = String::from_utf8_lossy(&vd[40..72]).trim().to_string();
            return Some((FsKind::Iso9660, id));
        }
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

/// One ISO 9660 directory record.
#[derive(Debug, Clone)]
struct Record {
    extent: u64,
    len: u64,
    dir: bool,
    name: String,
    /// Names in this tree are UCS-2 (Joliet).
    joliet: bool,
}

/// Read `path` (slash-separated, compared case-insensitively) from an ISO 9660
/// image through its Joliet tree, or its primary tree when it has none.
/// `Ok(None)` when the path does not exist.
pub fn iso_read_file<F: Read + Seek>(f: &mut F, path: &str) -> Result<Option<Vec<u8>>, DriveError> {
    let mut cur = iso_root(f)?;
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
    if cur.dir {
        return Err(DriveError::IsDirectory { path: path.into() });
    }
    if cur.len > MAX_FILE {
        return Err(DriveError::TooLarge {
            path: path.into(),
            len: cur.len,
        });
    }
    read_extent(f, cur.extent, cur.len, "a file's data").map(Some)
}

/// `len` bytes at sector `extent`; an image that ends first is an error, and the
/// buffer grows only as bytes arrive.
fn read_extent<F: Read + Seek>(
    f: &mut F,
    extent: u64,
    len: u64,
    what: &'static str,
) -> Result<Vec<u8>, DriveError> {
    f.seek(SeekFrom::Start(extent * SECTOR))?;
    let mut data = Vec::new();
    f.take(len).read_to_end(&mut data)?;
    if (data.len() as u64) < len {
        return Err(DriveError::Truncated(what));
    }
    Ok(data)
}

fn iso_root<F: Read + Seek>(f: &mut F) -> Result<Record, DriveError> {
    let (mut primary, mut joliet) = (None, None);
    for i in 0..MAX_DESCRIPTORS {
        let vd = read_extent(f, ISO_VD_START / SECTOR + i, SECTOR, "a volume descriptor")?;
        if &vd[1..6] != b"CD001" {
            return Err(DriveError::NotIso("no CD001 volume descriptor"));
        }
        let is_joliet =
            vd[0] == 2 && vd[88] == 0x25 && vd[89] == 0x2F && matches!(vd[90], 0x40 | 0x43 | 0x45);
        // The root directory's record, at offset 156 of a primary or supplementary
        // descriptor (ECMA-119 8.4.18).
        let root = || parse_record(&vd[156..190], is_joliet);
        match vd[0] {
            1 if primary.is_none() => {
                primary = Some(root().ok_or(DriveError::NotIso("bad root directory record"))?)
            }
            2 if is_joliet && joliet.is_none() => {
                joliet = Some(root().ok_or(DriveError::NotIso("bad Joliet root directory record"))?)
            }
            255 => break,
            _ => {}
        }
    }
    // Joliet is a supplement: an image without a primary descriptor is not ISO 9660.
    let primary = primary.ok_or(DriveError::NotIso("no primary volume descriptor"))?;
    Ok(joliet.unwrap_or(primary))
}

fn iso_dir<F: Read + Seek>(f: &mut F, dir: &Record) -> Result<Vec<Record>, DriveError> {
    if dir.len > MAX_FILE {
        return Err(DriveError::DirectoryTooLarge(dir.len));
    }
    let data = read_extent(f, dir.extent, dir.len, "a directory")?;
    let mut out = Vec::new();
    let mut pos = 0usize;
    let sector = SECTOR as usize;
    while pos < data.len() {
        let len = data[pos] as usize;
        if len == 0 {
            // Records do not cross sectors: the rest of this one is padding.
            pos = (pos / sector + 1) * sector;
            continue;
        }
        if pos + len > data.len() || len <= RECORD_MIN {
            break;
        }
        if let Some(r) = parse_record(&data[pos..pos + len], dir.joliet) {
            if !r.name.is_empty() {
                out.push(r);
            }
        }
        pos += len;
    }
    Ok(out)
}

fn parse_record(r: &[u8], joliet: bool) -> Option<Record> {
    if r.len() <= RECORD_MIN {
        return None;
    }
    // Both-endian fields (ECMA-119 7.3.3): the little-endian half.
    let extent = u32::from_le_bytes(r[2..6].try_into().ok()?) as u64;
    let len = u32::from_le_bytes(r[10..14].try_into().ok()?) as u64;
    let dir = r[25] & 0x02 != 0;
    let name_len = r[32] as usize;
    let raw = r.get(RECORD_MIN..RECORD_MIN + name_len)?;
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
    use std::io::Cursor;

    #[test]
    fn labels_are_probed() {
        let mut iso = vec![0u8; PROBE_LEN];
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

    /// A minimal image by hand: primary descriptor, terminator, a root directory
    /// with one subdirectory `A` that holds file `B.TXT;1`.
    fn tiny_iso(file_len: u32, file_extent: u32) -> Vec<u8> {
        let mut img = vec![0u8; 24 * SECTOR as usize];
        let vd = |img: &mut Vec<u8>, sector: usize, kind: u8| {
            let at = sector * SECTOR as usize;
            img[at] = kind;
            img[at + 1..at + 6].copy_from_slice(b"CD001");
            img[at + 6] = 1;
        };
        vd(&mut img, 16, 1);
        vd(&mut img, 17, 255);
        let record = |extent: u32, len: u32, dir: bool, name: &[u8]| {
            let mut r = vec![0u8; RECORD_MIN + name.len() + (name.len() + 1) % 2];
            r[0] = r.len() as u8;
            r[2..6].copy_from_slice(&extent.to_le_bytes());
            r[10..14].copy_from_slice(&len.to_le_bytes());
            r[25] = if dir { 2 } else { 0 };
            r[32] = name.len() as u8;
            r[RECORD_MIN..RECORD_MIN + name.len()].copy_from_slice(name);
            r
        };
        let root = record(20, SECTOR as u32, true, &[0]);
        let at = 16 * SECTOR as usize + 156;
        img[at..at + root.len()].copy_from_slice(&root);
        let mut dir = record(20, SECTOR as u32, true, &[0]);
        dir.extend(record(20, SECTOR as u32, true, &[1]));
        dir.extend(record(21, SECTOR as u32, true, b"A"));
        let at = 20 * SECTOR as usize;
        img[at..at + dir.len()].copy_from_slice(&dir);
        let sub = record(file_extent, file_len, false, b"B.TXT;1");
        let at = 21 * SECTOR as usize;
        img[at..at + sub.len()].copy_from_slice(&sub);
        let at = 22 * SECTOR as usize;
        img[at..at + 5].copy_from_slice(b"hello");
        img
    }

    #[test]
    fn a_primary_tree_is_read_case_insensitively() {
        let img = tiny_iso(5, 22);
        let mut c = Cursor::new(img);
        assert_eq!(
            iso_read_file(&mut c, "a/b.txt").unwrap().as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(iso_read_file(&mut c, "A/missing").unwrap(), None);
        assert_eq!(iso_read_file(&mut c, "A/B.TXT/x").unwrap(), None);
        assert!(matches!(
            iso_read_file(&mut c, "a"),
            Err(DriveError::IsDirectory { .. })
        ));
    }

    /// The probe only looked at sector 16 and the reader took a Joliet descriptor
    /// without any primary one: an image could be read that the probe called
    /// "neither ISO 9660 nor vfat", or the other way round.
    #[test]
    fn the_probe_and_the_reader_agree_on_what_iso_9660_is() {
        let set_joliet = |img: &mut Vec<u8>, sector: usize| {
            let at = sector * SECTOR as usize;
            img[at] = 2;
            img[at + 88..at + 91].copy_from_slice(&[0x25, 0x2F, 0x45]);
        };
        // Only a Joliet descriptor, then the terminator: not ISO 9660 at all.
        let mut img = tiny_iso(5, 22);
        let root = img[16 * 2048 + 156..16 * 2048 + 190].to_vec();
        set_joliet(&mut img, 16);
        assert_eq!(probe_label(&img), None);
        assert!(matches!(
            iso_read_file(&mut Cursor::new(&img), "a/b.txt"),
            Err(DriveError::NotIso(_))
        ));
        // Joliet first, the primary descriptor second: both see ISO 9660.
        let mut img = tiny_iso(5, 22);
        img.copy_within(17 * 2048..18 * 2048, 18 * 2048);
        img.copy_within(16 * 2048..17 * 2048, 17 * 2048);
        set_joliet(&mut img, 16);
        img[16 * 2048 + 156..16 * 2048 + 190].copy_from_slice(&root);
        assert_eq!(probe_label(&img).map(|(k, _)| k), Some(FsKind::Iso9660));
        // The Joliet tree is read (its names are UCS-2: "A" is not found in it).
        assert_eq!(
            iso_read_file(&mut Cursor::new(&img), "a/b.txt").unwrap(),
            None
        );
    }

    #[test]
    fn lying_sizes_and_extents_are_errors_not_allocations() {
        // A file that claims 1 MiB past the end of a 48 KiB image.
        let mut c = Cursor::new(tiny_iso(MAX_FILE as u32, 22));
        assert!(matches!(
            iso_read_file(&mut c, "a/b.txt"),
            Err(DriveError::Truncated(_))
        ));
        let mut c = Cursor::new(tiny_iso(MAX_FILE as u32 + 1, 22));
        assert!(matches!(
            iso_read_file(&mut c, "a/b.txt"),
            Err(DriveError::TooLarge { .. })
        ));
        // An extent at the end of the 32-bit sector range.
        let mut c = Cursor::new(tiny_iso(5, u32::MAX));
        assert!(matches!(
            iso_read_file(&mut c, "a/b.txt"),
            Err(DriveError::Truncated(_))
        ));
        for cut in [0usize, 100, 16 * 2048 + 100, 20 * 2048 + 10] {
            let mut c = Cursor::new(tiny_iso(5, 22)[..cut].to_vec());
            assert!(iso_read_file(&mut c, "a/b.txt").is_err(), "cut at {cut}");
        }
    }
}
