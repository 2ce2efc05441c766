//! The access-token signing keys on disk: the current key file, and beside
//! it `<file>.previous`, the keys it replaced and when. A replaced key is
//! still published (JWKS) and still verifies (introspection) until the
//! access tokens it signed have expired, so rotating the signing key
//! breaks no outstanding access token.

use std::path::{Path, PathBuf};
use std::time::Duration;

use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::error::SigningKeyError;
use crate::signing_key::{KEY_FILE_HEADER, SigningKey};

/// A signing key that was replaced at `retired_at`: it signs nothing any
/// more, but verifies the tokens it signed until they expire.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RetiredKey {
    /// The key.
    pub key: SigningKey,
    /// When it stopped signing.
    pub retired_at: OffsetDateTime,
}

impl RetiredKey {
    /// `key`, replaced at `retired_at`.
    pub fn new(key: SigningKey, retired_at: OffsetDateTime) -> Self {
        Self { key, retired_at }
    }
}

/// The current signing key and the retired ones still verifying, as
/// [`JwtMinter::from_keys`](crate::JwtMinter::from_keys) takes them.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use rotoken_http::SigningKeys;
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("signing.key");
/// let (first, created) = SigningKeys::load_or_generate(&path)?;
/// assert!(created);
/// // `rotoken keys rotate-signing`: a new current key, the old one retired.
/// let now = time::OffsetDateTime::now_utc();
/// let rotated = SigningKeys::rotate(&path, now, Duration::from_secs(86_400))?;
/// assert_ne!(rotated.current.kid(), first.current.kid());
/// assert_eq!(rotated.previous[0].key.kid(), first.current.kid());
/// assert_eq!(SigningKeys::load(&path)?.previous.len(), 1);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SigningKeys {
    /// The key that signs new tokens.
    pub current: SigningKey,
    /// Keys it replaced, newest first.
    pub previous: Vec<RetiredKey>,
}

impl SigningKeys {
    /// Only `current`, nothing retired.
    pub fn new(current: SigningKey) -> Self {
        Self {
            current,
            previous: Vec::new(),
        }
    }

    /// The file of retired keys beside the key file `path`: `<path>.previous`.
    pub fn previous_path(path: &Path) -> PathBuf {
        let mut p = path.as_os_str().to_owned();
        p.push(".previous");
        PathBuf::from(p)
    }

    /// Loads the key file at `path` and its retired keys (none if
    /// `<path>.previous` does not exist).
    ///
    /// # Errors
    ///
    /// [`SigningKeyError::Io`] or [`SigningKeyError::Format`].
    pub fn load(path: &Path) -> Result<Self, SigningKeyError> {
        Ok(Self {
            current: SigningKey::load(path)?,
            previous: load_previous(&Self::previous_path(path))?,
        })
    }

    /// [`SigningKeys::load`], or a new Ed25519 key written to `path` if there
    /// is none. Returns the keys and whether the key was created.
    ///
    /// # Errors
    ///
    /// As [`SigningKey::load_or_generate`], and a malformed `<path>.previous`.
    pub fn load_or_generate(path: &Path) -> Result<(Self, bool), SigningKeyError> {
        let (keys, created) = Self::load_or_new(path)?;
        if created {
            keys.current.save(path)?;
        }
        Ok((keys, created))
    }

    /// [`SigningKeys::load_or_generate`] without writing a new key: the
    /// caller saves `current` once it is sure to start, so a refused start
    /// leaves no file behind. Returns the keys and whether `current` is new.
    ///
    /// # Errors
    ///
    /// As [`SigningKeys::load_or_generate`], without the write.
    pub fn load_or_new(path: &Path) -> Result<(Self, bool), SigningKeyError> {
        let (current, created) = SigningKey::load_or_new(path)?;
        let previous = load_previous(&Self::previous_path(path))?;
        Ok((Self { current, previous }, created))
    }

    /// Replaces the key at `path` with a new Ed25519 key: the old one is
    /// written to `<path>.previous` as retired at `now` (before the new key
    /// is written, so a crash in between loses no key), and retired keys
    /// older than `keep` are dropped from it. `keep` must be longer than
    /// the access-token lifetime.
    ///
    /// # Errors
    ///
    /// [`SigningKeyError`] reading or writing either file; a missing key
    /// file is [`SigningKeyError::Io`] (there is nothing to rotate).
    pub fn rotate(path: &Path, now: OffsetDateTime, keep: Duration) -> Result<Self, SigningKeyError> {
        let old = Self::load(path)?;
        let current = SigningKey::generate_ed25519()?;
        let replaced = old.current.kid().to_owned();
        let mut previous = vec![RetiredKey::new(old.current, now)];
        previous.extend(
            old.previous
                .into_iter()
                .filter(|r| r.retired_at + keep > now && r.key.kid() != replaced),
        );
        save_previous(&Self::previous_path(path), &previous)?;
        current.save(path)?;
        Ok(Self { current, previous })
    }
}

/// The line of a retired key's block that says when it was retired.
const RETIRED_AT: &str = "retired_at ";

fn load_previous(path: &Path) -> Result<Vec<RetiredKey>, SigningKeyError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => Zeroizing::new(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(SigningKeyError::io(path)(source)),
    };
    let fail = |s: &str| SigningKeyError::Format(format!("{}: {s}", path.display()));
    let mut blocks: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.trim() == KEY_FILE_HEADER {
            blocks.push(String::new());
        }
        match blocks.last_mut() {
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None if line.trim().is_empty() || line.trim_start().starts_with('#') => {}
            None => return Err(fail("the file must start with `rotoken-signing-key v1`")),
        }
    }
    blocks
        .into_iter()
        .map(|block| {
            let block = Zeroizing::new(block);
            let mut retired_at = None;
            let mut rest = Zeroizing::new(String::new());
            for line in block.lines() {
                match line.trim().strip_prefix(RETIRED_AT) {
                    Some(v) => {
                        let secs: i64 = v.trim().parse().map_err(|_| fail("retired_at is not a number"))?;
                        retired_at = Some(
                            OffsetDateTime::from_unix_timestamp(secs)
                                .map_err(|_| fail("retired_at is out of range"))?,
                        );
                    }
                    None => {
                        rest.push_str(line);
                        rest.push('\n');
                    }
                }
            }
            let key = SigningKey::from_text(&rest)?;
            Ok(RetiredKey::new(
                key,
                retired_at.ok_or_else(|| fail("a key without retired_at"))?,
            ))
        })
        .collect()
}

fn save_previous(path: &Path, keys: &[RetiredKey]) -> Result<(), SigningKeyError> {
    let mut text = Zeroizing::new(String::new());
    for r in keys {
        let key = r.key.to_text();
        let mut lines = key.lines();
        // The header, then when it was retired, then the key's own lines.
        text.push_str(lines.next().unwrap_or(KEY_FILE_HEADER));
        text.push('\n');
        text.push_str(&format!("{RETIRED_AT}{}\n", r.retired_at.unix_timestamp()));
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
    }
    crate::atomic_file::write_atomically(path, text.as_bytes()).map_err(SigningKeyError::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_retired_keys_for_a_while_then_drops_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        let (k0, _) = SigningKeys::load_or_generate(&path).unwrap();
        let t0 = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let day = Duration::from_secs(86_400);
        let k1 = SigningKeys::rotate(&path, t0, day).unwrap();
        let k2 = SigningKeys::rotate(&path, t0 + Duration::from_secs(60), day).unwrap();
        let loaded = SigningKeys::load(&path).unwrap();
        assert_eq!(loaded.current.kid(), k2.current.kid());
        let kids: Vec<_> = loaded.previous.iter().map(|r| r.key.kid().to_owned()).collect();
        assert_eq!(kids, [k1.current.kid(), k0.current.kid()]);
        assert_eq!(loaded.previous[1].retired_at, t0);
        // A day later the oldest retired key is dropped at the next rotation.
        let k3 = SigningKeys::rotate(&path, t0 + day, day).unwrap();
        let kids: Vec<_> = k3.previous.iter().map(|r| r.key.kid().to_owned()).collect();
        assert_eq!(kids, [k2.current.kid(), k1.current.kid()]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(SigningKeys::previous_path(&path))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_damaged_previous_file_is_refused_and_rotating_nothing_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        assert!(matches!(
            SigningKeys::rotate(&path, OffsetDateTime::UNIX_EPOCH, Duration::from_secs(1)),
            Err(SigningKeyError::Io { .. })
        ));
        SigningKeys::load_or_generate(&path).unwrap();
        std::fs::write(SigningKeys::previous_path(&path), "garbage\n").unwrap();
        assert!(matches!(SigningKeys::load(&path), Err(SigningKeyError::Format(_))));
        let key = SigningKey::ed25519_from_seed([3; 32]);
        std::fs::write(SigningKeys::previous_path(&path), key.to_text().as_bytes()).unwrap();
        assert!(
            matches!(SigningKeys::load(&path), Err(SigningKeyError::Format(_))),
            "no retired_at"
        );
    }
}
