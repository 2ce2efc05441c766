//! P2: constant storage per family, yet every earlier token is recognised.
//!
//! Two fresh databases: one family rotated once, one rotated 10,000 times.
//! After compaction the files must be the same size (up to one page of
//! allocator slack), and the stored record of the family must be exactly
//! the same number of bytes. Then the oldest token of the long family
//! (generation 0) must still be detected as reuse and revoke the family.
//!
//! Run with `--nocapture` to see the measured sizes.

use crate::{Backend, Harness, grant, relaxed_policy};
use rotoken::{RevokeReason, RotateError, RotateRequest};

/// redb's page size: the allocation granularity of the file (PostgreSQL's
/// is 8 KiB, but one family's row never moves a table across a page).
const PAGE: u64 = 4096;

struct Measured {
    footprint: u64,
    record_len: usize,
    /// The first and the last token of the family.
    first: String,
    last: String,
    harness: Harness,
}

/// Issues one family, rotates it `rotations` times, closes, and measures
/// the store once compacted and the stored record.
fn build(backend: &dyn Backend, rotations: u32) -> Measured {
    let h = Harness::new(backend, relaxed_policy());
    let engine = h.open();
    let issued = engine.issue(&grant("alice", "web-app")).unwrap();
    let first = issued.refresh_token.expose().to_owned();
    let request = RotateRequest::new("web-app");
    let mut current = first.clone();
    for i in 0..rotations {
        let r = engine.rotate(&current, &request).unwrap();
        assert_eq!(r.generation, i + 1);
        assert!(!r.retried);
        current = r.refresh_token.expose().to_owned();
    }
    crate::assert_check(&engine);
    drop(engine);
    let footprint = h.db.footprint();
    let records = h.db.records();
    assert_eq!(records.len(), 1, "exactly one family stored");
    println!(
        "{} store, {rotations} rotation(s): {footprint} bytes once compacted, record {} bytes",
        backend.name(),
        records[0].len()
    );
    Measured {
        footprint,
        record_len: records[0].len(),
        first,
        last: current,
        harness: h,
    }
}

/// Ten thousand rotations take no more space than one.
pub fn ten_thousand_rotations_take_no_more_space_than_one(backend: &dyn Backend) {
    let once = build(backend, 1);
    let many = build(backend, 10_000);

    // The record is a fixed layout (current generation, current token hash,
    // one sealed successor, the sealed grant): not one byte more after 10,000
    // rotations.
    assert_eq!(
        once.record_len, many.record_len,
        "the family record grew with rotations"
    );
    // The compacted store holds the same tables with the same entries;
    // page allocation may round differently (a freed-page list, a region
    // header), so allow at most one page of difference, never growth with
    // the number of rotations.
    assert!(
        many.footprint <= once.footprint + PAGE,
        "the store grew with rotations: {} bytes after 10,000 vs {} after 1",
        many.footprint,
        once.footprint
    );

    // Yet the oldest token is still recognised as reuse, and revokes the family.
    let engine = many.harness.open();
    assert!(crate::active(&engine, &many.last));
    let request = RotateRequest::new("web-app");
    match engine.rotate(&many.first, &request) {
        Err(RotateError::ReuseDetected { .. }) => {}
        other => panic!("generation 0 after 10,000 rotations: {other:?}"),
    }
    assert!(!crate::active(&engine, &many.last));
    assert!(matches!(
        engine.rotate(&many.last, &request),
        Err(RotateError::Revoked(RevokeReason::ReuseDetected))
    ));
    let sessions = engine.sessions("alice").unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].revoked, Some(RevokeReason::ReuseDetected));
    assert_eq!(sessions[0].generation, 10_000);
    crate::assert_check(&engine);
}

/// Every intermediate generation, not only the first, is detected: sample
/// some of a long family's tokens, each in a fresh copy of the database.
pub fn every_earlier_generation_is_detected(backend: &dyn Backend) {
    let h = Harness::new(backend, relaxed_policy());
    let engine = h.open();
    let issued = engine.issue(&grant("bob", "web-app")).unwrap();
    let request = RotateRequest::new("web-app");
    let mut tokens = vec![issued.refresh_token.expose().to_owned()];
    for _ in 0..200 {
        let r = engine.rotate(tokens.last().unwrap(), &request).unwrap();
        tokens.push(r.refresh_token.expose().to_owned());
    }
    drop(engine);
    h.db.backup("long-family");
    // 199 is the predecessor: within the (stopped) clock's grace window it
    // is a retry, not reuse; every older one is reuse.
    for g in [0usize, 1, 17, 100, 198] {
        h.db.restore("long-family");
        let engine = h.open();
        match engine.rotate(&tokens[g], &request) {
            Err(RotateError::ReuseDetected { .. }) => {}
            other => panic!("generation {g} of 200: {other:?}"),
        }
        assert!(!crate::active(&engine, &tokens[200]));
    }
    h.db.restore("long-family");
    let engine = h.open();
    let retry = engine.rotate(&tokens[199], &request).unwrap();
    assert!(retry.retried);
    assert_eq!(retry.refresh_token.expose(), tokens[200]);
}
