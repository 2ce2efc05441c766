//! Flipped bytes, truncation and extension of a real database file
//! (reliability checklist row 8).
//!
//! A database file is written by the engine (families issued, rotated,
//! revoked, a reuse detected, events, gc), closed, and then damaged in
//! thousands of ways: a byte flipped at every offset of the file's header
//! and at many offsets of every page in use, the file cut at many lengths,
//! and garbage appended. For each damaged copy, in a thread with a time limit:
//!
//! * opening gives a typed [`OpenError`] or an engine, never a panic or a hang;
//! * `check()` gives a typed error or a report;
//! * every token gets either its true answer or a refusal or a typed error:
//!   no dead token is ever accepted or introspected as active, and a live
//!   token is never answered with another family's grant or generation.
//!
//! A refusal of a live token is failing closed. When `check()` also passes
//! on such a file the damage was *undetected*: counted and printed, with the
//! offsets (redb does not verify page checksums on ordinary reads, and
//! `Engine::check` does not ask it to). `rotoken check` is run on a sample
//! of damaged files when the `rotoken` binary has been built (as
//! `cargo test --workspace` does): it must print a readable report or a
//! JSON error, and exit 0, 1 or 3, never panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use rotoken::{Engine, ManualClock, OpenError, Options, RevokeTarget, RotateRequest};
use rotoken_fuzz::backend::SharedMemory;
use rotoken_fuzz::fixture::{self, T0};
use rotoken_fuzz::rng::Rng;

/// A token and the truth about it.
#[derive(Debug, Clone)]
struct Truth {
    token: String,
    /// `Some((subject, client, generation))` for a family's live current token.
    live: Option<(String, String, u32)>,
}

/// The undamaged database and what every token should answer.
struct Original {
    bytes: Vec<u8>,
    tokens: Vec<Truth>,
    clock_ms: i64,
}

fn original(dir: &Path) -> Original {
    let path = dir.join("original.redb");
    let clock = ManualClock::at_unix_millis(T0);
    let engine = Engine::open(&path, fixture::keyring(), fixture::options(&clock)).unwrap();
    let mut tokens = Vec::new();
    let web = RotateRequest::new("web");
    for i in 0..10 {
        let subject = format!("user-{}", i % 4);
        let mut g = fixture::grant(&subject, "web");
        if i % 3 == 0 {
            g = g.with_metadata(vec![b'm'; 200 * i]);
        }
        let issued = engine.issue(&g).unwrap();
        let mut chain = vec![issued.refresh_token.expose().to_owned()];
        for _ in 0..(i % 4) {
            clock.advance(Duration::from_secs(1));
            let r = engine.rotate(chain.last().unwrap(), &web).unwrap();
            chain.push(r.refresh_token.expose().to_owned());
        }
        let mut live = true;
        match i {
            // Reuse detected: the family is revoked.
            5 => {
                clock.advance(Duration::from_secs(60));
                assert!(engine.rotate(&chain[0], &web).is_err());
                live = false;
            }
            7 => {
                engine.revoke(RevokeTarget::Family(issued.family)).unwrap();
                live = false;
            }
            _ => {}
        }
        let n = chain.len();
        for (g, t) in chain.into_iter().enumerate() {
            tokens.push(Truth {
                token: t,
                live: (live && g + 1 == n).then(|| (subject.clone(), "web".to_owned(), g as u32)),
            });
        }
    }
    engine.gc(100).unwrap();
    // Examined past every grace window: a predecessor is simply dead.
    let clock_ms = clock.unix_millis() + 61_000;
    drop(engine);
    Original {
        bytes: std::fs::read(&path).unwrap(),
        tokens,
        clock_ms,
    }
}

/// Where the committed original and its truth are kept: `cargo test`
/// damages these same bytes on every run, so a given seed damages the same
/// bytes every time (a freshly written database differs from run to run:
/// its family ids, token secrets and nonces come from the OS).
fn base_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/corruption-base")
}

/// The committed original database and what its tokens should answer.
fn committed_original() -> Original {
    let dir = base_dir();
    let bytes = std::fs::read(dir.join("original.redb")).unwrap();
    let truth: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("original.json")).unwrap()).unwrap();
    let tokens = truth["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| Truth {
            token: t["token"].as_str().unwrap().to_owned(),
            live: t["live"].as_array().map(|l| {
                (
                    l[0].as_str().unwrap().to_owned(),
                    l[1].as_str().unwrap().to_owned(),
                    u32::try_from(l[2].as_u64().unwrap()).unwrap(),
                )
            }),
        })
        .collect();
    Original {
        bytes,
        tokens,
        clock_ms: truth["clock_ms"].as_i64().unwrap(),
    }
}

/// Rewrites the committed original (after a change of the database format):
/// `cargo test -p rotoken-fuzz --test corruption -- --ignored rewrite_the_committed_original`.
/// The tokens are those of a test database under the fixed test keys.
#[test]
#[ignore = "rewrites fuzz/regressions/corruption-base; run by hand after a format change"]
fn rewrite_the_committed_original() {
    let dir = tempfile::tempdir().unwrap();
    let orig = original(dir.path());
    let tokens: Vec<serde_json::Value> = orig
        .tokens
        .iter()
        .map(|t| serde_json::json!({ "token": t.token, "live": t.live }))
        .collect();
    let truth = serde_json::json!({ "clock_ms": orig.clock_ms, "tokens": tokens });
    std::fs::create_dir_all(base_dir()).unwrap();
    write(&base_dir().join("original.redb"), &orig.bytes);
    write(
        &base_dir().join("original.json"),
        serde_json::to_string_pretty(&truth).unwrap().as_bytes(),
    );
}

/// How one damaged file fared.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// Opening refused it with a typed error.
    OpenRefused(&'static str),
    /// Opened; `check()` failed with a typed error or reported problems.
    Detected,
    /// Opened, `check()` passed, every token got its true answer.
    Harmless,
    /// Opened, `check()` passed, but some live token was refused (failed closed, unnoticed).
    Undetected(String),
    /// A wrong answer: a dead token accepted, or another family's data.
    Wrong(String),
    /// A panic.
    Panicked(String),
    /// No answer within the time limit.
    Hung,
}

/// Where a damaged database is: a file (opened with `Engine::open`, as a
/// server would), or the same bytes in memory (no fsync per rotation, so
/// thousands of damaged copies take seconds, not minutes).
#[derive(Debug, Clone)]
enum Damaged {
    File(PathBuf),
    Memory(Vec<u8>),
}

/// What [`examine`] does besides checking the known tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writes {
    /// Only the known tokens are introspected and rotated.
    KnownTokens,
    /// Also a family is issued, introspected, rotated, retried and revoked,
    /// and a gc step runs: the write paths (redb's allocator) on a file
    /// whose tokens are not known, such as a regression file.
    AlsoNewFamily,
}

fn examine(damaged: Damaged, tokens: &[Truth], clock_ms: i64, writes: Writes) -> Verdict {
    let clock = ManualClock::at_unix_millis(clock_ms);
    let opened = match damaged {
        Damaged::File(path) => Engine::open(path, fixture::keyring(), fixture::options(&clock)),
        Damaged::Memory(bytes) => Engine::open_with_backend(
            SharedMemory::from_image(bytes),
            fixture::keyring(),
            fixture::options(&clock),
        ),
    };
    let engine = match opened {
        Ok(e) => e,
        Err(e) => {
            let _ = e.to_string();
            return Verdict::OpenRefused(e.code().as_str());
        }
    };
    let detected = match engine.check() {
        Ok(report) => !report.is_ok(),
        Err(_) => true,
    };
    let web = RotateRequest::new("web");
    let mut refused_live = Vec::new();
    for (n, t) in tokens.iter().enumerate() {
        match (engine.introspect(&t.token), &t.live) {
            (Ok(i), None) if i.active => return Verdict::Wrong(format!("dead token {n} introspects as active")),
            (Ok(i), Some((sub, client, g)))
                if i.active
                    && (i.sub.as_ref() != Some(sub)
                        || i.client_id.as_ref() != Some(client)
                        || i.generation != Some(*g)) =>
            {
                return Verdict::Wrong(format!("token {n} introspects with another grant: {i:?}"));
            }
            (Ok(i), Some(_)) if i.active => {}
            (_, Some(_)) => refused_live.push(format!("introspect {n}")),
            _ => {}
        }
    }
    // Live tokens first: presenting a dead one revokes its family (reuse).
    let order = tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| t.live.is_some())
        .chain(tokens.iter().enumerate().filter(|(_, t)| t.live.is_none()));
    for (n, t) in order {
        match (engine.rotate(&t.token, &web), &t.live) {
            (Ok(r), None) => {
                return Verdict::Wrong(format!("dead token {n} rotated to generation {}", r.generation));
            }
            (Ok(r), Some((sub, client, g))) => {
                if r.retried || r.generation != g + 1 || &r.grant.subject != sub || &r.grant.client_id != client {
                    return Verdict::Wrong(format!("token {n} rotated with the wrong answer: {r:?}"));
                }
            }
            (Err(_), Some(_)) => refused_live.push(format!("rotate {n}")),
            (Err(_), None) => {}
        }
    }
    if writes == Writes::AlsoNewFamily
        && let Err(wrong) = exercise_writes(&engine)
    {
        return Verdict::Wrong(wrong);
    }
    // The engine closes the database here (redb writes its allocator state
    // on close: the panic of issue 10 happened there).
    drop(engine);
    if detected {
        Verdict::Detected
    } else if refused_live.is_empty() {
        Verdict::Harmless
    } else {
        Verdict::Undetected(refused_live.join(", "))
    }
}

/// Issues a family on a damaged database and walks it through a rotation,
/// a grace retry, a revocation and a gc step. Typed errors are fine (the
/// file is damaged); a wrong answer is returned as `Err`.
fn exercise_writes(engine: &Engine) -> Result<(), String> {
    let web = RotateRequest::new("web");
    let Ok(issued) = engine.issue(&fixture::grant("regression-user", "web")) else {
        return Ok(());
    };
    let first = issued.refresh_token.expose().to_owned();
    if let Ok(i) = engine.introspect(&first)
        && i.active
        && (i.sub.as_deref() != Some("regression-user") || i.generation != Some(0))
    {
        return Err(format!("a new family introspects with another grant: {i:?}"));
    }
    if let Ok(r) = engine.rotate(&first, &web) {
        if r.retried || r.generation != 1 || r.grant.subject != "regression-user" {
            return Err(format!("a new family rotated with the wrong answer: {r:?}"));
        }
        match engine.rotate(&first, &web) {
            Ok(again) if !again.retried || again.refresh_token.expose() != r.refresh_token.expose() => {
                return Err(format!("a grace retry got another answer: {again:?}"));
            }
            _ => {}
        }
    }
    let _ = engine.revoke(RevokeTarget::Subject("regression-user"));
    if let Ok(i) = engine.introspect(&first)
        && i.active
    {
        return Err("a rotated-away token of a new family introspects as active".to_owned());
    }
    let _ = engine.gc(100);
    let _ = engine.events(0, 100);
    Ok(())
}

/// Where the last panic of each thread happened (file:line), recorded by
/// the hook [`quiet_panics`] installs instead of printing a backtrace.
static PANICS: Mutex<Vec<(std::thread::ThreadId, String)>> = Mutex::new(Vec::new());

/// Replaces the panic hook (once) with one that records the location of
/// panics on the unnamed examining threads instead of printing backtraces;
/// the tests' own (named) threads keep the default report.
fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name().is_some() {
                return default(info);
            }
            let at = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            PANICS.lock().unwrap().push((std::thread::current().id(), at));
        }));
    });
}

/// Runs [`examine`] in a thread, catching panics and hangs.
fn examine_guarded(damaged: Damaged, tokens: &[Truth], clock_ms: i64, writes: Writes) -> Verdict {
    quiet_panics();
    let (tx, rx) = mpsc::channel();
    let tokens = tokens.to_vec();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(|| examine(damaged, &tokens, clock_ms, writes));
        let _ = tx.send(r.unwrap_or_else(|e| {
            let me = std::thread::current().id();
            let at = PANICS
                .lock()
                .unwrap()
                .iter()
                .rev()
                .find(|p| p.0 == me)
                .map(|p| p.1.clone())
                .unwrap_or_default();
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            Verdict::Panicked(format!("{msg} at {at}"))
        }));
    });
    rx.recv_timeout(Duration::from_secs(20)).unwrap_or(Verdict::Hung)
}

#[derive(Debug, Default)]
struct Tally {
    cases: usize,
    open_refused: usize,
    detected: usize,
    harmless: usize,
    undetected: Vec<String>,
    /// Panics that reached the caller (redb panics on some damaged files;
    /// the engine must contain them: `redb_panics_on_regression_files_are_contained_end_to_end`),
    /// wrong answers and hangs.
    bad: Vec<String>,
}

impl Tally {
    fn add(&mut self, what: String, v: Verdict) {
        self.cases += 1;
        match v {
            Verdict::OpenRefused(_) => self.open_refused += 1,
            Verdict::Detected => self.detected += 1,
            Verdict::Harmless => self.harmless += 1,
            Verdict::Undetected(why) => self.undetected.push(format!("{what}: {why}")),
            v => self.bad.push(format!("{what}: {v:?}")),
        }
    }

    fn report(&self, name: &str) {
        println!(
            "{name}: {} damaged files: {} refused at open, {} opened and detected by check(), {} harmless \
             (every answer true), {} undetected (a live token refused while check() passed), {} panicked, \
             answered wrongly or hung",
            self.cases,
            self.open_refused,
            self.detected,
            self.harmless,
            self.undetected.len(),
            self.bad.len()
        );
        for u in self.undetected.iter().take(10) {
            println!("  undetected: {u}");
        }
        for u in self.bad.iter().take(10) {
            println!("  bad: {u}");
        }
    }
}

/// Offsets to damage: every byte of redb's 512-byte super-header, every
/// `stride`-th byte of the rest of the first 4 KiB (region headers), and in
/// every later 4 KiB page holding data, `per_page` random nonzero bytes.
fn offsets(bytes: &[u8], rng: &mut Rng, stride: usize, per_page: usize) -> Vec<usize> {
    let head = 4096.min(bytes.len());
    let mut out: Vec<usize> = (0..512.min(head)).chain((512..head).step_by(stride)).collect();
    for (p, page) in bytes.chunks(4096).enumerate().skip(1) {
        let used: Vec<usize> = (0..page.len()).filter(|&i| page[i] != 0).collect();
        for _ in 0..per_page.min(used.len()) {
            out.push(p * 4096 + used[rng.index(used.len())]);
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

fn assert_sound(tally: &Tally) {
    assert!(
        tally.bad.is_empty(),
        "wrong answers, panics or hangs:\n{}",
        tally.bad.join("\n")
    );
}

/// The seed `cargo test` damages the committed original with
/// (`ROTOKEN_CORRUPTION_SEED` overrides it): the seed of issue 10's run.
const CORRUPTION_SEED: u64 = 1_796_161_273_912_633_455;

#[test]
fn flipped_bytes_never_panic_hang_or_answer_wrongly() {
    let (rng, seed) = Rng::from_env_or("ROTOKEN_CORRUPTION_SEED", CORRUPTION_SEED);
    flip_bytes(&committed_original(), rng, seed);
}

/// The random campaign, apart from `cargo test` (docs/fuzzing.md): a fresh
/// original database, damaged from a clock seed (printed; set
/// `ROTOKEN_CORRUPTION_SEED` to replay one), flipped, truncated and extended.
/// `ROTOKEN_SAVE_DAMAGED=DIR` keeps each file on which a panic reached the
/// caller or the engine hung, to commit in `fuzz/regressions/corruption/`.
#[test]
#[ignore = "the random campaign: cargo test -p rotoken-fuzz --test corruption -- --ignored --nocapture campaign"]
fn random_corruption_campaign() {
    let (rng, seed) = Rng::random_unless_env("ROTOKEN_CORRUPTION_SEED");
    println!("corruption campaign: seed {seed} (ROTOKEN_CORRUPTION_SEED={seed} replays it)");
    let dir = tempfile::tempdir().unwrap();
    let orig = original(dir.path());
    flip_bytes(&orig, rng.clone(), seed);
    cut_and_extend(&orig, rng);
}

/// Flips one bit at each of many offsets of `orig` and examines every copy.
fn flip_bytes(orig: &Original, mut rng: Rng, seed: u64) {
    println!("flipped bytes: seed {seed}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("damaged.redb");
    // The undamaged file answers everything truly.
    write(&path, &orig.bytes);
    assert_eq!(
        examine_guarded(
            Damaged::File(path.clone()),
            &orig.tokens,
            orig.clock_ms,
            Writes::KnownTokens
        ),
        Verdict::Harmless
    );
    let started = Instant::now();
    let mut tally = Tally::default();
    // ROTOKEN_CORRUPTION_FULL=1: every byte of the first 4 KiB and 24 per
    // page (the long run of docs/reliability.md); by default a CI-sized sample.
    let full = std::env::var_os("ROTOKEN_CORRUPTION_FULL").is_some();
    let offs = if full {
        offsets(&orig.bytes, &mut rng, 1, 24)
    } else {
        offsets(&orig.bytes, &mut rng, 8, 8)
    };
    for &off in &offs {
        let mut bytes = orig.bytes.clone();
        let mask = 1u8 << rng.below(8);
        bytes[off] ^= mask;
        let verdict = examine_guarded(
            Damaged::Memory(bytes.clone()),
            &orig.tokens,
            orig.clock_ms,
            Writes::KnownTokens,
        );
        // ROTOKEN_SAVE_DAMAGED=DIR keeps the files on which a panic reached the
        // caller or the engine hung (for fuzz/regressions/corruption).
        if let (Verdict::Panicked(_) | Verdict::Hung, Ok(dir)) = (&verdict, std::env::var("ROTOKEN_SAVE_DAMAGED")) {
            std::fs::write(Path::new(&dir).join(format!("flip-{mask:02x}-at-{off}.redb")), &bytes).unwrap();
        }
        tally.add(format!("flip {mask:#04x} at {off}"), verdict);
    }
    println!(
        "corruption: seed {seed}, file of {} bytes, {} offsets flipped in {:.1} s",
        orig.bytes.len(),
        offs.len(),
        started.elapsed().as_secs_f64()
    );
    tally.report("flipped bytes");
    assert_sound(&tally);
}

#[test]
fn truncated_and_extended_files_never_panic_hang_or_answer_wrongly() {
    let (rng, seed) = Rng::from_env_or("ROTOKEN_CORRUPTION_SEED", CORRUPTION_SEED);
    println!("truncated and extended files: seed {seed}");
    cut_and_extend(&committed_original(), rng);
}

/// Cuts `orig` at many lengths and appends bytes to it; examines every copy.
fn cut_and_extend(orig: &Original, mut rng: Rng) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("damaged.redb");
    let len = orig.bytes.len();
    let mut lengths: Vec<usize> = vec![1, 8, 9, 64, 320, 511, 512, 513, 1024, 4095, 4096, 4097, len - 1];
    lengths.extend((4096..len).step_by(4096));
    lengths.extend((0..100).map(|_| rng.index(len)));
    lengths.sort_unstable();
    lengths.dedup();
    let mut tally = Tally::default();
    for &n in &lengths {
        write(&path, &orig.bytes[..n]);
        tally.add(
            format!("truncated to {n}"),
            examine_guarded(
                Damaged::File(path.clone()),
                &orig.tokens,
                orig.clock_ms,
                Writes::KnownTokens,
            ),
        );
    }
    tally.report("truncated files");
    assert_sound(&tally);
    let mut ext = Tally::default();
    for extra in [
        vec![0u8; 1],
        vec![0u8; 4096],
        vec![0xffu8; 4096],
        (0..8192).map(|_| rng.below(256) as u8).collect(),
    ] {
        let mut bytes = orig.bytes.clone();
        bytes.extend_from_slice(&extra);
        write(&path, &bytes);
        ext.add(
            format!("{} bytes appended", extra.len()),
            examine_guarded(
                Damaged::File(path.clone()),
                &orig.tokens,
                orig.clock_ms,
                Writes::KnownTokens,
            ),
        );
    }
    ext.report("extended files");
    assert_sound(&ext);
    // An empty file is a new database: no token of the old one is accepted.
    write(&path, &[]);
    let v = examine_guarded(Damaged::File(path), &orig.tokens, orig.clock_ms, Writes::KnownTokens);
    assert!(matches!(v, Verdict::Harmless | Verdict::Undetected(_)), "{v:?}");
}

/// The `rotoken` binary beside this test's, if it was built.
fn rotoken_bin() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe
        .parent()?
        .parent()?
        .join(format!("rotoken{}", std::env::consts::EXE_SUFFIX));
    bin.is_file().then_some(bin)
}

#[test]
fn rotoken_check_reports_damage_readably() {
    let Some(bin) = rotoken_bin() else {
        println!("skipped: the rotoken binary is not built (cargo test --workspace builds it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let orig = committed_original();
    let keys = dir.path().join("test.keys");
    write(&keys, fixture::TEST_KEY_FILE.as_bytes());
    let path = dir.path().join("damaged.redb");
    // Find damaged files of each kind: refused at open, detected by check.
    let mut rng = Rng::new(7);
    let mut samples: Vec<(String, Vec<u8>, Verdict)> = Vec::new();
    for off in offsets(&orig.bytes, &mut rng, 8, 4) {
        let mut bytes = orig.bytes.clone();
        bytes[off] ^= 0x20;
        let v = examine_guarded(
            Damaged::Memory(bytes.clone()),
            &orig.tokens,
            orig.clock_ms,
            Writes::KnownTokens,
        );
        let kind = std::mem::discriminant(&v);
        if samples.iter().filter(|s| std::mem::discriminant(&s.2) == kind).count() < 4 {
            samples.push((format!("flip at {off}"), bytes, v));
        }
    }
    samples.push((
        "truncated".into(),
        orig.bytes[..orig.bytes.len() / 2].to_vec(),
        Verdict::Hung,
    ));
    samples.push(("garbage".into(), vec![0x5a; 8192], Verdict::Hung));
    // Files on which redb panics (regressions): one readable JSON answer too.
    for path in regression_files() {
        let bytes = std::fs::read(&path).unwrap();
        samples.push((format!("regression {}", path.display()), bytes, Verdict::Hung));
    }
    for (what, bytes, _) in &samples {
        write(&path, bytes);
        let out = std::process::Command::new(&bin)
            .arg("--db")
            .arg(&path)
            .arg("--keys")
            .arg(&keys)
            .arg("check")
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        let code = out.status.code();
        println!(
            "rotoken check, {what}: exit {code:?}\n  stdout: {}  stderr: {}",
            stdout.trim(),
            stderr.trim()
        );
        assert!(matches!(code, Some(0 | 1 | 3)), "{what}: exit {code:?}: {stderr}");
        if code != Some(0) {
            // The answer is the whole of stderr: a panic the engine contained
            // (redb panicking on damaged pages, turned into `Corrupt`) is not
            // printed by the tool's panic hook.
            let e: serde_json::Value =
                serde_json::from_str(stderr.trim()).unwrap_or_else(|_| panic!("{what}: not one JSON answer: {stderr}"));
            assert!(e["error"].is_string() && e["message"].is_string(), "{what}: {stderr}");
        }
    }
}

#[test]
fn a_file_that_is_not_a_database_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.redb");
    for content in [&b"hello"[..], &[0u8; 4096], &[0xffu8; 100_000]] {
        write(&path, content);
        match Engine::open(&path, fixture::keyring(), Options::default()) {
            Err(e @ (OpenError::NotRotoken | OpenError::Store(_))) => assert!(!e.to_string().is_empty()),
            Err(e) => panic!("{e:?}"),
            Ok(_) => panic!("garbage opened as a database"),
        }
    }
}

/// Damaged files on which redb 4.6.0 panics instead of returning an error
/// (found by the corruption tests, kept in `fuzz/regressions/corruption/`),
/// each examined end to end: opened, checked, a family issued, introspected,
/// rotated, retried and revoked, a gc step, and the database closed. redb
/// trusts some bytes it reads: `unreachable!()` in `tree_store/btree.rs` (a
/// page that is neither leaf nor branch), `unwrap()` of a missing table
/// definition in `tree_store/table_tree.rs`, an index out of bounds in
/// `tree_store/page_store/bitmap.rs` while closing the database
/// (`redb-panics-on-close-*`, issue 10: redb writes its allocator state on
/// close), and (seen in other runs) `unreachable!()` in `types.rs` and
/// `tree_store/table_tree_base.rs` and `unwrap()` of a non-UTF-8 `&str` key
/// in `types.rs`; in release builds too. The engine runs every redb call,
/// the close included, inside its panic containment, so the caller gets
/// `StoreError::Corrupt`.
#[test]
fn redb_panics_on_regression_files_are_contained_end_to_end() {
    let mut bad = Vec::new();
    for path in regression_files() {
        let bytes = std::fs::read(&path).unwrap();
        match examine_guarded(Damaged::Memory(bytes), &[], T0, Writes::AlsoNewFamily) {
            v @ (Verdict::Panicked(_) | Verdict::Hung | Verdict::Wrong(_)) => {
                bad.push(format!("{}: {v:?}", path.display()));
            }
            v => println!("{}: {v:?}", path.display()),
        }
    }
    assert!(
        bad.is_empty(),
        "redb panics reach the caller, or the engine hangs or answers wrongly:\n{}",
        bad.join("\n")
    );
}

/// The damaged files kept in `fuzz/regressions/corruption/`.
fn regression_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/corruption");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(!files.is_empty());
    files
}
