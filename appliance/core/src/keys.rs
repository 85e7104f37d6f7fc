//! WireGuard keys: 32-byte Curve25519 values written as standard base64 (44 chars),
//! exactly as `wg genkey`, `wg pubkey` and `wg genpsk` print them.
//!
//! Secret keys never print themselves: their `Debug` is redacted, and the only way
//! to get the base64 text out is [`PrivateKey::to_base64`] / [`PresharedKey::to_base64`].

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand_core::{CryptoRng, RngCore};
use std::fmt;
use std::str::FromStr;

/// Length in bytes of every WireGuard key.
pub const KEY_LEN: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not valid base64")]
    Base64,
    #[error("decodes to {0} bytes, a WireGuard key is 32")]
    Length(usize),
    #[error("not 64 hexadecimal digits")]
    Hex,
}

/// A key written as 64 hexadecimal digits (either case), as the `wg` UAPI writes
/// keys (wireguard.com/xplatform).
pub fn key_from_hex(s: &str) -> Result<[u8; KEY_LEN], KeyError> {
    let s = s.as_bytes();
    if s.len() != 2 * KEY_LEN {
        return Err(KeyError::Hex);
    }
    let digit = |c: u8| (c as char).to_digit(16).ok_or(KeyError::Hex);
    let mut out = [0u8; KEY_LEN];
    for (i, b) in out.iter_mut().enumerate() {
        *b = (digit(s[2 * i])? << 4 | digit(s[2 * i + 1])?) as u8;
    }
    Ok(out)
}

/// Lower-case hex of a key, as the `wg` UAPI writes keys.
pub fn key_to_hex(bytes: &[u8; KEY_LEN]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 * KEY_LEN);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 0xf) as usize] as char);
    }
    s
}

fn decode_key(s: &str) -> Result<[u8; KEY_LEN], KeyError> {
    let bytes = STANDARD.decode(s.trim()).map_err(|_| KeyError::Base64)?;
    <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| KeyError::Length(bytes.len()))
}

/// A peer's or the server's public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }
    /// Lower-case hex, as the `wg` UAPI writes keys.
    pub fn to_hex(&self) -> String {
        key_to_hex(&self.0)
    }

    /// Whether this is a point of small order on Curve25519 (the all-zero key among
    /// them): Diffie-Hellman with it gives the all-zero secret whatever the private
    /// key, which WireGuard refuses (whitepaper section 5.4.2; RFC 7748 section 6.1
    /// says to check), so no handshake with such a peer can ever complete. A clamped
    /// scalar is a multiple of the cofactor 8, which sends exactly these points to 0.
    pub fn is_low_order(&self) -> bool {
        let mut scalar = [0x55u8; KEY_LEN];
        scalar[0] &= 248;
        x25519_dalek::x25519(scalar, self.0) == [0u8; KEY_LEN]
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        decode_key(s).map(Self)
    }
}

/// A Curve25519 static secret (the server's, or a client's while the CLI renders its config).
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey([u8; KEY_LEN]);

impl PrivateKey {
    /// A new random key, clamped as `wg genkey` clamps it.
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut bytes = [0u8; KEY_LEN];
        rng.fill_bytes(&mut bytes);
        bytes[0] &= 248;
        bytes[31] &= 127;
        bytes[31] |= 64;
        Self(bytes)
    }
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
    pub fn public_key(&self) -> PublicKey {
        let secret = x25519_dalek::StaticSecret::from(self.0);
        PublicKey(x25519_dalek::PublicKey::from(&secret).to_bytes())
    }
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }
    /// Lower-case hex, for the `wg` UAPI's `get` (a 0600 socket) only.
    pub fn to_hex(&self) -> String {
        key_to_hex(&self.0)
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

impl FromStr for PrivateKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        decode_key(s).map(Self)
    }
}

/// An optional symmetric key mixed into the handshake (`wg genpsk`).
#[derive(Clone, PartialEq, Eq)]
pub struct PresharedKey([u8; KEY_LEN]);

impl PresharedKey {
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut bytes = [0u8; KEY_LEN];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }
    /// Lower-case hex, for the `wg` UAPI's `get` (a 0600 socket) only.
    pub fn to_hex(&self) -> String {
        key_to_hex(&self.0)
    }
}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(<redacted>)")
    }
}

impl FromStr for PresharedKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        decode_key(s).map(Self)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn low_order_public_keys_are_recognised() {
        // All zeros, one, and an order-8 point (RFC 7748 / libsodium's blocklist).
        let zero = PublicKey::from_bytes([0; KEY_LEN]);
        let mut one = [0u8; KEY_LEN];
        one[0] = 1;
        let order8 = PublicKey::from_bytes(
            key_from_hex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")
                .unwrap(),
        );
        for k in [zero, PublicKey::from_bytes(one), order8] {
            assert!(k.is_low_order(), "{k}");
        }
        let mut rng = rand_core::OsRng;
        for _ in 0..32 {
            assert!(!PrivateKey::generate(&mut rng).public_key().is_low_order());
        }
    }

    use super::*;

    #[test]
    fn rfc7748_public_key_derivation() {
        // RFC 7748 section 6.1, Alice's key pair.
        let hex = |s: &str| -> [u8; 32] {
            let v: Vec<u8> = (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect();
            v.try_into().unwrap()
        };
        let sk = PrivateKey::from_bytes(hex(
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        ));
        assert_eq!(
            sk.public_key().to_hex(),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
    }

    #[test]
    fn base64_round_trip_and_errors() {
        let pk = PublicKey::from_bytes([7; 32]);
        assert_eq!(pk.to_base64().len(), 44);
        assert_eq!(pk.to_base64().parse::<PublicKey>().unwrap(), pk);
        assert_eq!("!!".parse::<PublicKey>(), Err(KeyError::Base64));
        assert_eq!("AAAA".parse::<PublicKey>(), Err(KeyError::Length(3)));
    }

    #[test]
    fn hex_round_trip_and_errors() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 9) as u8);
        let hex = key_to_hex(&bytes);
        assert_eq!(hex.len(), 64);
        assert_eq!(key_from_hex(&hex), Ok(bytes));
        assert_eq!(key_from_hex(&hex.to_uppercase()), Ok(bytes));
        assert_eq!(key_from_hex(&hex[..62]), Err(KeyError::Hex));
        assert_eq!(
            key_from_hex(&format!("{}zz", &hex[..62])),
            Err(KeyError::Hex)
        );
        assert_eq!(
            key_from_hex(&format!("{}\u{e9}", &hex[..62])),
            Err(KeyError::Hex)
        );
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let sk = PrivateKey::from_bytes([1; 32]);
        assert!(!format!("{sk:?}").contains(&sk.to_base64()));
        let psk = PresharedKey::from_bytes([2; 32]);
        assert!(!format!("{psk:?}").contains(&psk.to_base64()));
    }

    #[test]
    fn generated_keys_are_clamped() {
        let mut rng = rand_core::OsRng;
        let k = PrivateKey::generate(&mut rng);
        assert_eq!(k.as_bytes()[0] & 7, 0);
        assert_eq!(k.as_bytes()[31] & 0xc0, 0x40);
    }
}
