//! Replays every file of `fuzz/corpus/<target>/` through the target's body,
//! on stable Rust, as part of `cargo test`: whatever the fuzzers found or
//! the seeds hold is re-checked on every CI run.
//!
//! Also checks that the seed generator still writes what is committed
//! would decode to (the `engine_ops` encoding round trip), and replays the
//! inputs of `fuzz/regressions/` that found bugs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use arbitrary::{Arbitrary, Unstructured};
use rotoken_fuzz::Op;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// Every file of a directory, sorted, with its name.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// What `fuzz_target!(|ops: Vec<Op>| ...)` hands the body for `bytes`.
fn decode_ops(bytes: &[u8]) -> Option<Vec<Op>> {
    Vec::<Op>::arbitrary_take_rest(Unstructured::new(bytes)).ok()
}

/// Runs `f` on every input of `target`'s corpus, naming the input that fails.
fn replay(target: &str, mut f: impl FnMut(&[u8])) -> usize {
    let dir = fuzz_dir().join("corpus").join(target);
    let inputs = files(&dir);
    assert!(!inputs.is_empty(), "no corpus in {}", dir.display());
    for (name, bytes) in &inputs {
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(bytes)));
        if let Err(e) = run {
            std::panic::resume_unwind(Box::new(format!(
                "corpus input {target}/{name} failed: {}",
                e.downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| e.downcast_ref::<&str>().copied())
                    .unwrap_or("panic")
            )));
        }
    }
    println!("replayed {} inputs of {target}", inputs.len());
    inputs.len()
}

#[test]
fn token_corpus() {
    replay("token", rotoken_fuzz::token);
}

#[test]
fn records_corpus() {
    replay("records", rotoken_fuzz::records);
}

#[test]
fn engine_ops_corpus() {
    replay("engine_ops", |bytes| {
        if let Some(ops) = decode_ops(bytes) {
            rotoken_fuzz::engine_ops(ops);
        }
    });
}

#[test]
fn http_corpus() {
    replay("http", rotoken_fuzz::http);
}

#[test]
fn every_target_has_a_wrapper_and_a_seed_corpus() {
    for target in rotoken_fuzz::TARGETS {
        let wrapper = fuzz_dir().join("fuzz_targets").join(format!("{target}.rs"));
        let text = std::fs::read_to_string(&wrapper).unwrap_or_else(|e| panic!("{}: {e}", wrapper.display()));
        assert!(
            text.contains(&format!("rotoken_fuzz::{target}")),
            "{} does not call the body",
            wrapper.display()
        );
        let seeds = files(&fuzz_dir().join("corpus").join(target))
            .into_iter()
            .filter(|(n, _)| n.starts_with("seed-"))
            .count();
        assert!(seeds >= 20, "{target} has only {seeds} seeds");
    }
}

#[test]
fn seed_encoding_round_trips() {
    use rotoken_fuzz::{ScopeReq, Step};
    let ops = vec![
        Op::Issue {
            subject: 1,
            client: 2,
            bound: true,
        },
        Op::RotateCurrent {
            fam: 3,
            scope: ScopeReq::Wide,
        },
        Op::RotateForged {
            fam: 1,
            generation: 2,
            bit: 0xBEEF,
        },
        Op::Advance(Step::GraceEdge(-7)),
        Op::Advance(Step::Millis(65_000)),
        Op::Advance(Step::Far),
        Op::Reopen,
        Op::Gc { limit: 9 },
    ];
    assert_eq!(decode_ops(&rotoken_fuzz::encode_ops(&ops)), Some(ops));
    // Every committed engine_ops seed is what the generator writes.
    for (_, name, bytes) in rotoken_fuzz::seeds::seed_corpus()
        .into_iter()
        .filter(|s| s.0 == "engine_ops")
    {
        let committed = std::fs::read(fuzz_dir().join("corpus/engine_ops").join(&name)).unwrap();
        assert_eq!(
            committed, bytes,
            "engine_ops/{name} differs from the generator: rerun rotoken-fuzz-seeds"
        );
    }
}

#[test]
fn fresh_seeds_pass_their_targets() {
    for (target, name, bytes) in rotoken_fuzz::seeds::seed_corpus() {
        let run = std::panic::catch_unwind(|| match target {
            "token" => rotoken_fuzz::token(&bytes),
            "records" => rotoken_fuzz::records(&bytes),
            "http" => rotoken_fuzz::http(&bytes),
            _ => rotoken_fuzz::engine_ops(decode_ops(&bytes).unwrap()),
        });
        assert!(run.is_ok(), "fresh seed {target}/{name} fails its target");
    }
}

/// The first finding of the `token` target (`fuzz/regressions/token/`):
/// `FamilyId::from_str` accepted `+` before a hex digit (`u8::from_str_radix`
/// allows a sign), so `+f` read as 0x0f. Fixed in the core; kept as a regression test.
#[test]
fn regression_family_id_plus_sign() {
    let inputs = files(&fuzz_dir().join("regressions/token"));
    assert!(!inputs.is_empty());
    for (name, bytes) in inputs {
        rotoken_fuzz::token(&bytes);
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.parse::<rotoken::FamilyId>().is_err(),
            "regressions/token/{name}: {text:?} parses as a family id"
        );
    }
}
