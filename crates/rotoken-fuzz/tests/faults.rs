//! I/O fault injection and disk full (reliability checklist rows 6 and 7).
//!
//! A countdown backend ([`Faulty`]) fails the k-th `write`, `set_len` or
//! `sync_data` (or the k-th of any of them) while the engine runs a fixed
//! workload, for every k the workload reaches. Each failure must come back
//! as a typed storage error, never a panic and never a token; the engine
//! must refuse further writes until it is reopened (redb's `PreviousIo`),
//! and after reopening the database must pass `check()` and show either
//! the state before the failed operation or the state that operation would
//! have produced (found by replaying it on a copy of the bytes from before
//! it): nothing acknowledged is lost, nothing half-done appears.
//!
//! Disk full: writes (and `set_len`) fail with `ENOSPC` from call k on and
//! keep failing. The rotation fails closed (no token, the old token still
//! current), everything keeps failing cleanly while the disk is full,
//! and once space is back the database reopens with everything committed
//! before intact, and the workload runs to its end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Known, Observed, StorageFailed, WOp, check_sound, observe, script};
use rotoken::{Engine, ManualClock, RotateRequest};
use rotoken_fuzz::backend::{FaultOn, FaultPlan, Faulty, SharedMemory};
use rotoken_fuzz::fixture::{self, T0};

const STEPS: usize = 24;
const SEED: u64 = 0xfa017;

fn open(backend: &Faulty, clock: &ManualClock) -> Result<Engine, rotoken::OpenError> {
    Engine::open_with_backend(backend.clone(), fixture::keyring(), fixture::options(clock))
}

/// What happened over one run of the workload under one fault plan.
#[derive(Debug, Default)]
struct Outcome {
    /// Operations that failed with a storage error.
    failed_ops: usize,
    /// Of which the change reached the database anyway (unacknowledged, all-or-nothing).
    applied_anyway: usize,
    /// Opens that failed (the fault hit while opening or creating).
    failed_opens: usize,
    /// Of which left a half-created file that does not open even without faults.
    unusable_files: usize,
    /// Calls the backend failed.
    fired: u64,
}

/// The state `op` would have produced from the database bytes `before`,
/// replayed without faults, observed with what the workload knows.
fn replayed(before: Vec<u8>, known: &Known, clock_ms: i64, op: WOp) -> Observed {
    let clock = ManualClock::at_unix_millis(clock_ms);
    let backend = Faulty::over(SharedMemory::from_image(before));
    let engine = open(&backend, &clock).unwrap();
    let mut scratch = known.clone();
    scratch.apply(&engine, &clock, op).unwrap();
    observe(&engine, known).unwrap()
}

/// The database before a step: what the workload observes, and its bytes.
struct Before {
    state: Observed,
    image: Vec<u8>,
}

impl Before {
    fn take(engine: &Engine, known: &Known, backend: &Faulty, ctx: &dyn Fn(&str) -> String) -> Self {
        Self {
            state: observe(engine, known).unwrap_or_else(|e| panic!("{}", ctx(&e))),
            image: backend.memory().image(),
        }
    }
}

/// After step `n` (`op`) failed and the database was reopened as `engine`:
/// it passes `check()` and shows either the state from `before` or the
/// state `op` would have produced from it; in the second case the client
/// recovers the token `op` handed out. Returns whether `op` took effect.
fn settled(
    engine: &Engine,
    known: &mut Known,
    before: &Before,
    clock: &ManualClock,
    n: usize,
    op: WOp,
    ctx: &dyn Fn(&str) -> String,
) -> bool {
    check_sound(engine).unwrap_or_else(|e| panic!("{}", ctx(&e)));
    let now = observe(engine, known).unwrap_or_else(|e| panic!("{}", ctx(&e)));
    if now == before.state {
        return false;
    }
    let applied = replayed(before.image.clone(), known, clock.unix_millis(), op);
    assert_eq!(
        now,
        applied,
        "{}",
        ctx(&format!("step {n} {op:?}: the state is neither before nor after it"))
    );
    recover_token(engine, known, op);
    true
}

/// Runs the workload under `plan`. `heal_after_failure`: the disk gets its
/// space back before the reopen (a full disk); otherwise the fault was a
/// single failed call.
fn run(plan: FaultPlan, ops: &[WOp]) -> Outcome {
    let backend = Faulty::new();
    backend.arm(plan);
    let clock = ManualClock::at_unix_millis(T0);
    let mut out = Outcome::default();
    let ctx = |what: &str| format!("{plan:?}: {what}");
    let mut engine = loop {
        match open(&backend, &clock) {
            Ok(e) => break e,
            Err(e) => {
                // A failure while creating the database: a typed error, and
                // (nothing was acknowledged) the caller starts over.
                assert!(
                    matches!(e, rotoken::OpenError::Store(_)),
                    "{}",
                    ctx(&format!("open: {e:?}"))
                );
                out.failed_opens += 1;
                assert!(out.failed_opens < 50, "{}", ctx("open keeps failing"));
                backend.heal();
                if open(&backend, &clock).is_err() {
                    // The half-created file is refused; start from an empty one.
                    out.unusable_files += 1;
                    let fresh = Faulty::new();
                    out.fired += backend.fired();
                    return finish_on(fresh, ops, clock, out);
                }
            }
        }
    };
    let mut known = Known::default();
    for (n, op) in ops.iter().enumerate() {
        let before = Before::take(&engine, &known, &backend, &ctx);
        match known.apply(&engine, &clock, *op) {
            Ok(()) => {}
            Err(StorageFailed(code, msg)) => {
                assert_eq!(code, "storage_error", "{}", ctx(&format!("step {n} {op:?}: {msg}")));
                out.failed_ops += 1;
                after_failure(&engine, &known, &ctx(&format!("step {n}")));
                drop(engine);
                backend.heal();
                engine = open(&backend, &clock).unwrap_or_else(|e| panic!("{}", ctx(&format!("reopen: {e}"))));
                if settled(&engine, &mut known, &before, &clock, n, *op, &ctx) {
                    out.applied_anyway += 1;
                }
                // The step is not retried: the workload goes on.
            }
        }
    }
    check_sound(&engine).unwrap_or_else(|e| panic!("{}", ctx(&e)));
    out.fired += backend.fired();
    out
}

/// Runs the workload fault-free on a fresh backend (after a failed creation).
fn finish_on(backend: Faulty, ops: &[WOp], clock: ManualClock, mut out: Outcome) -> Outcome {
    let engine = open(&backend, &clock).unwrap();
    let mut known = Known::default();
    for op in ops {
        known.apply(&engine, &clock, *op).unwrap();
    }
    check_sound(&engine).unwrap();
    out.fired += backend.fired();
    out
}

/// After a failed write the engine hands out nothing until reopened.
fn after_failure(engine: &Engine, known: &Known, ctx: &str) {
    let web = RotateRequest::new("web");
    for tokens in &known.tokens {
        let current = tokens.last().unwrap();
        match engine.rotate(current, &web) {
            Err(e) if e.code() == "storage_error" => {}
            // A refusal decided before storage (none here) or by the stored state is fine.
            Err(e) if common::is_refusal(&e) => {}
            Err(e) => panic!("{ctx}: after a failure, rotate gave {e:?}"),
            Ok(_) => panic!("{ctx}: a rotation succeeded on a database with a failed write, before reopening"),
        }
        let _ = engine.introspect(current);
    }
    assert!(
        engine.issue(&fixture::grant("x", "web")).is_err(),
        "{ctx}: issue succeeded before reopening"
    );
}

/// When a failed rotation reached the database anyway, the client retries
/// with the same token within the grace window and gets the successor.
fn recover_token(engine: &Engine, known: &mut Known, op: WOp) {
    let i = match op {
        WOp::Rotate(i) | WOp::Reuse(i) if i < known.ids.len() => i,
        _ => return,
    };
    let current = known.tokens[i].last().unwrap().clone();
    if let Ok(r) = engine.rotate(&current, &RotateRequest::new("web"))
        && r.retried
    {
        known.tokens[i].push(r.refresh_token.expose().to_owned());
    }
}

/// How many calls of each kind a fault-free run makes.
fn calls(on: FaultOn, ops: &[WOp]) -> u64 {
    let backend = Faulty::new();
    backend.arm(FaultPlan {
        on,
        at: u64::MAX,
        persistent: false,
        no_space: false,
    });
    let clock = ManualClock::at_unix_millis(T0);
    let engine = open(&backend, &clock).unwrap();
    let mut known = Known::default();
    for op in ops {
        known.apply(&engine, &clock, *op).unwrap();
    }
    backend.counted()
}

#[test]
fn a_failed_write_set_len_or_sync_at_every_call_loses_nothing() {
    let ops = script(SEED, STEPS);
    let mut total = Outcome::default();
    let mut plans = 0;
    for on in FaultOn::ALL {
        let n = calls(on, &ops);
        assert!(n > 0, "the workload makes no {} call", on.name());
        // Every call up to 400 of each kind, then every 7th.
        let ats: Vec<u64> = (0..n).filter(|k| *k < 400 || k % 7 == 0).collect();
        for at in ats {
            let out = run(
                FaultPlan {
                    on,
                    at,
                    persistent: false,
                    no_space: false,
                },
                &ops,
            );
            assert_eq!(out.fired, 1, "{on:?} at {at}: the fault did not fire exactly once");
            total.failed_ops += out.failed_ops;
            total.applied_anyway += out.applied_anyway;
            total.failed_opens += out.failed_opens;
            total.unusable_files += out.unusable_files;
            total.fired += out.fired;
            plans += 1;
        }
        println!("fault injection: {} calls of {} in the workload", n, on.name());
    }
    println!(
        "fault injection: {plans} runs, {} faults injected, {} operations failed ({} reached the disk anyway), \
         {} opens failed ({} while creating the file left it unusable)",
        total.fired, total.failed_ops, total.applied_anyway, total.failed_opens, total.unusable_files
    );
}

#[test]
fn disk_full_fails_closed_and_loses_nothing_once_space_is_back() {
    let ops = script(SEED ^ 1, STEPS);
    for on in [FaultOn::Write, FaultOn::Any] {
        let n = calls(on, &ops);
        let (mut runs, mut reads_while_full, mut refused_while_full) = (0, 0, 0);
        for at in (0..n).step_by(3) {
            match disk_full_at(on, at, &ops) {
                Some(true) => reads_while_full += 1,
                Some(false) => refused_while_full += 1,
                None => {}
            }
            runs += 1;
        }
        println!(
            "disk full: {runs} runs, the disk filling up at every third {} call; reopened while full: \
             {reads_while_full} opened (reads only), {refused_while_full} refused with a typed error",
            on.name()
        );
    }
}

/// Returns whether the database opened while the disk was still full
/// (`None`: the disk never filled up during the workload).
fn disk_full_at(on: FaultOn, at: u64, ops: &[WOp]) -> Option<bool> {
    let plan = FaultPlan {
        on,
        at,
        persistent: true,
        no_space: true,
    };
    let ctx = |what: &str| format!("disk full at {} call {at}: {what}", on.name());
    let backend = Faulty::new();
    backend.arm(plan);
    let clock = ManualClock::at_unix_millis(T0);
    let Ok(mut engine) = open(&backend, &clock) else {
        // The disk was full before the database existed: nothing to lose.
        return None;
    };
    let mut known = Known::default();
    let mut full = false;
    let mut opened_while_full = None;
    for (n, op) in ops.iter().enumerate() {
        let before = Before::take(&engine, &known, &backend, &ctx);
        let Err(StorageFailed(code, msg)) = known.apply(&engine, &clock, *op) else {
            continue;
        };
        assert_eq!(code, "storage_error", "{}", ctx(&msg));
        assert!(
            !full,
            "{}",
            ctx("a second failure after a reopen with the disk still full")
        );
        full = true;
        // While the disk is full: every write fails, no token is handed out.
        after_failure(&engine, &known, &ctx(&format!("step {n}")));
        drop(engine);
        // Reopening while still full: a typed error, or a database that
        // reads but refuses to write.
        opened_while_full = Some(open(&backend, &clock).is_ok());
        match open(&backend, &clock) {
            Ok(e) => {
                for tokens in &known.tokens {
                    match e.rotate(tokens.last().unwrap(), &RotateRequest::new("web")) {
                        Ok(r) => panic!(
                            "{}",
                            ctx(&format!("rotated to generation {} on a full disk", r.generation))
                        ),
                        Err(err) => assert!(common::is_refusal(&err) || err.code() == "storage_error"),
                    }
                }
            }
            Err(e) => assert!(matches!(e, rotoken::OpenError::Store(_)), "{}", ctx(&format!("{e:?}"))),
        }
        // Space is back.
        backend.heal();
        engine = open(&backend, &clock).unwrap_or_else(|e| panic!("{}", ctx(&format!("reopen with space: {e}"))));
        if !settled(&engine, &mut known, &before, &clock, n, *op, &ctx)
            && let WOp::Rotate(i) = op
            && *i < known.ids.len()
            && before.state.families.get(i).is_some_and(|s| s.live.is_some())
        {
            // The rotation failed closed: the old token is still the live one.
            let old = known.tokens[*i].last().unwrap();
            assert!(engine.introspect(old).unwrap().active, "{}", ctx("the old token died"));
        }
    }
    check_sound(&engine).unwrap_or_else(|e| panic!("{}", ctx(&e)));
    opened_while_full
}
