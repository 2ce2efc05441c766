//! OAuth error responses (RFC 6749 §5.2, RFC 7009 §2.2.1, RFC 9449 §7) and
//! the errors of the traits a server implements.

use std::borrow::Cow;
use std::error::Error as StdError;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

/// A boxed error from a server's own implementation of one of our traits.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// An OAuth `error` code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request is missing a parameter, repeats one, or is otherwise malformed (RFC 6749 §5.2).
    InvalidRequest,
    /// Client authentication failed (RFC 6749 §5.2).
    InvalidClient,
    /// The refresh token is invalid, expired, revoked, reused or bound to another client (RFC 6749 §5.2).
    InvalidGrant,
    /// The client may not use this grant type or endpoint (RFC 6749 §5.2).
    UnauthorizedClient,
    /// The grant type is not supported (RFC 6749 §5.2).
    UnsupportedGrantType,
    /// The requested scope is invalid or exceeds the grant (RFC 6749 §5.2).
    InvalidScope,
    /// The token type cannot be revoked (RFC 7009 §2.2.1).
    UnsupportedTokenType,
    /// The DPoP proof is invalid (RFC 9449 §7).
    InvalidDpopProof,
    /// The DPoP proof must carry the server's current nonce, sent in
    /// `DPoP-Nonce` (RFC 9449 §8).
    UseDpopNonce,
    /// The server failed in a way a retry does not cure (damaged data,
    /// wrong keys, a failing server-supplied component): 500.
    ServerError,
    /// The server could not complete the request for now (the store was
    /// unreachable, slow or busy, or the request's deadline passed) and
    /// nothing was decided against the client: 503 with `Retry-After`.
    /// Retry the same request (the same refresh token) after it. RFC 6749
    /// §4.1.2.1 defines the code for the authorization endpoint; rotoken
    /// answers it at every endpoint, with a 503.
    TemporarilyUnavailable,
}

impl ErrorCode {
    /// The code as sent in the `error` member.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::UnsupportedTokenType => "unsupported_token_type",
            Self::InvalidDpopProof => "invalid_dpop_proof",
            Self::UseDpopNonce => "use_dpop_nonce",
            Self::ServerError => "server_error",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
        }
    }
}

/// An OAuth error answer: code, description, HTTP status and the headers
/// that go with it. Descriptions are fixed text and never contain a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    code: ErrorCode,
    description: Cow<'static, str>,
    status: StatusCode,
    www_authenticate: Option<&'static str>,
    retry_after: Option<u64>,
    allow: Option<&'static str>,
    core: Option<rotoken::Code>,
}

impl OAuthError {
    /// An error with the status RFC 6749 gives its code (400, or 401 for
    /// `invalid_client`, 500 for `server_error`, 503 with `Retry-After: 1`
    /// for `temporarily_unavailable`).
    pub fn new(code: ErrorCode, description: impl Into<Cow<'static, str>>) -> Self {
        let status = match code {
            ErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
            ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        Self {
            code,
            description: description.into(),
            status,
            www_authenticate: (code == ErrorCode::InvalidClient).then_some(BASIC_CHALLENGE),
            retry_after: (code == ErrorCode::TemporarilyUnavailable).then_some(DEFAULT_RETRY_AFTER_SECS),
            allow: None,
            core: None,
        }
    }

    /// The same error, remembering the core code it answers.
    pub(crate) fn with_core_code(mut self, code: rotoken::Code) -> Self {
        self.core = Some(code);
        self
    }

    /// `invalid_request` (400).
    pub fn invalid_request(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidRequest, description)
    }

    /// `invalid_client` (401 with `WWW-Authenticate: Basic`).
    pub fn invalid_client(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidClient, description)
    }

    /// `invalid_grant` (400).
    pub fn invalid_grant(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidGrant, description)
    }

    /// `server_error` (500): damaged data, wrong keys, a failing server
    /// component; nothing a prompt retry cures.
    pub fn server_error() -> Self {
        Self::new(
            ErrorCode::ServerError,
            "the server could not complete the request; retry later",
        )
    }

    /// `temporarily_unavailable` (503 with `Retry-After`): the request was
    /// not completed for now and nothing was decided against the client;
    /// it retries the same request.
    pub fn temporarily_unavailable(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::TemporarilyUnavailable, description)
    }

    /// The same error with `Retry-After: secs` (at least 1).
    #[must_use]
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    /// The `Retry-After` seconds this answer carries, if any.
    pub fn retry_after(&self) -> Option<u64> {
        self.retry_after
    }

    /// `invalid_request` with 405 and an `Allow` header.
    pub(crate) fn method_not_allowed(allow: &'static str) -> Self {
        let mut e = Self::invalid_request(match allow {
            "POST" => "this endpoint accepts only POST",
            _ => "this endpoint accepts only GET",
        });
        e.status = StatusCode::METHOD_NOT_ALLOWED;
        e.allow = Some(allow);
        e
    }

    /// `invalid_request` with 413.
    pub fn payload_too_large() -> Self {
        let mut e = Self::invalid_request("the request body is larger than this server accepts");
        e.status = StatusCode::PAYLOAD_TOO_LARGE;
        e
    }

    /// `invalid_request` with 415.
    pub(crate) fn unsupported_media_type() -> Self {
        let mut e = Self::invalid_request("the body must be application/x-www-form-urlencoded");
        e.status = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        e
    }

    /// `invalid_client` with 429 and `Retry-After`: too many failed client authentications.
    pub(crate) fn throttled(retry_after_secs: u64) -> Self {
        let mut e = Self::invalid_client("too many failed client authentications; retry later");
        e.status = StatusCode::TOO_MANY_REQUESTS;
        e.retry_after = Some(retry_after_secs.max(1));
        e
    }

    /// `invalid_request` with 404.
    pub(crate) fn not_found() -> Self {
        let mut e = Self::invalid_request("no such endpoint");
        e.status = StatusCode::NOT_FOUND;
        e
    }

    /// The code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The core error code this answer was made from, if it came from a
    /// core error (the `From` impls, [`OAuthError::from_code`]): ask it
    /// [`rotoken::Code::is_client_error`] or [`rotoken::Code::revoked_a_family`].
    pub fn core_code(&self) -> Option<rotoken::Code> {
        self.core
    }

    /// The human-readable description.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The JSON body: `{"error": "...", "error_description": "..."}`.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "error": self.code.as_str(),
            "error_description": sanitize(&self.description),
        })
        .to_string()
    }

    /// The full HTTP response, with `Cache-Control: no-store`.
    pub fn into_response(self) -> Response<Bytes> {
        let mut response = json_response(self.status, Bytes::from(self.to_json()));
        let headers = response.headers_mut();
        if let Some(challenge) = self
            .www_authenticate
            .filter(|_| self.status == StatusCode::UNAUTHORIZED)
        {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}

impl std::fmt::Display for OAuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.description)
    }
}

impl StdError for OAuthError {}

/// The `Retry-After` of a `temporarily_unavailable` answer unless the
/// server's [`Config::retry_after`](crate::Config::retry_after) says otherwise.
pub const DEFAULT_RETRY_AFTER_SECS: u64 = 1;

const BASIC_CHALLENGE: &str = "Basic realm=\"rotoken\", charset=\"UTF-8\"";

/// RFC 6749 §5.2: `error_description` holds only `%x20-21 / %x23-5B / %x5D-7E`.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\x20'..='\x21' | '\x23'..='\x5b' | '\x5d'..='\x7e' => c,
            _ => '\'',
        })
        .collect()
}

/// A JSON response with the headers every OAuth answer carries.
pub(crate) fn json_response(status: StatusCode, body: Bytes) -> Response<Bytes> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// Errors from a [`crate::ClientRegistry`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The registry's backing file could not be read or parsed.
    #[error(transparent)]
    File(#[from] ClientFileError),
    /// A server-supplied registry failed.
    #[error("client registry: {0}")]
    Other(#[source] BoxError),
}

/// Errors reading or writing a clients file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientFileError {
    /// The file could not be read or written.
    #[error("clients file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("clients file {path}: {reason}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A client id appears twice, or is added again.
    #[error("client `{0}` is already registered")]
    Duplicate(String),
    /// A client entry is invalid.
    #[error("client `{id}`: {reason}")]
    InvalidClient {
        /// The client id.
        id: String,
        /// What is wrong.
        reason: String,
    },
}

/// Errors from an [`crate::AccessTokenMinter`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MintError {
    /// Signing the token failed.
    #[error("signing the access token failed: {0}")]
    Signing(String),
    /// The OS random number generator failed.
    #[error("OS random number generator failed: {0}")]
    Random(getrandom::Error),
    /// A server-supplied minter, or a claims hook, failed.
    #[error("access token minter: {0}")]
    Other(#[source] BoxError),
    /// A claims hook returned a claim the minter sets itself
    /// ([`crate::RESERVED_CLAIMS`]).
    #[error("the claims hook returned the reserved claim `{0}`")]
    ReservedClaim(String),
}

/// Errors loading, generating or saving a [`crate::SigningKey`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SigningKeyError {
    /// The key file could not be read or written.
    #[error("signing key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The key file is malformed.
    #[error("signing key file: {0}")]
    Format(String),
    /// An HS256 secret shorter than 32 bytes.
    #[error("an HS256 secret must be at least 32 bytes")]
    WeakSecret,
    /// The OS random number generator failed.
    #[error("OS random number generator failed: {0}")]
    Random(getrandom::Error),
}

impl SigningKeyError {
    /// The I/O error's wrapper for the key file at `path`.
    pub(crate) fn io(path: &std::path::Path) -> impl Fn(std::io::Error) -> Self + Copy + '_ {
        move |source| Self::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Errors issuing tokens ([`crate::OAuthServer::issue_async`]): the
/// refresh-token family ([`rotoken::IssueError`], the core's part) and the
/// access token, for a registered client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueTokensError {
    /// The core refused or failed to issue the family.
    #[error(transparent)]
    Core(#[from] rotoken::IssueError),
    /// Minting the access token failed.
    #[error(transparent)]
    Mint(#[from] MintError),
    /// The client is not registered: its refresh would fail for ever with
    /// `invalid_client`, so nothing is issued.
    #[error("the client is not registered")]
    UnknownClient,
    /// The client registry could not answer.
    #[error(transparent)]
    Registry(RegistryError),
}

/// The former name of [`IssueTokensError`].
#[deprecated(note = "renamed IssueTokensError: `rotoken::IssueError` is the core's error of issuing a family")]
pub type IssueError = IssueTokensError;

impl IssueTokensError {
    /// A stable code: the core's, `mint_failed`, `unknown_client` or `registry_failed`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Core(e) => e.code().as_str(),
            Self::Mint(_) => "mint_failed",
            Self::UnknownClient => "unknown_client",
            Self::Registry(_) => "registry_failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_client_is_401_with_a_challenge() {
        let r = OAuthError::invalid_client("no").into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers().contains_key(header::WWW_AUTHENTICATE));
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
    }

    #[test]
    fn throttled_is_429_without_a_challenge() {
        let r = OAuthError::throttled(0).into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        assert!(!r.headers().contains_key(header::WWW_AUTHENTICATE));
    }

    #[test]
    fn descriptions_are_restricted_to_the_rfc_characters() {
        let e = OAuthError::invalid_request("bad \"x\" \\ é");
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(v["error"], "invalid_request");
        assert_eq!(v["error_description"], "bad 'x' ' '");
    }
}
