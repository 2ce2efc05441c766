//! Client credentials as a request presents them: `client_secret_basic`
//! (RFC 6749 §2.3.1) or `client_id` / `client_secret` form parameters.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use crate::secret_hash::{MAX_CLIENT_ID_LEN, MAX_CLIENT_SECRET_LEN};

/// Credentials as presented in one request.
#[derive(Default)]
pub(crate) struct Presented {
    pub(crate) id: Option<String>,
    pub(crate) secret: Option<Zeroizing<String>>,
    pub(crate) basic: bool,
}

/// Reads `client_secret_basic` credentials and `client_id` / `client_secret`
/// form parameters, refusing a request that uses more than one method
/// (RFC 6749 §2.3).
pub(crate) fn presented(headers: &http::HeaderMap, form: &crate::form::Form) -> Result<Presented, crate::OAuthError> {
    use crate::OAuthError;
    let mut authorizations = headers.get_all(http::header::AUTHORIZATION).iter();
    let authorization = authorizations.next();
    if authorizations.next().is_some() {
        return Err(OAuthError::invalid_request("more than one Authorization header"));
    }
    let basic = match authorization {
        Some(value) => parse_basic(value.as_bytes())?,
        None => None,
    };
    let form_id = form.get("client_id");
    let form_secret = form.get("client_secret");
    match basic {
        Some((id, secret)) => {
            if form_secret.is_some() {
                return Err(OAuthError::invalid_request(
                    "use one client authentication method: Authorization: Basic or client_secret, not both",
                ));
            }
            if form_id.is_some_and(|f| f != id) {
                return Err(OAuthError::invalid_client(
                    "client_id does not match the Basic credentials",
                ));
            }
            Ok(Presented {
                id: Some(id),
                secret: Some(secret),
                basic: true,
            })
        }
        None => Ok(Presented {
            id: form_id.map(str::to_owned),
            secret: form_secret.map(|s| Zeroizing::new(s.to_owned())),
            basic: false,
        }),
    }
}

/// `Authorization: Basic base64(urlencode(id) ":" urlencode(secret))`
/// (RFC 6749 §2.3.1). Other schemes are not client authentication here.
fn parse_basic(value: &[u8]) -> Result<Option<(String, Zeroizing<String>)>, crate::OAuthError> {
    use crate::OAuthError;
    let malformed = || OAuthError::invalid_client("malformed Basic credentials");
    let Some(scheme_end) = value.iter().position(|&b| b == b' ') else {
        return if value.eq_ignore_ascii_case(b"basic") {
            Err(malformed())
        } else {
            Ok(None)
        };
    };
    if !value[..scheme_end].eq_ignore_ascii_case(b"basic") {
        return Ok(None);
    }
    let encoded = value[scheme_end..].trim_ascii();
    if encoded.len() > 4 * (MAX_CLIENT_ID_LEN + MAX_CLIENT_SECRET_LEN) {
        return Err(malformed());
    }
    let decoded = Zeroizing::new(STANDARD.decode(encoded).map_err(|_| malformed())?);
    let colon = decoded.iter().position(|&b| b == b':').ok_or_else(malformed)?;
    let id = crate::form::decode(&decoded[..colon]).map_err(|_| malformed())?;
    let secret = Zeroizing::new(crate::form::decode(&decoded[colon + 1..]).map_err(|_| malformed())?);
    if id.is_empty() {
        return Err(malformed());
    }
    Ok(Some((id, secret)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_decoded() {
        let v = format!("Basic {}", STANDARD.encode("my%20app:p%3Ass+w"));
        let (id, secret) = parse_basic(v.as_bytes()).unwrap().unwrap();
        assert_eq!(id, "my app");
        assert_eq!(secret.as_str(), "p:ss w");
        assert!(parse_basic(b"Bearer abc").unwrap().is_none());
        assert!(parse_basic(b"Basic !!!").is_err());
        assert!(parse_basic(b"Basic").is_err());
        assert!(parse_basic(format!("Basic {}", STANDARD.encode("nocolon")).as_bytes()).is_err());
        assert!(parse_basic(format!("basic {}", STANDARD.encode(":x")).as_bytes()).is_err());
    }
}
