//! The token endpoint handled in process, without sockets: one refresh
//! (form parse, client authentication, rotation, EdDSA access token, JSON)
//! per iteration, through the blocking `OAuthServer::token` and through
//! `OAuthServer::token_async` (the rotation served by the engine's commit
//! thread). Relaxed durability isolates the CPU cost from the disk's
//! `fsync`; `immediate` adds one durable commit per refresh (a single
//! caller gets no group commit).
//!
//! `cargo bench -p rotoken-http --bench token_endpoint`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rotoken::{Durability, Engine, Keyring, Options, Policy, Scope};
use rotoken_http::{Config, IssueRequest, JwtMinter, MemoryClients, OAuthServer, RegisteredClient, SigningKey};

const ISSUER: &str = "http://127.0.0.1:8080";

fn server(dir: &tempfile::TempDir, durability: Durability) -> Arc<OAuthServer> {
    let mut policy = Policy::default();
    policy.durability = durability;
    policy.max_generations = u32::MAX;
    let options = Options {
        policy,
        ..Options::default()
    };
    let engine = Arc::new(Engine::open(dir.path().join("t.redb"), Keyring::generate().unwrap(), options).unwrap());
    let minter = JwtMinter::new(SigningKey::ed25519_from_seed([7; 32]), ISSUER, Duration::from_secs(300));
    let clients = MemoryClients::new().with(RegisteredClient::public("web-app"));
    Arc::new(OAuthServer::new(
        engine,
        Arc::new(clients),
        Arc::new(minter),
        Config::new(ISSUER),
    ))
}

fn request(token: &str) -> http::Request<Bytes> {
    http::Request::post("/oauth/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Bytes::from(format!(
            "grant_type=refresh_token&client_id=web-app&refresh_token={token}"
        )))
        .unwrap()
}

fn next_token(response: &http::Response<Bytes>) -> String {
    assert_eq!(response.status(), 200, "{}", String::from_utf8_lossy(response.body()));
    let v: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
    v["refresh_token"].as_str().unwrap().to_owned()
}

fn first_token(server: &OAuthServer) -> String {
    let issue = IssueRequest::new("alice", "web-app", Scope::parse("openid offline_access").unwrap());
    server.issue(&issue).unwrap().refresh_token.unwrap()
}

fn token_endpoint(c: &mut Criterion) {
    let mut group = c.benchmark_group("token_endpoint");
    group.throughput(Throughput::Elements(1));
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    for (name, durability) in [("relaxed", Durability::Relaxed), ("immediate", Durability::Immediate)] {
        let dir = tempfile::tempdir().unwrap();
        let server = server(&dir, durability);
        let mut token = first_token(&server);
        group.bench_function(format!("blocking/{name}"), |b| {
            b.iter(|| token = next_token(&server.token(&request(&token))));
        });
        group.bench_function(format!("async/{name}"), |b| {
            b.iter(|| token = next_token(&runtime.block_on(server.token_async(&request(&token)))));
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(5));
    targets = token_endpoint
}
criterion_main!(benches);
