//! The refresh-token wire format (`docs/token-format.md` specifies it byte by byte).
//!
//! A token is `rt1_` followed by 80 characters of unpadded URL-safe base64
//! encoding a 60-byte payload:
//!
//! | offset | length | field |
//! |---|---|---|
//! | 0 | 4 | key id (big-endian `u32`) naming the authenticator key |
//! | 4 | 16 | family id |
//! | 20 | 4 | generation (big-endian `u32`) |
//! | 24 | 16 | secret (fresh from the OS CSPRNG at every rotation) |
//! | 40 | 16 | authenticator: keyed BLAKE3 over `rt1_` and bytes 0..40 |
//! | 56 | 4 | CRC-32 (ISO-HDLC) over `rt1_` and bytes 0..56, big-endian |
//!
//! [`parse`] checks length, prefix, encoding and checksum, in that order, and
//! never touches keys or storage: it rejects typos and garbage cheaply (P7).
//! The authenticator is checked by [`crate::Keyring::verify`].

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// The prefix of every version-1 token; secret scanners can match on it.
pub const PREFIX: &str = "rt1_";
/// Length of a family id in bytes.
pub const FAMILY_ID_LEN: usize = 16;
/// Length of a token's random secret in bytes (128 bits).
pub const SECRET_LEN: usize = 16;
/// Length of a token's authenticator in bytes.
pub const AUTHENTICATOR_LEN: usize = 16;
/// Length of the binary payload behind the prefix.
pub const PAYLOAD_LEN: usize = 4 + FAMILY_ID_LEN + 4 + SECRET_LEN + AUTHENTICATOR_LEN + 4;
/// Length of an encoded token in characters (prefix included).
pub const TOKEN_LEN: usize = PREFIX.len() + PAYLOAD_LEN / 3 * 4;

/// Byte range of the fields the authenticator covers (after the prefix).
pub(crate) const AUTHENTICATED_LEN: usize = 4 + FAMILY_ID_LEN + 4 + SECRET_LEN;

const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// Why a byte string is not a well-formed refresh token.
///
/// These errors say what is wrong with the string itself; none of them
/// depends on which families exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The input has the wrong length.
    #[error("token must be {expected} characters, found {found}")]
    Length {
        /// Expected length in bytes.
        expected: usize,
        /// Length of the input in bytes.
        found: usize,
    },
    /// The input does not start with a known prefix.
    #[error("token does not start with `{PREFIX}`")]
    Prefix,
    /// The input is a rotoken token of a version this build does not know.
    #[error("token format version `{0}` is not supported")]
    UnsupportedVersion(char),
    /// The body is not unpadded URL-safe base64 in canonical form.
    #[error("token body is not valid URL-safe base64")]
    Encoding,
    /// The checksum does not match: a typo, truncation or garbage.
    #[error("token checksum does not match")]
    Checksum,
}

/// The random identifier of a token family.
///
/// Displayed and parsed as 32 lowercase hexadecimal characters. It is random,
/// so it reveals nothing about the subject or client.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FamilyId(pub(crate) [u8; FAMILY_ID_LEN]);

impl FamilyId {
    /// A fresh family id from the OS CSPRNG.
    pub(crate) fn random() -> Result<Self, getrandom::Error> {
        let mut b = [0u8; FAMILY_ID_LEN];
        getrandom::fill(&mut b)?;
        Ok(Self(b))
    }

    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8; FAMILY_ID_LEN] {
        &self.0
    }

    /// Builds an id from its bytes.
    pub fn from_bytes(bytes: [u8; FAMILY_ID_LEN]) -> Self {
        Self(bytes)
    }
}

impl fmt::Display for FamilyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for FamilyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FamilyId({self})")
    }
}

/// Error from parsing a [`FamilyId`] from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a family id is 32 hexadecimal characters")]
pub struct FamilyIdError;

impl std::str::FromStr for FamilyId {
    type Err = FamilyIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.as_bytes();
        // Checked up front: `from_str_radix` would also accept a sign (`+f`).
        if s.len() != FAMILY_ID_LEN * 2 || !s.iter().all(u8::is_ascii_hexdigit) {
            return Err(FamilyIdError);
        }
        let mut out = [0u8; FAMILY_ID_LEN];
        for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
            let hex = std::str::from_utf8(pair).map_err(|_| FamilyIdError)?;
            *o = u8::from_str_radix(hex, 16).map_err(|_| FamilyIdError)?;
        }
        Ok(Self(out))
    }
}

/// A token's 128-bit secret. Zeroized on drop; never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Secret(pub(crate) [u8; SECRET_LEN]);

impl Secret {
    /// A fresh secret from the OS CSPRNG.
    pub(crate) fn random() -> Result<Self, getrandom::Error> {
        let mut s = Self([0u8; SECRET_LEN]);
        getrandom::fill(&mut s.0)?;
        Ok(s)
    }

    /// The secret's bytes.
    pub fn expose(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A parsed (not yet authenticated) refresh token.
#[derive(Clone, Debug, Zeroize, ZeroizeOnDrop)]
pub struct Token {
    /// Id of the key whose authenticator key signed this token.
    #[zeroize(skip)]
    pub key_id: u32,
    /// The family this token belongs to.
    #[zeroize(skip)]
    pub family: FamilyId,
    /// 0 for the first token of a family, +1 at each rotation.
    #[zeroize(skip)]
    pub generation: u32,
    /// The random secret.
    pub secret: Secret,
    /// Keyed BLAKE3 authenticator over the fields above.
    pub authenticator: [u8; AUTHENTICATOR_LEN],
}

impl Token {
    /// The bytes the authenticator covers: the prefix, then key id, family,
    /// generation and secret as laid out in the payload.
    pub(crate) fn authenticated_bytes(&self) -> zeroize::Zeroizing<[u8; 4 + AUTHENTICATED_LEN]> {
        let mut b = zeroize::Zeroizing::new([0u8; 4 + AUTHENTICATED_LEN]);
        b[..4].copy_from_slice(PREFIX.as_bytes());
        b[4..8].copy_from_slice(&self.key_id.to_be_bytes());
        b[8..24].copy_from_slice(&self.family.0);
        b[24..28].copy_from_slice(&self.generation.to_be_bytes());
        b[28..44].copy_from_slice(&self.secret.0);
        b
    }
}

/// An encoded refresh token as handed to a client.
///
/// The text is zeroized on drop and never shown by `Debug`; call
/// [`RefreshToken::expose`] to read it.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct RefreshToken(String);

impl RefreshToken {
    /// The token text, to send to the client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken(rt1_…)")
    }
}

/// Parses a token; never panics, whatever the input.
///
/// # Errors
///
/// [`ParseError`] says which check failed: length, prefix, encoding or checksum.
pub fn parse(input: &[u8]) -> Result<Token, ParseError> {
    if input.len() >= 4 && input.starts_with(b"rt") && input[3] == b'_' && input[2] != b'1' {
        return Err(ParseError::UnsupportedVersion(char::from(input[2])));
    }
    if input.len() != TOKEN_LEN {
        return Err(ParseError::Length {
            expected: TOKEN_LEN,
            found: input.len(),
        });
    }
    let (prefix, body) = input.split_at(PREFIX.len());
    if prefix != PREFIX.as_bytes() {
        return Err(ParseError::Prefix);
    }
    let mut payload = zeroize::Zeroizing::new([0u8; PAYLOAD_LEN]);
    match URL_SAFE_NO_PAD.decode_slice(body, payload.as_mut_slice()) {
        Ok(PAYLOAD_LEN) => {}
        _ => return Err(ParseError::Encoding),
    }
    let stored_crc = u32::from_be_bytes(read_array(&payload[56..60]));
    let mut digest = CRC32.digest();
    digest.update(PREFIX.as_bytes());
    digest.update(&payload[..56]);
    if digest.finalize() != stored_crc {
        return Err(ParseError::Checksum);
    }
    Ok(Token {
        key_id: u32::from_be_bytes(read_array(&payload[0..4])),
        family: FamilyId(read_array(&payload[4..20])),
        generation: u32::from_be_bytes(read_array(&payload[20..24])),
        secret: Secret(read_array(&payload[24..40])),
        authenticator: read_array(&payload[40..56]),
    })
}

/// Encodes a token; `format(&parse(x)?) == x` for every valid `x`.
pub fn format(token: &Token) -> RefreshToken {
    let mut payload = zeroize::Zeroizing::new([0u8; PAYLOAD_LEN]);
    payload[..AUTHENTICATED_LEN].copy_from_slice(&token.authenticated_bytes()[4..]);
    payload[40..56].copy_from_slice(&token.authenticator);
    let mut digest = CRC32.digest();
    digest.update(PREFIX.as_bytes());
    digest.update(&payload[..56]);
    payload[56..60].copy_from_slice(&digest.finalize().to_be_bytes());
    let mut out = String::with_capacity(TOKEN_LEN);
    out.push_str(PREFIX);
    URL_SAFE_NO_PAD.encode_string(payload.as_slice(), &mut out);
    RefreshToken(out)
}

/// Copies a slice of known length into an array. Only called with ranges
/// of the fixed-size payload, so the lengths always match.
fn read_array<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(s);
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Token {
        Token {
            key_id: 7,
            family: FamilyId([3; 16]),
            generation: 42,
            secret: Secret([9; 16]),
            authenticator: [5; 16],
        }
    }

    #[test]
    fn length_is_fixed() {
        assert_eq!(TOKEN_LEN, 84);
        assert_eq!(format(&sample()).expose().len(), TOKEN_LEN);
    }

    #[test]
    fn documented_example_parses() {
        let s = "rt1_AAAAATjUTJHRL5Am7KC9SNBIvFIAAAAAi7CzSDXbzR-OEVTtJPSCg_6jBAZ2hOi_dd6QwRhuIFAu5Tcr";
        let t = parse(s.as_bytes()).unwrap();
        assert_eq!(t.key_id, 1);
        assert_eq!(t.generation, 0);
        assert_eq!(t.family.to_string(), "38d44c91d12f9026eca0bd48d048bc52");
        assert_eq!(format(&t).expose(), s);
    }

    #[test]
    fn round_trip() {
        let s = format(&sample());
        let t = parse(s.expose().as_bytes()).unwrap();
        assert_eq!(t.key_id, 7);
        assert_eq!(t.generation, 42);
        assert_eq!(t.family, FamilyId([3; 16]));
        assert_eq!(t.secret.0, [9; 16]);
        assert_eq!(format(&t), s);
    }

    #[test]
    fn every_single_character_typo_is_rejected() {
        let s = format(&sample()).expose().to_owned();
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for i in 0..s.len() {
            for &c in alphabet {
                let mut b = s.clone().into_bytes();
                if b[i] == c {
                    continue;
                }
                b[i] = c;
                assert!(parse(&b).is_err(), "typo at {i} accepted");
            }
        }
    }

    #[test]
    fn errors_name_the_problem() {
        let s = format(&sample()).expose().to_owned();
        assert!(matches!(
            parse(b"hello"),
            Err(ParseError::Length { expected: 84, found: 5 })
        ));
        let mut other = s.clone().into_bytes();
        other[0] = b'x';
        assert!(matches!(parse(&other), Err(ParseError::Prefix)));
        let mut v2 = s.clone().into_bytes();
        v2[2] = b'2';
        assert!(matches!(parse(&v2), Err(ParseError::UnsupportedVersion('2'))));
        let mut enc = s.clone().into_bytes();
        enc[10] = b'=';
        assert!(matches!(parse(&enc), Err(ParseError::Encoding)));
        let mut crc = s.into_bytes();
        crc[20] = if crc[20] == b'A' { b'B' } else { b'A' };
        assert!(matches!(parse(&crc), Err(ParseError::Checksum)));
    }

    #[test]
    fn family_id_text_round_trip() {
        let f = FamilyId([0xab; 16]);
        let s = f.to_string();
        assert_eq!(s.len(), 32);
        assert_eq!(s.parse::<FamilyId>(), Ok(f));
        assert!("zz".parse::<FamilyId>().is_err());
        assert!(format!("+f{}", "0".repeat(30)).parse::<FamilyId>().is_err());
        assert!("é".repeat(16).parse::<FamilyId>().is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(t) = parse(&bytes) {
                let f = format(&t);
                prop_assert_eq!(f.expose().as_bytes(), &bytes[..]);
            }
        }

        #[test]
        fn near_tokens_never_panic(tail in "[A-Za-z0-9_-]{80}") {
            let s = format!("rt1_{tail}");
            if let Ok(t) = parse(s.as_bytes()) {
                let f = format(&t);
                prop_assert_eq!(f.expose(), s.as_str());
            }
        }

        #[test]
        fn format_then_parse(kid in any::<u32>(), fam in any::<[u8; 16]>(), generation in any::<u32>(),
                             secret in any::<[u8; 16]>(), auth in any::<[u8; 16]>()) {
            let t = Token { key_id: kid, family: FamilyId(fam), generation, secret: Secret(secret), authenticator: auth };
            let s = format(&t);
            let back = parse(s.expose().as_bytes()).unwrap();
            prop_assert_eq!(back.key_id, kid);
            prop_assert_eq!(back.family.0, fam);
            prop_assert_eq!(back.generation, generation);
            prop_assert_eq!(back.secret.0, secret);
            prop_assert_eq!(back.authenticator, auth);
        }
    }
}
