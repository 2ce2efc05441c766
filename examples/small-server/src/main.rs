//! Runs the small server: the public routes on 127.0.0.1:8080, `/metrics`
//! on 127.0.0.1:9100, families in `small-server.redb`. The one user is
//! `alice`, with the password in `ALICE_PASSWORD`.

#![forbid(unsafe_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rotoken::{Engine, Keyring, Options};
use rotoken_example_small_server::{HmacMinter, Server, Users, app, internal_app};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keys_path = Path::new("small-server.keys");
    let (keys, _) = Keyring::load_or_generate(keys_path)?;
    let engine = Arc::new(Engine::open("small-server.redb", keys, Options::default())?);
    let users = Users::new()?.with("alice", &std::env::var("ALICE_PASSWORD")?)?;
    // A fresh access-token key per start: access tokens live five minutes.
    let minter = HmacMinter::generate(Duration::from_secs(300))?;
    let server = Server::new(engine, "http://127.0.0.1:8080", users, minter)?;

    let internal = tokio::net::TcpListener::bind("127.0.0.1:9100").await?;
    tokio::spawn(axum::serve(internal, internal_app(&server)).into_future());
    let public = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    let service = app(server).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    axum::serve(public, service).with_graceful_shutdown(ctrl_c).await?;
    Ok(())
}
