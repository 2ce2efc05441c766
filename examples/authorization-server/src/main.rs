//! Runs the example authorization server on `127.0.0.1:9090` with its
//! database and keys in the current directory (`example.redb`,
//! `example.keys`, `example.signing.key`), and prints a walk-through.

#![forbid(unsafe_code)]

use std::path::Path;
use std::sync::Arc;

use rotoken::{Engine, Keyring, Options};
use rotoken_example_authorization_server::{App, CLIENT_ID, REDIRECT_URI, router};
use rotoken_http::SigningKey;

const ADDR: &str = "127.0.0.1:9090";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let keys_path = Path::new("example.keys");
    let (keys, _) = Keyring::load_or_generate(keys_path)?;
    let (signing, _) = SigningKey::load_or_generate(Path::new("example.signing.key"))?;
    let engine = Arc::new(Engine::open("example.redb", keys, Options::default())?);
    let issuer = format!("http://{ADDR}");
    let app = Arc::new(App::new(engine, &issuer, signing));
    let listener = tokio::net::TcpListener::bind(ADDR).await?;
    println!(
        "example authorization server on {issuer}\n\n\
         1. authorize (PKCE verifier `verifier-0123456789-0123456789-0123456789`):\n   \
         curl -si '{issuer}/authorize?response_type=code&client_id={CLIENT_ID}&redirect_uri={REDIRECT_URI}\
         &scope=openid+offline_access&state=xyz&code_challenge_method=S256\
         &code_challenge=fPc7wtmTs3M3V70EldOc7-yL4fAeQRnBhGAixq3XYqw' | grep -i location\n\
         2. exchange the code:\n   \
         curl -s {issuer}/oauth/token -d grant_type=authorization_code -d client_id={CLIENT_ID} \
         -d redirect_uri={REDIRECT_URI} -d code_verifier=verifier-0123456789-0123456789-0123456789 -d code=CODE\n\
         3. refresh:\n   \
         curl -s {issuer}/oauth/token -d grant_type=refresh_token -d client_id={CLIENT_ID} -d refresh_token=RT\n"
    );
    axum::serve(listener, router(app))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
