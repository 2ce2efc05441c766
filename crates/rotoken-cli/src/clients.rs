//! `rotoken clients ...`: the clients file `rotoken serve` authenticates
//! against. Only salted hashes of secrets are written; a generated secret
//! is printed once, on standard output.

use std::io::Read as _;
use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::{ArgGroup, Args, Subcommand};
use rotoken_http::{ClientFileError, FileClients, MAX_CLIENT_SECRET_LEN, RegisteredClient, SecretHash};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::output::{self, CliError};

/// The default clients file.
pub(crate) const DEFAULT_CLIENTS_FILE: &str = "./rotoken.clients.toml";

/// `rotoken clients ...`
#[derive(Debug, Subcommand)]
pub(crate) enum ClientsCommand {
    /// Register a client: public (`--public`) or confidential, with a secret
    /// read from standard input (`--secret-stdin`) or generated and printed once
    /// (`--generate-secret`).
    Add(AddArgs),
    /// List registered clients (ids and kinds; never secrets or hashes).
    List(FileArg),
    /// Remove a client.
    Remove(RemoveArgs),
}

/// Where the clients file is.
#[derive(Debug, Args)]
pub(crate) struct FileArg {
    /// The clients file.
    #[arg(
        long = "clients",
        env = "ROTOKEN_CLIENTS",
        default_value = DEFAULT_CLIENTS_FILE,
        value_name = "PATH"
    )]
    pub(crate) path: PathBuf,
}

/// `rotoken clients add ...`
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("kind").required(true).multiple(false)))]
pub(crate) struct AddArgs {
    /// The client id.
    #[arg(long)]
    pub(crate) id: String,
    /// A public client (a browser or native app): authenticated by its id alone.
    #[arg(long, group = "kind")]
    pub(crate) public: bool,
    /// A confidential client whose secret (at least 16 bytes) is read from standard input.
    #[arg(long, group = "kind")]
    pub(crate) secret_stdin: bool,
    /// A confidential client with a new random secret, printed once as `client_secret`.
    #[arg(long, group = "kind")]
    pub(crate) generate_secret: bool,
    /// Let this client introspect any token (a resource server).
    #[arg(long)]
    pub(crate) introspect: bool,
    /// The `aud` of this client's access tokens [default: the server's].
    #[arg(long, value_name = "AUDIENCE")]
    pub(crate) audience: Option<String>,
    /// Replace an existing client with this id.
    #[arg(long)]
    pub(crate) replace: bool,
    #[command(flatten)]
    pub(crate) file: FileArg,
}

/// `rotoken clients remove ...`
#[derive(Debug, Args)]
pub(crate) struct RemoveArgs {
    /// The client id.
    #[arg(long)]
    pub(crate) id: String,
    #[command(flatten)]
    pub(crate) file: FileArg,
}

#[derive(Serialize)]
struct AddedJson<'a> {
    client_id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    introspect: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    audience: Option<&'a str>,
    clients_file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret: Option<&'a str>,
}

#[derive(Serialize)]
struct ClientJson {
    client_id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    refresh: bool,
    introspect: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    audience: Option<String>,
}

#[derive(Serialize)]
struct ListJson {
    clients_file: String,
    clients: Vec<ClientJson>,
}

#[derive(Serialize)]
struct RemovedJson<'a> {
    client_id: &'a str,
    removed: bool,
}

/// Runs a `clients` subcommand.
///
/// # Errors
///
/// The [`CliError`] to print.
pub(crate) fn run(command: ClientsCommand) -> Result<(), CliError> {
    match command {
        ClientsCommand::Add(a) => add(a),
        ClientsCommand::List(f) => {
            let clients = FileClients::list(&f.path).map_err(file_error)?;
            output::print_json(&ListJson {
                clients_file: f.path.display().to_string(),
                clients: clients
                    .into_iter()
                    .map(|c| ClientJson {
                        kind: if c.secret_hash.is_some() {
                            "confidential"
                        } else {
                            "public"
                        },
                        client_id: c.id,
                        refresh: c.refresh,
                        introspect: c.introspect,
                        audience: c.audience,
                    })
                    .collect(),
            })
        }
        ClientsCommand::Remove(a) => {
            let removed = FileClients::remove(&a.file.path, &a.id).map_err(file_error)?;
            if !removed {
                return Err(CliError::refused(
                    "client_unknown",
                    format!("no client `{}` in {}", a.id, a.file.path.display()),
                ));
            }
            output::print_json(&RemovedJson {
                client_id: &a.id,
                removed,
            })
        }
    }
}

fn add(a: AddArgs) -> Result<(), CliError> {
    let mut generated = None;
    let client = if a.public {
        RegisteredClient::public(a.id.clone())
    } else {
        let secret = if a.generate_secret {
            let mut bytes = Zeroizing::new([0u8; 32]);
            getrandom::fill(bytes.as_mut())
                .map_err(|e| CliError::storage("random_failed", format!("OS random number generator failed: {e}")))?;
            let s = Zeroizing::new(URL_SAFE_NO_PAD.encode(bytes.as_ref()));
            generated = Some(s.clone());
            s
        } else {
            read_secret()?
        };
        let hash =
            SecretHash::new(secret.as_bytes()).map_err(|e| CliError::refused("secret_invalid", e.to_string()))?;
        RegisteredClient::confidential(a.id.clone(), hash)
    };
    let client = if a.introspect {
        client.with_introspection()
    } else {
        client
    };
    let client = match &a.audience {
        Some(aud) => client.with_audience(aud.clone()),
        None => client,
    };
    FileClients::add(&a.file.path, &client, a.replace).map_err(file_error)?;
    output::print_json(&AddedJson {
        client_id: &a.id,
        kind: if a.public { "public" } else { "confidential" },
        introspect: a.introspect,
        audience: a.audience.as_deref(),
        clients_file: a.file.path.display().to_string(),
        client_secret: generated.as_deref().map(String::as_str),
    })
}

/// The secret on standard input, without its trailing newline.
fn read_secret() -> Result<Zeroizing<String>, CliError> {
    let mut bytes = Zeroizing::new(Vec::new());
    std::io::stdin()
        .lock()
        .take(MAX_CLIENT_SECRET_LEN as u64 + 2)
        .read_to_end(&mut bytes)
        .map_err(|e| CliError::refused("stdin_unreadable", format!("could not read the secret: {e}")))?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| CliError::refused("secret_invalid", "the secret on standard input is not UTF-8"))?;
    Ok(Zeroizing::new(text.trim_end_matches(['\n', '\r']).to_owned()))
}

fn file_error(e: ClientFileError) -> CliError {
    match e {
        ClientFileError::Duplicate(_) => {
            CliError::refused("client_exists", format!("{e}; pass --replace to replace it"))
        }
        ClientFileError::InvalidClient { .. } => CliError::refused("invalid_input", e.to_string()),
        ClientFileError::Io { .. } => CliError::refused("clients_io", e.to_string()),
        _ => CliError::refused("clients_invalid", e.to_string()),
    }
}
