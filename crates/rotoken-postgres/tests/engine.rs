//! The engine over the PostgreSQL store: every operation, and the
//! failure behaviour when the database goes away.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{HOUR, SECOND, Servers, assert_check, grant};
use rotoken::{Code, EventKind, Keyring, OpenError, RevokeTarget, RotateError, RotateRequest};
use rotoken_postgres::testing;

#[test]
fn issue_rotate_grace_reuse_revoke_gc_and_check() {
    let Some(db) = testing::database() else { return };
    let s = Servers::new(db);
    let engine = s.engine();
    assert_eq!(engine.store_name(), "postgres");
    let req = RotateRequest::new("web-app");

    let first = engine.issue(&grant("alice", "web-app")).unwrap();
    s.advance_ms(SECOND);
    let second = engine.rotate(first.refresh_token.expose(), &req).unwrap();
    assert_eq!(second.generation, 1);
    assert!(!second.retried);
    // A retry within grace gets the same successor.
    let retry = engine.rotate(first.refresh_token.expose(), &req).unwrap();
    assert!(retry.retried);
    assert_eq!(retry.refresh_token, second.refresh_token);
    assert!(engine.introspect(second.refresh_token.expose()).unwrap().active);
    assert_eq!(engine.sessions("alice").unwrap().len(), 1);

    // Another client's presentation is refused without revoking.
    let other = engine.rotate(second.refresh_token.expose(), &RotateRequest::new("intruder"));
    assert!(matches!(other, Err(RotateError::ClientMismatch)), "{other:?}");

    // After the window, the predecessor is reuse: the family is revoked.
    s.advance_ms(60 * SECOND);
    let third = engine.rotate(second.refresh_token.expose(), &req).unwrap();
    let replay = engine.rotate(first.refresh_token.expose(), &req);
    assert!(matches!(replay, Err(RotateError::ReuseDetected { .. })), "{replay:?}");
    let after = engine.rotate(third.refresh_token.expose(), &req);
    assert!(matches!(after, Err(RotateError::Revoked(_))), "{after:?}");
    let events = engine.events(0, 10).unwrap();
    assert_eq!(events.len(), 1);
    assert!(
        matches!(events[0].kind, EventKind::ReuseDetected { .. }),
        "{:?}",
        events[0]
    );

    // Revocation by subject and by token.
    let b1 = engine.issue(&grant("bob", "web-app")).unwrap();
    let b2 = engine.issue(&grant("bob", "mobile")).unwrap();
    let c1 = engine.issue(&grant("carol", "web-app")).unwrap();
    assert_eq!(engine.revoke(RevokeTarget::Subject("bob")).unwrap(), 2);
    assert!(!engine.introspect(b1.refresh_token.expose()).unwrap().active);
    assert!(!engine.introspect(b2.refresh_token.expose()).unwrap().active);
    assert_eq!(
        engine.revoke(RevokeTarget::Token(c1.refresh_token.expose())).unwrap(),
        1
    );
    assert_eq!(engine.families_count().unwrap(), 4);
    assert_check(&engine);

    // Past every lifetime and retention, gc removes them all, in bounded steps.
    s.advance_ms(5 * HOUR);
    let mut removed = 0;
    loop {
        let r = engine.gc(2).unwrap();
        removed += r.removed;
        if !r.more {
            break;
        }
    }
    assert_eq!(removed, 4);
    assert_eq!(engine.families_count().unwrap(), 0);
    assert_check(&engine);
    let seqs: Vec<u64> = s.sunk(&engine).iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

#[test]
fn the_keys_are_checked_against_the_database() {
    let Some(db) = testing::database() else { return };
    let s = Servers::new(db);
    drop(s.engine());
    let wrong = rotoken::Engine::with_store(s.db.store().unwrap(), Keyring::generate().unwrap(), s.options());
    assert!(matches!(wrong, Err(OpenError::WrongKeys)), "{wrong:?}");
    drop(s.engine());
}

#[test]
fn first_openers_with_different_keys_cannot_both_win() {
    let Some(db) = testing::database() else { return };
    let s = &Servers::new(db);
    let results: Vec<Result<rotoken::Engine, OpenError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let store = s.db.store().unwrap();
                scope.spawn(move || rotoken::Engine::with_store(store, Keyring::generate().unwrap(), s.options()))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let opened = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(opened, 1, "exactly one keyring is recorded");
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(e, OpenError::WrongKeys))
    );
}

#[test]
fn a_database_that_goes_away_gives_storage_errors_and_the_store_recovers() {
    let Some(db) = testing::database() else { return };
    let s = Servers::new(db);
    let engine = s.engine();
    let req = RotateRequest::new("web-app");
    let mut token = engine.issue(&grant("alice", "web-app")).unwrap().refresh_token;
    token = engine.rotate(token.expose(), &req).unwrap().refresh_token;

    // The database refuses connections and every session of it is killed.
    let admin = s.db.admin_sql().unwrap();
    let name = s.db.name().to_owned();
    admin
        .execute(&format!(
            "ALTER DATABASE {name} ALLOW_CONNECTIONS false;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = '{name}' AND pid <> pg_backend_pid();"
        ))
        .unwrap();
    for _ in 0..3 {
        let err = engine.rotate(token.expose(), &req).unwrap_err();
        assert_eq!(err.code(), Code::StorageError, "{err}");
        let err = engine.introspect(token.expose()).unwrap_err();
        assert_eq!(err.code(), Code::StorageError, "{err}");
    }
    // Nothing acknowledged was lost, and the token that failed to rotate
    // was not rotated: it still works once the database is back.
    admin
        .execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .unwrap();
    let next = engine.rotate(token.expose(), &req).unwrap();
    assert!(!next.retried);
    assert_eq!(next.generation, 2);
    assert_check(&engine);
}

#[test]
fn calls_work_from_plain_blocking_and_async_threads_and_drop_anywhere() {
    let Some(db) = testing::database() else { return };
    let s = Servers::new(db);
    let engine = std::sync::Arc::new(s.engine());
    let req = RotateRequest::new("web-app");
    let first = engine.issue(&grant("alice", "web-app")).unwrap().refresh_token;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let last = runtime.block_on(async {
        // A spawn_blocking thread (how an async server should call the sync API).
        let (e, r, t) = (engine.clone(), req.clone(), first.clone());
        let second = tokio::task::spawn_blocking(move || e.rotate(t.expose(), &r))
            .await
            .unwrap()
            .unwrap();
        // The async API (the engine's commit thread leads the batch).
        let third = engine.rotate_async(second.refresh_token.expose(), &req).await.unwrap();
        // A sync call straight on a runtime worker: blocks it, but must not panic.
        let e = engine.clone();
        let t = third.refresh_token.clone();
        let active = tokio::spawn(async move { e.introspect(t.expose()).unwrap().active })
            .await
            .unwrap();
        assert!(active);
        third.refresh_token
    });
    assert!(engine.introspect(last.expose()).unwrap().active);
    // Dropped inside an async context: the store's runtime shuts down without panicking.
    runtime.block_on(async move { drop(engine) });
}

#[test]
fn a_family_held_past_the_statement_timeout_gives_a_storage_error_not_a_hang() {
    let Some(db) = testing::database() else { return };
    let s = Servers::new(db);
    let mut options = rotoken_postgres::PgOptions::default();
    options.statement_timeout = std::time::Duration::from_millis(300);
    let engine = rotoken::Engine::with_store(s.db.store_with(options).unwrap(), s.keys.clone(), s.options()).unwrap();
    let req = RotateRequest::new("web-app");
    let issued = engine.issue(&grant("alice", "web-app")).unwrap();

    // Another "server" holds the family's row and does not let go.
    let holder = s.db.sql().unwrap();
    holder
        .execute(&format!(
            "BEGIN; SELECT 1 FROM rotoken_families WHERE id = '\\x{}'::bytea FOR UPDATE",
            issued.family
        ))
        .unwrap();
    let err = engine.rotate(issued.refresh_token.expose(), &req).unwrap_err();
    assert_eq!(err.code(), Code::StorageError, "{err}");

    // Released: the same token rotates (the failed attempt changed nothing).
    holder.execute("ROLLBACK").unwrap();
    let next = engine.rotate(issued.refresh_token.expose(), &req).unwrap();
    assert_eq!(next.generation, 1);
    assert!(!next.retried);
}
