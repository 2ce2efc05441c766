//! Token parsing and the `format(parse(x)) == x` round trip (body: `rotoken_fuzz::token`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rotoken_fuzz::token(data));
