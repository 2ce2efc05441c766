//! Core errors as OAuth errors: the one table from a [`rotoken::Code`] to
//! an RFC 6749 §5.2 answer, and `From` impls on [`OAuthError`] for every
//! core error type, so a server calling the engine directly answers in
//! one line (`engine.rotate(..).map_err(OAuthError::from)?`).
//!
//! | core code | OAuth `error` | status | `error_description` starts with |
//! |---|---|---|---|
//! | `invalid_token`, `unknown_token` | `invalid_grant` | 400 | `refresh_token_invalid:` |
//! | `revoked` | `invalid_grant` | 400 | `session_revoked:` |
//! | `expired` | `invalid_grant` | 400 | `session_expired:` |
//! | `client_mismatch` | `invalid_grant` | 400 | `client_mismatch:` |
//! | `confirmation_mismatch` | `invalid_grant` | 400 | `dpop_key_mismatch:` |
//! | `reuse_detected` | `invalid_grant` | 400 | `refresh_token_reused:` |
//! | `diverged` | `invalid_grant` | 400 | `refresh_token_diverged:` |
//! | `too_many_generations` | `invalid_grant` | 400 | `refresh_limit_reached:` |
//! | `scope_widened` | `invalid_scope` | 400 | |
//! | `invalid_input` | `invalid_request` | 400 | |
//! | `storage_error`, `unavailable` | `temporarily_unavailable` | 503 + `Retry-After` | `store_unavailable:` |
//! | `busy` | `temporarily_unavailable` | 503 + `Retry-After` | `busy:` |
//! | `deadline_passed` | `temporarily_unavailable` | 503 + `Retry-After` | `deadline_passed:` |
//! | `outcome_unknown` | `temporarily_unavailable` | 503 + `Retry-After` | `outcome_unknown:` |
//! | `clock_behind` | `temporarily_unavailable` | 503 + `Retry-After` | `clock_behind:` |
//! | any other code that is not [`Code::is_client_error`] (corrupt, keys, open, random) | `server_error` | 500 | |
//!
//! Every [`Code::is_retryable`] code answers 503 `temporarily_unavailable`
//! with `Retry-After` ([`DEFAULT_RETRY_AFTER_SECS`](crate::DEFAULT_RETRY_AFTER_SECS),
//! or the server's [`Config::retry_after`](crate::Config::retry_after)):
//! nothing was decided against the client, which retries the same request
//! with the same refresh token. A retryable code is never `invalid_grant`
//! and never a bare 500. A retryable code this version does not know
//! answers the same way.
//!
//! A client-error code this version does not know answers
//! `invalid_request`, never `invalid_grant`: an unknown condition never
//! logs a user out. [`RevokeError::ClientMismatch`] is the one exception to
//! the table: at revocation another client's token is `unauthorized_client`
//! (RFC 7009 §2.1). The revocation endpoint itself answers 200 for a
//! malformed or invalid token (RFC 7009 §2.2); [`OAuthServer::revoke`](crate::OAuthServer::revoke)
//! does, `From<RevokeError>` cannot (it must return an error).
//!
//! The error remembers the core code it came from ([`OAuthError::core_code`]),
//! so a caller can still ask [`Code::is_client_error`] and
//! [`Code::revoked_a_family`] after converting.

use rotoken::{Code, OpenError, RevokeError, RotateError, StoreError};

use crate::dpop::DpopError;
use crate::error::{ErrorCode, IssueTokensError, MintError, OAuthError};

impl OAuthError {
    /// The OAuth error for a core error code (the table in this module's
    /// docs): `invalid_grant` with a stable cause for a refused refresh
    /// token, `invalid_scope`, `invalid_request`, `temporarily_unavailable`
    /// (503, `Retry-After`) for a retryable code, or `server_error` for
    /// anything else that is not the client's fault.
    ///
    /// ```
    /// use rotoken::Code;
    /// use rotoken_http::{ErrorCode, OAuthError};
    ///
    /// let e = OAuthError::from_code(Code::ReuseDetected);
    /// assert_eq!(e.code(), ErrorCode::InvalidGrant);
    /// assert_eq!(e.status(), 400);
    /// assert!(e.core_code().is_some_and(Code::revoked_a_family));
    /// assert_eq!(OAuthError::from_code(Code::Corrupt).status(), 500);
    /// let busy = OAuthError::from_code(Code::Busy);
    /// assert_eq!((busy.code(), busy.status().as_u16()), (ErrorCode::TemporarilyUnavailable, 503));
    /// assert_eq!(busy.retry_after(), Some(1));
    /// ```
    pub fn from_code(code: Code) -> Self {
        if code.is_retryable() {
            return Self::temporarily_unavailable(match code {
                Code::Busy => "busy: the session is in use by another request; retry the same request",
                Code::DeadlinePassed => {
                    "deadline_passed: the request was not completed in time and nothing was changed; \
                     retry the same request"
                }
                Code::ClockBehind => {
                    "clock_behind: this server's clock is behind the session's last refresh; \
                     retry the same request"
                }
                Code::OutcomeUnknown => {
                    "outcome_unknown: the store failed while completing the refresh; \
                     retry with the same refresh token"
                }
                _ => "store_unavailable: the token store is unavailable; retry the same request",
            })
            .with_core_code(code);
        }
        if !code.is_client_error() {
            return Self::server_error().with_core_code(code);
        }
        let e = match code {
            Code::InvalidToken | Code::UnknownToken => {
                Self::invalid_grant("refresh_token_invalid: the refresh token is invalid")
            }
            Code::Revoked => {
                Self::invalid_grant("session_revoked: the refresh token's session is revoked; sign in again")
            }
            Code::Expired => Self::invalid_grant("session_expired: the refresh token has expired; sign in again"),
            Code::ClientMismatch => {
                Self::invalid_grant("client_mismatch: the refresh token was issued to another client")
            }
            Code::ConfirmationMismatch => Self::invalid_grant(
                "dpop_key_mismatch: the refresh token is bound to a DPoP key; send a DPoP proof made with that key",
            ),
            Code::ReuseDetected => Self::invalid_grant(
                "refresh_token_reused: the refresh token was already used; the session is revoked, sign in again",
            ),
            Code::Diverged => Self::invalid_grant(
                "refresh_token_diverged: the refresh token disagrees with the session's state, \
                 as when a copy of the session was used elsewhere; the session is revoked, sign in again",
            ),
            Code::TooManyGenerations => {
                Self::invalid_grant("refresh_limit_reached: the session reached its refresh limit; sign in again")
            }
            Code::ScopeWidened => Self::new(ErrorCode::InvalidScope, "the requested scope exceeds the granted scope"),
            _ => Self::invalid_request("a request parameter is invalid"),
        };
        e.with_core_code(code)
    }
}

impl From<Code> for OAuthError {
    fn from(code: Code) -> Self {
        Self::from_code(code)
    }
}

impl From<RotateError> for OAuthError {
    fn from(e: RotateError) -> Self {
        Self::from_code(e.code())
    }
}

impl From<RevokeError> for OAuthError {
    fn from(e: RevokeError) -> Self {
        match e {
            RevokeError::ClientMismatch => {
                Self::new(ErrorCode::UnauthorizedClient, "the token was issued to another client")
                    .with_core_code(Code::ClientMismatch)
            }
            other => Self::from_code(other.code()),
        }
    }
}

impl From<rotoken::IssueError> for OAuthError {
    fn from(e: rotoken::IssueError) -> Self {
        Self::from_code(e.code())
    }
}

impl From<StoreError> for OAuthError {
    fn from(e: StoreError) -> Self {
        Self::from_code(e.code())
    }
}

impl From<OpenError> for OAuthError {
    fn from(e: OpenError) -> Self {
        Self::from_code(e.code())
    }
}

impl From<rotoken::Error> for OAuthError {
    fn from(e: rotoken::Error) -> Self {
        Self::from_code(e.code())
    }
}

/// [`OAuthServer::issue`](crate::OAuthServer::issue)'s error: the core's
/// as above, an unknown client as `invalid_client` (401), a failing minter
/// or registry as `server_error`.
impl From<IssueTokensError> for OAuthError {
    fn from(e: IssueTokensError) -> Self {
        match e {
            IssueTokensError::Core(e) => e.into(),
            IssueTokensError::UnknownClient => Self::invalid_client("the client is not registered"),
            IssueTokensError::Mint(_) | IssueTokensError::Registry(_) => Self::server_error(),
        }
    }
}

/// A failing access-token minter: `server_error`.
impl From<MintError> for OAuthError {
    fn from(_: MintError) -> Self {
        Self::server_error()
    }
}

/// A refused DPoP proof: `invalid_dpop_proof`, or `use_dpop_nonce`
/// (RFC 9449 §7, §8; send [`OAuthServer::dpop_nonce`](crate::OAuthServer::dpop_nonce)
/// in a `DPoP-Nonce` header with it), or `server_error` when no nonce key
/// could be drawn.
impl From<DpopError> for OAuthError {
    fn from(e: DpopError) -> Self {
        match e {
            DpopError::UseNonce => Self::new(ErrorCode::UseDpopNonce, e.to_string()),
            DpopError::NonceUnavailable => Self::server_error(),
            _ => Self::new(ErrorCode::InvalidDpopProof, e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_retryable_code_is_a_503_with_retry_after() {
        for code in [
            Code::StorageError,
            Code::Unavailable,
            Code::Busy,
            Code::DeadlinePassed,
            Code::OutcomeUnknown,
            Code::ClockBehind,
        ] {
            assert!(code.is_retryable());
            let e = OAuthError::from(code);
            assert_eq!(
                (e.code(), e.status().as_u16()),
                (ErrorCode::TemporarilyUnavailable, 503),
                "{code}"
            );
            assert_eq!(e.core_code(), Some(code));
            let r = e.into_response();
            assert_eq!(r.headers()[http::header::RETRY_AFTER], "1");
            assert_eq!(r.headers()[http::header::CACHE_CONTROL], "no-store");
        }
    }

    #[test]
    fn every_other_server_side_code_is_a_500_that_remembers_its_code() {
        for code in [
            Code::Corrupt,
            Code::RandomFailed,
            Code::Locked,
            Code::WrongKeys,
            Code::KeysIo,
        ] {
            let e = OAuthError::from(code);
            assert_eq!((e.code(), e.status().as_u16()), (ErrorCode::ServerError, 500), "{code}");
            assert_eq!(e.core_code(), Some(code));
        }
    }
}
