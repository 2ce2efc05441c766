//! What the tool prints: the JSON shapes of each answer, and errors.
//!
//! Errors carry the core's stable codes unchanged. Their messages come from
//! the core's `Display` implementations, which never include a token.

use std::io::Write as _;

use rotoken::Code;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zeroize::Zeroizing;

/// Exit code for a refusal or a user error.
pub(crate) const EXIT_REFUSED: u8 = 1;
/// Exit code for a storage or corruption problem.
pub(crate) const EXIT_STORAGE: u8 = 3;

/// A failure, as printed on standard error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CliError {
    /// A stable snake_case code (the core's `.code()`, or one of the tool's own).
    pub(crate) code: &'static str,
    /// A readable explanation; never contains a token.
    pub(crate) message: String,
    /// The process exit code.
    pub(crate) exit: u8,
}

impl CliError {
    /// A refusal or user error (exit code 1).
    pub(crate) fn refused(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            exit: EXIT_REFUSED,
        }
    }

    /// A storage or corruption problem (exit code 3).
    pub(crate) fn storage(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            exit: EXIT_STORAGE,
        }
    }

    /// A bug in rotoken: a panic that escaped a command (exit code 101, as
    /// Rust's own panics).
    pub(crate) fn internal(panic: String) -> Self {
        Self {
            code: "internal",
            message: format!("rotoken {panic}; please report this bug"),
            exit: 101,
        }
    }

    /// An error carrying a core code: the exit code follows from the code.
    pub(crate) fn from_code(code: Code, message: impl ToString) -> Self {
        let message = message.to_string();
        if is_storage_code(code) {
            Self::storage(code.as_str(), message)
        } else {
            Self::refused(code.as_str(), message)
        }
    }

    /// The process exit code.
    pub(crate) fn exit_code(&self) -> u8 {
        self.exit
    }
}

/// True for codes that mean the database (or the machine) is in trouble,
/// rather than that a request was refused.
fn is_storage_code(code: Code) -> bool {
    matches!(
        code,
        Code::StorageError
            | Code::Corrupt
            | Code::RandomFailed
            | Code::NotRotoken
            | Code::UnsupportedSchema
            | Code::Unavailable
            | Code::Busy
            | Code::DeadlinePassed
            | Code::OutcomeUnknown
            | Code::ClockBehind
    )
}

impl From<rotoken::OpenError> for CliError {
    fn from(e: rotoken::OpenError) -> Self {
        Self::from_code(e.code(), &e)
    }
}

impl From<rotoken::IssueError> for CliError {
    fn from(e: rotoken::IssueError) -> Self {
        Self::from_code(e.code(), &e)
    }
}

impl From<rotoken::RotateError> for CliError {
    fn from(e: rotoken::RotateError) -> Self {
        Self::from_code(e.code(), &e)
    }
}

impl From<rotoken::RevokeError> for CliError {
    fn from(e: rotoken::RevokeError) -> Self {
        Self::from_code(e.code(), &e)
    }
}

impl From<rotoken::StoreError> for CliError {
    fn from(e: rotoken::StoreError) -> Self {
        Self::from_code(e.code(), &e)
    }
}

impl From<rotoken::Error> for CliError {
    fn from(e: rotoken::Error) -> Self {
        Self::from_code(e.code(), &e)
    }
}

impl From<rotoken::InvalidInput> for CliError {
    fn from(e: rotoken::InvalidInput) -> Self {
        Self::refused("invalid_input", e.to_string())
    }
}

/// The JSON shape of an error.
#[derive(Serialize)]
struct ErrorJson<'a> {
    error: &'a str,
    message: &'a str,
}

/// Shortens anything that looks like a refresh token (`rt<digit>_` and
/// more than four URL-safe base64 characters) to its first eight
/// characters and an ellipsis, so no error output can carry a usable token.
pub(crate) fn redact_tokens(text: &str) -> String {
    let b = text.as_bytes();
    let is_body = |c: &u8| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_';
    let mut out = String::with_capacity(text.len());
    let (mut i, mut copied) = (0, 0);
    while i + 4 <= b.len() {
        if b[i] == b'r' && b[i + 1] == b't' && b[i + 2].is_ascii_digit() && b[i + 3] == b'_' {
            let start = i + 4;
            let end = start + b[start..].iter().take_while(|c| is_body(c)).count();
            if end - start > 4 {
                // Every index here is at an ASCII byte, so a char boundary.
                out.push_str(&text[copied..start + 4]);
                out.push('…');
                copied = end;
                i = end;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&text[copied..]);
    out
}

/// Prints `e` as one JSON object on standard error. A closed standard error is ignored.
pub(crate) fn print_error(e: &CliError) {
    let message = redact_tokens(&e.message);
    let json = serde_json::to_string(&ErrorJson {
        error: e.code,
        message: &message,
    })
    .unwrap_or_else(|_| format!("{{\"error\":\"{}\"}}", e.code));
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{json}");
}

/// Prints `value` as one JSON object on standard output. The buffer, which
/// may hold a token, is zeroized afterwards.
///
/// # Errors
///
/// `output_failed` if standard output cannot be written (for example a closed pipe).
pub(crate) fn print_json(value: &impl Serialize) -> Result<(), CliError> {
    let mut buf = Zeroizing::new(Vec::with_capacity(256));
    serde_json::to_writer(&mut *buf, value)
        .map_err(|e| CliError::storage("output_failed", format!("could not encode the answer: {e}")))?;
    buf.push(b'\n');
    let mut out = std::io::stdout().lock();
    out.write_all(&buf)
        .and_then(|()| out.flush())
        .map_err(|e| CliError::storage("output_failed", format!("could not write to standard output: {e}")))
}

/// A time as an RFC 3339 string (UTC).
pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    // Formatting fails only for years outside 0..=9999, which the core clamps away;
    // fall back to the unix time rather than fail.
    t.format(&Rfc3339).unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// `issue`'s answer.
#[derive(Debug, Serialize)]
pub(crate) struct IssuedJson<'a> {
    /// The first refresh token of the family.
    pub(crate) refresh_token: &'a str,
    /// The new family's id.
    pub(crate) family_id: String,
    /// Always 0.
    pub(crate) generation: u32,
    /// When the token stops working unless rotated (RFC 3339).
    pub(crate) expires_at: String,
}

/// `rotate`'s answer.
#[derive(Debug, Serialize)]
pub(crate) struct RotatedJson<'a> {
    /// The successor token to hand to the client.
    pub(crate) refresh_token: &'a str,
    /// The family's id.
    pub(crate) family_id: String,
    /// The successor's generation.
    pub(crate) generation: u32,
    /// When the successor stops working unless rotated (RFC 3339).
    pub(crate) expires_at: String,
    /// True if this was a retry within the grace window, answered with the successor minted before.
    pub(crate) retried: bool,
    /// The family's subject.
    pub(crate) subject: &'a str,
    /// The family's client.
    pub(crate) client_id: &'a str,
    /// The scope for the access token (the requested narrower scope, or the grant's).
    pub(crate) scope: String,
}

/// RFC 9449 / RFC 8705 confirmation claim.
#[derive(Debug, Serialize)]
pub(crate) struct CnfJson {
    /// The key thumbprint.
    pub(crate) jkt: String,
}

/// `introspect`'s answer (RFC 7662 §2.2 fields, plus the family and generation).
#[derive(Debug, Serialize)]
pub(crate) struct IntrospectionJson {
    /// True only for a family's current, live token.
    pub(crate) active: bool,
    /// Granted scope.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) scope: Option<String>,
    /// Client the token is bound to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) client_id: Option<String>,
    /// Subject.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) sub: Option<String>,
    /// Expiry, unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) exp: Option<i64>,
    /// When the token was minted, unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) iat: Option<i64>,
    /// `refresh_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) token_type: Option<&'static str>,
    /// Confirmation key binding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cnf: Option<CnfJson>,
    /// The family id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) family_id: Option<String>,
    /// The token's generation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) generation: Option<u32>,
}

impl From<rotoken::Introspection> for IntrospectionJson {
    fn from(i: rotoken::Introspection) -> Self {
        Self {
            active: i.active,
            scope: i.scope.map(|s| s.to_string()),
            client_id: i.client_id,
            sub: i.sub,
            exp: i.exp,
            iat: i.iat,
            token_type: i.token_type,
            cnf: i.cnf_jkt.map(|jkt| CnfJson { jkt }),
            family_id: i.family.map(|f| f.to_string()),
            generation: i.generation,
        }
    }
}

/// `revoke`'s answer.
#[derive(Debug, Serialize)]
pub(crate) struct RevokedJson {
    /// Families newly revoked (already revoked or unknown ones count 0).
    pub(crate) revoked: usize,
}

/// `rotoken compact`: the database file's size before and after.
#[derive(Debug, Serialize)]
pub(crate) struct CompactJson {
    pub(crate) bytes_before: u64,
    pub(crate) bytes_after: u64,
}

/// `gc`'s answer: the sum of every step.
#[derive(Debug, Default, Serialize)]
pub(crate) struct GcJson {
    /// Families removed.
    pub(crate) removed: usize,
    /// Live families whose expiry-index entry moved to a later deadline.
    pub(crate) rescheduled: usize,
    /// Events removed.
    pub(crate) events_removed: usize,
    /// Transactions run.
    pub(crate) steps: usize,
}

/// One problem found by `check`.
#[derive(Debug, Serialize)]
pub(crate) struct ProblemJson {
    /// The table it was found in.
    pub(crate) table: &'static str,
    /// The entry's key.
    pub(crate) key: String,
    /// What is wrong.
    pub(crate) what: String,
}

/// `check`'s answer.
#[derive(Debug, Serialize)]
pub(crate) struct CheckJson {
    /// True if no problem was found.
    pub(crate) ok: bool,
    /// Families examined.
    pub(crate) families: usize,
    /// Of which active.
    pub(crate) active: usize,
    /// Index entries examined.
    pub(crate) index_entries: usize,
    /// Events examined.
    pub(crate) events: usize,
    /// Every inconsistency found.
    pub(crate) problems: Vec<ProblemJson>,
}

impl From<rotoken::CheckReport> for CheckJson {
    fn from(r: rotoken::CheckReport) -> Self {
        Self {
            ok: r.is_ok(),
            families: r.families,
            active: r.active,
            index_entries: r.index_entries,
            events: r.events,
            problems: r
                .problems
                .into_iter()
                .map(|p| ProblemJson {
                    table: p.table,
                    key: p.key,
                    what: p.what,
                })
                .collect(),
        }
    }
}

/// One key of `keys list`.
#[derive(Debug, Serialize)]
pub(crate) struct KeyJson {
    /// The key id.
    pub(crate) id: u32,
    /// When it was created (RFC 3339).
    pub(crate) created_at: String,
    /// Whether it signs new tokens.
    pub(crate) active: bool,
}

/// The answer of `keys generate`, `keys rotate` and `keys list`.
#[derive(Debug, Serialize)]
pub(crate) struct KeysJson {
    /// The key file.
    pub(crate) path: String,
    /// The id of the key that signs new tokens and seals new data.
    pub(crate) active_id: u32,
    /// Every key id in the file, oldest first.
    pub(crate) keys: Vec<KeyJson>,
}

impl KeysJson {
    /// Describes a keyring stored at `path`; never includes key material.
    pub(crate) fn of(path: &std::path::Path, keys: &rotoken::Keyring) -> Self {
        let active_id = keys.active_id();
        Self {
            path: path.display().to_string(),
            active_id,
            keys: keys
                .key_ids()
                .into_iter()
                .map(|(id, created)| KeyJson {
                    id,
                    created_at: OffsetDateTime::from_unix_timestamp(created)
                        .map(rfc3339)
                        .unwrap_or_else(|_| created.to_string()),
                    active: id == active_id,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_codes_exit_3_and_refusals_exit_1() {
        assert_eq!(CliError::from_code(Code::Corrupt, "x").exit_code(), 3);
        assert_eq!(CliError::from_code(Code::StorageError, "x").exit_code(), 3);
        assert_eq!(CliError::from_code(Code::ReuseDetected, "x").exit_code(), 1);
        assert_eq!(CliError::from_code(Code::WrongKeys, "x").exit_code(), 1);
    }

    #[test]
    fn tokens_are_redacted() {
        assert_eq!(
            redact_tokens("unexpected argument 'rt1_AbCdEfGhIj-_x' found"),
            "unexpected argument 'rt1_AbCd…' found"
        );
        assert_eq!(redact_tokens("rt1_ab rt1_ rt"), "rt1_ab rt1_ rt");
        assert_eq!(redact_tokens("é rt2_abcdefgh"), "é rt2_abcd…");
        assert_eq!(redact_tokens(""), "");
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(OffsetDateTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
