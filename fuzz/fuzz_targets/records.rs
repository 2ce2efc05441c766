//! Stored records from arbitrary bytes, decoded directly and through the engine
//! (body: `rotoken_fuzz::records`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rotoken_fuzz::records(data));
