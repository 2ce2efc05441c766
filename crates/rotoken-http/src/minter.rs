//! Access tokens: the trait a server implements to mint them (the default
//! minter, [`crate::JwtMinter`], lives in `jwt.rs`; its key in
//! `signing_key.rs`).

use std::fmt;

use rotoken::{FamilyId, Scope};
use serde_json::{Map, Value, json};

use crate::error::MintError;

/// What an access token is minted for.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct AccessTokenRequest<'a> {
    /// The resource owner.
    pub subject: &'a str,
    /// The client the token is for.
    pub client_id: &'a str,
    /// The scope of this access token (the grant's, or a narrower requested one).
    pub scope: &'a Scope,
    /// The DPoP key thumbprint the token is bound to (`cnf.jkt`, RFC 9449
    /// §6), if any: the family's confirmation ([`rotoken::Grant::confirmation`]).
    pub confirmation: Option<&'a str>,
    /// The refresh-token family this token comes from, if any.
    pub family: Option<&'a FamilyId>,
    /// The family's sealed metadata (for example an authentication context).
    pub metadata: &'a [u8],
    /// The `aud` for this token (the client's), instead of the minter's default.
    pub audience: Option<&'a str>,
    /// The time to mint at: the [`OAuthServer`](crate::OAuthServer)'s clock
    /// ([`Config::clock`](crate::Config::clock)), so that one clock drives the
    /// endpoints and the access tokens. `None`: the minter's own clock.
    pub now: Option<time::OffsetDateTime>,
}

/// A minted access token.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AccessToken {
    /// The token itself.
    pub value: String,
    /// Its lifetime in seconds (`expires_in`).
    pub expires_in: u64,
}

impl AccessToken {
    /// An access token valid for `expires_in` seconds.
    pub fn new(value: impl Into<String>, expires_in: u64) -> Self {
        Self {
            value: value.into(),
            expires_in,
        }
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("value", &"..")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// Mints access tokens. A server implements it to issue its own kind of
/// token; [`JwtMinter`](crate::JwtMinter) signs JWTs.
///
/// [`mint`](AccessTokenMinter::mint) is async (a remote signer, a KMS, is);
/// implement the trait with [`async_trait`](crate::async_trait), which keeps
/// it usable as `Arc<dyn AccessTokenMinter>`. The JWK Set and introspection
/// of access tokens stay sync: they are pure computation over keys at hand.
///
/// ```
/// use rotoken_http::{AccessToken, AccessTokenMinter, AccessTokenRequest, MintError};
///
/// /// Opaque random access tokens, kept by the server's resource servers.
/// struct Opaque;
///
/// #[rotoken_http::async_trait]
/// impl AccessTokenMinter for Opaque {
///     async fn mint(&self, _request: &AccessTokenRequest<'_>) -> Result<AccessToken, MintError> {
///         let mut bytes = [0u8; 32];
///         getrandom::fill(&mut bytes).map_err(MintError::Random)?;
///         let value = bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
///         Ok(AccessToken::new(value, 300))
///     }
/// }
/// # let scope = rotoken::Scope::parse("openid").unwrap();
/// # let token = futures_lite::future::block_on(Opaque.mint(&AccessTokenRequest::new("alice", "web", &scope))).unwrap();
/// # assert_eq!(token.value.len(), 64);
/// ```
///
/// As for [`ClientRegistry`](crate::ClientRegistry): the endpoints' async
/// forms await `mint` on the caller's task; their sync forms wait for it on
/// the calling thread, so a minter whose futures need a tokio runtime is
/// called through the async forms or from a runtime's blocking thread.
#[async_trait::async_trait]
pub trait AccessTokenMinter: Send + Sync {
    /// Mints one access token.
    ///
    /// # Errors
    ///
    /// [`MintError`]; the endpoint answers `server_error`.
    async fn mint(&self, request: &AccessTokenRequest<'_>) -> Result<AccessToken, MintError>;

    /// The public keys resource servers verify access tokens with (a JWK
    /// Set). Default: no keys.
    fn jwks(&self) -> Value {
        json!({ "keys": [] })
    }

    /// The JWK Set at `now` (the server's clock): [`JwtMinter`](crate::JwtMinter) publishes a
    /// retired key only while tokens it signed may be unexpired. Default:
    /// [`AccessTokenMinter::jwks`].
    fn jwks_at(&self, now: time::OffsetDateTime) -> Value {
        let _ = now;
        self.jwks()
    }

    /// RFC 7662 members for an access token this minter issued and that is
    /// still valid (`active` is added by the caller). Default: `None`.
    ///
    /// Two members decide what the introspection endpoint answers:
    /// - `client_id`: the token's client. A client that introspects sees
    ///   only its own tokens, so without it the token is active only to a
    ///   client allowed to introspect every token.
    /// - `sid`: the family id ([`AccessTokenRequest::family`], as text).
    ///   With it, a token of a revoked or expired family (logout everywhere,
    ///   reuse detected) is inactive at once; without it, it stays active
    ///   until it expires.
    ///
    /// Carry both in the tokens you mint (as [`JwtMinter`](crate::JwtMinter)
    /// does) and return them here.
    fn introspect(&self, _token: &str) -> Option<Map<String, Value>> {
        None
    }

    /// [`AccessTokenMinter::introspect`] at `now` (the server's clock).
    /// Default: [`AccessTokenMinter::introspect`].
    fn introspect_at(&self, token: &str, now: time::OffsetDateTime) -> Option<Map<String, Value>> {
        let _ = now;
        self.introspect(token)
    }
}

impl AccessTokenRequest<'_> {
    /// A request for `subject` and `client_id` with `scope`, unbound, outside any family.
    pub fn new<'a>(subject: &'a str, client_id: &'a str, scope: &'a Scope) -> AccessTokenRequest<'a> {
        AccessTokenRequest {
            subject,
            client_id,
            scope,
            confirmation: None,
            family: None,
            metadata: &[],
            audience: None,
            now: None,
        }
    }
}
