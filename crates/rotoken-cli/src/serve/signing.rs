//! The access-token minter of `rotoken serve`, whose signing keys are read
//! again on SIGHUP: after `rotoken keys rotate-signing`, a running server
//! signs with the new key and publishes the retired one without a restart.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rotoken_http::{
    AccessToken, AccessTokenMinter, AccessTokenRequest, JwtMinter, MintError, SigningKeyError, SigningKeys,
};
use serde_json::{Map, Value};
use time::OffsetDateTime;

/// A [`JwtMinter`] that [`ReloadingMinter::reload`] replaces with one over
/// the key files as they are now.
pub(crate) struct ReloadingMinter {
    current: RwLock<Arc<JwtMinter>>,
    path: PathBuf,
    issuer: String,
    lifetime: Duration,
}

impl ReloadingMinter {
    /// A minter over `keys` (read from `path`).
    pub(crate) fn new(keys: SigningKeys, path: PathBuf, issuer: String, lifetime: Duration) -> Self {
        let minter = JwtMinter::from_keys(keys, issuer.clone(), lifetime);
        Self {
            current: RwLock::new(Arc::new(minter)),
            path,
            issuer,
            lifetime,
        }
    }

    /// Reads the key files again and signs with their current key from now
    /// on. On an error the keys in use stay.
    pub(crate) fn reload(&self) -> Result<SigningKeys, SigningKeyError> {
        let keys = SigningKeys::load(&self.path)?;
        let minter = Arc::new(JwtMinter::from_keys(keys.clone(), self.issuer.clone(), self.lifetime));
        match self.current.write() {
            Ok(mut current) => *current = minter,
            Err(poisoned) => *poisoned.into_inner() = minter,
        }
        Ok(keys)
    }

    fn minter(&self) -> Arc<JwtMinter> {
        match self.current.read() {
            Ok(m) => m.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

#[rotoken_http::async_trait]
impl AccessTokenMinter for ReloadingMinter {
    async fn mint(&self, request: &AccessTokenRequest<'_>) -> Result<AccessToken, MintError> {
        self.minter().sign(request)
    }

    fn jwks(&self) -> Value {
        self.minter().jwks()
    }

    fn jwks_at(&self, now: OffsetDateTime) -> Value {
        self.minter().jwks_at(now)
    }

    fn introspect(&self, token: &str) -> Option<Map<String, Value>> {
        self.minter().introspect(token)
    }

    fn introspect_at(&self, token: &str, now: OffsetDateTime) -> Option<Map<String, Value>> {
        self.minter().introspect_at(token, now)
    }
}

/// Reloads `minter`'s keys at every SIGHUP, until the process ends. The
/// handler is installed by this call, before the server says it is ready
/// (a SIGHUP before that would end the process); the future runs the reloads.
#[cfg(unix)]
pub(crate) fn reload_on_sighup(minter: Arc<ReloadingMinter>) -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let hangups = signal(SignalKind::hangup());
    async move {
        let Ok(mut hangups) = hangups else {
            tracing::warn!("cannot listen for SIGHUP: restart to load new signing keys");
            return;
        };
        while hangups.recv().await.is_some() {
            let m = minter.clone();
            match tokio::task::spawn_blocking(move || m.reload()).await {
                Ok(Ok(keys)) => tracing::info!(
                    kid = keys.current.kid(),
                    retired = keys.previous.len(),
                    "SIGHUP: signing keys reloaded"
                ),
                Ok(Err(e)) => tracing::error!(error = %e, "SIGHUP: signing keys not reloaded; the keys in use stay"),
                Err(e) => tracing::error!(error = %e, "SIGHUP: the reload task failed"),
            }
        }
    }
}

/// No SIGHUP here: new signing keys take a restart.
#[cfg(not(unix))]
pub(crate) fn reload_on_sighup(_minter: Arc<ReloadingMinter>) -> impl std::future::Future<Output = ()> {
    std::future::ready(())
}
