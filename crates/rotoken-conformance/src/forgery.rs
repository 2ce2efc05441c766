//! P3 and P7, reliability checklist rows 15 and 16: reuse cannot be forged,
//! strangers cannot log users out, bindings hold, and malformed input is
//! rejected cheaply.

use crate::{Backend, Harness, active, forge, grant, scope, small_policy};
use rotoken::token::{self, FamilyId, ParseError};
use rotoken::{Engine, EventKind, Grant, RevokeError, RevokeReason, RevokeTarget, RotateError, RotateRequest};

fn harness(backend: &dyn Backend) -> Harness {
    Harness::new(backend, small_policy(1_000))
}

/// Issues a family for `client` and rotates it `n` times; returns all tokens.
fn chain(engine: &Engine, client: &str, n: usize) -> Vec<String> {
    let issued = engine.issue(&grant("alice", client)).unwrap();
    let mut tokens = vec![issued.refresh_token.expose().to_owned()];
    for _ in 0..n {
        let r = engine
            .rotate(tokens.last().unwrap(), &RotateRequest::new(client))
            .unwrap();
        tokens.push(r.refresh_token.expose().to_owned());
    }
    tokens
}

/// Asserts that the family of `tokens` is untouched: the last token is live,
/// no event was recorded, and the last token still rotates.
fn assert_untouched(engine: &Engine, tokens: &[String], client: &str) {
    let last = tokens.last().unwrap();
    assert!(active(engine, last), "the family's current token must stay live");
    for t in &tokens[..tokens.len() - 1] {
        assert!(!active(engine, t));
    }
    assert_eq!(engine.events(0, 100).unwrap(), vec![], "no event may be recorded");
    let r = engine.rotate(last, &RotateRequest::new(client)).unwrap();
    assert!(!r.retried);
    crate::assert_check(engine);
}

/// Forged authenticator is invalid and changes nothing.
pub fn forged_authenticator_is_invalid_and_changes_nothing(backend: &dyn Backend) {
    let h = harness(backend);
    let engine = h.open();
    let tokens = chain(&engine, "web", 3);
    let request = RotateRequest::new("web");
    // Every bit of the authenticator, on every generation: an old token
    // with a forged authenticator must not be taken as reuse (P3).
    for t in &tokens {
        for bit in 0..128 {
            let forged = forge(t, bit);
            assert!(
                matches!(engine.rotate(&forged, &request), Err(RotateError::InvalidToken)),
                "bit {bit}"
            );
        }
        let forged = forge(t, 0);
        assert!(!active(&engine, &forged));
        assert!(matches!(
            engine.revoke(RevokeTarget::Token(&forged)),
            Err(RevokeError::InvalidToken)
        ));
    }
    assert_untouched(&engine, &tokens, "web");
}

/// Tampered fields with the old authenticator are invalid.
pub fn tampered_fields_with_the_old_authenticator_are_invalid(backend: &dyn Backend) {
    let h = harness(backend);
    let engine = h.open();
    let tokens = chain(&engine, "web", 3);
    let other = chain(&engine, "web", 0);
    let request = RotateRequest::new("web");
    let current = token::parse(tokens[3].as_bytes()).unwrap();
    let mut variants = Vec::new();
    // Claim an older generation (would be reuse if believed).
    for g in [0, 1, 2, 4, u32::MAX] {
        let mut t = current.clone();
        t.generation = g;
        variants.push(t);
    }
    // Point the token at another family.
    let mut t = current.clone();
    t.family = token::parse(other[0].as_bytes()).unwrap().family;
    variants.push(t);
    // Another key id.
    for k in [0, 2, u32::MAX] {
        let mut t = current.clone();
        t.key_id = k;
        variants.push(t);
    }
    for (i, t) in variants.iter().enumerate() {
        let s = token::format(t).expose().to_owned();
        assert!(
            matches!(engine.rotate(&s, &request), Err(RotateError::InvalidToken)),
            "variant {i}"
        );
        assert!(matches!(
            engine.revoke(RevokeTarget::Token(&s)),
            Err(RevokeError::InvalidToken)
        ));
        assert!(!active(&engine, &s));
    }
    assert!(active(&engine, &other[0]));
    assert_untouched(&engine, &tokens, "web");
}

/// Forged tokens answer the same for existing and unknown families.
pub fn forged_tokens_answer_the_same_for_existing_and_unknown_families(backend: &dyn Backend) {
    let h = harness(backend);
    let engine = h.open();
    let tokens = chain(&engine, "web", 0);
    let mut t = token::parse(tokens[0].as_bytes()).unwrap();
    t.authenticator[0] ^= 1;
    let existing = token::format(&t).expose().to_owned();
    t.family = FamilyId::from_bytes([0x42; 16]);
    let unknown = token::format(&t).expose().to_owned();
    let request = RotateRequest::new("web");
    let a = engine.rotate(&existing, &request).unwrap_err();
    let b = engine.rotate(&unknown, &request).unwrap_err();
    assert!(matches!(a, RotateError::InvalidToken));
    assert!(matches!(b, RotateError::InvalidToken));
    assert_eq!(a.to_string(), b.to_string());
    assert_eq!(a.code(), b.code());
}

/// Token from another keyring is invalid.
pub fn token_from_another_keyring_is_invalid(backend: &dyn Backend) {
    let h = harness(backend);
    let engine = h.open();
    let tokens = chain(&engine, "web", 1);
    let stranger = harness(backend);
    let foreign_engine = stranger.open();
    let foreign = chain(&foreign_engine, "web", 2);
    let request = RotateRequest::new("web");
    for t in &foreign {
        assert!(matches!(engine.rotate(t, &request), Err(RotateError::InvalidToken)));
        assert!(!active(&engine, t));
        assert!(matches!(
            engine.revoke(RevokeTarget::Token(t)),
            Err(RevokeError::InvalidToken)
        ));
    }
    // And the other way round.
    for t in &tokens {
        assert!(matches!(
            foreign_engine.rotate(t, &request),
            Err(RotateError::InvalidToken)
        ));
    }
    assert!(active(&foreign_engine, foreign.last().unwrap()));
    assert_untouched(&engine, &tokens, "web");
}

/// Another client is refused and never revokes.
pub fn another_client_is_refused_and_never_revokes(backend: &dyn Backend) {
    let h = harness(backend);
    let engine = h.open();
    let tokens = chain(&engine, "client-a", 3);
    let b = RotateRequest::new("client-b");
    // The current token, the predecessor (a retry for A), and older tokens
    // (reuse for A): all just refused for B.
    for t in &tokens {
        assert!(matches!(engine.rotate(t, &b), Err(RotateError::ClientMismatch)));
    }
    // After the grace window too.
    h.advance_ms(10 * crate::MINUTE);
    for t in &tokens {
        assert!(matches!(engine.rotate(t, &b), Err(RotateError::ClientMismatch)));
    }
    // Nothing was revoked or recorded: A's current token still rotates.
    assert_untouched(&engine, &tokens, "client-a");
}

/// Another clients revocation revokes nothing.
pub fn another_clients_revocation_revokes_nothing(backend: &dyn Backend) {
    let h = harness(backend);
    let engine = h.open();
    let tokens = chain(&engine, "client-a", 3);
    // RFC 7009 §2.1 through the core: any generation, presented by B.
    for t in &tokens {
        let target = RevokeTarget::TokenOfClient {
            token: t,
            client_id: "client-b",
        };
        assert!(matches!(engine.revoke(target), Err(RevokeError::ClientMismatch)));
    }
    assert_untouched(&engine, &tokens, "client-a");
    // The owner revokes the family with an old token of it.
    let tokens = chain(&engine, "client-a", 2);
    let target = RevokeTarget::TokenOfClient {
        token: &tokens[0],
        client_id: "client-a",
    };
    assert_eq!(engine.revoke(target).unwrap(), 1);
    assert!(!active(&engine, tokens.last().unwrap()));
    // Still refused for B once revoked: the answer never depends on state.
    let target = RevokeTarget::TokenOfClient {
        token: &tokens[1],
        client_id: "client-b",
    };
    assert!(matches!(engine.revoke(target), Err(RevokeError::ClientMismatch)));
}

/// A confirmation bound family needs its key.
pub fn a_confirmation_bound_family_needs_its_key(backend: &dyn Backend) {
    let h = harness(backend);
    let engine = h.open();
    let g = grant("alice", "spa").with_confirmation("jkt-right");
    let issued = engine.issue(&g).unwrap();
    let mut right = RotateRequest::new("spa");
    right.confirmation = Some("jkt-right".into());
    let mut tokens = vec![issued.refresh_token.expose().to_owned()];
    for _ in 0..3 {
        let r = engine.rotate(tokens.last().unwrap(), &right).unwrap();
        assert_eq!(r.grant.confirmation.as_deref(), Some("jkt-right"));
        tokens.push(r.refresh_token.expose().to_owned());
    }
    let mut wrong = RotateRequest::new("spa");
    wrong.confirmation = Some("jkt-wrong".into());
    let none = RotateRequest::new("spa");
    for t in &tokens {
        for req in [&wrong, &none] {
            assert!(
                matches!(engine.rotate(t, req), Err(RotateError::ConfirmationMismatch)),
                "{req:?}"
            );
        }
    }
    let i = engine.introspect(tokens.last().unwrap()).unwrap();
    assert!(i.active);
    assert_eq!(i.cnf_jkt.as_deref(), Some("jkt-right"));
    assert_eq!(engine.events(0, 100).unwrap(), vec![]);
    // The right key works on the current token...
    let r = engine.rotate(tokens.last().unwrap(), &right).unwrap();
    assert!(!r.retried);
    // ...and a retry of the predecessor with the wrong key is still refused.
    assert!(matches!(
        engine.rotate(tokens.last().unwrap(), &wrong),
        Err(RotateError::ConfirmationMismatch)
    ));
    assert!(active(&engine, r.refresh_token.expose()));
    crate::assert_check(&engine);
}

/// An unbound family ignores a presented confirmation.
pub fn an_unbound_family_ignores_a_presented_confirmation(backend: &dyn Backend) {
    let h = harness(backend);
    let engine = h.open();
    let tokens = chain(&engine, "web", 0);
    let mut req = RotateRequest::new("web");
    req.confirmation = Some("jkt-anything".into());
    let r = engine.rotate(&tokens[0], &req).unwrap();
    assert_eq!(r.generation, 1);
    assert_eq!(r.grant.confirmation, None);
}

/// Scope may narrow never widen.
pub fn scope_may_narrow_never_widen(backend: &dyn Backend) {
    let h = harness(backend);
    let engine = h.open();
    let tokens = chain(&engine, "web", 1);
    let full = scope("openid offline_access profile");
    let mut wide = RotateRequest::new("web");
    wide.scope = Some(scope("openid profile admin"));
    let mut narrow = RotateRequest::new("web");
    narrow.scope = Some(scope("openid"));

    // Widening is refused on the current token and on a grace retry, and
    // changes nothing.
    assert!(matches!(
        engine.rotate(&tokens[1], &wide),
        Err(RotateError::ScopeWidened)
    ));
    assert!(matches!(
        engine.rotate(&tokens[0], &wide),
        Err(RotateError::ScopeWidened)
    ));
    assert!(active(&engine, &tokens[1]));
    assert_eq!(engine.events(0, 100).unwrap(), vec![]);

    // Narrowing works: the access-token scope is the narrowed one, the grant is unchanged.
    let r = engine.rotate(&tokens[1], &narrow).unwrap();
    assert_eq!(r.scope, scope("openid"));
    assert_eq!(r.grant.scope, full);
    // A grace retry may narrow too, and still returns the same successor.
    let retry = engine.rotate(&tokens[1], &narrow).unwrap();
    assert!(retry.retried);
    assert_eq!(retry.refresh_token, r.refresh_token);
    assert_eq!(retry.scope, scope("openid"));
    // The next refresh without a scope gets the whole grant back.
    let next = engine
        .rotate(r.refresh_token.expose(), &RotateRequest::new("web"))
        .unwrap();
    assert_eq!(next.scope, full);
    assert_eq!(next.grant.scope, full);
    assert_eq!(
        engine.introspect(next.refresh_token.expose()).unwrap().scope,
        Some(full)
    );
    // The empty scope is a subset of everything.
    let mut empty = RotateRequest::new("web");
    empty.scope = Some(scope(""));
    let e = engine.rotate(next.refresh_token.expose(), &empty).unwrap();
    assert!(e.scope.is_empty());
}

/// Copies the database aside (the engine must be closed).
fn backup(h: &Harness) -> &'static str {
    h.db.backup("forgery");
    "forgery"
}

fn restore(h: &Harness, name: &str) {
    h.db.restore(name);
}

fn diverged_event(engine: &Engine) -> Option<(u32, u32)> {
    engine.events(0, 100).unwrap().into_iter().find_map(|e| match e.kind {
        EventKind::Diverged { presented, current } => Some((presented, current)),
        _ => None,
    })
}

/// Issue, back up, rotate twice, restore the backup; returns the tokens of
/// generations 0, 1 and 2 (the store is back at generation 0).
fn restored_backup(h: &Harness) -> Vec<String> {
    let engine = h.open();
    let t0 = chain(&engine, "web", 0).remove(0);
    drop(engine);
    let saved = backup(h);
    let engine = h.open();
    let r1 = engine.rotate(&t0, &RotateRequest::new("web")).unwrap();
    let r2 = engine
        .rotate(r1.refresh_token.expose(), &RotateRequest::new("web"))
        .unwrap();
    drop(engine);
    restore(h, saved);
    vec![
        t0,
        r1.refresh_token.expose().to_owned(),
        r2.refresh_token.expose().to_owned(),
    ]
}

/// A token ahead of a restored backup diverges.
pub fn a_token_ahead_of_a_restored_backup_diverges(backend: &dyn Backend) {
    for (presented, ahead_by) in [(2usize, 2u32), (1, 1)] {
        let h = harness(backend);
        let tokens = restored_backup(&h);
        let engine = h.open();
        assert!(active(&engine, &tokens[0]), "the backup's current token");
        let family = match engine.rotate(&tokens[presented], &RotateRequest::new("web")) {
            Err(RotateError::Diverged { family }) => family,
            other => panic!("token {ahead_by} ahead: {other:?}"),
        };
        assert_eq!(family, token::parse(tokens[0].as_bytes()).unwrap().family);
        // The family is revoked: its stored current token no longer works.
        assert!(!active(&engine, &tokens[0]));
        assert!(matches!(
            engine.rotate(&tokens[0], &RotateRequest::new("web")),
            Err(RotateError::Revoked(RevokeReason::Diverged))
        ));
        for t in &tokens {
            assert!(!active(&engine, t));
        }
        assert_eq!(diverged_event(&engine), Some((ahead_by, 0)));
        let sunk = h.sunk(&engine);
        assert!(
            sunk.iter()
                .any(|e| matches!(e.kind, EventKind::Diverged { .. }) && e.family == family),
            "the event sink got the Diverged event: {sunk:?}"
        );
        crate::assert_check(&engine);
    }
}

/// A forked token of the current generation diverges.
pub fn a_forked_token_of_the_current_generation_diverges(backend: &dyn Backend) {
    let h = harness(backend);
    let engine = h.open();
    let t0 = chain(&engine, "web", 0).remove(0);
    drop(engine);
    let saved = backup(&h);
    let engine = h.open();
    let a1 = engine.rotate(&t0, &RotateRequest::new("web")).unwrap();
    drop(engine);
    restore(&h, saved);
    let engine = h.open();
    let b1 = engine.rotate(&t0, &RotateRequest::new("web")).unwrap();
    assert_eq!(a1.generation, b1.generation);
    assert_ne!(a1.refresh_token, b1.refresh_token);
    assert!(matches!(
        engine.rotate(a1.refresh_token.expose(), &RotateRequest::new("web")),
        Err(RotateError::Diverged { .. })
    ));
    assert!(!active(&engine, b1.refresh_token.expose()));
    assert_eq!(diverged_event(&engine), Some((1, 1)));
}

/// A forked predecessor diverges instead of getting the successor.
pub fn a_forked_predecessor_diverges_instead_of_getting_the_successor(backend: &dyn Backend) {
    let h = harness(backend);
    let engine = h.open();
    let tokens = chain(&engine, "web", 1);
    drop(engine);
    let saved = backup(&h);
    let engine = h.open();
    let a2 = engine.rotate(&tokens[1], &RotateRequest::new("web")).unwrap();
    drop(engine);
    restore(&h, saved);
    let engine = h.open();
    let b2 = engine.rotate(&tokens[1], &RotateRequest::new("web")).unwrap();
    let b3 = engine
        .rotate(b2.refresh_token.expose(), &RotateRequest::new("web"))
        .unwrap();
    // a2 claims to be the predecessor of b3 (generation 2 of 3), within the
    // grace window, but it is not: it must not get b3.
    match engine.rotate(a2.refresh_token.expose(), &RotateRequest::new("web")) {
        Err(RotateError::Diverged { .. }) => {}
        other => panic!("forked predecessor: {other:?}"),
    }
    assert!(!active(&engine, b3.refresh_token.expose()));
    assert_eq!(diverged_event(&engine), Some((2, 3)));
}

/// Malformed inputs are malformed.
pub fn malformed_inputs_are_malformed(backend: &dyn Backend) {
    let h = harness(backend);
    let engine = h.open();
    let tokens = chain(&engine, "web", 1);
    let real = tokens[1].clone();
    let mut cases: Vec<(String, &str)> = vec![
        (String::new(), "empty"),
        ("x".repeat(10 * 1024), "10 KB"),
        ("rt1_".to_owned() + &"A".repeat(10 * 1024), "10 KB with the prefix"),
        ("hello world".into(), "garbage"),
        ("rt1_".to_owned() + &"!".repeat(80), "bad base64"),
        ("xx1_".to_owned() + &real[4..], "wrong prefix"),
        ("rt2_".to_owned() + &real[4..], "unknown version"),
        (real[..83].to_owned(), "truncated"),
        (real.clone() + "A", "extended"),
        (format!(" {}", &real[1..]), "leading space"),
        (String::from_utf8_lossy(&[0xff; 84]).into_owned(), "non-UTF-8 (lossy)"),
        (
            {
                let mut b = real.clone().into_bytes();
                b[40] = 0xC3;
                String::from_utf8_lossy(&b).into_owned()
            },
            "a real token with one non-UTF-8 byte (lossy)",
        ),
        (
            {
                let mut b = real.clone().into_bytes();
                b[30] = if b[30] == b'A' { b'B' } else { b'A' };
                String::from_utf8(b).unwrap()
            },
            "one-character typo (checksum)",
        ),
        (real.to_uppercase(), "case changed"),
    ];
    // A token with trailing newline, as read from a file.
    cases.push((real.clone() + "\n", "trailing newline"));
    for (input, what) in &cases {
        let got = engine.rotate(input, &RotateRequest::new("web"));
        assert!(matches!(got, Err(RotateError::Malformed(_))), "{what}: {got:?}");
        assert!(matches!(
            engine.revoke(RevokeTarget::Token(input)),
            Err(RevokeError::Malformed(_))
        ));
        assert!(!active(&engine, input), "{what}");
    }
    // The specific reasons for a few.
    assert!(matches!(
        engine.rotate("", &RotateRequest::new("web")),
        Err(RotateError::Malformed(ParseError::Length { expected: 84, found: 0 }))
    ));
    assert!(matches!(
        engine.rotate(&cases[12].0, &RotateRequest::new("web")),
        Err(RotateError::Malformed(ParseError::Checksum))
    ));
    assert_untouched(&engine, &tokens, "web");
}

/// Invalid request fields are refused before anything changes.
pub fn invalid_request_fields_are_refused_before_anything_changes(backend: &dyn Backend) {
    let h = harness(backend);
    let engine = h.open();
    let tokens = chain(&engine, "web", 2);
    for client in ["", "we\nb", &"c".repeat(300)] {
        // An old token: reuse, if the request were not refused first.
        let got = engine.rotate(&tokens[0], &RotateRequest::new(client));
        assert!(matches!(got, Err(RotateError::InvalidInput(_))), "{client:?}: {got:?}");
    }
    let mut req = RotateRequest::new("web");
    req.confirmation = Some(String::new());
    assert!(matches!(
        engine.rotate(&tokens[0], &req),
        Err(RotateError::InvalidInput(_))
    ));
    assert_untouched(&engine, &tokens, "web");
    // Grants are validated at issue.
    assert!(engine.issue(&Grant::new("", "web", scope("openid"))).is_err());
    assert!(engine.issue(&Grant::new("alice", "", scope("openid"))).is_err());
}
