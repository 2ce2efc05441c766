//! The server's own access tokens: `base64url(claims).exp.base64url(mac)`,
//! HMAC-SHA256 over the first two parts. The claims carry the subject, the
//! client and the refresh-token family (`sid`), which rotoken's
//! introspection reads: an access token of a revoked family is inactive at
//! once.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rotoken_http::{AccessToken, AccessTokenMinter, AccessTokenRequest, MintError};
use serde_json::{Map, Value};
use sha2::Sha256;
use time::OffsetDateTime;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Signs and verifies access tokens with a 32-byte key, wiped on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct HmacMinter {
    key: [u8; 32],
    #[zeroize(skip)]
    lifetime: Duration,
}

impl HmacMinter {
    /// A minter whose tokens live `lifetime`.
    pub fn new(key: [u8; 32], lifetime: Duration) -> Self {
        Self { key, lifetime }
    }

    /// A minter with a random key.
    ///
    /// # Errors
    ///
    /// [`MintError::Random`] if the operating system's random source fails.
    pub fn generate(lifetime: Duration) -> Result<Self, MintError> {
        let mut minter = Self::new([0; 32], lifetime);
        getrandom::fill(&mut minter.key).map_err(MintError::Random)?;
        Ok(minter)
    }

    fn mac(&self, payload: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!("any key length"));
        mac.update(payload.as_bytes());
        mac
    }

    /// The claims of `token` if this minter made it and it has not expired at `now`.
    pub fn verify(&self, token: &str, now: OffsetDateTime) -> Option<Claims> {
        let (payload, tag) = token.rsplit_once('.')?;
        self.mac(payload)
            .verify_slice(&URL_SAFE_NO_PAD.decode(tag).ok()?)
            .ok()?;
        let (claims, exp) = payload.split_once('.')?;
        let exp: i64 = exp.parse().ok()?;
        let mut claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).ok()?).ok()?;
        claims.exp = exp;
        (now.unix_timestamp() < exp).then_some(claims)
    }
}

/// What an access token says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Claims {
    /// The user.
    pub sub: String,
    /// The client it was minted for.
    pub client_id: String,
    /// The refresh-token family it was minted from, if any.
    pub sid: Option<String>,
    /// Expiry, unix seconds (carried beside the claims, not in them).
    #[serde(skip)]
    pub exp: i64,
}

#[rotoken_http::async_trait]
impl AccessTokenMinter for HmacMinter {
    async fn mint(&self, request: &AccessTokenRequest<'_>) -> Result<AccessToken, MintError> {
        let now = request.now.unwrap_or_else(OffsetDateTime::now_utc);
        let exp = now.unix_timestamp().saturating_add_unsigned(self.lifetime.as_secs());
        let claims = Claims {
            sub: request.subject.to_owned(),
            client_id: request.client_id.to_owned(),
            sid: request.family.map(ToString::to_string),
            exp,
        };
        let json = serde_json::to_vec(&claims).map_err(|e| MintError::Other(Box::new(e)))?;
        let payload = format!("{}.{exp}", URL_SAFE_NO_PAD.encode(json));
        let tag = URL_SAFE_NO_PAD.encode(self.mac(&payload).finalize().into_bytes());
        Ok(AccessToken::new(format!("{payload}.{tag}"), self.lifetime.as_secs()))
    }

    fn introspect_at(&self, token: &str, now: OffsetDateTime) -> Option<Map<String, Value>> {
        let c = self.verify(token, now)?;
        // `client_id` and `sid` are what rotoken's introspection reads.
        let mut members = Map::new();
        members.insert("sub".into(), c.sub.into());
        members.insert("client_id".into(), c.client_id.into());
        if let Some(sid) = c.sid {
            members.insert("sid".into(), sid.into());
        }
        members.insert("exp".into(), c.exp.into());
        members.insert("token_type".into(), "access_token".into());
        Some(members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rotoken::Scope;

    fn mint_at(minter: &HmacMinter, subject: &str, now: OffsetDateTime) -> String {
        let scope = Scope::parse("openid").unwrap();
        let mut request = AccessTokenRequest::new(subject, "web-app", &scope);
        request.now = Some(now);
        futures_lite::future::block_on(minter.mint(&request)).unwrap().value
    }

    #[test]
    fn a_token_verifies_until_it_expires() {
        let minter = HmacMinter::new([1; 32], Duration::from_secs(300));
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let token = mint_at(&minter, "alice.smith", now);
        let claims = minter.verify(&token, now).unwrap();
        assert_eq!(
            (claims.sub.as_str(), claims.client_id.as_str(), claims.exp),
            ("alice.smith", "web-app", 1_700_000_300)
        );
        assert_eq!(minter.verify(&token, now + Duration::from_secs(300)), None);
        assert!(
            minter
                .introspect_at(&token, now)
                .is_some_and(|c| c["sub"] == "alice.smith" && c["client_id"] == "web-app")
        );
    }

    #[test]
    fn a_token_names_its_family_for_introspection() {
        let minter = HmacMinter::new([1; 32], Duration::from_secs(300));
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let scope = Scope::parse("openid").unwrap();
        let family = rotoken::FamilyId::from_bytes([7; 16]);
        let mut request = AccessTokenRequest::new("alice", "web-app", &scope);
        request.now = Some(now);
        request.family = Some(&family);
        let token = futures_lite::future::block_on(minter.mint(&request)).unwrap().value;
        let members = minter.introspect_at(&token, now).unwrap();
        assert_eq!(members["sid"], family.to_string());
        assert_eq!(members["client_id"], "web-app");
    }

    #[test]
    fn a_changed_token_or_another_key_is_refused() {
        let minter = HmacMinter::new([1; 32], Duration::from_secs(300));
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let token = mint_at(&minter, "alice", now);
        let (payload, tag) = token.rsplit_once('.').unwrap();
        let later = payload.replace("1700000300", "1800000300");
        assert_eq!(minter.verify(&format!("{later}.{tag}"), now), None);
        let bob = format!(
            "{}.1700000300.{tag}",
            URL_SAFE_NO_PAD.encode(r#"{"sub":"bob","client_id":"web-app","sid":null}"#)
        );
        assert_eq!(minter.verify(&bob, now), None);
        assert_eq!(
            HmacMinter::new([2; 32], Duration::from_secs(300)).verify(&token, now),
            None
        );
    }
}
