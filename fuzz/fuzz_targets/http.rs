//! The HTTP adapter's request handling: arbitrary requests to
//! `rotoken_http::OAuthServer::handle` (body: `rotoken_fuzz::http`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rotoken_fuzz::http(data));
