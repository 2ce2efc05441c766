//! Status codes and the error every entry point can return.

use std::ffi::{CStr, c_char, c_int};

use rotoken::{Code, InvalidInput, IssueError, KeyError, OpenError, RevokeError, RotateError, StoreError};

/// The result of every call. The values are stable: new codes may be added,
/// existing ones never change meaning or number.
///
/// Each failure has a snake_case name (`rotoken_status_name()`) equal to the
/// core's `.code()` for the same error, so logs from the C ABI, the CLI and
/// the HTTP adapter agree.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// A request field was refused: an empty subject, a control character,
    /// a bad scope character, a malformed family id, an unknown durability.
    InvalidInput = 1,
    /// A required pointer argument was NULL.
    NullPointer = 2,
    /// A string argument is not valid UTF-8.
    InvalidUtf8 = 3,
    /// An argument is longer than its documented `ROTOKEN_MAX_*` limit.
    TooLarge = 4,
    /// The handle is closed, or was never returned by `rotoken_open`.
    Closed = 5,
    /// The library panicked; the panic was caught at the boundary. The
    /// handle stays usable, but please report it.
    Panic = 6,
    /// An error this build of the C ABI does not know by name (a newer core).
    Internal = 7,
    /// Another process (or another handle in this one) has the database
    /// open. One process owns a file; use the `serve` sidecar for servers
    /// with several worker processes.
    Locked = 10,
    /// The file is not a rotoken database.
    NotRotoken = 11,
    /// The database was written with a schema version this build does not read.
    UnsupportedSchema = 12,
    /// The key file is not the one this database was created with.
    WrongKeys = 13,
    /// The key file does not exist.
    KeysMissing = 14,
    /// `rotoken_keys_generate` found a file already at the path.
    KeysExist = 15,
    /// The key file is not a rotoken key file (or is larger than 1 MiB).
    KeysInvalid = 16,
    /// The key file could not be read or written.
    KeysIo = 17,
    /// Another key error.
    Keys = 18,
    /// The token is malformed, forged or made with keys this server does not hold.
    InvalidToken = 20,
    /// The token is authentic but its family is gone (removed by gc).
    UnknownToken = 21,
    /// The token's family is revoked.
    Revoked = 22,
    /// The token's family has expired (idle or absolute lifetime).
    Expired = 23,
    /// A retired token was presented: the whole family is now revoked.
    ReuseDetected = 24,
    /// The token disagreed with the stored state: the family is now revoked.
    Diverged = 25,
    /// Another client presented the token. Nothing was changed.
    ClientMismatch = 26,
    /// The confirmation key does not match the token's binding. Nothing was changed.
    ConfirmationMismatch = 27,
    /// The requested scope is wider than the grant.
    ScopeWidened = 28,
    /// The family reached its generation limit; the user must sign in again.
    TooManyGenerations = 29,
    /// A storage failure (I/O, full disk...). Nothing was handed out.
    StorageError = 30,
    /// A stored record failed its MAC or did not decode.
    Corrupt = 31,
    /// The OS random number generator failed.
    RandomFailed = 32,
}

/// Every status, for tests and for [`Status::from_raw`].
pub(crate) const ALL: [Status; 30] = [
    Status::Ok,
    Status::InvalidInput,
    Status::NullPointer,
    Status::InvalidUtf8,
    Status::TooLarge,
    Status::Closed,
    Status::Panic,
    Status::Internal,
    Status::Locked,
    Status::NotRotoken,
    Status::UnsupportedSchema,
    Status::WrongKeys,
    Status::KeysMissing,
    Status::KeysExist,
    Status::KeysInvalid,
    Status::KeysIo,
    Status::Keys,
    Status::InvalidToken,
    Status::UnknownToken,
    Status::Revoked,
    Status::Expired,
    Status::ReuseDetected,
    Status::Diverged,
    Status::ClientMismatch,
    Status::ConfirmationMismatch,
    Status::ScopeWidened,
    Status::TooManyGenerations,
    Status::StorageError,
    Status::Corrupt,
    Status::RandomFailed,
];

impl Status {
    /// The stable snake_case name: the core's `.code()` where there is one.
    pub fn name(self) -> &'static CStr {
        match self {
            Self::Ok => c"ok",
            Self::InvalidInput => c"invalid_input",
            Self::NullPointer => c"null_pointer",
            Self::InvalidUtf8 => c"invalid_utf8",
            Self::TooLarge => c"too_large",
            Self::Closed => c"closed",
            Self::Panic => c"panic",
            Self::Internal => c"internal",
            Self::Locked => c"locked",
            Self::NotRotoken => c"not_rotoken",
            Self::UnsupportedSchema => c"unsupported_schema",
            Self::WrongKeys => c"wrong_keys",
            Self::KeysMissing => c"keys_missing",
            Self::KeysExist => c"keys_exist",
            Self::KeysInvalid => c"keys_invalid",
            Self::KeysIo => c"keys_io",
            Self::Keys => c"keys",
            Self::InvalidToken => c"invalid_token",
            Self::UnknownToken => c"unknown_token",
            Self::Revoked => c"revoked",
            Self::Expired => c"expired",
            Self::ReuseDetected => c"reuse_detected",
            Self::Diverged => c"diverged",
            Self::ClientMismatch => c"client_mismatch",
            Self::ConfirmationMismatch => c"confirmation_mismatch",
            Self::ScopeWidened => c"scope_widened",
            Self::TooManyGenerations => c"too_many_generations",
            Self::StorageError => c"storage_error",
            Self::Corrupt => c"corrupt",
            Self::RandomFailed => c"random_failed",
        }
    }

    /// The status with this numeric value, if there is one.
    pub fn from_raw(value: c_int) -> Option<Self> {
        ALL.into_iter().find(|s| *s as c_int == value)
    }

    /// The status for a core error code (`RotateError::code()` and friends).
    /// Codes this build does not know become [`Status::Internal`].
    pub fn from_code(code: Code) -> Self {
        match code {
            Code::Locked => Self::Locked,
            Code::NotRotoken => Self::NotRotoken,
            Code::UnsupportedSchema => Self::UnsupportedSchema,
            Code::WrongKeys => Self::WrongKeys,
            Code::InvalidPolicy | Code::InvalidInput => Self::InvalidInput,
            Code::InvalidToken => Self::InvalidToken,
            Code::UnknownToken => Self::UnknownToken,
            Code::Revoked => Self::Revoked,
            Code::ClientMismatch => Self::ClientMismatch,
            Code::ConfirmationMismatch => Self::ConfirmationMismatch,
            Code::Expired => Self::Expired,
            Code::ReuseDetected => Self::ReuseDetected,
            Code::Diverged => Self::Diverged,
            Code::ScopeWidened => Self::ScopeWidened,
            Code::TooManyGenerations => Self::TooManyGenerations,
            // Retryable: the same call may be made again (Code::is_retryable).
            Code::StorageError | Code::Busy | Code::DeadlinePassed | Code::OutcomeUnknown | Code::ClockBehind => {
                Self::StorageError
            }
            Code::Corrupt => Self::Corrupt,
            Code::RandomFailed => Self::RandomFailed,
            Code::Unavailable => Self::Closed,
            Code::KeysIo => Self::KeysIo,
            Code::KeysInvalid => Self::KeysInvalid,
            Code::UnknownKey | Code::RetireActive | Code::KeysExhausted => Self::Keys,
            _ => Self::Internal,
        }
    }
}

/// The stable snake_case name of a status value (`"ok"`, `"reuse_detected"`, ...),
/// or `"unknown"` for a value that is not a status. The string is static:
/// never free it.
#[allow(unsafe_code)] // `no_mangle` only; no unsafe operation.
#[unsafe(no_mangle)]
pub extern "C" fn rotoken_status_name(status: c_int) -> *const c_char {
    Status::from_raw(status).map_or(c"unknown", Status::name).as_ptr()
}

/// A failed call: its status and a message for humans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FfiError {
    pub(crate) status: Status,
    pub(crate) message: String,
}

impl FfiError {
    pub(crate) fn new(status: Status, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn from_core(code: Code, e: &dyn std::fmt::Display) -> Self {
        Self::new(Status::from_code(code), e.to_string())
    }

    fn invalid_input(e: &InvalidInput) -> Self {
        let status = match e {
            InvalidInput::TooLong { .. } => Status::TooLarge,
            _ => Status::InvalidInput,
        };
        Self::new(status, e.to_string())
    }
}

impl From<InvalidInput> for FfiError {
    fn from(e: InvalidInput) -> Self {
        Self::invalid_input(&e)
    }
}

impl From<OpenError> for FfiError {
    fn from(e: OpenError) -> Self {
        Self::from_core(e.code(), &e)
    }
}

impl From<IssueError> for FfiError {
    fn from(e: IssueError) -> Self {
        match &e {
            IssueError::InvalidInput(i) => Self::invalid_input(i),
            _ => Self::from_core(e.code(), &e),
        }
    }
}

impl From<RotateError> for FfiError {
    fn from(e: RotateError) -> Self {
        match &e {
            RotateError::InvalidInput(i) => Self::invalid_input(i),
            _ => Self::from_core(e.code(), &e),
        }
    }
}

impl From<RevokeError> for FfiError {
    fn from(e: RevokeError) -> Self {
        match &e {
            RevokeError::InvalidInput(i) => Self::invalid_input(i),
            _ => Self::from_core(e.code(), &e),
        }
    }
}

impl From<StoreError> for FfiError {
    fn from(e: StoreError) -> Self {
        Self::from_core(e.code(), &e)
    }
}

impl From<KeyError> for FfiError {
    fn from(e: KeyError) -> Self {
        let status = match &e {
            KeyError::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound => Status::KeysMissing,
                std::io::ErrorKind::AlreadyExists => Status::KeysExist,
                _ => Status::KeysIo,
            },
            KeyError::Format { .. } => Status::KeysInvalid,
            KeyError::Random(_) => Status::RandomFailed,
            _ => Status::Keys,
        };
        Self::new(status, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_unique_and_names_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for s in ALL {
            assert!(seen.insert(s as c_int), "{s:?} reuses a value");
            assert_eq!(Status::from_raw(s as c_int), Some(s));
        }
        assert_eq!(Status::from_raw(9), None);
    }

    #[test]
    fn core_codes_keep_their_names() {
        // Where a status stands for one core code, both print the same name.
        for code in [
            Code::Locked,
            Code::NotRotoken,
            Code::UnsupportedSchema,
            Code::WrongKeys,
            Code::StorageError,
            Code::Corrupt,
            Code::RandomFailed,
            Code::InvalidInput,
            Code::InvalidToken,
            Code::UnknownToken,
            Code::Revoked,
            Code::ClientMismatch,
            Code::ConfirmationMismatch,
            Code::Expired,
            Code::ReuseDetected,
            Code::Diverged,
            Code::ScopeWidened,
            Code::TooManyGenerations,
            Code::KeysIo,
            Code::KeysInvalid,
        ] {
            let status = Status::from_code(code);
            assert_eq!(status.name().to_str().unwrap_or_default(), code.as_str(), "{code}");
        }
        assert_eq!(Status::from_code(OpenError::Locked.code()), Status::Locked);
        assert_eq!(
            Status::from_code(RotateError::InvalidToken.code()),
            Status::InvalidToken
        );
        assert_eq!(Status::from_code(Code::Unavailable), Status::Closed);
    }

    #[test]
    fn too_long_input_is_too_large() {
        let e = FfiError::from(RotateError::InvalidInput(InvalidInput::TooLong {
            field: "scope",
            len: 5000,
            max: 4096,
        }));
        assert_eq!(e.status, Status::TooLarge);
        let e = FfiError::from(IssueError::InvalidInput(InvalidInput::Empty("subject")));
        assert_eq!(e.status, Status::InvalidInput);
    }
}
