//! Where a server's families live, named by one string: a redb file path
//! (the default store) or a PostgreSQL URL. The command-line tool and the
//! C ABI take a store this way.

use std::path::{Path, PathBuf};

use rotoken::{Engine, Keyring, OpenError, Options};

use crate::{PgOptions, PostgresStore};

/// A store named by a path or a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreLocation {
    /// A redb database file.
    File(PathBuf),
    /// A PostgreSQL connection URL (`postgres://` or `postgresql://`).
    Postgres(String),
}

impl StoreLocation {
    /// A PostgreSQL URL by its scheme; anything else is a file path.
    pub fn parse(s: &str) -> Self {
        let lower = s.get(..13).unwrap_or(s).to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            Self::Postgres(s.to_owned())
        } else {
            Self::File(PathBuf::from(s))
        }
    }

    /// The file, for a file store.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Self::File(p) => Some(p),
            Self::Postgres(_) => None,
        }
    }

    /// False only for a database file that does not exist (a PostgreSQL
    /// store is created on first connection, like a new file).
    pub fn exists(&self) -> bool {
        match self {
            Self::File(p) => !matches!(p.try_exists(), Ok(false)),
            Self::Postgres(_) => true,
        }
    }

    /// Opens the store alone, without keys: creating or migrating its
    /// schema as opening does ([`rotoken::store::Store::schema`] says what
    /// it found and applied).
    ///
    /// # Errors
    ///
    /// As [`rotoken::RedbStore::open`] for a file, [`PostgresStore::connect`]
    /// for PostgreSQL.
    pub fn open_store(&self) -> Result<Box<dyn rotoken::store::Store>, OpenError> {
        Ok(match self {
            Self::File(path) => Box::new(rotoken::RedbStore::open(path, None)?),
            Self::Postgres(url) => Box::new(PostgresStore::connect(url, PgOptions::default())?),
        })
    }

    /// Opens an engine over the store.
    ///
    /// # Errors
    ///
    /// As [`Engine::open`] for a file, [`PostgresStore::connect`] and
    /// [`Engine::with_store`] for PostgreSQL.
    pub fn open(&self, keys: Keyring, options: Options) -> Result<Engine, OpenError> {
        match self {
            Self::File(path) => Engine::open(path, keys, options),
            Self::Postgres(url) => {
                options.policy.validate().map_err(OpenError::InvalidPolicy)?;
                let store = PostgresStore::connect(url, PgOptions::default())?;
                Engine::with_store(store, keys, options)
            }
        }
    }
}

/// Shown in logs and messages: the path, or the URL without its password.
impl std::fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(p) => write!(f, "{}", p.display()),
            Self::Postgres(url) => f.write_str(&redact_password(url)),
        }
    }
}

/// `scheme://user:secret@host/db` → `scheme://user:***@host/db`; a
/// `password=` query parameter is masked too.
fn redact_password(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..].find(['/', '?']).map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(rest_start + colon + 1..rest_start + at, "***");
            }
        }
    }
    if let Some(q) = out.find("password=") {
        let end = out[q..].find('&').map_or(out.len(), |i| q + i);
        out.replace_range(q + "password=".len()..end, "***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_postgres_and_the_rest_are_files() {
        assert_eq!(
            StoreLocation::parse("postgres://u@h/db"),
            StoreLocation::Postgres("postgres://u@h/db".into())
        );
        assert_eq!(
            StoreLocation::parse("POSTGRESQL://h/db"),
            StoreLocation::Postgres("POSTGRESQL://h/db".into())
        );
        assert_eq!(
            StoreLocation::parse("./rotoken.redb"),
            StoreLocation::File("./rotoken.redb".into())
        );
        assert_eq!(
            StoreLocation::parse("postgres.redb"),
            StoreLocation::File("postgres.redb".into())
        );
    }

    #[test]
    fn passwords_never_reach_the_log() {
        for (url, shown) in [
            (
                "postgres://rt:s3cret@db:5432/rotoken",
                "postgres://rt:***@db:5432/rotoken",
            ),
            ("postgres://rt@db/rotoken", "postgres://rt@db/rotoken"),
            (
                "postgresql:///rotoken?host=/run/pg&password=s3cret&x=1",
                "postgresql:///rotoken?host=/run/pg&password=***&x=1",
            ),
        ] {
            let s = StoreLocation::parse(url).to_string();
            assert_eq!(s, shown);
            assert!(!s.contains("s3cret"));
        }
    }
}
