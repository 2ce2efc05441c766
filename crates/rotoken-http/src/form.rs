//! A strict `application/x-www-form-urlencoded` parser (RFC 6749 §3.2,
//! Appendix B): bad percent-encoding, non-UTF-8 text and repeated
//! parameters are errors, not silently repaired.

/// Most parameters accepted in one body.
const MAX_PARAMS: usize = 32;

/// The parameters of a form body (or query string), each name at most once.
/// Debug output shows names only, never values.
#[derive(Default)]
pub struct Form {
    params: Vec<(String, String)>,
}

/// Why a body is not an acceptable form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FormError {
    /// A `%` not followed by two hexadecimal digits.
    BadPercentEncoding,
    /// A name or value that is not UTF-8 once decoded.
    NotUtf8,
    /// A parameter given more than once; carries its name when it is one we know.
    Duplicate(Option<&'static str>),
    /// More parameters than any request needs.
    TooManyParameters,
}

impl FormError {
    /// A fixed description (never echoes the input).
    pub(crate) fn description(&self) -> std::borrow::Cow<'static, str> {
        match self {
            Self::BadPercentEncoding => "the body has invalid percent-encoding".into(),
            Self::NotUtf8 => "the body is not UTF-8".into(),
            Self::Duplicate(Some(name)) => format!("the parameter {name} is included more than once").into(),
            Self::Duplicate(None) => "a parameter is included more than once".into(),
            Self::TooManyParameters => "the body has too many parameters".into(),
        }
    }
}

/// Parameter names this crate reads; only these are named in error descriptions.
const KNOWN: &[&str] = &[
    "grant_type",
    "refresh_token",
    "scope",
    "client_id",
    "client_secret",
    "token",
    "token_type_hint",
    "subject",
    "client",
    "family",
    "confirmation",
    "metadata",
];

impl Form {
    /// The value of `name`, if present and not empty (RFC 6749 §3.1:
    /// parameters sent without a value are treated as omitted).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// True if `name` was sent, even with an empty value.
    pub fn has(&self, name: &str) -> bool {
        self.params.iter().any(|(n, _)| n == name)
    }
}

impl std::fmt::Debug for Form {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.params.iter().map(|(n, _)| n)).finish()
    }
}

/// Parses an `application/x-www-form-urlencoded` body (or a query string)
/// as strictly as the endpoints do: bad percent-encoding, non-UTF-8 text
/// and repeated parameters are `invalid_request`. For a server's own
/// grants (an authorization-code exchange) and its authorization endpoint.
///
/// ```
/// let form = rotoken_http::parse_form(b"grant_type=authorization_code&code=abc").unwrap();
/// assert_eq!(form.get("code"), Some("abc"));
/// assert!(rotoken_http::parse_form(b"code=a&code=b").is_err());
/// ```
///
/// # Errors
///
/// [`crate::OAuthError`] `invalid_request` (400).
pub fn parse_form(body: &[u8]) -> Result<Form, crate::OAuthError> {
    parse(body).map_err(|e| crate::OAuthError::invalid_request(e.description()))
}

/// Parses a form body.
pub(crate) fn parse(body: &[u8]) -> Result<Form, FormError> {
    let mut form = Form::default();
    for pair in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        let name = decode(name)?;
        let value = decode(value)?;
        if form.has(&name) {
            return Err(FormError::Duplicate(KNOWN.iter().copied().find(|k| *k == name)));
        }
        if form.params.len() == MAX_PARAMS {
            return Err(FormError::TooManyParameters);
        }
        form.params.push((name, value));
    }
    Ok(form)
}

/// Decodes one name or value: `+` is a space, `%XX` a byte; the result must be UTF-8.
pub(crate) fn decode(input: &[u8]) -> Result<String, FormError> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = input.get(i + 1).and_then(|&b| hex(b));
                let lo = input.get(i + 2).and_then(|&b| hex(b));
                match (hi, lo) {
                    (Some(h), Some(l)) => out.push(h << 4 | l),
                    _ => return Err(FormError::BadPercentEncoding),
                }
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| FormError::NotUtf8)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plus_and_percent() {
        let f = parse(b"grant_type=refresh_token&scope=openid+profile%20email&x=").unwrap();
        assert_eq!(f.get("grant_type"), Some("refresh_token"));
        assert_eq!(f.get("scope"), Some("openid profile email"));
        assert_eq!(f.get("x"), None);
        assert!(f.has("x"));
        assert_eq!(f.get("missing"), None);
    }

    #[test]
    fn empty_body_is_an_empty_form() {
        assert_eq!(parse(b"").unwrap().params.len(), 0);
        assert_eq!(parse(b"&&").unwrap().params.len(), 0);
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(parse(b"a=%zz").unwrap_err(), FormError::BadPercentEncoding);
        assert_eq!(parse(b"a=%4").unwrap_err(), FormError::BadPercentEncoding);
        assert_eq!(parse(b"a=%").unwrap_err(), FormError::BadPercentEncoding);
        assert_eq!(parse(b"a=%ff").unwrap_err(), FormError::NotUtf8);
        assert_eq!(parse(b"a=\xff").unwrap_err(), FormError::NotUtf8);
        assert_eq!(
            parse(b"scope=a&scope=b").unwrap_err(),
            FormError::Duplicate(Some("scope"))
        );
        assert_eq!(parse(b"zz=a&zz=b").unwrap_err(), FormError::Duplicate(None));
        let many: Vec<String> = (0..40).map(|i| format!("p{i}=1")).collect();
        assert_eq!(
            parse(many.join("&").as_bytes()).unwrap_err(),
            FormError::TooManyParameters
        );
    }

    #[test]
    fn utf8_is_accepted() {
        assert_eq!(parse("a=%C3%A9".as_bytes()).unwrap().get("a"), Some("é"));
    }
}
