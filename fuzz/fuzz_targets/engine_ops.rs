//! Structure-aware: a sequence of engine operations with clock moves against
//! a reference model, invariants after each step (body: `rotoken_fuzz::engine_ops`).
#![no_main]

libfuzzer_sys::fuzz_target!(|ops: Vec<rotoken_fuzz::Op>| rotoken_fuzz::engine_ops(ops));
