//! # rotoken-fuzz
//!
//! The bodies of rotoken's fuzz targets, written once as plain functions so
//! that the cargo-fuzz wrappers in `fuzz/` and the corpus replay in
//! `tests/corpus_replay.rs` (ordinary `cargo test`, stable Rust) run the
//! same code; plus what the reliability tests share: fault-injecting redb
//! storage backends ([`backend`]), raw database access ([`raw`]) and fixed
//! test keys ([`fixture`]).
//!
//! | target | input | checks |
//! |---|---|---|
//! | [`token`] | any bytes | the parser never panics; `format(parse(x)) == x`; errors name the real problem |
//! | [`records`] | mode byte + bytes | record and event decoders never panic and are canonical; the engine refuses planted garbage as corrupt and never accepts a token the record does not make current |
//! | [`engine_ops`] | `Vec<`[`Op`]`>` (structure-aware, `arbitrary`) | every answer equals a reference model's; invariants after each step |
//! | [`http`] | selector bytes + body | `rotoken_http::OAuthServer::handle` never panics or answers 5xx; errors are RFC 6749 §5.2 JSON that echo no token |
//!
//! ```
//! // Every target accepts any input without panicking on a sound engine:
//! rotoken_fuzz::token(b"rt1_not-a-token");
//! rotoken_fuzz::records(&[0, 1, 2, 3]);
//! rotoken_fuzz::engine_ops(vec![
//!     rotoken_fuzz::Op::Issue { subject: 0, client: 0, bound: false },
//!     rotoken_fuzz::Op::RotateCurrent { fam: 0, scope: rotoken_fuzz::ScopeReq::Full },
//!     rotoken_fuzz::Op::Reopen,
//! ]);
//! ```
//!
//! See `docs/fuzzing.md` for how to run each target and `docs/reliability.md`
//! for the tests built on this crate.

#![forbid(unsafe_code)]
// Test-support code: a panic is how a fuzz target or a test reports a finding.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod backend;
mod engine_target;
pub mod fixture;
mod http_target;
pub mod raw;
mod records_target;
pub mod rng;
pub mod seeds;
mod token_target;

pub use engine_target::{MAX_FAMILIES, MAX_OPS, Op, ScopeReq, Step, encode_ops, engine_ops, forge};
pub use http_target::{PLACEHOLDERS, WEB_SECRET, http};
pub use records_target::{Template, records, template};
pub use token_target::token;

/// The fuzz targets, by the names `fuzz/fuzz_targets/*.rs` and `fuzz/corpus/*` use.
pub const TARGETS: [&str; 4] = ["token", "records", "engine_ops", "http"];
