//! The boot payload: a deflated zip holding `cloudpipe.json` (a [`ConfigFile`]),
//! carried as instance user-data.
//!
//! Three encodings of the same zip exist (docs/payload.md):
//! - [`Encoding::Nova`]: what Nova's API takes for `--user-data`: base64 of the
//!   guest form (Nova's `get_encoded_zip` encoded twice);
//! - [`Encoding::Guest`]: what the guest reads from the metadata service: base64 of
//!   the zip, wrapped at 76 columns;
//! - [`Encoding::Zip`]: the raw zip (config drive, `--payload FILE`).
//!
//! [`decode`] accepts any of them. It is strict and bounded: input size, member
//! count and uncompressed sizes are capped while inflating (a zip bomb fails fast in
//! bounded memory), only known member names are read and nothing is ever written
//! anywhere (zip slip cannot happen), and every rejection says what was wrong.
//! A payload of Nova's own cloudpipe is recognised as [`Payload::Nova`].

use crate::config::{Config, ConfigError, ConfigFile};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ipnetwork::Ipv4Network;
use std::io::{Cursor, Read, Write};
use std::net::Ipv4Addr;

/// The one member of a cloudpipe payload.
pub const CONFIG_MEMBER: &str = "cloudpipe.json";
/// Nova rejects user-data above 65535 bytes (of the base64 it is given).
pub const MAX_USER_DATA: usize = 65535;
/// Largest input `decode` looks at, in any encoding (room for line wrapping).
pub const MAX_INPUT: usize = 128 * 1024;
/// A payload zip with more members than this is not one we wrote.
pub const MAX_MEMBERS: usize = 16;
/// Uncompressed size cap for any one member.
pub const MAX_MEMBER_SIZE: u64 = 256 * 1024;
/// The members of Nova's cloudpipe payload (`nova/cloudpipe/pipelib.py`).
pub const NOVA_MEMBERS: [&str; 5] = [
    "autorun.sh",
    "crl.pem",
    "server.key",
    "ca.crt",
    "server.crt",
];
/// MIME line length, as Python's `base64.encodestring` wrapped.
const GUEST_LINE: usize = 76;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Nova,
    Guest,
    Zip,
}

impl std::str::FromStr for Encoding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "nova" => Ok(Encoding::Nova),
            "guest" => Ok(Encoding::Guest),
            "zip" => Ok(Encoding::Zip),
            _ => Err(format!(
                "unknown encoding {s:?}: expected nova, guest or zip"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("payload is empty")]
    Empty,
    #[error("payload is {len} bytes, more than the {max} allowed")]
    TooLarge { len: usize, max: usize },
    #[error("payload is neither a zip nor base64 text ({0})")]
    NotBase64(String),
    #[error(
        "payload is {format}-compressed{layer}, not a zip archive or base64 text: \
         decompress it first (`{tool}`) and give the result"
    )]
    Compressed {
        format: &'static str,
        tool: &'static str,
        /// Empty, or where the compressed data was found (inside a base64 layer).
        layer: &'static str,
    },
    #[error("payload is not a valid zip archive: {0}")]
    NotZip(String),
    #[error("payload zip has {0} members, at most {MAX_MEMBERS} allowed")]
    TooManyMembers(usize),
    #[error("payload zip has an unexpected member {0:?}")]
    UnexpectedMember(String),
    #[error("payload zip has the member {0:?} more than once")]
    DuplicateMember(String),
    #[error("payload zip has no {CONFIG_MEMBER} member")]
    MissingConfig,
    #[error("payload member {name:?} inflates beyond {max} bytes")]
    MemberTooLarge { name: String, max: u64 },
    #[error("{CONFIG_MEMBER} is not valid: {0}")]
    Json(String),
    #[error("{CONFIG_MEMBER}: {0}")]
    Config(#[from] ConfigError),
}

/// What a payload turned out to hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Cloudpipe(Box<Config>),
    /// A payload of Nova's OpenVPN cloudpipe: not runnable, but importable.
    Nova(NovaPayload),
}

/// What can be learned from a Nova cloudpipe payload's `autorun.sh`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NovaPayload {
    /// `${num_vpn}`: the number of VPN client addresses below broadcast.
    pub clients: Option<u32>,
    /// `${dmz_net}/${dmz_mask}` pushed to clients.
    pub routes: Vec<Ipv4Network>,
}

impl NovaPayload {
    /// The advice given when an appliance is booted with such a payload.
    pub fn migration_hint(&self) -> String {
        format!(
            "this is a Nova (OpenVPN) cloudpipe payload, not a cloudpipe v1 payload; \
             migrate with `cloudpipe network import-nova NAME --cidr CIDR FILE` \
             ({} clients, routes: {}) and boot with the payload it builds",
            self.clients.map_or("unknown".into(), |n| n.to_string()),
            if self.routes.is_empty() {
                "none".into()
            } else {
                self.routes
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )
    }
}

/// Build the payload zip for `config`.
pub fn build_zip(config: &Config) -> Vec<u8> {
    zip_json(&config_json(config))
}

fn config_json(config: &Config) -> Vec<u8> {
    serde_json::to_vec_pretty(&config.to_file()).expect("ConfigFile always serializes")
}

fn zip_json(json: &[u8]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o600);
    zip.start_file(CONFIG_MEMBER, options)
        .expect("in-memory zip");
    zip.write_all(json).expect("in-memory zip");
    zip.finish().expect("in-memory zip").into_inner()
}

/// Encode `config` as user-data in the given encoding. Nova's and the guest's forms
/// are refused when Nova would refuse them (over [`MAX_USER_DATA`]), and every form
/// when [`decode`] would refuse it (`cloudpipe.json` over [`MAX_MEMBER_SIZE`]: a
/// repetitive config deflates far below Nova's limit).
pub fn encode(config: &Config, encoding: Encoding) -> Result<Vec<u8>, PayloadError> {
    let json = config_json(config);
    if json.len() as u64 > MAX_MEMBER_SIZE {
        return Err(PayloadError::MemberTooLarge {
            name: CONFIG_MEMBER.to_string(),
            max: MAX_MEMBER_SIZE,
        });
    }
    encode_zip(&zip_json(&json), encoding)
}

/// Encode an already built zip.
pub fn encode_zip(zip: &[u8], encoding: Encoding) -> Result<Vec<u8>, PayloadError> {
    let guest = wrap(&STANDARD.encode(zip), GUEST_LINE);
    let nova_len = STANDARD.encode(guest.as_bytes()).len();
    if nova_len > MAX_USER_DATA {
        return Err(PayloadError::TooLarge {
            len: nova_len,
            max: MAX_USER_DATA,
        });
    }
    Ok(match encoding {
        Encoding::Zip => zip.to_vec(),
        Encoding::Guest => guest.into_bytes(),
        Encoding::Nova => STANDARD.encode(guest.as_bytes()).into_bytes(),
    })
}

/// Size in bytes of the Nova form of `config`'s payload.
pub fn nova_size(config: &Config) -> usize {
    let guest = wrap(&STANDARD.encode(build_zip(config)), GUEST_LINE);
    STANDARD.encode(guest.as_bytes()).len()
}

fn wrap(s: &str, width: usize) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / width + 1);
    for chunk in s.as_bytes().chunks(width) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out
}

/// Compressed formats some tools wrap user-data in, by their magic numbers (RFC 1952
/// gzip; bzip2, xz, zstd and lz4 frames), with the command that undoes each.
const COMPRESSED: [(&[u8], &str, &str); 5] = [
    (b"\x1f\x8b", "gzip", "gunzip"),
    (b"BZh", "bzip2", "bunzip2"),
    (b"\xfd7zXZ\x00", "xz", "unxz"),
    (b"\x28\xb5\x2f\xfd", "zstd", "unzstd"),
    (b"\x04\x22\x4d\x18", "lz4", "unlz4"),
];

/// The compression format `b` starts with, if it is one of [`COMPRESSED`].
fn compressed(b: &[u8], layer: &'static str) -> Result<(), PayloadError> {
    match COMPRESSED.iter().find(|(magic, ..)| b.starts_with(magic)) {
        Some((_, format, tool)) => Err(PayloadError::Compressed {
            format,
            tool,
            layer,
        }),
        None => Ok(()),
    }
}

const ZIP_MAGIC: &[u8] = b"PK\x03\x04";
const EMPTY_ZIP_MAGIC: &[u8] = b"PK\x05\x06";

fn is_zip(b: &[u8]) -> bool {
    b.starts_with(ZIP_MAGIC) || b.starts_with(EMPTY_ZIP_MAGIC)
}

/// Strip ASCII whitespace and base64-decode; `None` if it is not base64 text.
fn unbase64(b: &[u8]) -> Result<Vec<u8>, String> {
    let compact: Vec<u8> = b
        .iter()
        .copied()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    if compact.is_empty() {
        return Err("only whitespace".into());
    }
    STANDARD.decode(&compact).map_err(|e| e.to_string())
}

/// `cloudpipe.json`'s bytes as a config file; an error names the field it is in
/// (`peers[3].address: invalid type ...`), not only a line and column.
fn parse_config_json(json: &[u8]) -> Result<ConfigFile, PayloadError> {
    let de = &mut serde_json::Deserializer::from_slice(json);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        PayloadError::Json(if path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        })
    })
}

/// Decode user-data in any encoding (raw zip, one or two base64 layers).
pub fn decode(input: &[u8]) -> Result<Payload, PayloadError> {
    Ok(match decode_members(input)? {
        Members::Cloudpipe(json) => {
            let file = parse_config_json(&json)?;
            Payload::Cloudpipe(Box::new(Config::try_from(file)?))
        }
        Members::Nova(autorun) => Payload::Nova(parse_nova_autorun(&autorun)),
    })
}

/// Decode to the config file without checking it (for `payload inspect`, which shows
/// even a config that would be rejected, with the reason).
pub fn decode_file(input: &[u8]) -> Result<Result<ConfigFile, PayloadError>, PayloadError> {
    Ok(match decode_members(input)? {
        Members::Cloudpipe(json) => Ok(parse_config_json(&json)?),
        Members::Nova(autorun) => Err(PayloadError::NotZip(
            parse_nova_autorun(&autorun).migration_hint(),
        )),
    })
}

enum Members {
    Cloudpipe(Vec<u8>),
    Nova(Vec<u8>),
}

fn decode_members(input: &[u8]) -> Result<Members, PayloadError> {
    if input.iter().all(u8::is_ascii_whitespace) {
        return Err(PayloadError::Empty);
    }
    if input.len() > MAX_INPUT {
        return Err(PayloadError::TooLarge {
            len: input.len(),
            max: MAX_INPUT,
        });
    }
    let zip = if is_zip(input) {
        input.to_vec()
    } else {
        compressed(input, "")?;
        let once = unbase64(input).map_err(PayloadError::NotBase64)?;
        compressed(&once, " inside a base64 layer")?;
        if is_zip(&once) {
            once
        } else {
            let twice = unbase64(&once)
                .map_err(|e| PayloadError::NotBase64(format!("inner layer: {e}")))?;
            if !is_zip(&twice) {
                return Err(PayloadError::NotZip(
                    "base64 text does not decode to a zip".into(),
                ));
            }
            twice
        }
    };
    read_zip(&zip)
}

/// Total entries recorded in the end-of-central-directory record, which counts
/// duplicates that an archive reader keyed by name would fold together.
fn eocd_entries(zip: &[u8]) -> Option<usize> {
    const SIG: &[u8] = b"PK\x05\x06";
    let start = zip.len().saturating_sub(22 + 65535);
    let pos = zip[start..].windows(4).rposition(|w| w == SIG)? + start;
    let b = zip.get(pos + 10..pos + 12)?;
    Some(u16::from_le_bytes([b[0], b[1]]) as usize)
}

fn read_zip(bytes: &[u8]) -> Result<Members, PayloadError> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| PayloadError::NotZip(e.to_string()))?;
    let names: Vec<String> = archive
        .file_names()
        .map(|n| n.map(|n| n.to_string()))
        .collect::<Result<_, _>>()
        .map_err(|e| PayloadError::NotZip(e.to_string()))?;
    let recorded = eocd_entries(bytes).unwrap_or(names.len());
    if recorded > MAX_MEMBERS || names.len() > MAX_MEMBERS {
        return Err(PayloadError::TooManyMembers(recorded.max(names.len())));
    }
    let mut seen = std::collections::BTreeSet::new();
    for n in &names {
        if !seen.insert(n.as_str()) {
            return Err(PayloadError::DuplicateMember(n.clone()));
        }
    }
    if recorded != names.len() {
        let dup = names.first().cloned().unwrap_or_default();
        return Err(PayloadError::DuplicateMember(dup));
    }
    let nova =
        names.iter().all(|n| NOVA_MEMBERS.contains(&n.as_str())) && seen.contains("autorun.sh");
    if nova {
        return Ok(Members::Nova(read_member(&mut archive, "autorun.sh")?));
    }
    if let Some(other) = names.iter().find(|n| n.as_str() != CONFIG_MEMBER) {
        return Err(PayloadError::UnexpectedMember(other.clone()));
    }
    if names.is_empty() {
        return Err(PayloadError::MissingConfig);
    }
    Ok(Members::Cloudpipe(read_member(
        &mut archive,
        CONFIG_MEMBER,
    )?))
}

fn read_member(
    archive: &mut zip::ZipArchive<Cursor<&[u8]>>,
    name: &str,
) -> Result<Vec<u8>, PayloadError> {
    let too_large = || PayloadError::MemberTooLarge {
        name: name.to_string(),
        max: MAX_MEMBER_SIZE,
    };
    let file = archive
        .by_name(name)
        .map_err(|e| PayloadError::NotZip(e.to_string()))?;
    if file.is_dir() {
        return Err(PayloadError::UnexpectedMember(name.to_string()));
    }
    if file.size() > MAX_MEMBER_SIZE {
        return Err(too_large());
    }
    // The declared size can lie: cap what is actually inflated, too.
    let mut out = Vec::with_capacity(file.size() as usize);
    file.take(MAX_MEMBER_SIZE + 1)
        .read_to_end(&mut out)
        .map_err(|e| PayloadError::NotZip(format!("{name}: {e}")))?;
    if out.len() as u64 > MAX_MEMBER_SIZE {
        return Err(too_large());
    }
    Ok(out)
}

/// Read `${num_vpn}` and `${dmz_net} ${dmz_mask}` back out of a rendered Nova
/// bootscript (`nova/cloudpipe/bootscript.template`).
fn parse_nova_autorun(script: &[u8]) -> NovaPayload {
    let text = String::from_utf8_lossy(script);
    let mut clients = None;
    let mut routes = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        // DHCP_LOWER=`echo $BROADCAST | awk -F. '{print $1"."$2"."$3"." $4 - 5 }'`
        if line.starts_with("DHCP_LOWER=") {
            if let Some(rest) = line.split("$4 - ").nth(1) {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                clients = digits.parse().ok();
            }
        }
        // echo "push \"route 10.0.0.0 255.255.255.0 $GATEWAY\"" >> server.conf
        if let Some(rest) = line.split("push \\\"route ").nth(1) {
            let mut it = rest.split_whitespace();
            if let (Some(net), Some(mask)) = (it.next(), it.next()) {
                if let (Ok(net), Ok(mask)) = (net.parse::<Ipv4Addr>(), mask.parse::<Ipv4Addr>()) {
                    if let Ok(n) = Ipv4Network::with_netmask(net, mask) {
                        if let Ok(n) = Ipv4Network::new(n.network(), n.prefix()) {
                            routes.push(n);
                        }
                    }
                }
            }
        }
    }
    NovaPayload { clients, routes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::sample_file;

    fn sample() -> Config {
        Config::try_from(sample_file()).unwrap()
    }

    fn zip_of(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opt = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, data) in members {
            zip.start_file(*name, opt).unwrap();
            zip.write_all(data).unwrap();
        }
        zip.finish().unwrap().into_inner()
    }

    #[test]
    fn compressed_user_data_is_named() {
        let zip = build_zip(&sample());
        let gzip = {
            // A gzip member (RFC 1952) of the zip: header, deflate, CRC and size.
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(&zip).unwrap();
            e.finish().unwrap()
        };
        let e = decode(&gzip).unwrap_err();
        assert!(
            matches!(
                e,
                PayloadError::Compressed {
                    format: "gzip",
                    layer: "",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("gunzip"), "{e}");
        let b64 = STANDARD.encode(&gzip);
        assert!(matches!(
            decode(b64.as_bytes()),
            Err(PayloadError::Compressed {
                format: "gzip",
                layer: " inside a base64 layer",
                ..
            })
        ));
        for (magic, format, _) in COMPRESSED {
            let mut data = magic.to_vec();
            data.extend_from_slice(&zip);
            assert!(
                matches!(decode(&data), Err(PayloadError::Compressed { format: f, .. }) if f == format),
                "{format}"
            );
        }
    }

    #[test]
    fn every_encoding_round_trips() {
        let c = sample();
        for enc in [Encoding::Nova, Encoding::Guest, Encoding::Zip] {
            let bytes = encode(&c, enc).unwrap();
            assert_eq!(
                decode(&bytes).unwrap(),
                Payload::Cloudpipe(Box::new(c.clone())),
                "{enc:?}"
            );
        }
    }

    #[test]
    fn guest_form_is_wrapped_and_whitespace_tolerated() {
        let c = sample();
        let guest = String::from_utf8(encode(&c, Encoding::Guest).unwrap()).unwrap();
        assert!(guest.lines().all(|l| l.len() <= 76));
        let mangled = guest.replace('\n', "\r\n  \t");
        assert!(matches!(
            decode(mangled.as_bytes()).unwrap(),
            Payload::Cloudpipe(_)
        ));
    }

    #[test]
    fn garbage_and_truncation_are_clear_errors() {
        assert_eq!(decode(b""), Err(PayloadError::Empty));
        assert_eq!(decode(b" \n "), Err(PayloadError::Empty));
        assert!(matches!(
            decode(b"hello world!"),
            Err(PayloadError::NotBase64(_))
        ));
        let guest = encode(&sample(), Encoding::Guest).unwrap();
        let cut = &guest[..guest.len() / 2];
        assert!(decode(cut).is_err());
        let zip = build_zip(&sample());
        assert!(matches!(
            decode(&zip[..zip.len() - 30]),
            Err(PayloadError::NotZip(_))
        ));
        assert!(matches!(
            decode(&vec![b'A'; MAX_INPUT + 4]),
            Err(PayloadError::TooLarge { .. })
        ));
    }

    #[test]
    fn zip_slip_names_are_refused_not_written() {
        let zip = zip_of(&[("../../etc/cron.d/x", b"boom"), (CONFIG_MEMBER, b"{}")]);
        assert_eq!(
            decode(&zip),
            Err(PayloadError::UnexpectedMember("../../etc/cron.d/x".into()))
        );
    }

    #[test]
    fn zip_bomb_fails_fast() {
        let zeros = vec![0u8; 8 * 1024 * 1024];
        let zip = zip_of(&[(CONFIG_MEMBER, &zeros)]);
        assert!(zip.len() < 64 * 1024, "bomb compresses: {}", zip.len());
        assert!(matches!(
            decode(&zip),
            Err(PayloadError::MemberTooLarge { .. })
        ));
    }

    #[test]
    fn lying_declared_size_is_still_capped() {
        // Patch both local and central headers to claim a tiny uncompressed size.
        let zeros = vec![b' '; 1024 * 1024];
        let mut zip = zip_of(&[(CONFIG_MEMBER, &zeros)]);
        let claim = 10u32.to_le_bytes();
        zip[22..26].copy_from_slice(&claim);
        let cd = zip.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
        zip[cd + 24..cd + 28].copy_from_slice(&claim);
        let e = decode(&zip).unwrap_err();
        assert!(
            matches!(
                e,
                PayloadError::MemberTooLarge { .. }
                    | PayloadError::NotZip(_)
                    | PayloadError::Json(_)
            ),
            "{e:?}"
        );
    }

    #[test]
    fn member_rules() {
        assert_eq!(
            decode(&zip_of(&[("other", b"x")])),
            Err(PayloadError::UnexpectedMember("other".into()))
        );
        let json = serde_json::to_vec(&sample_file()).unwrap();
        // The writer refuses duplicates: write "cloudpipe.jsoX" and rename it in place.
        let mut dup = zip_of(&[(CONFIG_MEMBER, &json), ("cloudpipe.jsoX", &json)]);
        while let Some(i) = dup.windows(14).position(|w| w == b"cloudpipe.jsoX") {
            dup[i + 13] = b'n';
        }
        assert!(matches!(
            decode(&dup),
            Err(PayloadError::DuplicateMember(_)) | Err(PayloadError::NotZip(_))
        ));
        let many: Vec<(String, Vec<u8>)> = (0..20).map(|i| (format!("m{i}"), vec![])).collect();
        let refs: Vec<(&str, &[u8])> = many
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        assert!(matches!(
            decode(&zip_of(&refs)),
            Err(PayloadError::TooManyMembers(20))
        ));
        assert!(matches!(
            decode(&zip_of(&[(CONFIG_MEMBER, b"{")])),
            Err(PayloadError::Json(_))
        ));
        // A value of the wrong kind is named by its field.
        let mut v = serde_json::to_value(sample_file()).unwrap();
        v["mtu"] = 70000.into();
        match decode(&zip_of(&[(
            CONFIG_MEMBER,
            &serde_json::to_vec(&v).unwrap(),
        )])) {
            Err(PayloadError::Json(e)) => assert!(e.starts_with("mtu: "), "{e}"),
            other => panic!("{other:?}"),
        }
        let mut bad = sample_file();
        bad.peers[0].address = "10.0.0.7".parse().unwrap();
        let bad = serde_json::to_vec(&bad).unwrap();
        match decode(&zip_of(&[(CONFIG_MEMBER, &bad)])) {
            Err(PayloadError::Config(e)) => assert_eq!(e.field, "peers[0].address"),
            other => panic!("{other:?}"),
        }
    }

    /// A bootscript rendered as Nova rendered `bootscript.template` (num_vpn=5,
    /// dmz 10.10.0.0/255.255.0.0).
    pub(crate) const NOVA_AUTORUN: &str = r#"#!/bin/sh
export LC_ALL=C
export VPN_IP=`ifconfig  | grep 'inet addr:'| grep -v '127.0.0.1' | cut -d: -f2 | awk '{print $1}'`
export BROADCAST=`ifconfig  | grep 'inet addr:'| grep -v '127.0.0.1' | cut -d: -f3 | awk '{print $1}'`
DHCP_LOWER=`echo $BROADCAST | awk -F. '{print $1"."$2"."$3"." $4 - 5 }'`
DHCP_UPPER=`echo $BROADCAST | awk -F. '{print $1"."$2"."$3"." $4 - 1 }'`
echo "push \"route 10.10.0.0 255.255.0.0 $GATEWAY\"" >> server.conf
echo "duplicate-cn" >> server.conf
echo "client-to-client" >> server.conf
/etc/init.d/openvpn start
"#;

    #[test]
    fn nova_payload_is_recognised_in_every_encoding() {
        let zip = zip_of(&[
            ("autorun.sh", NOVA_AUTORUN.as_bytes()),
            ("crl.pem", b"crl"),
            ("server.key", b"key"),
            ("ca.crt", b"ca"),
            ("server.crt", b"crt"),
        ]);
        let want = Payload::Nova(NovaPayload {
            clients: Some(5),
            routes: vec!["10.10.0.0/16".parse().unwrap()],
        });
        for enc in [Encoding::Nova, Encoding::Guest, Encoding::Zip] {
            assert_eq!(decode(&encode_zip(&zip, enc).unwrap()).unwrap(), want);
        }
        if let Payload::Nova(n) = want {
            assert!(n.migration_hint().contains("import-nova"));
        }
    }

    /// Found by the payload_decode fuzz target's round trip: 25000 DNS entries are
    /// 250 KB of compact JSON (decodes), 375 KB pretty-printed as `encode` writes it,
    /// and deflate to under 1 KB, far below Nova's limit. `encode` produced a
    /// payload that `decode` refused with MemberTooLarge.
    #[test]
    fn encode_refuses_what_decode_would_refuse() {
        let mut file = sample_file();
        file.dns = vec![Ipv4Addr::new(1, 1, 1, 1); 25_000];
        let compact = serde_json::to_vec(&file).unwrap();
        assert!(compact.len() as u64 <= MAX_MEMBER_SIZE);
        let config = match decode(&zip_of(&[(CONFIG_MEMBER, &compact)])).unwrap() {
            Payload::Cloudpipe(c) => *c,
            other => panic!("{other:?}"),
        };
        for enc in [Encoding::Nova, Encoding::Guest, Encoding::Zip] {
            match encode(&config, enc) {
                Ok(bytes) => assert_eq!(
                    decode(&bytes),
                    Ok(Payload::Cloudpipe(Box::new(config.clone()))),
                    "{enc:?}"
                ),
                Err(e) => assert!(
                    matches!(e, PayloadError::MemberTooLarge { .. }),
                    "{enc:?}: {e:?}"
                ),
            }
        }
    }

    #[test]
    fn oversized_user_data_is_refused_at_encode() {
        let noise: Vec<u8> = (0..60_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        assert!(matches!(
            encode_zip(&noise, Encoding::Nova),
            Err(PayloadError::TooLarge { .. })
        ));
    }

    mod prop {
        use super::*;
        use crate::config::{Mode, PeerFile, PoolFile};
        use crate::keys::{PresharedKey, PrivateKey};
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            // Any valid configuration survives every encoding unchanged.
            #[test]
            fn any_valid_config_round_trips(
                net in any::<u32>(), prefix in 16u8..=28, peers in 0usize..12,
                seed in any::<u8>(), c2c in any::<bool>(), masq in any::<bool>(), mtu in 1280u16..=9000,
            ) {
                let subnet = ipnetwork::Ipv4Network::new(std::net::Ipv4Addr::from(net), prefix).unwrap();
                let subnet = ipnetwork::Ipv4Network::new(subnet.network(), prefix).unwrap();
                let top = u32::from(subnet.broadcast());
                let n = peers.min(((1u32 << (32 - prefix)) - 4) as usize);
                let file = crate::config::ConfigFile {
                    version: 1,
                    network: format!("net-{seed}"),
                    cidr: subnet.to_string(),
                    gateway: None, address: None, interface: None,
                    mtu: Some(mtu), tenant_mtu: None, listen_port: Some(1194),
                    pool: Some(PoolFile { first: (top - n.max(1) as u32).into(), last: (top - 1).into() }),
                    routes: vec!["192.168.0.0/16".into()],
                    dns: vec![],
                    mode: if masq { Mode::Masquerade } else { Mode::ProxyArp },
                    client_to_client: c2c,
                    endpoint: (seed % 2 == 0).then(|| "203.0.113.10:1194".into()),
                    status_port: (seed % 3 == 0).then_some(9100),
                    private_key: PrivateKey::from_bytes([seed; 32]).to_base64(),
                    peers: (0..n).map(|i| PeerFile {
                        name: format!("p{i}"),
                        public_key: PrivateKey::from_bytes([seed.wrapping_add(1 + i as u8); 32]).public_key().to_base64(),
                        preshared_key: (i % 2 == 0).then(|| PresharedKey::from_bytes([i as u8; 32]).to_base64()),
                        address: (top - 1 - i as u32).into(),
                    }).collect(),
                };
                let Ok(config) = Config::try_from(file) else {
                    // Key collisions of the generator (a peer with the server's key).
                    return Ok(());
                };
                for enc in [Encoding::Nova, Encoding::Guest, Encoding::Zip] {
                    let bytes = encode(&config, enc).unwrap();
                    prop_assert_eq!(decode(&bytes).unwrap(), Payload::Cloudpipe(Box::new(config.clone())));
                }
            }
        }
    }
}
