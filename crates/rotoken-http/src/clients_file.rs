//! The file-backed client registry `rotoken serve` uses: a TOML file of
//! `[[client]]` tables, written by `rotoken clients add`, holding only
//! hashes of secrets, reloaded when it changes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::atomic_file::write_atomically;
use crate::error::{ClientFileError, RegistryError};
use crate::registry::{ClientRegistry, RegisteredClient};
use crate::secret_hash::{MAX_CLIENT_ID_LEN, SecretHash};

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

#[async_trait::async_trait]
impl ClientRegistry for FileClients {
    /// Looks the client up in the file read last, first reading the file
    /// again if it changed (checked at most once a second: a short file
    /// read on the caller's thread).
    async fn client(&self, id: &str) -> Result<Option<RegisteredClient>, RegistryError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let lookup = |id: &str| futures_lite::future::block_on(reg.client(id)).unwrap();
        let web = lookup("web").unwrap();
        assert!(web.secret.unwrap().verify(b"abcdefghijklmnopq"));
        assert!(!lookup("spa").unwrap().is_confidential());
        assert!(lookup("nobody").is_none());
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
