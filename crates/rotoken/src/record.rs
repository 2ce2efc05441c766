//! Versioned binary layouts of what is stored: family records, sealed grants
//! and events. Decoding never panics and says what is wrong.
//!
//! Family record, version 1 (all integers big-endian):
//!
//! | field | bytes |
//! |---|---|
//! | layout version = 1 | 1 |
//! | state (0 active, 1 revoked) | 1 |
//! | revocation reason (0 if active) | 1 |
//! | generation | 4 |
//! | created_at, rotated_at, expires_at, gc_at (unix ms, i64) | 4 × 8 |
//! | subject tag, client tag | 2 × 16 |
//! | confirmation flag, confirmation tag | 1 + 16 |
//! | current token hash | 16 |
//! | successor flag (0 none, 1 kept, 2 kept and never delivered), sealed successor | 1 + [`SEALED_SUCCESSOR_LEN`] |
//! | sealed grant length (u16), sealed grant | 2 + n |
//!
//! The engine appends a 16-byte keyed MAC over family id and body, so any
//! altered or swapped record is rejected.

use crate::keys::{SEAL_OVERHEAD, TAG16};
use crate::token::SECRET_LEN;

/// Layout version written by this build.
pub const RECORD_VERSION: u8 = 1;
/// Length of a sealed successor: key id, nonce, key id + secret, tag.
pub const SEALED_SUCCESSOR_LEN: usize = SEAL_OVERHEAD + 4 + SECRET_LEN;
/// Length of a record's fixed part (everything before the sealed grant).
const FIXED_LEN: usize = 1 + 1 + 1 + 4 + 32 + 32 + 17 + 16 + 1 + SEALED_SUCCESSOR_LEN + 2;

/// Why stored bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes end before the layout does.
    #[error("record is truncated")]
    Truncated,
    /// Bytes are left over after the layout.
    #[error("record has {0} trailing bytes")]
    Trailing(usize),
    /// The layout version is not one this build reads.
    #[error("record layout version {0} is not supported")]
    Version(u8),
    /// A field holds a value outside its domain.
    #[error("record field {0} holds an invalid value")]
    Field(&'static str),
}

/// A family's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FamilyState {
    /// Rotating normally.
    Active,
    /// Revoked; no token of the family is accepted again.
    Revoked(RevokeReason),
}

/// Why a family was revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[repr(u8)]
pub enum RevokeReason {
    /// A retired token was presented again (RFC 9700 §4.14.2).
    ReuseDetected = 1,
    /// A validly authenticated token disagreed with the stored state: a
    /// generation ahead of the store (restored backup, lost relaxed commit)
    /// or a same-generation token with another secret.
    Diverged = 2,
    /// Revoked through one of its tokens (RFC 7009).
    Token = 3,
    /// Revoked by family id.
    Family = 4,
    /// Revoked with every family of its subject.
    Subject = 5,
    /// Revoked with every family of its client.
    Client = 6,
    /// The oldest live family of its (subject, client), removed when one
    /// more was issued beyond [`crate::Policy::max_families_per_user`]
    /// (only in events: the family itself is gone).
    Cap = 7,
}

impl RevokeReason {
    /// A stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReuseDetected => "reuse_detected",
            Self::Diverged => "diverged",
            Self::Token => "token",
            Self::Family => "family",
            Self::Subject => "subject",
            Self::Client => "client",
            Self::Cap => "cap",
        }
    }

    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::ReuseDetected,
            2 => Self::Diverged,
            3 => Self::Token,
            4 => Self::Family,
            5 => Self::Subject,
            6 => Self::Client,
            7 => Self::Cap,
            _ => return None,
        })
    }
}

/// One family, as stored (without the trailing MAC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyRecord {
    /// Active or revoked.
    pub state: FamilyState,
    /// Generation of the current token.
    pub generation: u32,
    /// When the family was issued (unix ms).
    pub created_at: i64,
    /// When the current token was minted (unix ms); idle expiry and the grace window count from it.
    pub rotated_at: i64,
    /// Absolute expiry (unix ms); never moves.
    pub expires_at: i64,
    /// Key of this family's entry in the expiry index (unix ms).
    pub gc_at: i64,
    /// Keyed tag of the subject (index key).
    pub subject_tag: [u8; TAG16],
    /// Keyed tag of the client id (index key).
    pub client_tag: [u8; TAG16],
    /// Keyed tag of the confirmation key thumbprint, if bound.
    pub confirmation_tag: Option<[u8; TAG16]>,
    /// Keyed hash of the current token.
    pub current_hash: [u8; TAG16],
    /// The current token, sealed under a key derived from its predecessor.
    pub sealed_successor: Option<[u8; SEALED_SUCCESSOR_LEN]>,
    /// The current token was never delivered to the client (its caller
    /// went away, or its commit's outcome was unknown when the client was
    /// answered): the predecessor is answered with it until it is first
    /// used, however late the retry. Stored as successor flag 2.
    pub successor_undelivered: bool,
    /// The grant, sealed.
    pub sealed_grant: Vec<u8>,
}

impl FamilyRecord {
    /// Encodes the record in layout version 1.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED_LEN + self.sealed_grant.len() + TAG16);
        out.push(RECORD_VERSION);
        match self.state {
            FamilyState::Active => out.extend_from_slice(&[0, 0]),
            FamilyState::Revoked(r) => out.extend_from_slice(&[1, r as u8]),
        }
        out.extend_from_slice(&self.generation.to_be_bytes());
        for t in [self.created_at, self.rotated_at, self.expires_at, self.gc_at] {
            out.extend_from_slice(&t.to_be_bytes());
        }
        out.extend_from_slice(&self.subject_tag);
        out.extend_from_slice(&self.client_tag);
        put_optional(&mut out, self.confirmation_tag.as_ref());
        out.extend_from_slice(&self.current_hash);
        put_optional(&mut out, self.sealed_successor.as_ref());
        if self.successor_undelivered && self.sealed_successor.is_some() {
            let at = out.len() - SEALED_SUCCESSOR_LEN - 1;
            out[at] = 2;
        }
        // Sealed grants are bounded by the grant limits, far below u16::MAX.
        let len = u16::try_from(self.sealed_grant.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&self.sealed_grant[..usize::from(len)]);
        out
    }

    /// Decodes a record body (without MAC).
    ///
    /// # Errors
    ///
    /// [`DecodeError`] for truncated, trailing, unknown-version or out-of-domain bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader(bytes);
        let version = r.u8()?;
        if version != RECORD_VERSION {
            return Err(DecodeError::Version(version));
        }
        let state = match (r.u8()?, r.u8()?) {
            (0, 0) => FamilyState::Active,
            (1, reason) => FamilyState::Revoked(RevokeReason::from_u8(reason).ok_or(DecodeError::Field("reason"))?),
            _ => return Err(DecodeError::Field("state")),
        };
        let rec = Self {
            state,
            generation: r.u32()?,
            created_at: r.i64()?,
            rotated_at: r.i64()?,
            expires_at: r.i64()?,
            gc_at: r.i64()?,
            subject_tag: r.array()?,
            client_tag: r.array()?,
            confirmation_tag: r.optional("confirmation flag")?,
            current_hash: r.array()?,
            successor_undelivered: r.0.first() == Some(&2),
            sealed_successor: r.optional_or_undelivered("successor flag")?,
            sealed_grant: {
                let n = r.u16()?;
                r.take(usize::from(n))?.to_vec()
            },
        };
        r.finish()?;
        Ok(rec)
    }
}

fn put_optional<const N: usize>(out: &mut Vec<u8>, v: Option<&[u8; N]>) {
    match v {
        Some(v) => {
            out.push(1);
            out.extend_from_slice(v);
        }
        None => {
            out.push(0);
            out.extend_from_slice(&[0; N]);
        }
    }
}

/// The grant as sealed inside a record: layout version, then
/// length-prefixed subject, client id, scope, confirmation, metadata.
pub(crate) fn encode_grant(g: &crate::Grant) -> zeroize::Zeroizing<Vec<u8>> {
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(32 + g.subject.len() + g.metadata.len()));
    out.push(RECORD_VERSION);
    for field in [
        g.subject.as_bytes(),
        g.client_id.as_bytes(),
        g.scope.to_string().as_bytes(),
    ] {
        put_bytes(&mut out, field);
    }
    match &g.confirmation {
        Some(c) => {
            out.push(1);
            put_bytes(&mut out, c.as_bytes());
        }
        None => out.push(0),
    }
    put_bytes(&mut out, &g.metadata);
    out
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Every field is bounded by the grant limits, far below u32::MAX.
    let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(b);
}

/// Decodes a grant sealed by [`encode_grant`].
pub(crate) fn decode_grant(bytes: &[u8]) -> Result<crate::Grant, DecodeError> {
    let mut r = Reader(bytes);
    let version = r.u8()?;
    if version != RECORD_VERSION {
        return Err(DecodeError::Version(version));
    }
    let subject = r.string("subject")?;
    let client_id = r.string("client_id")?;
    let scope = crate::Scope::parse(&r.string("scope")?).map_err(|_| DecodeError::Field("scope"))?;
    let confirmation = match r.u8()? {
        0 => None,
        1 => Some(r.string("confirmation")?),
        _ => return Err(DecodeError::Field("confirmation flag")),
    };
    let n = r.u32()? as usize;
    let metadata = r.take(n)?.to_vec();
    r.finish()?;
    Ok(crate::Grant {
        subject,
        client_id,
        scope,
        confirmation,
        metadata,
    })
}

/// What an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// A retired token was presented; the family was revoked.
    ReuseDetected {
        /// Generation of the presented token.
        presented: u32,
        /// The family's current generation at that moment.
        current: u32,
    },
    /// A validly authenticated token disagreed with the stored state; the family was revoked.
    Diverged {
        /// Generation of the presented token.
        presented: u32,
        /// The family's current generation at that moment.
        current: u32,
    },
    /// The family was revoked by request.
    Revoked(RevokeReason),
    /// The family expired and gc removed it.
    Expired,
    /// The database's policy was changed ([`crate::Engine::set_policy`]);
    /// the family id is all zeros. Who changed what is in
    /// [`crate::Engine::policy_history`].
    PolicyChanged,
    /// An engine opened on a store whose clock floor was more than a
    /// minute ahead of its own clock, and did not adopt it (a server with
    /// a clock set wrong wrote it); the family id is all zeros.
    /// `rotoken clock lower-floor` repairs the store.
    ClockFloorIgnored {
        /// How far ahead of the opener's clock the floor was, in seconds.
        ahead_secs: u32,
    },
    /// An operator lowered the store's clock floor to their server's clock
    /// ([`crate::Engine::lower_clock_floor`]); the family id is all zeros.
    ClockFloorLowered {
        /// By how much, in seconds.
        by_secs: u32,
    },
}

impl EventKind {
    /// A stable lower-case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::ReuseDetected { .. } => "reuse_detected",
            Self::Diverged { .. } => "diverged",
            Self::Revoked(_) => "revoked",
            Self::Expired => "expired",
            Self::PolicyChanged => "policy_changed",
            Self::ClockFloorIgnored { .. } => "clock_floor_ignored",
            Self::ClockFloorLowered { .. } => "clock_floor_lowered",
        }
    }
}

/// An audit event. Holds only the random family id, never a subject,
/// client id or token (P1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Sequence number, increasing.
    pub seq: u64,
    /// When it happened (unix ms).
    pub at_millis: i64,
    /// The family concerned.
    pub family: crate::FamilyId,
    /// What happened.
    pub kind: EventKind,
}

/// Length of an encoded event value.
pub(crate) const EVENT_LEN: usize = 1 + 8 + 16 + 1 + 4 + 4;

impl Event {
    /// Encodes the event's value (the sequence number is the table key):
    /// version, time, family, kind, two kind-specific `u32`s.
    pub(crate) fn encode(&self) -> [u8; EVENT_LEN] {
        let mut out = [0u8; EVENT_LEN];
        out[0] = RECORD_VERSION;
        out[1..9].copy_from_slice(&self.at_millis.to_be_bytes());
        out[9..25].copy_from_slice(self.family.as_bytes());
        let (kind, a, b) = match self.kind {
            EventKind::ReuseDetected { presented, current } => (1u8, presented, current),
            EventKind::Diverged { presented, current } => (2, presented, current),
            EventKind::Revoked(r) => (3, u32::from(r as u8), 0),
            EventKind::Expired => (4, 0, 0),
            EventKind::PolicyChanged => (5, 0, 0),
            EventKind::ClockFloorIgnored { ahead_secs } => (6, ahead_secs, 0),
            EventKind::ClockFloorLowered { by_secs } => (7, by_secs, 0),
        };
        out[25] = kind;
        out[26..30].copy_from_slice(&a.to_be_bytes());
        out[30..34].copy_from_slice(&b.to_be_bytes());
        out
    }

    /// Decodes an event value stored under sequence number `seq`.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] if the bytes are not an event of a known layout.
    pub fn decode(seq: u64, bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader(bytes);
        let version = r.u8()?;
        if version != RECORD_VERSION {
            return Err(DecodeError::Version(version));
        }
        let at_millis = r.i64()?;
        let family = crate::FamilyId::from_bytes(r.array()?);
        let (k, a, b) = (r.u8()?, r.u32()?, r.u32()?);
        r.finish()?;
        let kind = match k {
            1 => EventKind::ReuseDetected {
                presented: a,
                current: b,
            },
            2 => EventKind::Diverged {
                presented: a,
                current: b,
            },
            3 => EventKind::Revoked(
                u8::try_from(a)
                    .ok()
                    .and_then(RevokeReason::from_u8)
                    .ok_or(DecodeError::Field("event reason"))?,
            ),
            4 => EventKind::Expired,
            5 => EventKind::PolicyChanged,
            6 => EventKind::ClockFloorIgnored { ahead_secs: a },
            7 => EventKind::ClockFloorLowered { by_secs: a },
            _ => return Err(DecodeError::Field("event kind")),
        };
        Ok(Self {
            seq,
            at_millis,
            family,
            kind,
        })
    }
}

/// Little reader over a byte slice; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    fn optional<const N: usize>(&mut self, field: &'static str) -> Result<Option<[u8; N]>, DecodeError> {
        let flag = self.u8()?;
        let v = self.array::<N>()?;
        match flag {
            0 if v == [0; N] => Ok(None),
            1 => Ok(Some(v)),
            _ => Err(DecodeError::Field(field)),
        }
    }
    /// [`Reader::optional`], with flag 2 meaning "present" too (the
    /// successor flag's "kept and never delivered").
    fn optional_or_undelivered<const N: usize>(&mut self, field: &'static str) -> Result<Option<[u8; N]>, DecodeError> {
        if self.0.first() == Some(&2) {
            self.u8()?;
            return Ok(Some(self.array::<N>()?));
        }
        self.optional(field)
    }
    fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let n = self.u32()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Field(field))
    }
    fn finish(&self) -> Result<(), DecodeError> {
        match self.0.len() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> FamilyRecord {
        FamilyRecord {
            state: FamilyState::Revoked(RevokeReason::Subject),
            generation: 7,
            created_at: -5,
            rotated_at: 1,
            expires_at: i64::MAX,
            gc_at: 3,
            subject_tag: [1; 16],
            client_tag: [2; 16],
            confirmation_tag: Some([3; 16]),
            current_hash: [4; 16],
            sealed_successor: Some([5; SEALED_SUCCESSOR_LEN]),
            successor_undelivered: false,
            sealed_grant: vec![6; 90],
        }
    }

    #[test]
    fn an_undelivered_successor_round_trips_as_flag_2() {
        let mut r = sample();
        r.successor_undelivered = true;
        let bytes = r.encode();
        assert_eq!(bytes.len(), FIXED_LEN + 90, "the same size");
        assert_eq!(bytes[FIXED_LEN - 2 - SEALED_SUCCESSOR_LEN - 1], 2);
        assert_eq!(FamilyRecord::decode(&bytes), Ok(r.clone()));
        // Without a successor there is nothing undelivered.
        r.sealed_successor = None;
        let back = FamilyRecord::decode(&r.encode()).unwrap();
        assert!(!back.successor_undelivered);
    }

    #[test]
    fn record_round_trip_and_size() {
        let r = sample();
        let bytes = r.encode();
        assert_eq!(bytes.len(), FIXED_LEN + 90);
        assert_eq!(FamilyRecord::decode(&bytes), Ok(r));
    }

    #[test]
    fn record_errors() {
        let bytes = sample().encode();
        for n in 0..bytes.len() {
            assert!(FamilyRecord::decode(&bytes[..n]).is_err(), "prefix {n} decoded");
        }
        let mut v = bytes.clone();
        v[0] = 9;
        assert_eq!(FamilyRecord::decode(&v), Err(DecodeError::Version(9)));
        let mut v = bytes.clone();
        v.push(0);
        assert_eq!(FamilyRecord::decode(&v), Err(DecodeError::Trailing(1)));
        let mut v = bytes;
        v[1] = 2;
        assert_eq!(FamilyRecord::decode(&v), Err(DecodeError::Field("state")));
    }

    #[test]
    fn grant_round_trip() {
        let g = crate::Grant::new("alice", "app", crate::Scope::parse("a b").unwrap())
            .with_confirmation("jkt")
            .with_metadata(b"meta".to_vec());
        assert_eq!(decode_grant(&encode_grant(&g)), Ok(g));
    }

    #[test]
    fn event_round_trip() {
        for kind in [
            EventKind::ReuseDetected {
                presented: 1,
                current: 3,
            },
            EventKind::Diverged {
                presented: 9,
                current: 3,
            },
            EventKind::Revoked(RevokeReason::Client),
            EventKind::Expired,
        ] {
            let e = Event {
                seq: 5,
                at_millis: 77,
                family: crate::FamilyId::from_bytes([8; 16]),
                kind,
            };
            assert_eq!(Event::decode(5, &e.encode()), Ok(e));
        }
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(r) = FamilyRecord::decode(&bytes) {
                prop_assert_eq!(r.encode(), bytes.clone());
            }
            let _ = decode_grant(&bytes);
            if let Ok(e) = Event::decode(1, &bytes) {
                let enc = e.encode();
                prop_assert_eq!(enc.as_slice(), &bytes[..]);
            }
        }
    }
}
