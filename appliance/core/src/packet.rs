//! Checked views of IP packets read from the TUN device or decrypted from a peer,
//! and the one packet the appliance writes itself (ICMP destination unreachable).
//!
//! A view is built with [`Ipv4Packet::new_checked`] (or [`IpHeader::parse`] for
//! either family); once built, no accessor can panic or read past the buffer
//! (smoltcp's `new_checked` discipline).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a buffer is not a usable IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketError {
    Empty,
    /// IPv6 or another version where IPv4 is needed.
    NotIpv4,
    /// Neither IPv4 nor IPv6.
    UnknownVersion,
    Truncated,
}

/// The addresses and length of an IPv4 (RFC 791) or IPv6 (RFC 8200) packet: what
/// cryptokey routing needs from either family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpHeader {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The packet's length from its header (bytes after it are padding).
    pub len: usize,
}

/// Fixed IPv6 header length (RFC 8200 section 3).
pub const IPV6_HEADER: usize = 40;

impl IpHeader {
    /// Read the header of an IPv4 or IPv6 packet at the start of `buf`.
    ///
    /// Errors: `Empty`, `Truncated` (header or stated length beyond `buf`), and
    /// `UnknownVersion` for a version nibble other than 4 or 6.
    pub fn parse(buf: &[u8]) -> Result<Self, PacketError> {
        let first = *buf.first().ok_or(PacketError::Empty)?;
        match first >> 4 {
            4 => {
                let p = Ipv4Packet::new_checked(buf)?;
                Ok(IpHeader {
                    src: p.src().into(),
                    dst: p.dst().into(),
                    len: p.as_bytes().len(),
                })
            }
            6 => {
                if buf.len() < IPV6_HEADER {
                    return Err(PacketError::Truncated);
                }
                let len = IPV6_HEADER + usize::from(u16::from_be_bytes([buf[4], buf[5]]));
                if len > buf.len() {
                    return Err(PacketError::Truncated);
                }
                let addr = |at: usize| {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(&buf[at..at + 16]);
                    IpAddr::V6(Ipv6Addr::from(a))
                };
                Ok(IpHeader {
                    src: addr(8),
                    dst: addr(24),
                    len,
                })
            }
            _ => Err(PacketError::UnknownVersion),
        }
    }
}

/// An IPv4 packet whose header has been checked against the buffer.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<'a> {
    buf: &'a [u8],
    header_len: usize,
}

pub const IPV4_MIN_HEADER: usize = 20;
const PROTO_ICMP: u8 = 1;

impl<'a> Ipv4Packet<'a> {
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, PacketError> {
        let first = *buf.first().ok_or(PacketError::Empty)?;
        if first >> 4 != 4 {
            return Err(PacketError::NotIpv4);
        }
        let header_len = usize::from(first & 0x0f) * 4;
        if header_len < IPV4_MIN_HEADER || buf.len() < header_len {
            return Err(PacketError::Truncated);
        }
        let total = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        if total < header_len || total > buf.len() {
            return Err(PacketError::Truncated);
        }
        Ok(Self {
            buf: &buf[..total],
            header_len,
        })
    }

    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.buf[12], self.buf[13], self.buf[14], self.buf[15])
    }
    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.buf[16], self.buf[17], self.buf[18], self.buf[19])
    }
    pub fn protocol(&self) -> u8 {
        self.buf[9]
    }
    pub fn header_len(&self) -> usize {
        self.header_len
    }
    /// The packet up to its total length (trailing padding cut off).
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
    fn is_icmp_error(&self) -> bool {
        // Never answer an ICMP error with an ICMP error (RFC 1122 3.2.2).
        self.protocol() == PROTO_ICMP
            && matches!(self.buf.get(self.header_len), Some(3 | 4 | 5 | 11 | 12))
    }
    fn is_first_fragment(&self) -> bool {
        let frag = u16::from_be_bytes([self.buf[6], self.buf[7]]) & 0x1fff;
        frag == 0
    }
}

/// RFC 1071 Internet checksum.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// ICMP type 3 (destination unreachable), code 1 (host unreachable).
pub const ICMP_HOST_UNREACHABLE: (u8, u8) = (3, 1);

/// Write into `out` an ICMP host-unreachable answer to `original`, sent from `from`,
/// and return its length; `None` when no answer is due (ICMP errors, non-first
/// fragments) or `out` is too small. It quotes the original header and 8 bytes.
pub fn icmp_unreachable(
    original: &Ipv4Packet<'_>,
    from: Ipv4Addr,
    out: &mut [u8],
) -> Option<usize> {
    if original.is_icmp_error() || !original.is_first_fragment() {
        return None;
    }
    let quote = &original.as_bytes()[..(original.header_len() + 8).min(original.as_bytes().len())];
    let total = IPV4_MIN_HEADER + 8 + quote.len();
    let out = out.get_mut(..total)?;
    out.fill(0);
    out[0] = 0x45;
    out[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    out[8] = 64; // TTL
    out[9] = PROTO_ICMP;
    out[12..16].copy_from_slice(&from.octets());
    out[16..20].copy_from_slice(&original.src().octets());
    let ip_sum = checksum(&out[..IPV4_MIN_HEADER]);
    out[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    let icmp = &mut out[IPV4_MIN_HEADER..];
    icmp[0] = ICMP_HOST_UNREACHABLE.0;
    icmp[1] = ICMP_HOST_UNREACHABLE.1;
    icmp[8..].copy_from_slice(quote);
    let icmp_sum = checksum(icmp);
    icmp[2..4].copy_from_slice(&icmp_sum.to_be_bytes());
    Some(total)
}

/// A minimal IPv4/UDP packet from `src` to `dst` carrying `payload` (header
/// checksum set, UDP checksum 0: "none", RFC 768): for tests, benchmarks and load
/// generators.
pub fn udp_packet(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let total = 28 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let s = checksum(&p[..20]);
    p[10..12].copy_from_slice(&s.to_be_bytes());
    p[20..22].copy_from_slice(&1234u16.to_be_bytes());
    p[22..24].copy_from_slice(&5678u16.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) use super::udp_packet;

    #[test]
    fn checked_view_rejects_bad_headers() {
        assert_eq!(
            Ipv4Packet::new_checked(&[]).unwrap_err(),
            PacketError::Empty
        );
        assert_eq!(
            Ipv4Packet::new_checked(&[0x60; 40]).unwrap_err(),
            PacketError::NotIpv4
        );
        assert_eq!(
            Ipv4Packet::new_checked(&[0x45; 10]).unwrap_err(),
            PacketError::Truncated
        );
        let mut p = udp_packet(Ipv4Addr::new(1, 2, 3, 4), Ipv4Addr::new(5, 6, 7, 8), b"hi");
        p[3] = 200; // total length beyond the buffer
        assert_eq!(
            Ipv4Packet::new_checked(&p).unwrap_err(),
            PacketError::Truncated
        );
        p[0] = 0x44; // IHL 16 bytes
        assert_eq!(
            Ipv4Packet::new_checked(&p).unwrap_err(),
            PacketError::Truncated
        );
    }

    #[test]
    fn either_family_header() {
        let p = udp_packet(Ipv4Addr::new(1, 2, 3, 4), Ipv4Addr::new(5, 6, 7, 8), b"hi");
        let h = IpHeader::parse(&p).unwrap();
        assert_eq!((h.src, h.len), (IpAddr::from([1, 2, 3, 4]), p.len()));
        let mut v6 = vec![0u8; 48];
        v6[0] = 0x60;
        v6[5] = 8; // payload length
        v6[8 + 15] = 1;
        v6[24] = 0xfd;
        let h = IpHeader::parse(&v6).unwrap();
        assert_eq!(h.src, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(h.dst, "fd00::".parse::<IpAddr>().unwrap());
        assert_eq!(h.len, 48);
        v6[5] = 9;
        assert_eq!(IpHeader::parse(&v6), Err(PacketError::Truncated));
        assert_eq!(IpHeader::parse(&v6[..30]), Err(PacketError::Truncated));
        assert_eq!(
            IpHeader::parse(&[0x50; 60]),
            Err(PacketError::UnknownVersion)
        );
        assert_eq!(IpHeader::parse(&[]), Err(PacketError::Empty));
    }

    #[test]
    fn addresses_and_padding() {
        let mut p = udp_packet(Ipv4Addr::new(1, 2, 3, 4), Ipv4Addr::new(5, 6, 7, 8), b"hi");
        let len = p.len();
        p.extend_from_slice(&[0; 6]);
        let v = Ipv4Packet::new_checked(&p).unwrap();
        assert_eq!(
            (v.src(), v.dst(), v.as_bytes().len()),
            (Ipv4Addr::new(1, 2, 3, 4), Ipv4Addr::new(5, 6, 7, 8), len)
        );
    }

    #[test]
    fn icmp_unreachable_is_well_formed() {
        let p = udp_packet(
            Ipv4Addr::new(10, 0, 0, 9),
            Ipv4Addr::new(10, 0, 0, 253),
            &[7; 100],
        );
        let v = Ipv4Packet::new_checked(&p).unwrap();
        let mut out = [0u8; 200];
        let n = icmp_unreachable(&v, Ipv4Addr::new(10, 0, 0, 253), &mut out).unwrap();
        let r = Ipv4Packet::new_checked(&out[..n]).unwrap();
        assert_eq!(
            (r.src(), r.dst(), r.protocol()),
            (Ipv4Addr::new(10, 0, 0, 253), Ipv4Addr::new(10, 0, 0, 9), 1)
        );
        assert_eq!(checksum(&out[..20]), 0);
        assert_eq!(checksum(&out[20..n]), 0);
        assert_eq!(&out[28..n], &p[..28]);
        // No error about an error.
        assert!(icmp_unreachable(&r, Ipv4Addr::new(1, 1, 1, 1), &mut [0u8; 200]).is_none());
    }
}
