//! Fuzz target `token`: the token parser and its round trip.

use std::sync::OnceLock;

use rotoken::token::{self, PREFIX, ParseError, TOKEN_LEN};
use rotoken::{FamilyId, Keyring};

fn keys() -> &'static Keyring {
    static KEYS: OnceLock<Keyring> = OnceLock::new();
    KEYS.get_or_init(crate::fixture::keyring)
}

/// Parses `data` as a refresh token and checks, for every input:
///
/// * parsing never panics;
/// * an input that parses is exactly [`TOKEN_LEN`] bytes starting with
///   `rt1_`, and formatting the parsed token gives back the very same bytes
///   (`format(parse(x)) == x`: one text per token, so no two spellings of a
///   token can be told apart by a store or a log);
/// * a rejected input is rejected for the reason its error names (a length
///   error only for a wrong length, a prefix error only for a wrong prefix...),
///   with a short message that cannot carry the input;
/// * authenticator verification against the fixture keys never panics;
/// * the same bytes as a family id (32 hex characters) parse only if they
///   are hexadecimal, and print back the same (lowercased).
///
/// # Panics
///
/// When one of those properties fails: that is the finding.
pub fn token(data: &[u8]) {
    match token::parse(data) {
        Ok(t) => {
            assert_eq!(data.len(), TOKEN_LEN, "a token of the wrong length parsed");
            assert!(data.starts_with(PREFIX.as_bytes()), "a token without the prefix parsed");
            let text = token::format(&t);
            assert_eq!(
                text.expose().as_bytes(),
                data,
                "format(parse(x)) != x: two spellings of one token"
            );
            // Parsing the formatted text gives the same fields again.
            let again = token::parse(text.expose().as_bytes()).expect("a formatted token parses");
            assert_eq!(
                (again.key_id, again.family, again.generation, again.authenticator),
                (t.key_id, t.family, t.generation, t.authenticator)
            );
            assert_eq!(again.secret.expose(), t.secret.expose());
            let _ = keys().verify(&t);
        }
        Err(e) => {
            match &e {
                ParseError::Length { expected, found } => {
                    assert_eq!(*expected, TOKEN_LEN);
                    assert_eq!(*found, data.len());
                    assert_ne!(data.len(), TOKEN_LEN, "length error for a token of the right length");
                }
                ParseError::UnsupportedVersion(v) => {
                    assert!(data.len() >= 4 && data.starts_with(b"rt") && data[3] == b'_');
                    assert_eq!(char::from(data[2]), *v);
                    assert_ne!(data[2], b'1', "version error for version 1");
                }
                ParseError::Prefix => {
                    assert_eq!(data.len(), TOKEN_LEN);
                    assert!(!data.starts_with(PREFIX.as_bytes()), "prefix error for a good prefix");
                }
                ParseError::Encoding | ParseError::Checksum => {
                    assert_eq!(data.len(), TOKEN_LEN);
                    assert!(data.starts_with(PREFIX.as_bytes()));
                }
                _ => {}
            }
            // Messages never echo the input (logs would then hold token
            // text): they are short fixed sentences whatever the input's size.
            // (Comparing with the input itself is useless: the fuzzer feeds
            // the messages' own wording back as input.)
            let message = e.to_string();
            assert!(
                message.len() < 80,
                "an error message of {} bytes: {message}",
                message.len()
            );
        }
    }
    family_id(data);
}

/// Family ids in text (the CLI's `--family`): 32 hexadecimal characters.
fn family_id(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = s.parse::<FamilyId>() {
        assert!(
            s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()),
            "{s:?} parsed as a family id but is not 32 hexadecimal characters"
        );
        assert_eq!(id.to_string(), s.to_ascii_lowercase(), "family id round trip");
    }
}
