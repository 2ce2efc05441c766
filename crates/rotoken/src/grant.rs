//! What a family grants: subject, client, scope, confirmation key, metadata.

use std::collections::BTreeSet;
use std::fmt;

/// Largest subject, in bytes.
pub const MAX_SUBJECT_LEN: usize = 1024;
/// Largest client id, in bytes.
pub const MAX_CLIENT_ID_LEN: usize = 256;
/// Largest scope string, in bytes.
pub const MAX_SCOPE_LEN: usize = 4096;
/// Largest confirmation key thumbprint, in bytes.
pub const MAX_CONFIRMATION_LEN: usize = 256;
/// Largest caller metadata, in bytes.
pub const MAX_METADATA_LEN: usize = 16 * 1024;

/// Why a grant, scope or request field was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidInput {
    /// A field is empty but must not be.
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// A field is longer than allowed.
    #[error("{field} is {len} bytes, more than the {max} allowed")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A field holds a control character.
    #[error("{0} contains a control character")]
    ControlCharacter(&'static str),
    /// A scope token holds a character RFC 6749 §3.3 does not allow.
    #[error("scope contains an invalid character (RFC 6749 §3.3)")]
    ScopeCharacter,
}

/// A set of scope tokens (RFC 6749 §3.3): space-delimited, order-free.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Scope(BTreeSet<String>);

impl Scope {
    /// Parses a space-delimited scope string. An empty string is the empty scope.
    ///
    /// # Errors
    ///
    /// [`InvalidInput`] if the string is too long or a token has a character
    /// outside `%x21 / %x23-5B / %x5D-7E`.
    pub fn parse(s: &str) -> Result<Self, InvalidInput> {
        if s.len() > MAX_SCOPE_LEN {
            return Err(InvalidInput::TooLong {
                field: "scope",
                len: s.len(),
                max: MAX_SCOPE_LEN,
            });
        }
        let ok = |b: u8| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b);
        let mut set = BTreeSet::new();
        for tok in s.split(' ').filter(|t| !t.is_empty()) {
            if !tok.bytes().all(ok) {
                return Err(InvalidInput::ScopeCharacter);
            }
            set.insert(tok.to_owned());
        }
        Ok(Self(set))
    }

    /// True if every token of `self` is in `other`.
    pub fn is_subset(&self, other: &Scope) -> bool {
        self.0.is_subset(&other.0)
    }

    /// True if the scope holds `token`.
    pub fn contains(&self, token: &str) -> bool {
        self.0.contains(token)
    }

    /// True if the scope holds no token.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The tokens, in sorted order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for t in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(t)?;
            first = false;
        }
        Ok(())
    }
}

impl std::str::FromStr for Scope {
    type Err = InvalidInput;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// What a new family grants. Everything here is sealed at rest.
#[derive(Clone, PartialEq, Eq)]
pub struct Grant {
    /// The resource owner (user) the family acts for.
    pub subject: String,
    /// The client the family is bound to (RFC 6749 §6).
    pub client_id: String,
    /// The granted scope; a refresh may narrow it for one access token, never widen it.
    pub scope: Scope,
    /// Thumbprint of a key the client must prove possession of at each
    /// refresh (DPoP `jkt`, RFC 9449, or an mTLS certificate thumbprint).
    pub confirmation: Option<String>,
    /// Opaque caller data (for example the authentication context), sealed.
    pub metadata: Vec<u8>,
}

impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grant")
            .field("subject", &self.subject)
            .field("client_id", &self.client_id)
            .field("scope", &self.scope.to_string())
            .field("confirmation", &self.confirmation.is_some())
            .field("metadata_len", &self.metadata.len())
            .finish()
    }
}

impl Grant {
    /// A grant for `subject` and `client_id` with the given scope and nothing else.
    pub fn new(subject: impl Into<String>, client_id: impl Into<String>, scope: Scope) -> Self {
        Self {
            subject: subject.into(),
            client_id: client_id.into(),
            scope,
            confirmation: None,
            metadata: Vec::new(),
        }
    }

    /// Binds the family to a confirmation key thumbprint.
    #[must_use]
    pub fn with_confirmation(mut self, thumbprint: impl Into<String>) -> Self {
        self.confirmation = Some(thumbprint.into());
        self
    }

    /// Attaches opaque metadata, sealed at rest.
    #[must_use]
    pub fn with_metadata(mut self, metadata: impl Into<Vec<u8>>) -> Self {
        self.metadata = metadata.into();
        self
    }

    /// Checks every field's length and content.
    ///
    /// # Errors
    ///
    /// The first [`InvalidInput`] found.
    pub fn validate(&self) -> Result<(), InvalidInput> {
        check_text("subject", &self.subject, MAX_SUBJECT_LEN)?;
        check_text("client_id", &self.client_id, MAX_CLIENT_ID_LEN)?;
        if let Some(c) = &self.confirmation {
            check_text("confirmation", c, MAX_CONFIRMATION_LEN)?;
        }
        if self.metadata.len() > MAX_METADATA_LEN {
            return Err(InvalidInput::TooLong {
                field: "metadata",
                len: self.metadata.len(),
                max: MAX_METADATA_LEN,
            });
        }
        Ok(())
    }
}

/// Checks a required text field: non-empty, bounded, no control characters.
pub(crate) fn check_text(field: &'static str, s: &str, max: usize) -> Result<(), InvalidInput> {
    if s.is_empty() {
        return Err(InvalidInput::Empty(field));
    }
    if s.len() > max {
        return Err(InvalidInput::TooLong {
            field,
            len: s.len(),
            max,
        });
    }
    if s.chars().any(char::is_control) {
        return Err(InvalidInput::ControlCharacter(field));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_parsing_follows_rfc6749() {
        let s = Scope::parse("openid  profile offline_access").unwrap();
        assert_eq!(s.to_string(), "offline_access openid profile");
        assert!(Scope::parse("a\"b").is_err());
        assert!(Scope::parse("a\\b").is_err());
        assert!(Scope::parse("é").is_err());
        assert!(Scope::parse("").unwrap().is_empty());
        assert!(!Scope::parse("a").unwrap().is_subset(&s));
        assert!(Scope::parse("openid").unwrap().is_subset(&s));
    }

    #[test]
    fn grants_are_validated() {
        let g = Grant::new("alice", "app", Scope::default());
        assert!(g.validate().is_ok());
        assert_eq!(
            Grant::new("", "app", Scope::default()).validate(),
            Err(InvalidInput::Empty("subject"))
        );
        assert!(Grant::new("a\n", "app", Scope::default()).validate().is_err());
        assert!(
            Grant::new("a".repeat(2000), "app", Scope::default())
                .validate()
                .is_err()
        );
        assert!(g.with_metadata(vec![0; MAX_METADATA_LEN + 1]).validate().is_err());
    }
}
