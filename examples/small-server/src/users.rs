//! The user table: Argon2id password hashes, checked in constant time.

use std::collections::HashMap;

use argon2::Argon2;
use subtle::ConstantTimeEq;

/// A salted Argon2id hash of one password.
struct PasswordHash {
    salt: [u8; 16],
    hash: [u8; 32],
}

impl PasswordHash {
    fn new(password: &str) -> Result<Self, UserError> {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|_| UserError::Random)?;
        Ok(Self {
            salt,
            hash: derive(password, &salt)?,
        })
    }

    fn matches(&self, password: &str) -> bool {
        derive(password, &self.salt).is_ok_and(|h| bool::from(h.ct_eq(&self.hash)))
    }
}

fn derive(password: &str, salt: &[u8; 16]) -> Result<[u8; 32], UserError> {
    let mut out = [0u8; 32];
    Argon2::default()
        .hash_password_into(password.as_bytes(), salt, &mut out)
        .map_err(|_| UserError::Hash)?;
    Ok(out)
}

/// Could not add a user.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UserError {
    /// The operating system's random source failed.
    #[error("no random salt")]
    Random,
    /// Argon2 refused the password (longer than 2^32 bytes).
    #[error("the password could not be hashed")]
    Hash,
}

/// Usernames and their password hashes; no password is kept.
pub struct Users {
    table: HashMap<String, PasswordHash>,
    /// Checked for unknown usernames, so they take as long as known ones.
    dummy: PasswordHash,
}

impl Users {
    /// An empty table.
    ///
    /// # Errors
    ///
    /// [`UserError`] if the dummy hash cannot be made.
    pub fn new() -> Result<Self, UserError> {
        Ok(Self {
            table: HashMap::new(),
            dummy: PasswordHash::new("")?,
        })
    }

    /// Adds `username` with the hash of `password`.
    ///
    /// # Errors
    ///
    /// [`UserError`] if the password cannot be hashed.
    pub fn with(mut self, username: &str, password: &str) -> Result<Self, UserError> {
        self.table.insert(username.to_owned(), PasswordHash::new(password)?);
        Ok(self)
    }

    /// Whether `password` is `username`'s.
    pub fn verify(&self, username: &str, password: &str) -> bool {
        match self.table.get(username) {
            Some(hash) => hash.matches(password),
            None => {
                let _ = self.dummy.matches(password);
                false
            }
        }
    }
}
