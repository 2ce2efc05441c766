//! The user table: Argon2id password hashes (PHC strings), verified by
//! `argon2`, which compares in constant time.

use std::collections::HashMap;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, password_hash};

/// Usernames and their password hashes; no password is kept.
pub struct Users {
    table: HashMap<String, String>,
    /// Checked for unknown usernames, so they take as long as known ones.
    dummy: String,
}

fn hash(password: &str) -> Result<String, password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default().hash_password(password.as_bytes(), &salt)?.to_string())
}

fn matches(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

impl Users {
    /// An empty table.
    ///
    /// # Errors
    ///
    /// [`password_hash::Error`] if the dummy hash cannot be made.
    pub fn new() -> Result<Self, password_hash::Error> {
        let dummy = hash("not a password")?;
        Ok(Self {
            table: HashMap::new(),
            dummy,
        })
    }

    /// Adds `username` with the hash of `password`.
    ///
    /// # Errors
    ///
    /// [`password_hash::Error`] if the password cannot be hashed.
    pub fn with(mut self, username: &str, password: &str) -> Result<Self, password_hash::Error> {
        self.table.insert(username.to_owned(), hash(password)?);
        Ok(self)
    }

    /// Whether `password` is `username`'s.
    pub fn verify(&self, username: &str, password: &str) -> bool {
        match self.table.get(username) {
            Some(hash) => matches(hash, password),
            None => {
                let _ = matches(&self.dummy, password);
                false
            }
        }
    }
}
