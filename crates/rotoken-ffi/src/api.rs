//! The exported functions and the types they exchange.
//!
//! Conventions, the same for every function (see `include/rotoken.h`):
//!
//! - Every fallible function returns a [`Status`] and takes a last argument
//!   `char **error`. It may be NULL. Otherwise it is always written: NULL on
//!   success, and on failure a message the caller owns and frees with
//!   [`rotoken_string_free`].
//! - Strings in are NUL-terminated UTF-8, borrowed for the call only.
//! - Result structs are written whole, on failure too (then empty), so their
//!   `*_clear` function is always safe to call on them.
//! - No panic crosses the boundary: every body runs inside `catch_unwind`.

#![allow(unsafe_code)]

use std::ffi::c_char;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::ptr::null_mut;
use std::time::Duration;

use rotoken::{Durability, FamilyId, Grant, Keyring, Options, RevokeTarget, RotateRequest, Scope};

use crate::handle::{self, Handle};
use crate::input;
use crate::mem;
use crate::status::{FfiError, Status};

/// Longest token accepted, in bytes (a real token is 84). Longer is `ROTOKEN_STATUS_TOO_LARGE`.
pub const ROTOKEN_MAX_TOKEN_LEN: usize = 1024;
/// Longest file path accepted, in bytes.
pub const ROTOKEN_MAX_PATH_LEN: usize = 4096;
/// Longest subject, in bytes.
pub const ROTOKEN_MAX_SUBJECT_LEN: usize = 1024;
/// Longest client id, in bytes.
pub const ROTOKEN_MAX_CLIENT_ID_LEN: usize = 256;
/// Longest scope string, in bytes.
pub const ROTOKEN_MAX_SCOPE_LEN: usize = 4096;
/// Longest confirmation key thumbprint, in bytes.
pub const ROTOKEN_MAX_CONFIRMATION_LEN: usize = 256;
/// Largest grant metadata, in bytes.
pub const ROTOKEN_MAX_METADATA_LEN: usize = 16384;
/// Length of a family id in hexadecimal characters (the `family` arrays hold one more, for the NUL).
pub const ROTOKEN_FAMILY_ID_LEN: usize = 32;
/// `rotoken_policy.durability`: every acknowledged change is on disk before the call returns (default).
pub const ROTOKEN_DURABILITY_IMMEDIATE: u32 = 0;
/// `rotoken_policy.durability`: commits are not flushed; a crash may lose
/// recent rotations and bring their predecessors back. An explicit trade of
/// safety for speed; every `relaxed_flush_every` commits one is made durable.
pub const ROTOKEN_DURABILITY_RELAXED: u32 = 1;

/// The rules every family lives by. Get the defaults from
/// `rotoken_policy_default()` and change the fields you need.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// How long after a rotation its predecessor, presented again by the same
    /// client, returns the same successor. Default 30,000 (30 s).
    pub grace_ms: u64,
    /// A family expires when unused this long. Default 30 days.
    pub idle_lifetime_ms: u64,
    /// A family expires this long after issue, whatever its use. Default 90 days.
    pub absolute_lifetime_ms: u64,
    /// How long a revoked family is kept (answering `revoked`) before gc removes it. Default 1 day.
    pub revoked_retention_ms: u64,
    /// How long events are kept before gc removes them. Default 30 days.
    pub event_retention_ms: u64,
    /// The largest number of generations a family may reach. Default 1,000,000.
    pub max_generations: u32,
    /// `ROTOKEN_DURABILITY_IMMEDIATE` (default) or `ROTOKEN_DURABILITY_RELAXED`.
    pub durability: u32,
    /// With relaxed durability, every this many commits one is made durable. Default 1,000.
    pub relaxed_flush_every: u32,
}

/// A newly issued family. `refresh_token` is owned by the caller: free it
/// with `rotoken_issued_clear` (or take it and free it with
/// `rotoken_string_free`).
#[repr(C)]
#[derive(Debug)]
pub struct Issued {
    /// The first refresh token (generation 0), NUL-terminated. Owned; zeroized when freed.
    pub refresh_token: *mut c_char,
    /// The family id: 32 lowercase hex characters and a NUL.
    pub family: [c_char; 33],
    /// Always 0.
    pub generation: u32,
    /// When the token stops working unless rotated, unix seconds.
    pub expires_at: i64,
}

/// The result of a successful refresh. Every pointer is owned by the caller
/// and freed by `rotoken_rotated_clear`.
#[repr(C)]
#[derive(Debug)]
pub struct Rotated {
    /// The new refresh token to hand to the client. Owned; zeroized when freed.
    pub refresh_token: *mut c_char,
    /// The family id: 32 lowercase hex characters and a NUL.
    pub family: [c_char; 33],
    /// The new token's generation.
    pub generation: u32,
    /// When the new token stops working unless rotated, unix seconds.
    pub expires_at: i64,
    /// True if this was a retry of the immediate predecessor within the
    /// grace window, answered with the successor minted before.
    pub retried: bool,
    /// The grant's subject (mint the access token for it). Owned.
    pub subject: *mut c_char,
    /// The grant's client id. Owned.
    pub client_id: *mut c_char,
    /// The scope for the access token: the requested narrower scope, or the grant's. Owned.
    pub scope: *mut c_char,
    /// The grant's confirmation key thumbprint, or NULL. Owned.
    pub confirmation: *mut c_char,
    /// The grant's metadata (`metadata_len` bytes, followed by a NUL), or NULL when empty. Owned.
    pub metadata: *mut u8,
    /// Length of `metadata`.
    pub metadata_len: usize,
}

/// RFC 7662 introspection of a refresh token. When `active` is false every
/// pointer is NULL and every number 0. Pointers are owned by the caller and
/// freed by `rotoken_introspection_clear`.
#[repr(C)]
#[derive(Debug)]
pub struct Introspection {
    /// True only for a family's current token, live and unexpired.
    pub active: bool,
    /// Granted scope. Owned.
    pub scope: *mut c_char,
    /// Client the token is bound to. Owned.
    pub client_id: *mut c_char,
    /// Subject. Owned.
    pub sub: *mut c_char,
    /// Confirmation key thumbprint (`cnf.jkt`), or NULL. Owned.
    pub cnf_jkt: *mut c_char,
    /// Expiry, unix seconds.
    pub exp: i64,
    /// When this token was minted, unix seconds.
    pub iat: i64,
    /// The family id (32 hex characters and a NUL), or an empty string.
    pub family: [c_char; 33],
    /// The token's generation.
    pub generation: u32,
}

/// What one `rotoken_gc` step did.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcReport {
    /// Families removed (expired, or revoked past retention).
    pub removed: usize,
    /// Live families whose expiry-index entry moved to their later deadline.
    pub rescheduled: usize,
    /// Events removed past retention.
    pub events_removed: usize,
    /// True if more work was due than `limit` allowed: call again.
    pub more: bool,
}

/// The result of `rotoken_check`. `problems` is owned by the caller and
/// freed by `rotoken_check_report_clear`.
#[repr(C)]
#[derive(Debug)]
pub struct CheckReport {
    /// Families examined.
    pub families: usize,
    /// Of which active (not revoked).
    pub active: usize,
    /// Index entries examined.
    pub index_entries: usize,
    /// Events examined.
    pub events: usize,
    /// Number of inconsistencies found; 0 when the database is sound.
    pub problem_count: usize,
    /// One line per problem (`table key: what`), or NULL when there is none. Owned.
    pub problems: *mut c_char,
}

const EMPTY_FAMILY: [c_char; 33] = [0; 33];

impl Issued {
    /// All NULL and zero: an out-parameter before a call (for Rust callers).
    pub fn empty() -> Self {
        Self::EMPTY
    }

    const EMPTY: Self = Self {
        refresh_token: null_mut(),
        family: EMPTY_FAMILY,
        generation: 0,
        expires_at: 0,
    };
}

impl Rotated {
    /// All NULL and zero: an out-parameter before a call (for Rust callers).
    pub fn empty() -> Self {
        Self::EMPTY
    }

    const EMPTY: Self = Self {
        refresh_token: null_mut(),
        family: EMPTY_FAMILY,
        generation: 0,
        expires_at: 0,
        retried: false,
        subject: null_mut(),
        client_id: null_mut(),
        scope: null_mut(),
        confirmation: null_mut(),
        metadata: null_mut(),
        metadata_len: 0,
    };
}

impl Introspection {
    const EMPTY: Self = Self {
        active: false,
        scope: null_mut(),
        client_id: null_mut(),
        sub: null_mut(),
        cnf_jkt: null_mut(),
        exp: 0,
        iat: 0,
        family: EMPTY_FAMILY,
        generation: 0,
    };
}

impl GcReport {
    const EMPTY: Self = Self {
        removed: 0,
        rescheduled: 0,
        events_removed: 0,
        more: false,
    };
}

impl CheckReport {
    const EMPTY: Self = Self {
        families: 0,
        active: 0,
        index_entries: 0,
        events: 0,
        problem_count: 0,
        problems: null_mut(),
    };
}

impl Policy {
    fn to_core(self) -> Result<rotoken::Policy, FfiError> {
        let mut p = rotoken::Policy::default();
        p.grace = Duration::from_millis(self.grace_ms);
        p.idle_lifetime = Duration::from_millis(self.idle_lifetime_ms);
        p.absolute_lifetime = Duration::from_millis(self.absolute_lifetime_ms);
        p.revoked_retention = Duration::from_millis(self.revoked_retention_ms);
        p.event_retention = Duration::from_millis(self.event_retention_ms);
        p.max_generations = self.max_generations;
        p.relaxed_flush_every = self.relaxed_flush_every;
        p.durability = match self.durability {
            ROTOKEN_DURABILITY_IMMEDIATE => Durability::Immediate,
            ROTOKEN_DURABILITY_RELAXED => Durability::Relaxed,
            other => {
                return Err(FfiError::new(
                    Status::InvalidInput,
                    format!("policy.durability is {other}; use ROTOKEN_DURABILITY_IMMEDIATE or _RELAXED"),
                ));
            }
        };
        Ok(p)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The default policy: 30 s grace, 30-day idle and 90-day absolute
/// lifetime, 1,000,000 generations, immediate durability.
#[unsafe(no_mangle)]
pub extern "C" fn rotoken_policy_default() -> Policy {
    let p = rotoken::Policy::default();
    Policy {
        grace_ms: millis(p.grace),
        idle_lifetime_ms: millis(p.idle_lifetime),
        absolute_lifetime_ms: millis(p.absolute_lifetime),
        revoked_retention_ms: millis(p.revoked_retention),
        event_retention_ms: millis(p.event_retention),
        max_generations: p.max_generations,
        durability: match p.durability {
            Durability::Relaxed => ROTOKEN_DURABILITY_RELAXED,
            _ => ROTOKEN_DURABILITY_IMMEDIATE,
        },
        relaxed_flush_every: p.relaxed_flush_every,
    }
}

/// The library's version, e.g. `"0.1.0"`. Static: never free it.
#[unsafe(no_mangle)]
pub extern "C" fn rotoken_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Runs one call's body, turning a panic into [`Status::Panic`].
pub(crate) fn guard(body: impl FnOnce() -> Result<(), FfiError>) -> Result<(), FfiError> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(result) => result,
        Err(payload) => {
            let e = FfiError::new(
                Status::Panic,
                format!("rotoken panicked (please report this): {}", panic_message(&*payload)),
            );
            // A payload whose destructor panics must not escape either.
            let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
            Err(e)
        }
    }
}

/// Writes `*error` (NULL on success, a new message on failure) and returns the status.
///
/// # Safety
///
/// `error` is null or valid for writing one pointer.
pub(crate) unsafe fn finish(error: *mut *mut c_char, result: Result<(), FfiError>) -> Status {
    let (status, message) = match result {
        Ok(()) => (Status::Ok, None),
        Err(e) => (e.status, Some(e.message)),
    };
    if !error.is_null() {
        let text = message.map_or(null_mut(), |m| mem::alloc_string(&m));
        // SAFETY: `error` is non-null and, by the contract, writable.
        unsafe { error.write(text) };
    }
    status
}

/// Runs one entry point's body: catches a panic ([`guard`]), writes `*error`
/// and returns the status ([`finish`]).
///
/// # Safety
///
/// `error` is null or valid for writing one pointer.
unsafe fn run(error: *mut *mut c_char, body: impl FnOnce() -> Result<(), FfiError>) -> Status {
    let result = guard(body);
    // SAFETY: `error` is NULL or writable by the contract.
    unsafe { finish(error, result) }
}

/// Whether an entry point's result pointer may be NULL.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Out {
    /// NULL is `ROTOKEN_STATUS_NULL_POINTER` ("out is NULL"), before any other argument is read.
    Required,
    /// NULL means the caller does not want the result.
    Optional,
}

/// Runs one entry point that hands its result out through `out`, as [`run`].
///
/// `*out` is set to `empty` before `body` runs, so it is written whole on
/// failure too, and to what `body` returns when it succeeds. Buffers `body`
/// allocates through its [`Owned`] go to the caller with the result; they
/// are freed if `body` fails (or `out` is NULL).
///
/// # Safety
///
/// `out` is null or valid for writing one `T`; `error` is null or valid for writing one pointer.
unsafe fn fill<T>(
    out: *mut T,
    kind: Out,
    empty: T,
    error: *mut *mut c_char,
    body: impl FnOnce(&mut Owned) -> Result<T, FfiError>,
) -> Status {
    let whole = || -> Result<(), FfiError> {
        if kind == Out::Required {
            input::out(out, "out")?;
        }
        if !out.is_null() {
            // SAFETY: `out` is non-null and writable by the contract.
            unsafe { out.write(empty) };
        }
        let mut owned = Owned::default();
        let value = body(&mut owned)?;
        if !out.is_null() {
            owned.release();
            // SAFETY: as above.
            unsafe { out.write(value) };
        }
        Ok(())
    };
    // SAFETY: `error` is NULL or writable by the contract.
    unsafe { run(error, whole) }
}

fn oom() -> FfiError {
    FfiError::new(Status::Internal, "out of memory")
}

/// Owned strings being assembled into a result; freed again if the result is not handed out.
#[derive(Default)]
struct Owned(Vec<*mut u8>);

impl Owned {
    fn string(&mut self, s: &str) -> Result<*mut c_char, FfiError> {
        let p = mem::alloc_string(s);
        if p.is_null() {
            return Err(oom());
        }
        self.0.push(p.cast());
        Ok(p)
    }

    fn optional(&mut self, s: Option<&str>) -> Result<*mut c_char, FfiError> {
        s.map_or(Ok(null_mut()), |s| self.string(s))
    }

    fn bytes(&mut self, b: &[u8]) -> Result<*mut u8, FfiError> {
        if b.is_empty() {
            return Ok(null_mut());
        }
        let p = mem::alloc_bytes(b);
        if p.is_null() {
            return Err(oom());
        }
        self.0.push(p);
        Ok(p)
    }

    /// The result was handed out: the caller owns the buffers now.
    fn release(mut self) {
        self.0.clear();
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        for p in self.0.drain(..) {
            // SAFETY: each pointer came from `mem::alloc_*` and was not handed out.
            unsafe { mem::free_bytes(p) };
        }
    }
}

fn family_text(family: &FamilyId) -> [c_char; 33] {
    let mut out = EMPTY_FAMILY;
    for (o, b) in out.iter_mut().zip(family.to_string().bytes()) {
        *o = b as c_char;
    }
    out
}

fn parse_family(s: &str) -> Result<FamilyId, FfiError> {
    s.parse()
        .map_err(|e| FfiError::new(Status::InvalidInput, format!("family: {e}")))
}

fn scope_text(scope: &Scope) -> String {
    scope.iter().collect::<Vec<_>>().join(" ")
}

/// Writes a file of new random keys at `key_path` (mode 0600 on Unix).
/// Fails with `ROTOKEN_STATUS_KEYS_EXIST` if a file is already there.
///
/// # Safety
///
/// `key_path` is NULL or a NUL-terminated string; `error` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rotoken_keys_generate(key_path: *const c_char, error: *mut *mut c_char) -> Status {
    let body = || -> Result<(), FfiError> {
        // SAFETY: `key_path` is NULL or NUL-terminated by the contract.
        let path = unsafe { input::text(key_path, "key_path", ROTOKEN_MAX_PATH_LEN)? };
        Keyring::generate()?.save(Path::new(path), false)?;
        Ok(())
    };
    // SAFETY: `error` is NULL or writable by the contract.
    unsafe { run(error, body) }
}

/// Opens (or creates) the store at `db_path` with the keys in `key_path`.
///
/// `db_path` is a redb database file, or a PostgreSQL URL
/// (`postgres://user@host/db`): several processes, on one machine or many,
/// may open the same PostgreSQL store with the same keys. `policy` may be
/// NULL for `rotoken_policy_default()`. On success `*out` is the new handle;
/// on failure it is NULL. A database file belongs to one process: a second
/// opener, in this process or another, gets `ROTOKEN_STATUS_LOCKED` (use a
/// PostgreSQL store, or the `rotoken serve` sidecar, for several worker
/// processes).
///
/// # Safety
///
/// Strings are NULL or NUL-terminated; `policy` is NULL or points to a
/// `rotoken_policy`; `out` is NULL or writable; `error` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rotoken_open(
    db_path: *const c_char,
    key_path: *const c_char,
    policy: *const Policy,
    out: *mut *mut Handle,
    error: *mut *mut c_char,
) -> Status {
    let body = |_: &mut Owned| -> Result<*mut Handle, FfiError> {
        // SAFETY: the strings are NULL or NUL-terminated by the contract.
        let (db, keys) = unsafe {
            (
                input::text(db_path, "db_path", ROTOKEN_MAX_PATH_LEN)?,
                input::text(key_path, "key_path", ROTOKEN_MAX_PATH_LEN)?,
            )
        };
        // SAFETY: `policy` is NULL or points to a readable `rotoken_policy`.
        let policy = match unsafe { policy.as_ref() } {
            Some(p) => p.to_core()?,
            None => rotoken::Policy::default(),
        };
        let keys = Keyring::load(keys)?;
        let options = Options {
            policy,
            ..Options::default()
        };
        let engine = rotoken_postgres::StoreLocation::parse(db).open(keys, options)?;
        handle::register(engine)
    };
    // SAFETY: `out` and `error` are NULL or writable by the contract.
    unsafe { fill(out, Out::Required, null_mut(), error, body) }
}

/// Closes a handle. Calls already running on other threads finish first
/// (this waits for them); every later call with this handle gets
/// `ROTOKEN_STATUS_CLOSED`, and so does a second close. When this returns the
/// database file is released and may be opened again.
///
/// # Safety
///
/// `error` is NULL or writable. `handle` may be any value.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rotoken_close(handle: *mut Handle, error: *mut *mut c_char) -> Status {
    // SAFETY: `error` is NULL or writable by the contract.
    unsafe { run(error, || handle::close(handle)) }
}

/// Issues a new family and its first refresh token (generation 0).
///
/// `confirmation` (a DPoP `jkt` or mTLS thumbprint) may be NULL. `metadata`
/// may be NULL when `metadata_len` is 0; it is sealed in the store and
/// returned by `rotoken_rotate`. `scope` is a space-separated list, `""` for none.
///
/// # Safety
///
/// Strings are NULL or NUL-terminated; `metadata` is NULL or points to
/// `metadata_len` readable bytes; `out` is NULL or writable; `error` is NULL
/// or writable. `handle` may be any value.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rotoken_issue(
    handle: *mut Handle,
    subject: *const c_char,
    client_id: *const c_char,
    scope: *const c_char,
    confirmation: *const c_char,
    metadata: *const u8,
    metadata_len: usize,
    out: *mut Issued,
    error: *mut *mut c_char,
) -> Status {
    let body = |owned: &mut Owned| -> Result<Issued, FfiError> {
        // SAFETY: the arguments follow the contract above.
        let (subject, client_id, scope, confirmation, metadata) = unsafe {
            (
                input::text(subject, "subject", ROTOKEN_MAX_SUBJECT_LEN)?,
                input::text(client_id, "client_id", ROTOKEN_MAX_CLIENT_ID_LEN)?,
                input::text(scope, "scope", ROTOKEN_MAX_SCOPE_LEN)?,
                input::optional_text(confirmation, "confirmation", ROTOKEN_MAX_CONFIRMATION_LEN)?,
                input::bytes(metadata, metadata_len, "metadata", ROTOKEN_MAX_METADATA_LEN)?,
            )
        };
        let mut grant = Grant::new(subject, client_id, Scope::parse(scope)?);
        if let Some(c) = confirmation {
            grant = grant.with_confirmation(c);
        }
        if !metadata.is_empty() {
            grant = grant.with_metadata(metadata);
        }
        let issued = handle::with_engine(handle, |engine| Ok(engine.issue(&grant)?))?;
        Ok(Issued {
            refresh_token: owned.string(issued.refresh_token.expose())?,
            family: family_text(&issued.family),
            generation: issued.generation,
            expires_at: issued.expires_at.unix_timestamp(),
        })
    };
    // SAFETY: `out` and `error` are NULL or writable by the contract.
    unsafe { fill(out, Out::Required, Issued::EMPTY, error, body) }
}

/// Rotates a refresh token presented by `client_id`: checks it and returns
/// its successor. `scope` may be NULL (the whole grant) or a narrower
/// space-separated scope; `confirmation` may be NULL or the thumbprint of
/// the key the client proved possession of.
///
/// `ROTOKEN_STATUS_REUSE_DETECTED` and `ROTOKEN_STATUS_DIVERGED` have revoked the family;
/// every other error changed nothing.
///
/// # Safety
///
/// Strings are NULL or NUL-terminated; `out` is NULL or writable; `error`
/// is NULL or writable. `handle` may be any value.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rotoken_rotate(
    handle: *mut Handle,
    token: *const c_char,
    client_id: *const c_char,
    scope: *const c_char,
    confirmation: *const c_char,
    out: *mut Rotated,
    error: *mut *mut c_char,
) -> Status {
    let body = |owned: &mut Owned| -> Result<Rotated, FfiError> {
        // SAFETY: the arguments follow the contract above.
        let (token, client_id, scope, confirmation) = unsafe {
            (
                input::text(token, "token", ROTOKEN_MAX_TOKEN_LEN)?,
                input::text(client_id, "client_id", ROTOKEN_MAX_CLIENT_ID_LEN)?,
                input::optional_text(scope, "scope", ROTOKEN_MAX_SCOPE_LEN)?,
                input::optional_text(confirmation, "confirmation", ROTOKEN_MAX_CONFIRMATION_LEN)?,
            )
        };
        let mut request = RotateRequest::new(client_id);
        request.scope = scope.map(Scope::parse).transpose()?;
        request.confirmation = confirmation.map(str::to_owned);
        let r = handle::with_engine(handle, |engine| Ok(engine.rotate(token, &request)?))?;
        Ok(Rotated {
            refresh_token: owned.string(r.refresh_token.expose())?,
            family: family_text(&r.family),
            generation: r.generation,
            expires_at: r.expires_at.unix_timestamp(),
            retried: r.retried,
            subject: owned.string(&r.grant.subject)?,
            client_id: owned.string(&r.grant.client_id)?,
            scope: owned.string(&scope_text(&r.scope))?,
            confirmation: owned.optional(r.grant.confirmation.as_deref())?,
            metadata: owned.bytes(&r.grant.metadata)?,
            metadata_len: r.grant.metadata.len(),
        })
    };
    // SAFETY: `out` and `error` are NULL or writable by the contract.
    unsafe { fill(out, Out::Required, Rotated::EMPTY, error, body) }
}

/// Introspects a refresh token (RFC 7662). Never changes state. Malformed,
/// forged, unknown, retired, revoked and expired tokens are all simply
/// `active == false` with status `ROTOKEN_STATUS_OK`; only bad arguments and
/// storage failures are errors.
///
/// # Safety
///
/// `token` is NULL or NUL-terminated; `out` is NULL or writable; `error` is
/// NULL or writable. `handle` may be any value.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rotoken_introspect(
    handle: *mut Handle,
    token: *const c_char,
    out: *mut Introspection,
    error: *mut *mut c_char,
) -> Status {
    let body = |owned: &mut Owned| -> Result<Introspection, FfiError> {
        // SAFETY: `token` is NULL or NUL-terminated.
        let token = unsafe { input::text(token, "token", ROTOKEN_MAX_TOKEN_LEN)? };
        let i = handle::with_engine(handle, |engine| Ok(engine.introspect(token)?))?;
        if !i.active {
            return Ok(Introspection::EMPTY);
        }
        Ok(Introspection {
            active: true,
            scope: owned.optional(i.scope.as_ref().map(scope_text).as_deref())?,
            client_id: owned.optional(i.client_id.as_deref())?,
            sub: owned.optional(i.sub.as_deref())?,
            cnf_jkt: owned.optional(i.cnf_jkt.as_deref())?,
            exp: i.exp.unwrap_or(0),
            iat: i.iat.unwrap_or(0),
            family: i.family.as_ref().map_or(EMPTY_FAMILY, family_text),
            generation: i.generation.unwrap_or(0),
        })
    };
    // SAFETY: `out` and `error` are NULL or writable by the contract.
    unsafe { fill(out, Out::Required, Introspection::EMPTY, error, body) }
}

/// Shared body of the four revocations.
///
/// # Safety
///
/// `value` is NULL or NUL-terminated; `revoked` is NULL or writable; `error` is NULL or writable.
unsafe fn revoke(
    handle: *mut Handle,
    value: *const c_char,
    field: &str,
    max: usize,
    target: fn(&str) -> Result<RevokeTarget<'_>, FfiError>,
    revoked: *mut usize,
    error: *mut *mut c_char,
) -> Status {
    let body = |_: &mut Owned| -> Result<usize, FfiError> {
        // SAFETY: `value` is NULL or NUL-terminated.
        let value = unsafe { input::text(value, field, max)? };
        let target = target(value)?;
        handle::with_engine(handle, |engine| Ok(engine.revoke(target)?))
    };
    // SAFETY: `revoked` and `error` are NULL or writable by the contract.
    unsafe { fill(revoked, Out::Optional, 0, error, body) }
}

/// Revokes the family of `token`, whichever generation it is (RFC 7009).
/// `*revoked` (if not NULL) is the number of families newly revoked: 0 or 1.
/// A malformed or forged token is `ROTOKEN_STATUS_INVALID_TOKEN` (an RFC 7009
/// endpoint answers it with 200 anyway).
///
/// # Safety
///
/// `token` is NULL or NUL-terminated; `revoked` is NULL or writable;
/// `error` is NULL or writable. `handle` may be any value.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rotoken_revoke_token(
    handle: *mut Handle,
    token: *const c_char,
    revoked: *mut usize,
    error: *mut *mut c_char,
) -> Status {
    // SAFETY: forwarded contract.
    unsafe {
        revoke(
            handle,
            token,
            "token",
            ROTOKEN_MAX_TOKEN_LEN,
            |v| Ok(RevokeTarget::Token(v)),
            revoked,
            error,
        )
    }
}

/// Revokes the family of `token` only if it was issued to `client_id`:
/// what a revocation endpoint must call for an authenticated client
/// (RFC 7009 §2.1). Another client's token, of any generation and in any
/// state, is `ROTOKEN_STATUS_CLIENT_MISMATCH` and revokes nothing, so a
/// client holding a leaked old token cannot log its user out. Otherwise as
/// `rotoken_revoke_token`.
///
/// # Safety
///
/// `token` and `client_id` are NULL or NUL-terminated; `revoked` is NULL or
/// writable; `error` is NULL or writable. `handle` may be any value.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rotoken_revoke_token_of_client(
    handle: *mut Handle,
    token: *const c_char,
    client_id: *const c_char,
    revoked: *mut usize,
    error: *mut *mut c_char,
) -> Status {
    let body = |_: &mut Owned| -> Result<usize, FfiError> {
        // SAFETY: both strings are NULL or NUL-terminated by the contract above.
        let (token, client_id) = unsafe {
            (
                input::text(token, "token", ROTOKEN_MAX_TOKEN_LEN)?,
                input::text(client_id, "client_id", ROTOKEN_MAX_CLIENT_ID_LEN)?,
            )
        };
        let target = RevokeTarget::TokenOfClient { token, client_id };
        handle::with_engine(handle, |engine| Ok(engine.revoke(target)?))
    };
    // SAFETY: `revoked` and `error` are NULL or writable by the contract.
    unsafe { fill(revoked, Out::Optional, 0, error, body) }
}

/// Revokes one family by its id (32 hex characters). `*revoked` is 0 or 1.
///
/// # Safety
///
/// As `rotoken_revoke_token`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rotoken_revoke_family(
    handle: *mut Handle,
    family: *const c_char,
    revoked: *mut usize,
    error: *mut *mut c_char,
) -> Status {
    // SAFETY: forwarded contract.
    unsafe {
        revoke(
            handle,
            family,
            "family",
            ROTOKEN_FAMILY_ID_LEN,
            |v| parse_family(v).map(RevokeTarget::Family),
            revoked,
            error,
        )
    }
}

/// Revokes every family of a subject (log out everywhere). `*revoked` is how many.
///
/// # Safety
///
/// As `rotoken_revoke_token`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rotoken_revoke_subject(
    handle: *mut Handle,
    subject: *const c_char,
    revoked: *mut usize,
    error: *mut *mut c_char,
) -> Status {
    // SAFETY: forwarded contract.
    unsafe {
        revoke(
            handle,
            subject,
            "subject",
            ROTOKEN_MAX_SUBJECT_LEN,
            |v| Ok(RevokeTarget::Subject(v)),
            revoked,
            error,
        )
    }
}

/// Revokes every family of a client. `*revoked` is how many.
///
/// # Safety
///
/// As `rotoken_revoke_token`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rotoken_revoke_client(
    handle: *mut Handle,
    client_id: *const c_char,
    revoked: *mut usize,
    error: *mut *mut c_char,
) -> Status {
    // SAFETY: forwarded contract.
    unsafe {
        revoke(
            handle,
            client_id,
            "client_id",
            ROTOKEN_MAX_CLIENT_ID_LEN,
            |v| Ok(RevokeTarget::Client(v)),
            revoked,
            error,
        )
    }
}

/// One bounded garbage-collection step: removes up to `limit` expired or
/// revoked-past-retention families and up to `limit` old events. Call again
/// while `out->more` is true. `out` may be NULL.
///
/// # Safety
///
/// `out` is NULL or writable; `error` is NULL or writable. `handle` may be any value.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rotoken_gc(
    handle: *mut Handle,
    limit: usize,
    out: *mut GcReport,
    error: *mut *mut c_char,
) -> Status {
    let body = |_: &mut Owned| -> Result<GcReport, FfiError> {
        let r = handle::with_engine(handle, |engine| Ok(engine.gc(limit)?))?;
        Ok(GcReport {
            removed: r.removed,
            rescheduled: r.rescheduled,
            events_removed: r.events_removed,
            more: r.more,
        })
    };
    // SAFETY: `out` and `error` are NULL or writable by the contract.
    unsafe { fill(out, Out::Optional, GcReport::EMPTY, error, body) }
}

/// Verifies every record and index entry; never changes anything. A sound
/// database has `out->problem_count == 0`; inconsistencies are reported
/// there, not as an error status.
///
/// # Safety
///
/// `out` is NULL or writable; `error` is NULL or writable. `handle` may be any value.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rotoken_check(handle: *mut Handle, out: *mut CheckReport, error: *mut *mut c_char) -> Status {
    let body = |owned: &mut Owned| -> Result<CheckReport, FfiError> {
        let r = handle::with_engine(handle, |engine| Ok(engine.check()?))?;
        let problems = if r.problems.is_empty() {
            null_mut()
        } else {
            let text: Vec<String> = r
                .problems
                .iter()
                .map(|p| format!("{} {}: {}", p.table, p.key, p.what))
                .collect();
            owned.string(&text.join("\n"))?
        };
        Ok(CheckReport {
            families: r.families,
            active: r.active,
            index_entries: r.index_entries,
            events: r.events,
            problem_count: r.problems.len(),
            problems,
        })
    };
    // SAFETY: `out` and `error` are NULL or writable by the contract.
    unsafe { fill(out, Out::Required, CheckReport::EMPTY, error, body) }
}

/// Frees a string the library returned (a token, a message, a field of a
/// result struct), zeroizing it first. NULL is a no-op.
///
/// # Safety
///
/// `s` is NULL or a string returned by this library and not freed since.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rotoken_string_free(s: *mut c_char) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: by the contract.
        unsafe { mem::free_bytes(s.cast()) }
    }));
}

/// Frees a byte buffer the library returned (`rotoken_rotated.metadata`),
/// zeroizing it first. NULL is a no-op.
///
/// # Safety
///
/// `b` is NULL or a buffer returned by this library and not freed since.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rotoken_bytes_free(b: *mut u8) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: by the contract.
        unsafe { mem::free_bytes(b) }
    }));
}

/// Takes a pointer field out of a result struct, leaving NULL behind.
fn take<T>(field: &mut *mut T) -> *mut u8 {
    std::mem::replace(field, null_mut()).cast()
}

/// Shared body of the `*_clear` functions: frees the buffers `fields` takes
/// out of `*p`, then resets it to `empty`. NULL is a no-op; a panic is
/// caught (there is no status to report it in).
///
/// # Safety
///
/// `p` is NULL or points to a `T` written by this library (or
/// zero-initialised), whose pointers the caller has not freed.
unsafe fn clear<T, const N: usize>(p: *mut T, empty: T, fields: impl FnOnce(&mut T) -> [*mut u8; N]) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: by the contract, a valid, exclusively borrowed struct or NULL.
        let Some(r) = (unsafe { p.as_mut() }) else {
            return;
        };
        for b in fields(r) {
            // SAFETY: each pointer came from this library and is freed once (its field is now NULL).
            unsafe { mem::free_bytes(b) };
        }
        *r = empty;
    }));
}

/// Frees what `rotoken_issue` put in `*issued` and resets it to empty.
/// Safe to call twice, and on a struct a failed call wrote. NULL is a no-op.
///
/// # Safety
///
/// `issued` is NULL or points to a `rotoken_issued` written by this library
/// (or zero-initialised), whose pointers the caller has not freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rotoken_issued_clear(issued: *mut Issued) {
    // SAFETY: forwarded contract.
    unsafe { clear(issued, Issued::EMPTY, |r| [take(&mut r.refresh_token)]) }
}

/// Frees what `rotoken_rotate` put in `*rotated` and resets it to empty.
/// Safe to call twice, and on a struct a failed call wrote. NULL is a no-op.
///
/// # Safety
///
/// `rotated` is NULL or points to a `rotoken_rotated` written by this
/// library (or zero-initialised), whose pointers the caller has not freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rotoken_rotated_clear(rotated: *mut Rotated) {
    // SAFETY: forwarded contract.
    unsafe {
        clear(rotated, Rotated::EMPTY, |r| {
            [
                take(&mut r.refresh_token),
                take(&mut r.subject),
                take(&mut r.client_id),
                take(&mut r.scope),
                take(&mut r.confirmation),
                take(&mut r.metadata),
            ]
        })
    }
}

/// Frees what `rotoken_introspect` put in `*introspection` and resets it.
/// Safe to call twice. NULL is a no-op.
///
/// # Safety
///
/// `introspection` is NULL or points to a `rotoken_introspection` written
/// by this library (or zero-initialised), whose pointers the caller has not freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rotoken_introspection_clear(introspection: *mut Introspection) {
    // SAFETY: forwarded contract.
    unsafe {
        clear(introspection, Introspection::EMPTY, |r| {
            [
                take(&mut r.scope),
                take(&mut r.client_id),
                take(&mut r.sub),
                take(&mut r.cnf_jkt),
            ]
        })
    }
}

/// Frees what `rotoken_check` put in `*report` and resets it. Safe to call
/// twice. NULL is a no-op.
///
/// # Safety
///
/// `report` is NULL or points to a `rotoken_check_report` written by this
/// library (or zero-initialised), whose pointer the caller has not freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rotoken_check_report_clear(report: *mut CheckReport) {
    // SAFETY: forwarded contract.
    unsafe { clear(report, CheckReport::EMPTY, |r| [take(&mut r.problems)]) }
}

#[cfg(test)]
mod tests {
    use std::ptr;

    use super::*;

    #[test]
    fn limits_match_the_core() {
        use rotoken::grant::*;
        assert_eq!(ROTOKEN_MAX_SUBJECT_LEN, MAX_SUBJECT_LEN);
        assert_eq!(ROTOKEN_MAX_CLIENT_ID_LEN, MAX_CLIENT_ID_LEN);
        assert_eq!(ROTOKEN_MAX_SCOPE_LEN, MAX_SCOPE_LEN);
        assert_eq!(ROTOKEN_MAX_CONFIRMATION_LEN, MAX_CONFIRMATION_LEN);
        assert_eq!(ROTOKEN_MAX_METADATA_LEN, MAX_METADATA_LEN);
        assert_eq!(ROTOKEN_FAMILY_ID_LEN, rotoken::token::FAMILY_ID_LEN * 2);
        const { assert!(rotoken::token::TOKEN_LEN < ROTOKEN_MAX_TOKEN_LEN) };
    }

    #[test]
    fn default_policy_round_trips() {
        let p = rotoken_policy_default();
        assert_eq!(p.to_core(), Ok(rotoken::Policy::default()));
        let bad = Policy { durability: 7, ..p };
        assert_eq!(bad.to_core().map_err(|e| e.status), Err(Status::InvalidInput));
    }

    #[test]
    fn a_panic_becomes_a_status_and_a_message() {
        let mut message: *mut c_char = null_mut();
        // SAFETY: `message` is writable.
        let status = unsafe { finish(&mut message, guard(|| panic!("boom"))) };
        assert_eq!(status, Status::Panic);
        assert!(!message.is_null());
        // SAFETY: a NUL-terminated string we own.
        let text = unsafe { std::ffi::CStr::from_ptr(message) }
            .to_string_lossy()
            .into_owned();
        assert!(text.contains("boom"), "{text}");
        // SAFETY: ours, freed once.
        unsafe { rotoken_string_free(message) };
        // A panic with a non-string payload, and no error out-param.
        // SAFETY: null is allowed.
        let status = unsafe { finish(ptr::null_mut(), guard(|| std::panic::panic_any(42_u8))) };
        assert_eq!(status, Status::Panic);
    }

    #[test]
    fn success_clears_the_error_out_param() {
        let mut message: *mut c_char = c"stale".as_ptr().cast_mut();
        // SAFETY: `message` is writable.
        let status = unsafe { finish(&mut message, guard(|| Ok(()))) };
        assert_eq!(status, Status::Ok);
        assert!(message.is_null());
    }

    #[test]
    fn bad_handles_are_closed_not_crashes() {
        let mut out = Rotated::EMPTY;
        for h in [0x10usize, 0xdead_beef, usize::MAX] {
            let h = ptr::without_provenance_mut::<Handle>(h);
            // SAFETY: a made-up handle is allowed; the strings are literals.
            let status = unsafe {
                rotoken_rotate(
                    h,
                    c"rt1_x".as_ptr(),
                    c"web".as_ptr(),
                    ptr::null(),
                    ptr::null(),
                    &mut out,
                    ptr::null_mut(),
                )
            };
            assert_eq!(status, Status::Closed);
        }
        // SAFETY: null is allowed.
        assert_eq!(unsafe { rotoken_close(null_mut(), null_mut()) }, Status::NullPointer);
        assert!(handle::open_count() < 1000);
    }
}
