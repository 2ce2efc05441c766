//! `rotoken keys rotate-signing`: a new access-token signing key for
//! `rotoken serve`, the old one kept beside it until its tokens expire.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use rotoken_http::SigningKeys;
use serde::Serialize;
use time::OffsetDateTime;

use crate::output::{self, CliError};

/// `rotoken keys rotate-signing ...`
#[derive(Debug, Args)]
pub(crate) struct RotateSigningArgs {
    /// The signing key file `serve` uses [default: ./rotoken.signing.key].
    #[arg(
        long,
        env = "ROTOKEN_SIGNING_KEY",
        value_name = "PATH",
        default_value = "./rotoken.signing.key"
    )]
    pub(crate) signing_key: PathBuf,
    /// Retired keys older than this are dropped from `<signing key>.previous`;
    /// it must exceed `access_token_secs` (serve publishes a retired key only
    /// for one access-token lifetime after it was retired).
    #[arg(long, value_name = "SECS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) keep_secs: u64,
}

/// What `rotate-signing` prints.
#[derive(Serialize)]
struct RotatedSigningJson {
    signing_key: String,
    previous_file: String,
    kid: String,
    previous: Vec<RetiredJson>,
    next_step: &'static str,
}

#[derive(Serialize)]
struct RetiredJson {
    kid: String,
    retired_at: String,
}

/// Rotates the key file and prints the new and retired key ids (never key material).
pub(crate) fn rotate_signing(a: &RotateSigningArgs) -> Result<(), CliError> {
    let keys = SigningKeys::rotate(
        &a.signing_key,
        OffsetDateTime::now_utc(),
        Duration::from_secs(a.keep_secs),
    )
    .map_err(|e| CliError::refused("signing_key_invalid", e.to_string()))?;
    output::print_json(&RotatedSigningJson {
        signing_key: a.signing_key.display().to_string(),
        previous_file: SigningKeys::previous_path(&a.signing_key).display().to_string(),
        kid: keys.current.kid().to_owned(),
        previous: keys
            .previous
            .iter()
            .map(|r| RetiredJson {
                kid: r.key.kid().to_owned(),
                retired_at: output::rfc3339(r.retired_at),
            })
            .collect(),
        next_step: "send rotoken serve a SIGHUP (or restart it): it signs with the new key and publishes both until the old key's tokens expire",
    })
}
