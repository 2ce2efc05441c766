//! Clients: the registry a server implements, hashed secrets, the
//! file-backed registry `rotoken serve` uses, and client authentication
//! (`client_secret_basic`, `client_secret_post`, `none`).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::{ClientFileError, RegistryError};

/// Largest client id accepted, in bytes (the core's limit).
pub const MAX_CLIENT_ID_LEN: usize = rotoken::grant::MAX_CLIENT_ID_LEN;
/// Largest client secret accepted, in bytes.
pub const MAX_CLIENT_SECRET_LEN: usize = 512;
/// Shortest client secret [`SecretHash::new`] accepts, in bytes.
pub const MIN_CLIENT_SECRET_LEN: usize = 16;

const HASH_PREFIX: &str = "blake3-v1$";
const HASH_CONTEXT: &str = "rotoken client secret v1";

/// A client secret, stored only as a salted BLAKE3 hash.
///
/// The text form is `blake3-v1$<salt>$<hash>` (URL-safe base64). Client
/// secrets are machine-generated, high-entropy values (RFC 6749 §2.3.1), so
/// a fast hash suffices; [`SecretHash::new`] refuses secrets shorter than
/// [`MIN_CLIENT_SECRET_LEN`] bytes. Verification compares in constant time.
///
/// ```
/// use rotoken_http::SecretHash;
/// let hash = SecretHash::new(b"s3cret-s3cret-s3cret").unwrap();
/// assert!(hash.verify(b"s3cret-s3cret-s3cret"));
/// assert!(!hash.verify(b"guess"));
/// let stored = hash.to_string();
/// assert!(stored.parse::<SecretHash>().unwrap().verify(b"s3cret-s3cret-s3cret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SecretHash {
    salt: [u8; 16],
    hash: [u8; 32],
}

/// Why a secret or a stored hash was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretHashError {
    /// The secret is shorter than [`MIN_CLIENT_SECRET_LEN`] or longer than [`MAX_CLIENT_SECRET_LEN`].
    #[error("a client secret must be {MIN_CLIENT_SECRET_LEN} to {MAX_CLIENT_SECRET_LEN} bytes")]
    Length,
    /// The stored text is not `blake3-v1$<salt>$<hash>`.
    #[error("not a rotoken secret hash (expected blake3-v1$<salt>$<hash>)")]
    Format,
    /// The OS random number generator failed.
    #[error("OS random number generator failed")]
    Random,
}

impl SecretHash {
    /// Hashes `secret` with a fresh random salt.
    ///
    /// # Errors
    ///
    /// [`SecretHashError::Length`] for a too short or too long secret,
    /// [`SecretHashError::Random`] if the OS generator fails.
    pub fn new(secret: &[u8]) -> Result<Self, SecretHashError> {
        if !(MIN_CLIENT_SECRET_LEN..=MAX_CLIENT_SECRET_LEN).contains(&secret.len()) {
            return Err(SecretHashError::Length);
        }
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|_| SecretHashError::Random)?;
        Ok(Self {
            salt,
            hash: digest(&salt, secret),
        })
    }

    /// True if `presented` is the secret. Constant time in the secret's content.
    pub fn verify(&self, presented: &[u8]) -> bool {
        let computed = digest(&self.salt, presented);
        bool::from(computed.ct_eq(&self.hash))
    }
}

fn digest(salt: &[u8; 16], secret: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(HASH_CONTEXT);
    h.update(salt);
    h.update(secret);
    *h.finalize().as_bytes()
}

impl fmt::Display for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{HASH_PREFIX}{}${}",
            URL_SAFE_NO_PAD.encode(self.salt),
            URL_SAFE_NO_PAD.encode(self.hash)
        )
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHash(..)")
    }
}

impl std::str::FromStr for SecretHash {
    type Err = SecretHashError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix(HASH_PREFIX).ok_or(SecretHashError::Format)?;
        let (salt, hash) = rest.split_once('$').ok_or(SecretHashError::Format)?;
        let salt = URL_SAFE_NO_PAD.decode(salt).map_err(|_| SecretHashError::Format)?;
        let hash = URL_SAFE_NO_PAD.decode(hash).map_err(|_| SecretHashError::Format)?;
        Ok(Self {
            salt: salt.try_into().map_err(|_| SecretHashError::Format)?,
            hash: hash.try_into().map_err(|_| SecretHashError::Format)?,
        })
    }
}

/// A registered client, as a [`ClientRegistry`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegisteredClient {
    /// The client id.
    pub id: String,
    /// The hash of its secret; `None` for a public client (authentication method `none`).
    pub secret: Option<SecretHash>,
    /// May use the `refresh_token` grant at the token endpoint. Default true.
    pub refresh: bool,
    /// May introspect any token (a resource server). Without it a
    /// confidential client may introspect only tokens issued to itself.
    pub introspect: bool,
    /// The `aud` of this client's access tokens, instead of the server's.
    pub audience: Option<String>,
}

impl RegisteredClient {
    /// A public client: identified by its id alone, no secret.
    pub fn public(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            secret: None,
            refresh: true,
            introspect: false,
            audience: None,
        }
    }

    /// A confidential client authenticated by a secret.
    pub fn confidential(id: impl Into<String>, secret: SecretHash) -> Self {
        Self {
            secret: Some(secret),
            ..Self::public(id)
        }
    }

    /// Allows this client to introspect any token.
    #[must_use]
    pub fn with_introspection(mut self) -> Self {
        self.introspect = true;
        self
    }

    /// Sets the `aud` of this client's access tokens.
    #[must_use]
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Forbids the `refresh_token` grant (`unauthorized_client`).
    #[must_use]
    pub fn without_refresh(mut self) -> Self {
        self.refresh = false;
        self
    }

    /// True for a client with a secret.
    pub fn is_confidential(&self) -> bool {
        self.secret.is_some()
    }
}

/// Where the endpoints look clients up. A server implements it over its own
/// client store; [`MemoryClients`] and [`FileClients`] ship here.
///
/// ```
/// use rotoken_http::{ClientRegistry, RegisteredClient, RegistryError};
///
/// /// Every client id starting with `app-` is a public client.
/// struct Convention;
///
/// impl ClientRegistry for Convention {
///     fn client(&self, id: &str) -> Result<Option<RegisteredClient>, RegistryError> {
///         Ok(id.starts_with("app-").then(|| RegisteredClient::public(id)))
///     }
/// }
/// assert!(Convention.client("app-web").unwrap().is_some());
/// ```
pub trait ClientRegistry: Send + Sync {
    /// The client with this id, or `None` if there is none.
    ///
    /// # Errors
    ///
    /// [`RegistryError`] if the registry cannot answer (answered with `server_error`).
    fn client(&self, id: &str) -> Result<Option<RegisteredClient>, RegistryError>;
}

/// An in-memory registry, for tests and servers that configure clients in code.
#[derive(Debug, Clone, Default)]
pub struct MemoryClients {
    clients: HashMap<String, RegisteredClient>,
}

impl MemoryClients {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a client.
    #[must_use]
    pub fn with(mut self, client: RegisteredClient) -> Self {
        self.clients.insert(client.id.clone(), client);
        self
    }
}

impl ClientRegistry for MemoryClients {
    fn client(&self, id: &str) -> Result<Option<RegisteredClient>, RegistryError> {
        Ok(self.clients.get(id).cloned())
    }
}

/// One client in a clients file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ClientEntry {
    /// The client id.
    pub id: String,
    /// `blake3-v1$<salt>$<hash>`; absent for a public client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_hash: Option<String>,
    /// May use the `refresh_token` grant. Default true.
    #[serde(default = "yes")]
    pub refresh: bool,
    /// May introspect any token. Default false.
    #[serde(default)]
    pub introspect: bool,
    /// The `aud` of this client's access tokens. Default: the server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

fn yes() -> bool {
    true
}

impl ClientEntry {
    /// The entry for a registered client.
    pub fn of(client: &RegisteredClient) -> Self {
        Self {
            id: client.id.clone(),
            secret_hash: client.secret.as_ref().map(ToString::to_string),
            refresh: client.refresh,
            introspect: client.introspect,
            audience: client.audience.clone(),
        }
    }

    /// Checks the entry and turns it into a client.
    ///
    /// # Errors
    ///
    /// [`ClientFileError::InvalidClient`] for a bad id or hash.
    pub fn to_client(&self) -> Result<RegisteredClient, ClientFileError> {
        let invalid = |reason: &str| ClientFileError::InvalidClient {
            id: self.id.chars().take(64).collect(),
            reason: reason.to_owned(),
        };
        if self.id.is_empty() || self.id.len() > MAX_CLIENT_ID_LEN || self.id.chars().any(char::is_control) {
            return Err(invalid("the id must be 1 to 256 bytes without control characters"));
        }
        let secret = match &self.secret_hash {
            Some(h) => Some(h.parse::<SecretHash>().map_err(|e| invalid(&e.to_string()))?),
            None => None,
        };
        if self
            .audience
            .as_ref()
            .is_some_and(|a| a.is_empty() || a.len() > 1024 || a.chars().any(char::is_control))
        {
            return Err(invalid(
                "the audience must be 1 to 1024 bytes without control characters",
            ));
        }
        Ok(RegisteredClient {
            id: self.id.clone(),
            secret,
            refresh: self.refresh,
            introspect: self.introspect,
            audience: self.audience.clone(),
        })
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientsFileShape {
    #[serde(default, rename = "client")]
    clients: Vec<ClientEntry>,
}

/// Largest clients file read.
const MAX_CLIENTS_FILE: u64 = 4 * 1024 * 1024;

/// A registry backed by a TOML file of `[[client]]` tables, as written by
/// `rotoken clients add`. It holds only hashes of secrets, and reloads
/// itself when the file changes (checked at most once a second).
///
/// ```toml
/// [[client]]
/// id = "web-app"
/// secret_hash = "blake3-v1$...$..."
///
/// [[client]]
/// id = "spa"            # no secret_hash: a public client
/// ```
#[derive(Debug)]
pub struct FileClients {
    path: PathBuf,
    state: Mutex<FileState>,
}

#[derive(Debug)]
struct FileState {
    clients: HashMap<String, RegisteredClient>,
    modified: Option<SystemTime>,
    checked: std::time::Instant,
}

impl FileClients {
    /// Loads the file; a missing file is an empty registry (until it appears).
    ///
    /// # Errors
    ///
    /// [`ClientFileError`] if the file cannot be read or is invalid.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, ClientFileError> {
        let path = path.into();
        let (clients, modified) = read_file(&path)?;
        Ok(Self {
            path,
            state: Mutex::new(FileState {
                clients,
                modified,
                checked: std::time::Instant::now(),
            }),
        })
    }

    /// The clients file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many clients are registered.
    pub fn len(&self) -> usize {
        self.state.lock().map(|s| s.clients.len()).unwrap_or(0)
    }

    /// True if no client is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a client to the file at `path` (created if missing, mode 0600),
    /// replacing the file atomically.
    ///
    /// # Errors
    ///
    /// [`ClientFileError::Duplicate`] if the id exists and `replace` is
    /// false; I/O and format errors.
    pub fn add(path: &Path, client: &RegisteredClient, replace: bool) -> Result<(), ClientFileError> {
        let mut shape = read_shape(path)?.unwrap_or_default();
        let entry = ClientEntry::of(client);
        entry.to_client()?;
        match shape.clients.iter_mut().find(|c| c.id == client.id) {
            Some(_) if !replace => return Err(ClientFileError::Duplicate(client.id.clone())),
            Some(existing) => *existing = entry,
            None => shape.clients.push(entry),
        }
        write_shape(path, &shape)
    }

    /// Removes a client from the file at `path`; returns whether it was there.
    ///
    /// # Errors
    ///
    /// I/O and format errors.
    pub fn remove(path: &Path, id: &str) -> Result<bool, ClientFileError> {
        let Some(mut shape) = read_shape(path)? else {
            return Ok(false);
        };
        let before = shape.clients.len();
        shape.clients.retain(|c| c.id != id);
        if shape.clients.len() == before {
            return Ok(false);
        }
        write_shape(path, &shape)?;
        Ok(true)
    }

    /// Lists the entries of the file at `path` (empty if it does not exist).
    ///
    /// # Errors
    ///
    /// I/O and format errors.
    pub fn list(path: &Path) -> Result<Vec<ClientEntry>, ClientFileError> {
        Ok(read_shape(path)?.unwrap_or_default().clients)
    }

    fn refresh(&self, state: &mut FileState) -> Result<(), ClientFileError> {
        if state.checked.elapsed() < std::time::Duration::from_secs(1) {
            return Ok(());
        }
        state.checked = std::time::Instant::now();
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        if modified != state.modified {
            let (clients, modified) = read_file(&self.path)?;
            state.clients = clients;
            state.modified = modified;
            tracing::info!(path = %self.path.display(), clients = state.clients.len(), "clients file reloaded");
        }
        Ok(())
    }
}

impl ClientRegistry for FileClients {
    fn client(&self, id: &str) -> Result<Option<RegisteredClient>, RegistryError> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| RegistryError::Other("clients file lock poisoned".into()))?;
        if let Err(e) = self.refresh(&mut state) {
            // Keep serving the last good file; say so once per check.
            tracing::warn!(error = %e, "clients file not reloaded");
        }
        Ok(state.clients.get(id).cloned())
    }
}

fn write_shape(path: &Path, shape: &ClientsFileShape) -> Result<(), ClientFileError> {
    let body = toml::to_string(shape).map_err(|e| ClientFileError::Format {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let text =
        format!("# rotoken clients (`rotoken clients add`). Secrets are stored only as salted hashes.\n\n{body}");
    write_atomically(path, text.as_bytes()).map_err(|source| ClientFileError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn read_shape(path: &Path) -> Result<Option<ClientsFileShape>, ClientFileError> {
    use std::io::Read as _;
    let io = |source| ClientFileError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let mut text = String::new();
    file.take(MAX_CLIENTS_FILE + 1).read_to_string(&mut text).map_err(io)?;
    let format = |reason: String| ClientFileError::Format {
        path: path.display().to_string(),
        reason,
    };
    if text.len() as u64 > MAX_CLIENTS_FILE {
        return Err(format(format!("larger than {MAX_CLIENTS_FILE} bytes")));
    }
    toml::from_str(&text).map(Some).map_err(|e| format(e.to_string()))
}

type Loaded = (HashMap<String, RegisteredClient>, Option<SystemTime>);

fn read_file(path: &Path) -> Result<Loaded, ClientFileError> {
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let mut clients = HashMap::new();
    for entry in read_shape(path)?.unwrap_or_default().clients {
        let client = entry.to_client()?;
        if clients.insert(client.id.clone(), client).is_some() {
            return Err(ClientFileError::Duplicate(entry.id));
        }
    }
    Ok((clients, modified))
}

/// Writes `bytes` to a temporary file beside `path` (mode 0600), syncs it,
/// and renames it over `path`.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{:016x}.tmp", u64::from_be_bytes(suffix)));
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

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
    fn secret_hashes_round_trip_and_verify() {
        let h = SecretHash::new(b"0123456789abcdef").unwrap();
        let parsed: SecretHash = h.to_string().parse().unwrap();
        assert_eq!(parsed, h);
        assert!(parsed.verify(b"0123456789abcdef"));
        assert!(!parsed.verify(b"0123456789abcdeF"));
        assert!(!parsed.verify(b""));
        assert_eq!(SecretHash::new(b"short"), Err(SecretHashError::Length));
        assert!("blake3-v1$x$y".parse::<SecretHash>().is_err());
        assert!("plain".parse::<SecretHash>().is_err());
        assert_ne!(SecretHash::new(b"0123456789abcdef").unwrap(), h, "salted");
        assert_eq!(format!("{h:?}"), "SecretHash(..)");
    }

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

    #[test]
    fn file_clients_add_list_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clients.toml");
        let reg = FileClients::open(&path).unwrap();
        assert!(reg.is_empty());
        FileClients::add(&path, &RegisteredClient::public("spa"), false).unwrap();
        let secret = SecretHash::new(b"abcdefghijklmnopq").unwrap();
        FileClients::add(&path, &RegisteredClient::confidential("web", secret.clone()), false).unwrap();
        assert!(matches!(
            FileClients::add(&path, &RegisteredClient::public("web"), false),
            Err(ClientFileError::Duplicate(_))
        ));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("abcdefghijklmnopq"));
        assert_eq!(FileClients::list(&path).unwrap().len(), 2);
        FileClients::add(&path, &RegisteredClient::public("gone"), false).unwrap();
        assert!(FileClients::remove(&path, "gone").unwrap());
        assert!(!FileClients::remove(&path, "gone").unwrap());
        let reg = FileClients::open(&path).unwrap();
        assert_eq!(reg.len(), 2);
        let web = reg.client("web").unwrap().unwrap();
        assert!(web.secret.unwrap().verify(b"abcdefghijklmnopq"));
        assert!(!reg.client("spa").unwrap().unwrap().is_confidential());
        assert!(reg.client("nobody").unwrap().is_none());
    }

    #[test]
    fn bad_clients_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clients.toml");
        std::fs::write(&path, "[[client]]\nid = \"a\"\nsecret_hash = \"nope\"\n").unwrap();
        assert!(FileClients::open(&path).is_err());
        std::fs::write(&path, "[[client]]\nid = \"a\"\n[[client]]\nid = \"a\"\n").unwrap();
        assert!(matches!(FileClients::open(&path), Err(ClientFileError::Duplicate(_))));
        std::fs::write(&path, "[[client]]\nid = \"a\"\nsurprise = 1\n").unwrap();
        assert!(FileClients::open(&path).is_err());
        std::fs::write(&path, "not toml [").unwrap();
        assert!(FileClients::open(&path).is_err());
    }
}
