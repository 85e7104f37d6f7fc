//! Arbitrary bytes as a config drive: any block device labelled `config-2` (a
//! volume the instance's owner attached, say) is read at boot and, for its
//! `meta_data.json`, again while the daemon runs.
//!
//! Input: the image from sector 16 on (its volume descriptors); the 16-sector
//! system area in front, which the reader never looks at, is zeros. So seeds made
//! by genisoimage stay small.
//!
//! Checks, besides "never panics":
//! - the label probe and the reader agree on what an ISO 9660 image is: a file
//!   read implies the probe saw ISO 9660 (given the whole head);
//! - no file comes back larger than `MAX_FILE`;
//! - paths are case-insensitive: the upper-case path reads the same bytes;
//! - reading twice gives the same answer.
#![no_main]

use cloudpipe_core::metadata::config_drive::{
    iso_read_file, probe_label, FsKind, ISO_VD_START, MAX_FILE, META_DATA, PROBE_LEN, USER_DATA,
};
use libfuzzer_sys::fuzz_target;
use std::io::Cursor;

fuzz_target!(|data: &[u8]| {
    let mut image = vec![0u8; ISO_VD_START as usize];
    image.extend_from_slice(data);
    let probed = probe_label(&image[..image.len().min(PROBE_LEN)]);
    let mut f = Cursor::new(&image[..]);
    for path in [USER_DATA, META_DATA, "ec2/latest/user-data", "openstack"] {
        let got = iso_read_file(&mut f, path);
        let again = iso_read_file(&mut f, path);
        assert_eq!(
            got.as_ref().ok(),
            again.as_ref().ok(),
            "two reads of {path} differ"
        );
        assert_eq!(got.is_err(), again.is_err());
        let Ok(Some(bytes)) = got else { continue };
        assert!(bytes.len() as u64 <= MAX_FILE);
        assert!(
            matches!(probed, Some((FsKind::Iso9660, _))),
            "a file was read from an image the probe did not take for ISO 9660"
        );
        let upper = iso_read_file(&mut f, &path.to_ascii_uppercase());
        assert_eq!(
            upper.ok().flatten().as_deref(),
            Some(&bytes[..]),
            "{path} in upper case"
        );
    }
});
