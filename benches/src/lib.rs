//! Benchmarks for rotoken live in `benches/`.
