//! `Config`'s setters, in the builder style every rotoken crate uses:
//! `Config::new(issuer).with_dpop_nonce(true).with_trusted_proxies(..)`.
//! The fields stay public; a setter is the same as assigning the field.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use rotoken::Clock;

use crate::server::Config;

/// One `with_*` setter per field: `$name(field: Type)`, documented.
macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident($field:ident: $ty:ty);)*) => {
        impl Config {
            $(
                $(#[$doc])*
                #[must_use]
                pub fn $name(mut self, $field: $ty) -> Self {
                    self.$field = $field.into();
                    self
                }
            )*
        }
    };
}

setters! {
    /// The token endpoint's path (default `/oauth/token`).
    with_token_path(token_path: String);
    /// The revocation endpoint's path (default `/oauth/revoke`).
    with_revocation_path(revocation_path: String);
    /// The introspection endpoint's path (default `/oauth/introspect`).
    with_introspection_path(introspection_path: String);
    /// The JWK Set's path (default `/oauth/jwks`).
    with_jwks_path(jwks_path: String);
    /// The authorization endpoint the metadata names (your server's own).
    with_authorization_endpoint(authorization_endpoint: Option<String>);
    /// Grant types the metadata lists besides `refresh_token`.
    with_extra_grant_types(extra_grant_types: Vec<String>);
    /// Scopes the metadata lists.
    with_scopes_supported(scopes_supported: Vec<String>);
    /// The `aud` of access tokens for clients without an audience of their own.
    with_access_token_audience(access_token_audience: Option<String>);
    /// The largest request body read (413 beyond).
    with_max_body_bytes(max_body_bytes: usize);
    /// How old a DPoP proof may be.
    with_dpop_max_age(dpop_max_age: Duration);
    /// How far in the future a DPoP proof's `iat` may be.
    with_dpop_max_skew(dpop_max_skew: Duration);
    /// DPoP `jti`s remembered against replay, in all.
    with_dpop_replay_capacity(dpop_replay_capacity: usize);
    /// DPoP `jti`s remembered per key.
    with_dpop_replay_per_key(dpop_replay_per_key: usize);
    /// Require server-provided DPoP nonces.
    with_dpop_nonce(dpop_nonce: bool);
    /// How long a DPoP nonce is accepted.
    with_dpop_nonce_lifetime(dpop_nonce_lifetime: Duration);
    /// Failed client authentications per address before it is throttled.
    with_auth_max_failures(auth_max_failures: u32);
    /// The window those failures are counted over.
    with_auth_failure_window(auth_failure_window: Duration);
    /// Addresses the throttle remembers.
    with_auth_throttle_capacity(auth_throttle_capacity: usize);
    /// Reverse proxies whose forwarding headers name the client address.
    with_trusted_proxies(trusted_proxies: Vec<IpNet>);
    /// The `Retry-After` of a 503 `temporarily_unavailable` answer.
    with_retry_after(retry_after: Duration);
}

impl Config {
    /// Where time comes from, instead of the engine's clock.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The directory admin-API backups are written into.
    #[must_use]
    pub fn with_backup_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.backup_dir = Some(dir.into());
        self
    }

    /// One reverse proxy more (a single address).
    #[must_use]
    pub fn with_trusted_proxy(mut self, proxy: IpAddr) -> Self {
        self.trusted_proxies.push(IpNet::from(proxy));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setter_is_the_same_as_assigning_the_field() {
        let built = Config::new("https://as.test")
            .with_token_path("/token".to_owned())
            .with_dpop_nonce(true)
            .with_auth_max_failures(3)
            .with_trusted_proxy(IpAddr::from([10, 0, 0, 1]));
        let mut assigned = Config::new("https://as.test");
        assigned.token_path = "/token".into();
        assigned.dpop_nonce = true;
        assigned.auth_max_failures = 3;
        assigned.trusted_proxies.push(IpNet::from(IpAddr::from([10, 0, 0, 1])));
        assert_eq!(format!("{built:?}"), format!("{assigned:?}"));
    }
}
