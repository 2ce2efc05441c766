//! Raw access to a rotoken database, below the engine: the table layout of
//! `crates/rotoken/src/engine.rs` and the keyed constructions of
//! `crates/rotoken/src/keys.rs`, rebuilt from a key file so tests and fuzz
//! targets can plant arbitrary record bodies with a *valid* MAC, or seal
//! arbitrary grant plaintext with the right key and associated data.
//!
//! This mirrors private details of the core on purpose: it lets the tests
//! reach the layers behind the record MAC (the sealed grant's AEAD and its
//! associated data, the grant decoder). A canary test (`raw_layout_matches_the_engine`
//! in `tests/sealed.rs`) fails first, and clearly, if the core changes a
//! context string or a layout.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use rotoken::record::FamilyRecord;
use rotoken::{FamilyId, Keyring, Token};

/// The `meta` table.
pub const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
/// The `families` table: family id → record body ‖ 16-byte MAC.
pub const FAMILIES: TableDefinition<'_, [u8; 16], &[u8]> = TableDefinition::new("families");
/// The `by_subject` index: subject tag ‖ family id.
pub const BY_SUBJECT: TableDefinition<'_, [u8; 32], ()> = TableDefinition::new("by_subject");
/// The `by_client` index: client tag ‖ family id.
pub const BY_CLIENT: TableDefinition<'_, [u8; 32], ()> = TableDefinition::new("by_client");
/// The `by_expiry` index: gc time (u64 ms, big-endian) ‖ family id.
pub const BY_EXPIRY: TableDefinition<'_, [u8; 24], ()> = TableDefinition::new("by_expiry");
/// The `events` table: sequence number → event.
pub const EVENTS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("events");

const CTX_SEAL: &str = "rotoken 2026-11 record sealing v1";
const CTX_INDEX: &str = "rotoken 2026-11 index tags v1";
const CTX_TOKEN_HASH: &str = "rotoken 2026-11 token hash v1";
const CTX_RECORD_MAC: &str = "rotoken 2026-11 record mac v1";

/// Length of the MAC appended to a record body.
pub const MAC_LEN: usize = 16;
/// Key id, nonce and tag around sealed plaintext.
pub const SEAL_OVERHEAD: usize = 4 + 24 + 16;

/// Which kind of value an index tag covers (the core's `TagKind`).
#[derive(Debug, Clone, Copy)]
pub enum TagKind {
    /// A subject.
    Subject = 0,
    /// A client id.
    Client = 1,
    /// A confirmation key thumbprint.
    Confirmation = 2,
}

/// The working keys of a keyring, derived from its key file.
#[derive(Clone)]
pub struct RawKeys {
    record_mac: [u8; 32],
    token_hash: [u8; 32],
    index: [u8; 32],
    /// Numbered seal keys: (key id, key).
    seal: Vec<(u32, [u8; 32])>,
}

impl std::fmt::Debug for RawKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawKeys(..)")
    }
}

fn decode32(s: &str) -> Option<[u8; 32]> {
    let mut k = [0u8; 32];
    match URL_SAFE_NO_PAD.decode_slice(s, &mut k) {
        Ok(32) => Some(k),
        _ => None,
    }
}

fn first16(h: &blake3::Hash) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.as_bytes()[..16]);
    out
}

impl RawKeys {
    /// Derives the working keys from a keyring (through its key file form).
    ///
    /// # Panics
    ///
    /// If the key file format is not the one this module knows.
    pub fn of(keys: &Keyring) -> Self {
        let text = keys.to_bytes();
        let text = std::str::from_utf8(&text).expect("key file is UTF-8");
        let mut storage = None;
        let mut seal = Vec::new();
        for line in text.lines() {
            let words: Vec<&str> = line.split_ascii_whitespace().collect();
            match words.as_slice() {
                ["storage", k] => storage = decode32(k),
                ["key", id, _created, k] => seal.push((
                    id.parse().expect("key id"),
                    blake3::derive_key(CTX_SEAL, &decode32(k).expect("numbered key")),
                )),
                _ => {}
            }
        }
        let storage = storage.expect("a storage key");
        Self {
            record_mac: blake3::derive_key(CTX_RECORD_MAC, &storage),
            token_hash: blake3::derive_key(CTX_TOKEN_HASH, &storage),
            index: blake3::derive_key(CTX_INDEX, &storage),
            seal,
        }
    }

    /// The MAC the engine appends to a record body of `family`.
    pub fn record_mac(&self, family: &FamilyId, body: &[u8]) -> [u8; MAC_LEN] {
        let mut h = blake3::Hasher::new_keyed(&self.record_mac);
        h.update(family.as_bytes());
        h.update(body);
        first16(&h.finalize())
    }

    /// A stored value: `body ‖ MAC`, with a valid MAC.
    pub fn seal_value(&self, family: &FamilyId, body: &[u8]) -> Vec<u8> {
        let mut v = body.to_vec();
        v.extend_from_slice(&self.record_mac(family, body));
        v
    }

    /// The keyed hash of a token, as kept in `FamilyRecord::current_hash`.
    pub fn token_hash(&self, token: &Token) -> [u8; 16] {
        let mut h = blake3::Hasher::new_keyed(&self.token_hash);
        h.update(rotoken::token::PREFIX.as_bytes());
        h.update(&token.key_id.to_be_bytes());
        h.update(token.family.as_bytes());
        h.update(&token.generation.to_be_bytes());
        h.update(token.secret.expose());
        first16(&h.finalize())
    }

    /// The keyed tag of a subject, client id or thumbprint.
    pub fn tag(&self, kind: TagKind, value: &str) -> [u8; 16] {
        let mut h = blake3::Hasher::new_keyed(&self.index);
        h.update(&[kind as u8]);
        h.update(value.as_bytes());
        first16(&h.finalize())
    }

    /// Seals `plaintext` under numbered key `key_id` with a fixed `nonce`:
    /// `key id ‖ nonce ‖ ciphertext ‖ tag`. `None` if the key is unknown.
    pub fn seal(&self, key_id: u32, nonce: [u8; 24], ad: &[u8], plaintext: &[u8]) -> Option<Vec<u8>> {
        let key = self.seal.iter().find(|(id, _)| *id == key_id)?.1;
        let ct = XChaCha20Poly1305::new((&key).into())
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: ad,
                },
            )
            .ok()?;
        let mut out = Vec::with_capacity(SEAL_OVERHEAD + plaintext.len());
        out.extend_from_slice(&key_id.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Some(out)
    }

    /// Opens a blob sealed under a numbered key; `None` if it does not open.
    pub fn open(&self, ad: &[u8], blob: &[u8]) -> Option<Vec<u8>> {
        if blob.len() < SEAL_OVERHEAD {
            return None;
        }
        let id = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]);
        let key = self.seal.iter().find(|(k, _)| *k == id)?.1;
        XChaCha20Poly1305::new((&key).into())
            .decrypt(
                XNonce::from_slice(&blob[4..28]),
                Payload {
                    msg: &blob[28..],
                    aad: ad,
                },
            )
            .ok()
    }
}

/// The associated data a family's sealed grant is bound to.
pub fn grant_ad(family: &FamilyId, rec: &FamilyRecord) -> Vec<u8> {
    let mut ad = Vec::with_capacity(128);
    ad.extend_from_slice(b"rotoken grant v1");
    ad.extend_from_slice(family.as_bytes());
    ad.extend_from_slice(&rec.subject_tag);
    ad.extend_from_slice(&rec.client_tag);
    ad.extend_from_slice(&rec.confirmation_tag.unwrap_or([0; 16]));
    ad.push(u8::from(rec.confirmation_tag.is_some()));
    ad.extend_from_slice(&rec.created_at.to_be_bytes());
    ad.extend_from_slice(&rec.expires_at.to_be_bytes());
    ad
}

/// The grant plaintext layout: version 1, then length-prefixed subject,
/// client id, scope, an optional confirmation, metadata.
pub fn encode_grant(grant: &rotoken::Grant) -> Vec<u8> {
    fn put(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(b);
    }
    let mut out = vec![1u8];
    put(&mut out, grant.subject.as_bytes());
    put(&mut out, grant.client_id.as_bytes());
    put(&mut out, grant.scope.to_string().as_bytes());
    match &grant.confirmation {
        Some(c) => {
            out.push(1);
            put(&mut out, c.as_bytes());
        }
        None => out.push(0),
    }
    put(&mut out, &grant.metadata);
    out
}

/// Splits a stored value into body and MAC; `None` if it is shorter than a MAC.
pub fn split_value(v: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = v.len().checked_sub(MAC_LEN)?;
    Some(v.split_at(at))
}

/// Every `(family, stored value)` of the `families` table.
///
/// # Errors
///
/// A redb error.
pub fn families(db: &redb::Database) -> Result<Vec<(FamilyId, Vec<u8>)>, redb::Error> {
    let read = db.begin_read()?;
    let table = read.open_table(FAMILIES)?;
    let mut out = Vec::new();
    for entry in table.iter()? {
        let (k, v) = entry?;
        out.push((FamilyId::from_bytes(k.value()), v.value().to_vec()));
    }
    Ok(out)
}

/// Replaces (or inserts) the stored value of `family`, in one durable commit.
///
/// # Errors
///
/// A redb error.
pub fn put_family(db: &redb::Database, family: &FamilyId, value: &[u8]) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    txn.open_table(FAMILIES)?.insert(family.as_bytes(), value)?;
    txn.commit()?;
    Ok(())
}
