//! Server keys: a keyring of numbered token keys plus one storage key.
//!
//! Each numbered key holds 32 bytes of root material from which two working
//! keys are derived with BLAKE3 `derive_key`: a keyed-BLAKE3 key that
//! authenticates tokens, and an XChaCha20-Poly1305 key that seals records.
//! Tokens and sealed blobs name the key id that made them, so a new key can
//! become active while old ids keep verifying. The separate storage key
//! keys the index hashes, the stored token hashes and the key-check value;
//! it stays the same for the life of a database.
//!
//! Keys never go into the database. All key material is zeroized on drop.
//!
//! # Key file format
//!
//! A UTF-8 text file (written with mode 0600):
//!
//! ```text
//! rotoken-keys v1
//! storage <base64url, 32 bytes>
//! key <id> <created, unix seconds> <base64url, 32 bytes>
//! active <id>
//! ```
//!
//! Lines starting with `#` and blank lines are ignored.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::token::{AUTHENTICATOR_LEN, SECRET_LEN, Secret, Token};

const CTX_AUTH: &str = "rotoken 2026-11 token authenticator v1";
const CTX_SEAL: &str = "rotoken 2026-11 record sealing v1";
const CTX_SUCCESSOR: &str = "rotoken 2026-11 successor sealing v1";
const CTX_INDEX: &str = "rotoken 2026-11 index tags v1";
const CTX_TOKEN_HASH: &str = "rotoken 2026-11 token hash v1";
const CTX_RECORD_MAC: &str = "rotoken 2026-11 record mac v1";
const CTX_KEY_CHECK: &str = "rotoken 2026-11 key check v1";

/// Length of an XChaCha20-Poly1305 nonce.
pub(crate) const NONCE_LEN: usize = 24;
/// Length of a Poly1305 tag.
pub(crate) const TAG_LEN: usize = 16;
/// Bytes a sealed blob adds to its plaintext: key id, nonce and tag.
pub(crate) const SEAL_OVERHEAD: usize = 4 + NONCE_LEN + TAG_LEN;
/// Length of keyed-hash tags kept in records and index keys.
pub(crate) const TAG16: usize = 16;

/// Errors from loading, parsing or changing a keyring.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The file's path.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The key file is not in the expected format.
    #[error("key file line {line}: {reason}")]
    Format {
        /// 1-based line number (0 for the file as a whole).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The key id is not in the keyring.
    #[error("key {0} is not in the keyring")]
    UnknownKey(u32),
    /// The active key cannot be retired.
    #[error("key {0} is the active key and cannot be retired")]
    RetireActive(u32),
    /// The OS random number generator failed.
    #[error("OS random number generator failed: {0}")]
    Random(getrandom::Error),
    /// No key id is left above the highest one in the keyring.
    #[error("no key id is left above {}", u32::MAX)]
    Exhausted,
}

impl KeyError {
    /// A stable code: `keys_io`, `keys_invalid`, `unknown_key`,
    /// `retire_active`, `random_failed` or `keys_exhausted`.
    pub fn code(&self) -> crate::Code {
        use crate::Code;
        match self {
            Self::Io { .. } => Code::KeysIo,
            Self::Format { .. } => Code::KeysInvalid,
            Self::UnknownKey(_) => Code::UnknownKey,
            Self::RetireActive(_) => Code::RetireActive,
            Self::Random(_) => Code::RandomFailed,
            Self::Exhausted => Code::KeysExhausted,
        }
    }
}

/// The largest key file [`Keyring::load`] reads.
pub const MAX_KEY_FILE_LEN: usize = 1 << 20;

/// 32 bytes of secret key material, zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
struct Key32([u8; 32]);

impl Key32 {
    fn random() -> Result<Self, KeyError> {
        let mut k = Self([0; 32]);
        getrandom::fill(&mut k.0).map_err(KeyError::Random)?;
        Ok(k)
    }

    fn derive(&self, context: &str) -> Self {
        Self(blake3::derive_key(context, &self.0))
    }
}

/// One numbered key: its root material and the working keys derived from it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
struct NumberedKey {
    #[zeroize(skip)]
    created: i64,
    root: Key32,
    auth: Key32,
    seal: Key32,
}

impl NumberedKey {
    fn from_root(root: Key32, created: i64) -> Self {
        Self {
            created,
            auth: root.derive(CTX_AUTH),
            seal: root.derive(CTX_SEAL),
            root,
        }
    }
}

/// Which kind of value an index tag is computed over; keeps the tag spaces apart.
#[derive(Clone, Copy, Debug)]
pub(crate) enum TagKind {
    Subject,
    Client,
    Confirmation,
}

/// Why a sealed blob did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The blob is too short to be sealed data.
    #[error("sealed data is truncated")]
    Truncated,
    /// The blob names a key id that is not in the keyring.
    #[error("sealed with key {0}, which is not in the keyring")]
    UnknownKey(u32),
    /// The tag does not verify: wrong key, altered bytes or wrong associated data.
    #[error("sealed data does not verify")]
    Forged,
}

/// The server's keys. Cloning copies key material; all copies zeroize on drop.
#[derive(Clone)]
pub struct Keyring {
    storage: Key32,
    index: Key32,
    token_hash: Key32,
    record_mac: Key32,
    keys: BTreeMap<u32, NumberedKey>,
    active: u32,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// Generates a new keyring with a fresh storage key and key id 1 active.
    ///
    /// # Errors
    ///
    /// [`KeyError::Random`] if the OS random number generator fails.
    pub fn generate() -> Result<Self, KeyError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut keys = BTreeMap::new();
        keys.insert(1, NumberedKey::from_root(Key32::random()?, now));
        Ok(Self::assemble(Key32::random()?, keys, 1))
    }

    fn assemble(storage: Key32, keys: BTreeMap<u32, NumberedKey>, active: u32) -> Self {
        Self {
            index: storage.derive(CTX_INDEX),
            token_hash: storage.derive(CTX_TOKEN_HASH),
            record_mac: storage.derive(CTX_RECORD_MAC),
            storage,
            keys,
            active,
        }
    }

    /// Adds a new numbered key and makes it active; older ids keep verifying.
    /// Returns the new key id.
    ///
    /// # Errors
    ///
    /// [`KeyError::Random`] if the OS random number generator fails,
    /// [`KeyError::Exhausted`] if the highest key id is `u32::MAX`.
    pub fn rotate(&mut self) -> Result<u32, KeyError> {
        let id = self
            .keys
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
            .checked_add(1)
            .ok_or(KeyError::Exhausted)?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        self.keys.insert(id, NumberedKey::from_root(Key32::random()?, now));
        self.active = id;
        Ok(id)
    }

    /// Removes a numbered key. Tokens it authenticated and data it sealed no
    /// longer verify, so retire a key only after the longest absolute
    /// lifetime has passed since a newer key became active.
    ///
    /// # Errors
    ///
    /// [`KeyError::UnknownKey`] or [`KeyError::RetireActive`].
    pub fn retire(&mut self, id: u32) -> Result<(), KeyError> {
        if id == self.active {
            return Err(KeyError::RetireActive(id));
        }
        self.keys.remove(&id).map(drop).ok_or(KeyError::UnknownKey(id))
    }

    /// The id of the key that signs new tokens and seals new data.
    pub fn active_id(&self) -> u32 {
        self.active
    }

    /// The ids in the keyring with their creation times (unix seconds).
    pub fn key_ids(&self) -> Vec<(u32, i64)> {
        self.keys.iter().map(|(id, k)| (*id, k.created)).collect()
    }

    /// Parses a key file's contents.
    ///
    /// # Errors
    ///
    /// [`KeyError::Format`] naming the offending line.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let fail = |line: usize, reason: &str| KeyError::Format {
            line,
            reason: reason.to_owned(),
        };
        let text = std::str::from_utf8(bytes).map_err(|_| fail(0, "not UTF-8"))?;
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
        match lines.next() {
            Some((_, "rotoken-keys v1")) => {}
            Some((n, _)) => return Err(fail(n, "expected header `rotoken-keys v1`")),
            None => return Err(fail(0, "empty key file")),
        }
        let mut storage = None;
        let mut keys = BTreeMap::new();
        let mut active = None;
        for (n, line) in lines {
            let words: Vec<&str> = line.split_ascii_whitespace().collect();
            match words.as_slice() {
                ["storage", k] => {
                    if storage
                        .replace(decode_key(k).ok_or_else(|| fail(n, "bad key"))?)
                        .is_some()
                    {
                        return Err(fail(n, "duplicate storage key"));
                    }
                }
                ["key", id, created, k] => {
                    let id: u32 = id.parse().map_err(|_| fail(n, "bad key id"))?;
                    let created: i64 = created.parse().map_err(|_| fail(n, "bad creation time"))?;
                    let root = decode_key(k).ok_or_else(|| fail(n, "bad key"))?;
                    if keys.insert(id, NumberedKey::from_root(root, created)).is_some() {
                        return Err(fail(n, "duplicate key id"));
                    }
                }
                ["active", id] => {
                    let id: u32 = id.parse().map_err(|_| fail(n, "bad key id"))?;
                    if active.replace(id).is_some() {
                        return Err(fail(n, "duplicate active line"));
                    }
                }
                _ => return Err(fail(n, "unknown line")),
            }
        }
        let storage = storage.ok_or_else(|| fail(0, "no storage key"))?;
        let active = active.ok_or_else(|| fail(0, "no active line"))?;
        if !keys.contains_key(&active) {
            return Err(fail(0, "the active key id is not in the file"));
        }
        Ok(Self::assemble(storage, keys, active))
    }

    /// Serializes the keyring in the key file format.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        use std::fmt::Write as _;
        let mut s = Zeroizing::new(String::new());
        s.push_str("rotoken-keys v1\n# Secret: whoever holds this file can mint refresh tokens.\n");
        let _ = writeln!(s, "storage {}", URL_SAFE_NO_PAD.encode(self.storage.0));
        for (id, k) in &self.keys {
            let _ = writeln!(s, "key {id} {} {}", k.created, URL_SAFE_NO_PAD.encode(k.root.0));
        }
        let _ = writeln!(s, "active {}", self.active);
        Zeroizing::new(s.as_bytes().to_vec())
    }

    /// Loads the key file at `path`, or generates a keyring and writes it
    /// there (mode 0600, never over an existing file) if there is none.
    /// Returns the keyring and whether it was created. Keep the file: the
    /// families sealed under its keys open with nothing else.
    ///
    /// # Errors
    ///
    /// As [`Keyring::load`], [`Keyring::generate`] and [`Keyring::save`].
    pub fn load_or_generate(path: impl AsRef<Path>) -> Result<(Self, bool), KeyError> {
        let path = path.as_ref();
        match Self::load(path) {
            Ok(keys) => Ok((keys, false)),
            Err(KeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                let keys = Self::generate()?;
                keys.save(path, false)?;
                Ok((keys, true))
            }
            Err(e) => Err(e),
        }
    }

    /// Loads a key file (at most [`MAX_KEY_FILE_LEN`] bytes).
    ///
    /// # Errors
    ///
    /// [`KeyError::Io`] if the file cannot be read, [`KeyError::Format`] if
    /// it is malformed or too large.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        use std::io::Read as _;
        let path = path.as_ref();
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut bytes = Zeroizing::new(Vec::new());
        std::fs::File::open(path)
            .map_err(io)?
            .take(MAX_KEY_FILE_LEN as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() > MAX_KEY_FILE_LEN {
            return Err(KeyError::Format {
                line: 0,
                reason: format!("larger than {MAX_KEY_FILE_LEN} bytes"),
            });
        }
        Self::from_bytes(&bytes)
    }

    /// Writes the key file, readable by its owner only (mode 0600 on Unix).
    ///
    /// The keys are written and synced to a uniquely named temporary file
    /// beside `path`, which is then linked into place (failing atomically if
    /// `path` exists and `overwrite` is false) or renamed over it. The
    /// temporary file is removed whatever happens.
    ///
    /// # Errors
    ///
    /// [`KeyError::Io`], with kind `AlreadyExists` if the file exists and
    /// `overwrite` is false.
    pub fn save(&self, path: impl AsRef<Path>, overwrite: bool) -> Result<(), KeyError> {
        let path = path.as_ref();
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).map_err(KeyError::Random)?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(
            ".{}.{:016x}.tmp",
            std::process::id(),
            u64::from_be_bytes(suffix)
        ));
        let tmp = std::path::PathBuf::from(tmp);
        let result = self.write_new(&tmp).and_then(|()| {
            if overwrite {
                std::fs::rename(&tmp, path)
            } else {
                std::fs::hard_link(&tmp, path)
            }
        });
        let _ = std::fs::remove_file(&tmp);
        result.map_err(io)
    }

    fn write_new(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write as _;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let mut f = opts.open(path)?;
        f.write_all(&self.to_bytes())?;
        f.sync_all()
    }

    /// True if key `id` is in the keyring.
    pub fn has_key(&self, id: u32) -> bool {
        self.keys.contains_key(&id)
    }

    fn numbered(&self, id: u32) -> Option<&NumberedKey> {
        self.keys.get(&id)
    }

    /// The authenticator for `token`'s fields under key `key_id`.
    pub(crate) fn authenticator(&self, token: &Token) -> Option<[u8; AUTHENTICATOR_LEN]> {
        let key = self.numbered(token.key_id)?;
        let mac = blake3::keyed_hash(&key.auth.0, token.authenticated_bytes().as_slice());
        Some(truncate(mac.as_bytes()))
    }

    /// True if `token` carries a valid authenticator from a key in this
    /// keyring. Constant-time comparison; touches no storage.
    pub fn verify(&self, token: &Token) -> bool {
        self.authenticator(token)
            .is_some_and(|a| bool::from(a.ct_eq(&token.authenticator)))
    }

    /// Makes a signed token with the active key.
    pub(crate) fn sign(&self, family: crate::FamilyId, generation: u32, secret: Secret) -> Token {
        self.sign_with(self.active, family, generation, secret)
    }

    fn sign_with(&self, key_id: u32, family: crate::FamilyId, generation: u32, secret: Secret) -> Token {
        let mut t = Token {
            key_id,
            family,
            generation,
            secret,
            authenticator: [0; AUTHENTICATOR_LEN],
        };
        t.authenticator = self.authenticator(&t).unwrap_or([0; AUTHENTICATOR_LEN]);
        t
    }

    /// The keyed hash of a token kept in the family record.
    pub(crate) fn token_hash(&self, token: &Token) -> [u8; TAG16] {
        truncate(blake3::keyed_hash(&self.token_hash.0, token.authenticated_bytes().as_slice()).as_bytes())
    }

    /// A keyed tag of a subject, client id or confirmation thumbprint, used
    /// as an index key and kept in records instead of the clear value.
    pub(crate) fn tag(&self, kind: TagKind, value: &str) -> [u8; TAG16] {
        let mut h = blake3::Hasher::new_keyed(&self.index.0);
        h.update(&[kind as u8]);
        h.update(value.as_bytes());
        truncate(h.finalize().as_bytes())
    }

    /// The MAC that makes a stored record tamper-evident and binds it to its family.
    pub(crate) fn record_mac(&self, family: &crate::FamilyId, body: &[u8]) -> [u8; TAG16] {
        let mut h = blake3::Hasher::new_keyed(&self.record_mac.0);
        h.update(&family.0);
        h.update(body);
        truncate(h.finalize().as_bytes())
    }

    /// The value stored in the database so a wrong key file is detected at open.
    pub(crate) fn key_check(&self) -> [u8; 32] {
        *blake3::keyed_hash(&self.storage.derive(CTX_KEY_CHECK).0, b"rotoken key check").as_bytes()
    }

    /// Seals `plaintext` with the active key: `key id ‖ nonce ‖ ciphertext ‖ tag`.
    pub(crate) fn seal(&self, ad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, getrandom::Error> {
        let key = self.numbered(self.active).map(|k| &k.seal);
        let key = key.unwrap_or(&self.storage); // unreachable: `active` is always in `keys`
        seal_with(self.active, key, ad, plaintext)
    }

    /// Opens a blob made by [`Keyring::seal`].
    pub(crate) fn open(&self, ad: &[u8], blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let id = key_id_of(blob)?;
        let key = self.numbered(id).ok_or(SealError::UnknownKey(id))?;
        open_with(&key.seal, ad, blob)
    }

    /// Seals the successor of `predecessor` under a key derived from the
    /// active seal key AND the predecessor's secret: the database plus the
    /// server keys cannot open it; only someone presenting the predecessor can.
    pub(crate) fn seal_successor(
        &self,
        predecessor: &Token,
        successor: &Token,
        ad: &[u8],
    ) -> Result<Vec<u8>, getrandom::Error> {
        let id = self.active;
        let key = self
            .successor_key(id, predecessor)
            .unwrap_or_else(|| self.storage.clone());
        let mut pt = Zeroizing::new([0u8; 4 + SECRET_LEN]);
        pt[..4].copy_from_slice(&successor.key_id.to_be_bytes());
        pt[4..].copy_from_slice(&successor.secret.0);
        seal_with(id, &key, ad, pt.as_slice())
    }

    /// Opens a successor sealed by [`Keyring::seal_successor`] with the
    /// presented predecessor, and rebuilds the successor token.
    pub(crate) fn open_successor(&self, predecessor: &Token, ad: &[u8], blob: &[u8]) -> Result<Token, SealError> {
        let id = key_id_of(blob)?;
        let key = self.successor_key(id, predecessor).ok_or(SealError::UnknownKey(id))?;
        let pt = open_with(&key, ad, blob)?;
        if pt.len() != 4 + SECRET_LEN {
            return Err(SealError::Forged);
        }
        let key_id = u32::from_be_bytes([pt[0], pt[1], pt[2], pt[3]]);
        let mut secret = Secret([0; SECRET_LEN]);
        secret.0.copy_from_slice(&pt[4..]);
        if self.numbered(key_id).is_none() {
            return Err(SealError::UnknownKey(key_id));
        }
        Ok(self.sign_with(
            key_id,
            predecessor.family,
            predecessor.generation.wrapping_add(1),
            secret,
        ))
    }

    fn successor_key(&self, seal_id: u32, predecessor: &Token) -> Option<Key32> {
        let seal = &self.numbered(seal_id)?.seal;
        let mut material = Zeroizing::new([0u8; 32 + 4 + crate::token::AUTHENTICATED_LEN]);
        material[..32].copy_from_slice(&seal.0);
        material[32..].copy_from_slice(predecessor.authenticated_bytes().as_slice());
        Some(Key32(blake3::derive_key(CTX_SUCCESSOR, material.as_slice())))
    }
}

/// The key id a sealed blob names, if it is long enough to be one.
pub(crate) fn sealed_key_id(blob: &[u8]) -> Option<u32> {
    key_id_of(blob).ok()
}

fn key_id_of(blob: &[u8]) -> Result<u32, SealError> {
    if blob.len() < SEAL_OVERHEAD {
        return Err(SealError::Truncated);
    }
    Ok(u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]))
}

fn seal_with(id: u32, key: &Key32, ad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, getrandom::Error> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce)?;
    let cipher = XChaCha20Poly1305::new((&key.0).into());
    // Encryption with a 32-byte key and 24-byte nonce cannot fail for
    // in-memory inputs of this size; an empty result would fail to open.
    let ct = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: ad,
            },
        )
        .unwrap_or_default();
    let mut out = Vec::with_capacity(4 + NONCE_LEN + ct.len());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

fn open_with(key: &Key32, ad: &[u8], blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
    if blob.len() < SEAL_OVERHEAD {
        return Err(SealError::Truncated);
    }
    let cipher = XChaCha20Poly1305::new((&key.0).into());
    cipher
        .decrypt(
            XNonce::from_slice(&blob[4..4 + NONCE_LEN]),
            Payload {
                msg: &blob[4 + NONCE_LEN..],
                aad: ad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| SealError::Forged)
}

fn decode_key(s: &str) -> Option<Key32> {
    let mut k = Key32([0; 32]);
    match URL_SAFE_NO_PAD.decode_slice(s, &mut k.0) {
        Ok(32) => Some(k),
        _ => None,
    }
}

fn truncate<const N: usize>(bytes: &[u8; 32]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[..N]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FamilyId;

    fn token(ring: &Keyring) -> Token {
        ring.sign(FamilyId([1; 16]), 3, Secret([2; 16]))
    }

    #[test]
    fn file_round_trip_keeps_every_key() {
        let mut ring = Keyring::generate().unwrap();
        ring.rotate().unwrap();
        let back = Keyring::from_bytes(&ring.to_bytes()).unwrap();
        assert_eq!(back.active_id(), 2);
        assert_eq!(back.key_ids(), ring.key_ids());
        assert_eq!(back.key_check(), ring.key_check());
        assert!(back.verify(&token(&ring)));
    }

    #[test]
    fn load_or_generate_creates_a_private_file_once_then_loads_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.keys");
        let (made, created) = Keyring::load_or_generate(&path).unwrap();
        assert!(created);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let (loaded, created) = Keyring::load_or_generate(&path).unwrap();
        assert!(!created);
        assert_eq!(loaded.key_check(), made.key_check());
        // A damaged file is an error, never replaced by new keys.
        std::fs::write(&path, b"not a key file").unwrap();
        assert!(matches!(Keyring::load_or_generate(&path), Err(KeyError::Format { .. })));
        assert_eq!(std::fs::read(&path).unwrap(), b"not a key file");
    }

    #[test]
    fn old_keys_keep_verifying_until_retired() {
        let mut ring = Keyring::generate().unwrap();
        let old = token(&ring);
        let sealed = ring.seal(b"ad", b"hello").unwrap();
        ring.rotate().unwrap();
        assert!(ring.verify(&old));
        assert_eq!(ring.open(b"ad", &sealed).unwrap().as_slice(), b"hello");
        assert_eq!(token(&ring).key_id, 2);
        assert!(matches!(ring.retire(2), Err(KeyError::RetireActive(2))));
        ring.retire(1).unwrap();
        assert!(!ring.verify(&old));
        assert_eq!(
            ring.open(b"ad", &sealed),
            Err(SealError::UnknownKey(1)).map(|()| unreachable!())
        );
    }

    #[test]
    fn forged_authenticator_fails() {
        let ring = Keyring::generate().unwrap();
        let mut t = token(&ring);
        t.authenticator[0] ^= 1;
        assert!(!ring.verify(&t));
        let other = Keyring::generate().unwrap();
        assert!(!other.verify(&token(&ring)));
    }

    #[test]
    fn sealed_data_is_bound_to_ad_and_bytes() {
        let ring = Keyring::generate().unwrap();
        let sealed = ring.seal(b"family-a", b"subject").unwrap();
        assert_eq!(
            ring.open(b"family-b", &sealed),
            Err(SealError::Forged).map(|()| unreachable!())
        );
        for i in 0..sealed.len() {
            let mut s = sealed.clone();
            s[i] ^= 0x40;
            assert!(ring.open(b"family-a", &s).is_err(), "flip at {i} opened");
        }
        assert_eq!(
            ring.open(b"family-a", &sealed[..10]),
            Err(SealError::Truncated).map(|()| unreachable!())
        );
    }

    #[test]
    fn successor_opens_only_with_the_predecessor() {
        let ring = Keyring::generate().unwrap();
        let pred = token(&ring);
        let succ = ring.sign(pred.family, 4, Secret([7; 16]));
        let blob = ring.seal_successor(&pred, &succ, b"ad").unwrap();
        let back = ring.open_successor(&pred, b"ad", &blob).unwrap();
        assert_eq!(crate::token::format(&back), crate::token::format(&succ));
        let mut wrong = pred.clone();
        wrong.secret.0[15] ^= 1;
        assert!(ring.open_successor(&wrong, b"ad", &blob).is_err());
    }

    #[test]
    fn save_is_atomic_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let ring = Keyring::generate().unwrap();
        ring.save(&path, false).unwrap();
        let err = Keyring::generate().unwrap().save(&path, false).unwrap_err();
        assert!(matches!(err, KeyError::Io { ref source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists));
        assert_eq!(Keyring::load(&path).unwrap().key_check(), ring.key_check());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        // A failed save (the target is a directory) leaves no temporary file behind.
        assert!(ring.save(dir.path(), true).is_err());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("k")]);
        // Oversized files are refused without reading them whole.
        std::fs::write(&path, vec![b'#'; MAX_KEY_FILE_LEN + 1]).unwrap();
        assert!(matches!(Keyring::load(&path), Err(KeyError::Format { line: 0, .. })));
    }

    #[test]
    fn key_ids_do_not_wrap() {
        let a = "A".repeat(43);
        let text = format!("rotoken-keys v1\nstorage {a}\nkey 4294967295 0 {a}\nactive 4294967295\n");
        let mut ring = Keyring::from_bytes(text.as_bytes()).unwrap();
        assert!(matches!(ring.rotate(), Err(KeyError::Exhausted)));
        assert_eq!(ring.key_ids().len(), 1);
    }

    #[test]
    fn bad_files_name_the_line() {
        assert!(matches!(
            Keyring::from_bytes(b""),
            Err(KeyError::Format { line: 0, .. })
        ));
        assert!(matches!(
            Keyring::from_bytes(b"nope"),
            Err(KeyError::Format { line: 1, .. })
        ));
        let err = Keyring::from_bytes(b"rotoken-keys v1\nstorage AAAA\n").unwrap_err();
        assert!(matches!(err, KeyError::Format { line: 2, .. }), "{err}");
        assert!(Keyring::from_bytes(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn tags_depend_on_kind_and_value() {
        let ring = Keyring::generate().unwrap();
        assert_ne!(ring.tag(TagKind::Subject, "a"), ring.tag(TagKind::Client, "a"));
        assert_ne!(ring.tag(TagKind::Subject, "a"), ring.tag(TagKind::Subject, "b"));
        assert_eq!(ring.tag(TagKind::Subject, "a"), ring.tag(TagKind::Subject, "a"));
    }
}
