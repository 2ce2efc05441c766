//! The seed corpora: a few dozen meaningful inputs per target, made from a
//! live engine where they should be real (tokens, records, events, grant
//! plaintext) and by hand where they should be near misses. Written to
//! `fuzz/corpus/<target>/seed-*` by `cargo run -p rotoken-fuzz --bin
//! rotoken-fuzz-seeds`; the files are committed, so regenerating them is
//! only needed when the formats change.

use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable};
use rotoken::record::FamilyRecord;
use rotoken::{Engine, Keyring, ManualClock, RevokeTarget, RotateRequest};

use crate::backend::SharedMemory;
use crate::engine_target::{Op, ScopeReq, Step, encode_ops};
use crate::fixture::{self, T0};
use crate::raw;

/// One seed: the target it feeds, a file name, the bytes.
pub type Seed = (&'static str, String, Vec<u8>);

/// The token from `docs/token-format.md`.
const DOC_EXAMPLE: &str = "rt1_AAAAATjUTJHRL5Am7KC9SNBIvFIAAAAAi7CzSDXbzR-OEVTtJPSCg_6jBAZ2hOi_dd6QwRhuIFAu5Tcr";

/// Every seed of every target.
///
/// # Panics
///
/// If the engine fails on a fresh in-memory database.
pub fn seed_corpus() -> Vec<Seed> {
    let mut out = Vec::new();
    token_seeds(&mut out);
    record_seeds(&mut out);
    engine_seeds(&mut out);
    http_seeds(&mut out);
    out
}

/// What a small live engine produced: tokens, stored values, events.
struct Live {
    tokens: Vec<String>,
    key2_token: String,
    values: Vec<Vec<u8>>,
    events: Vec<Vec<u8>>,
}

fn live() -> Live {
    let mem = SharedMemory::new();
    let clock = ManualClock::at_unix_millis(T0);
    let engine = Engine::open_with_backend(mem.clone(), fixture::keyring(), fixture::options(&clock)).expect("open");
    let mut tokens = Vec::new();
    let a = engine.issue(&fixture::grant("alice", "web")).expect("issue");
    tokens.push(a.refresh_token.expose().to_owned());
    let r1 = engine
        .rotate(a.refresh_token.expose(), &RotateRequest::new("web"))
        .expect("rotate");
    tokens.push(r1.refresh_token.expose().to_owned());
    let b = engine
        .issue(
            &fixture::grant("bob", "cli")
                .with_confirmation("jkt-1")
                .with_metadata(b"meta".to_vec()),
        )
        .expect("issue");
    tokens.push(b.refresh_token.expose().to_owned());
    let c = engine.issue(&fixture::grant("carol", "web")).expect("issue");
    clock.advance(Duration::from_secs(60));
    // Reuse of alice's first token revokes her family; carol is revoked by hand.
    let _ = engine.rotate(a.refresh_token.expose(), &RotateRequest::new("web"));
    engine.revoke(RevokeTarget::Family(c.family)).expect("revoke");
    clock.advance(Duration::from_secs(4 * 3_600));
    engine.gc(10).expect("gc");
    drop(engine);
    // A token signed by key 2.
    let mut text = fixture::TEST_KEY_FILE.replace("active 1", "active 2");
    text.push('\n');
    let keys2 = Keyring::from_bytes(text.as_bytes()).expect("keys");
    let mem2 = SharedMemory::new();
    let e2 = Engine::open_with_backend(mem2, keys2, fixture::options(&clock)).expect("open");
    let key2_token = e2
        .issue(&fixture::grant("dave", "web"))
        .expect("issue")
        .refresh_token
        .expose()
        .to_owned();
    drop(e2);
    let db = Database::builder().create_with_backend(mem).expect("raw open");
    let values = raw::families(&db)
        .expect("families")
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    let read = db.begin_read().expect("read");
    let events = read
        .open_table(raw::EVENTS)
        .expect("events")
        .iter()
        .expect("iter")
        .map(|e| e.expect("event").1.value().to_vec())
        .collect();
    Live {
        tokens,
        key2_token,
        values,
        events,
    }
}

fn token_seeds(out: &mut Vec<Seed>) {
    let live = live();
    let mut add = |name: &str, bytes: Vec<u8>| out.push(("token", format!("seed-{name}"), bytes));
    for (i, t) in live.tokens.iter().enumerate() {
        add(&format!("valid-{i}"), t.clone().into_bytes());
    }
    add("valid-key2", live.key2_token.into_bytes());
    add("doc-example", DOC_EXAMPLE.as_bytes().to_vec());
    let t = live.tokens[0].clone();
    add("empty", Vec::new());
    add("prefix-only", b"rt1_".to_vec());
    add("short-by-one", t.as_bytes()[..83].to_vec());
    add("long-by-one", format!("{t}A").into_bytes());
    add("version-2", t.replacen("rt1_", "rt2_", 1).into_bytes());
    add("version-2-short", b"rt2_abc".to_vec());
    add("other-prefix", t.replacen("rt1_", "xt1_", 1).into_bytes());
    add("uppercase-prefix", t.replacen("rt1_", "RT1_", 1).into_bytes());
    let mut b = t.clone().into_bytes();
    b[40] = b'=';
    add("padding-char", b);
    let mut b = t.clone().into_bytes();
    b[40] = b'+';
    add("standard-base64-char", b);
    let mut b = t.clone().into_bytes();
    b[20] = if b[20] == b'A' { b'B' } else { b'A' };
    add("checksum-typo", b);
    let mut b = t.clone().into_bytes();
    let last = b.len() - 1;
    b[last] = if b[last] == b'A' { b'B' } else { b'A' };
    add("last-char-typo", b);
    add("forged-bit", crate::forge(&t, 200).into_bytes());
    add("forged-key-id", crate::forge(&t, 31).into_bytes());
    add("bearer", format!("Bearer {t}").into_bytes());
    add("newline", format!("{t}\n").into_bytes());
    add("percent-encoded", t.replace('_', "%5F").into_bytes());
    let mut b = t.clone().into_bytes();
    b[50] = 0xff;
    add("non-utf8", b);
    let mut b = t.into_bytes();
    b[60] = 0;
    add("nul-byte", b);
    add("long-10k", vec![b'A'; 10 * 1024]);
    add("family-id", b"38d44c91d12f9026eca0bd48d048bc52".to_vec());
    add("family-id-upper", b"38D44C91D12F9026ECA0BD48D048BC52".to_vec());
    add("family-id-bad", b"38d44c91d12f9026eca0bd48d048bcxx".to_vec());
    add("family-id-unicode", "é".repeat(16).into_bytes());
}

fn record_seeds(out: &mut Vec<Seed>) {
    let live = live();
    let t = crate::template();
    let mut add = |name: &str, mode: u8, bytes: &[u8]| {
        let mut v = vec![mode];
        v.extend_from_slice(bytes);
        out.push(("records", format!("seed-{name}"), v));
    };
    let (body, _) = raw::split_value(&t.value).expect("template value");
    // Mode 0: the pure decoders.
    add("decode-template-body", 0, body);
    for (i, v) in live.values.iter().enumerate() {
        let (b, _) = raw::split_value(v).expect("value");
        add(&format!("decode-live-body-{i}"), 0, b);
    }
    for (i, e) in live.events.iter().enumerate() {
        add(&format!("decode-event-{i}"), 0, e);
    }
    add("decode-truncated-body", 0, &body[..body.len() / 2]);
    add("decode-empty", 0, &[]);
    // Mode 1: a body under a valid MAC.
    add("plant-template-body", 1, body);
    let rec = FamilyRecord::decode(body).expect("template record");
    let mut revoked = rec.clone();
    revoked.state = rotoken::FamilyState::Revoked(rotoken::RevokeReason::Family);
    revoked.sealed_successor = None;
    add("plant-revoked", 1, &revoked.encode());
    let mut ahead = rec.clone();
    ahead.generation = 5;
    add("plant-generation-ahead", 1, &ahead.encode());
    let mut expired = rec.clone();
    expired.expires_at = T0;
    add("plant-expired", 1, &expired.encode());
    let mut no_successor = rec.clone();
    no_successor.sealed_successor = None;
    add("plant-no-successor", 1, &no_successor.encode());
    let mut bad_grant = rec.clone();
    bad_grant.sealed_grant[10] ^= 1;
    add("plant-bad-grant-tag", 1, &bad_grant.encode());
    let mut short_grant = rec.clone();
    short_grant.sealed_grant.truncate(10);
    add("plant-short-grant", 1, &short_grant.encode());
    let mut key2 = rec.clone();
    key2.sealed_grant[3] = 2;
    add("plant-grant-key-2", 1, &key2.encode());
    let mut key9 = rec;
    key9.sealed_grant[3] = 9;
    add("plant-grant-unknown-key", 1, &key9.encode());
    add("plant-truncated", 1, &body[..40]);
    // Mode 2: the stored value as it is.
    add("value-template", 2, &t.value);
    let mut flipped = t.value.clone();
    flipped[30] ^= 0x10;
    add("value-flipped", 2, &flipped);
    add("value-short", 2, &t.value[..10]);
    add("value-empty", 2, &[]);
    // Mode 3: grant plaintext sealed into a valid record.
    let g = fixture::grant(t.subject, t.client).with_confirmation("jkt-1");
    let plain = raw::encode_grant(&g);
    add("grant-template", 3, &plain);
    let mut v = plain.clone();
    v[0] = 2;
    add("grant-version-2", 3, &v);
    let mut v = plain.clone();
    v[5] = 0xff;
    add("grant-bad-utf8-subject", 3, &v);
    let mut v = plain.clone();
    v[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
    add("grant-huge-length", 3, &v);
    let mut v = plain.clone();
    v.push(0);
    add("grant-trailing", 3, &v);
    add(
        "grant-other-subject",
        3,
        &raw::encode_grant(&fixture::grant("mallory", t.client)),
    );
    let bad_scope = rotoken::Grant {
        scope: rotoken::Scope::parse("openid").expect("scope"),
        ..g
    };
    let mut v = raw::encode_grant(&bad_scope);
    let at = v.windows(6).position(|w| w == b"openid").expect("scope text");
    v[at] = b'"';
    add("grant-invalid-scope", 3, &v);
    add("grant-empty", 3, &[]);
}

/// An issue of a family of `subject` and `client`, not bound to a key.
const fn issue(subject: u8, client: u8) -> Op {
    Op::Issue {
        subject,
        client,
        bound: false,
    }
}

/// An issue of a family of `subject` and `client`, bound to a key.
const fn issue_bound(subject: u8, client: u8) -> Op {
    Op::Issue {
        subject,
        client,
        bound: true,
    }
}

/// Rotating the first family's current token.
const fn rotate(scope: ScopeReq) -> Op {
    Op::RotateCurrent { fam: 0, scope }
}

/// Presenting the first family's predecessor token.
const fn predecessor(scope: ScopeReq) -> Op {
    Op::RotatePredecessor { fam: 0, scope }
}

/// Presenting the first family's generation-`generation` token as another client.
const fn wrong_client(generation: u8, other: u8) -> Op {
    Op::RotateWrongClient {
        fam: 0,
        generation,
        other,
    }
}

/// Presenting a forgery (bit `bit`) of the first family's first token.
const fn forged(bit: u16) -> Op {
    Op::RotateForged {
        fam: 0,
        generation: 0,
        bit,
    }
}

fn engine_seeds(out: &mut Vec<Seed>) {
    use Op::*;
    use ScopeReq::*;
    let seqs: Vec<(&str, Vec<Op>)> = vec![
        (
            "grace-then-reuse",
            vec![
                issue(0, 0),
                rotate(Full),
                predecessor(Full),
                Reopen,
                rotate(Narrow),
                RotateOlder { fam: 0, back: 0 },
                rotate(Full),
            ],
        ),
        (
            "bound-family",
            vec![
                issue_bound(1, 1),
                RotateWrongKey { fam: 0, none: true },
                RotateWrongKey { fam: 0, none: false },
                rotate(Full),
                RotateRace { fam: 0, n: 2 },
                Introspect { fam: 0, generation: 2 },
            ],
        ),
        (
            "race",
            vec![
                issue(0, 0),
                RotateRace { fam: 0, n: 1 },
                RotateRace { fam: 0, n: 0 },
                Advance(Step::GraceEdge(1)),
                predecessor(Full),
            ],
        ),
        (
            "revoke-by-index",
            vec![
                issue(0, 0),
                issue(0, 1),
                issue_bound(1, 1),
                Sessions { subject: 0 },
                RevokeClient { client: 1 },
                RevokeSubject { subject: 0 },
                Sessions { subject: 0 },
                Gc { limit: 4 },
                Advance(Step::Minutes(121)),
                Gc { limit: 1 },
                Gc { limit: 4 },
            ],
        ),
        (
            "generation-limit",
            std::iter::once(issue(2, 2))
                .chain((0..7).map(|_| rotate(Full)))
                .chain([predecessor(Full)])
                .collect(),
        ),
        (
            "idle-expiry",
            vec![
                issue(0, 0),
                Advance(Step::IdleEdge(-1)),
                rotate(Full),
                Advance(Step::IdleEdge(0)),
                rotate(Full),
                Introspect { fam: 0, generation: 1 },
                Gc { limit: 2 },
                Sessions { subject: 0 },
            ],
        ),
        (
            "absolute-expiry-and-retention",
            vec![
                issue(0, 0),
                issue(1, 0),
                RevokeFamily { fam: 1 },
                Advance(Step::Minutes(59)),
                rotate(Full),
                Advance(Step::Minutes(59)),
                rotate(Full),
                Advance(Step::Minutes(59)),
                rotate(Full),
                Advance(Step::Minutes(5)),
                rotate(Full),
                Gc { limit: 3 },
                Advance(Step::Far),
                Gc { limit: 3 },
                Reopen,
            ],
        ),
        (
            "grace-edge",
            vec![
                issue(0, 0),
                rotate(Full),
                Advance(Step::GraceEdge(-1)),
                predecessor(Narrow),
                predecessor(Wide),
                Advance(Step::Millis(1)),
                predecessor(Full),
            ],
        ),
        (
            "forgeries-and-strangers",
            vec![
                issue(0, 0),
                forged(5),
                forged(300),
                forged(460),
                wrong_client(0, 0),
                rotate(Full),
                wrong_client(0, 1),
                rotate(Full),
            ],
        ),
        (
            "revoke-by-old-token",
            vec![
                issue(0, 0),
                rotate(Full),
                rotate(Full),
                RevokeToken { fam: 0, generation: 0 },
                rotate(Full),
                RevokeToken { fam: 0, generation: 2 },
                Introspect { fam: 0, generation: 2 },
            ],
        ),
        (
            "reopen-between-steps",
            vec![
                issue_bound(0, 0),
                Reopen,
                rotate(Full),
                Reopen,
                predecessor(Full),
                Reopen,
                RotateOlder { fam: 0, back: 0 },
                Reopen,
                Introspect { fam: 0, generation: 1 },
            ],
        ),
        (
            "many-families",
            (0..12u8)
                .map(|i| Issue {
                    subject: i,
                    client: i / 3,
                    bound: i % 2 == 0,
                })
                .chain([
                    RevokeSubject { subject: 1 },
                    RotateCurrent { fam: 5, scope: Full },
                    RevokeClient { client: 0 },
                    Sessions { subject: 2 },
                    Advance(Step::Minutes(200)),
                    Gc { limit: 4 },
                    Gc { limit: 4 },
                    Gc { limit: 4 },
                    Reopen,
                ])
                .collect(),
        ),
        (
            "scopes",
            vec![
                issue(0, 0),
                rotate(Narrow),
                rotate(Wide),
                predecessor(Wide),
                predecessor(Narrow),
                rotate(Full),
            ],
        ),
        (
            "reuse-exactly-at-grace-end",
            vec![
                issue(0, 0),
                rotate(Full),
                Advance(Step::GraceEdge(0)),
                predecessor(Full),
                rotate(Full),
                Introspect { fam: 0, generation: 1 },
            ],
        ),
        (
            "revoked-then-presented",
            vec![
                issue(0, 0),
                rotate(Full),
                RevokeFamily { fam: 0 },
                rotate(Full),
                predecessor(Full),
                RevokeFamily { fam: 0 },
                Advance(Step::Minutes(121)),
                Gc { limit: 1 },
                rotate(Full),
                RevokeToken { fam: 0, generation: 1 },
            ],
        ),
        (
            "gc-reschedules-live-families",
            vec![
                issue(0, 0),
                Advance(Step::Minutes(50)),
                rotate(Full),
                Advance(Step::Minutes(15)),
                Gc { limit: 1 },
                Gc { limit: 1 },
                Advance(Step::Minutes(50)),
                Gc { limit: 1 },
                Introspect { fam: 0, generation: 1 },
            ],
        ),
        (
            "strangers-never-revoke",
            vec![
                issue(0, 2),
                rotate(Full),
                rotate(Full),
                wrong_client(0, 0),
                wrong_client(1, 1),
                rotate(Full),
            ],
        ),
        (
            "race-at-the-limit",
            std::iter::once(issue(0, 0))
                .chain((0..5).map(|_| rotate(Full)))
                .chain([RotateRace { fam: 0, n: 2 }, predecessor(Full)])
                .collect(),
        ),
    ];
    for (name, ops) in seqs {
        out.push(("engine_ops", format!("seed-{name}"), encode_ops(&ops)));
    }
    // A few longer pseudo-random sequences, biased towards rotations.
    let mut rng = crate::rng::Rng::new(0x5eed);
    for n in 0..10 {
        let mut bytes = Vec::new();
        for _ in 0..40 {
            bytes.push(1);
            // Bias the variant towards issue and rotations, then random fields.
            let v: u32 = match rng.below(10) {
                0 | 1 => 0,
                2..=5 => (1u64 << 32).div_ceil(17) as u32,
                _ => rng.next_u64() as u32,
            };
            bytes.extend_from_slice(&v.to_le_bytes());
            bytes.extend_from_slice(&rng.next_u64().to_le_bytes()[..4]);
        }
        out.push(("engine_ops", format!("seed-random-{n}"), bytes));
    }
}

/// A refresh by the public client `spa` of the token `token` (a placeholder,
/// see [`crate::PLACEHOLDERS`]).
fn spa_refresh(token: &str) -> String {
    format!("grant_type=refresh_token&client_id=spa&refresh_token={token}")
}

fn http_seeds(out: &mut Vec<Seed>) {
    // Selector bytes: method, path, content type, authorization, extra
    // header (see `rotoken_fuzz::http`); then the body.
    const FORM: u8 = 1;
    // A form POST to the token endpoint, without authorization or extra header.
    const POST: [u8; 5] = [0, 0, FORM, 0, 0];
    let web = crate::WEB_SECRET;
    let basic_w = || "grant_type=refresh_token&refresh_token=$W".to_owned();
    let seeds: Vec<(&str, [u8; 5], String)> = vec![
        ("refresh-public", POST, spa_refresh("$R")),
        ("grace-retry", POST, spa_refresh("$P")),
        ("revoked-family", POST, spa_refresh("$X")),
        ("refresh-basic", [0, 0, FORM, 1, 0], basic_w()),
        ("refresh-wrong-secret", [0, 0, FORM, 2, 0], basic_w()),
        (
            "refresh-secret-post",
            POST,
            format!("grant_type=refresh_token&client_id=web&client_secret={web}&refresh_token=$W"),
        ),
        (
            "other-client",
            [0, 0, FORM, 1, 0],
            "grant_type=refresh_token&refresh_token=$R".into(),
        ),
        (
            "narrow-scope",
            POST,
            "grant_type=refresh_token&client_id=spa&scope=openid&refresh_token=$R".into(),
        ),
        (
            "wide-scope",
            POST,
            "grant_type=refresh_token&client_id=spa&scope=admin&refresh_token=$R".into(),
        ),
        ("duplicate-parameter", POST, spa_refresh("$R&refresh_token=$P")),
        (
            "bad-percent",
            POST,
            "grant_type=refresh%zztoken&client_id=spa&refresh_token=$R".into(),
        ),
        (
            "plus-and-percent",
            POST,
            "grant_type=refresh%5Ftoken&client_id=sp%61&refresh_token=$R+".into(),
        ),
        ("empty-body", POST, String::new()),
        ("no-content-type", [0, 0, 0, 0, 0], spa_refresh("$R")),
        (
            "json-body",
            [0, 0, 4, 0, 0],
            "{\"grant_type\":\"refresh_token\",\"refresh_token\":\"$R\"}".into(),
        ),
        ("get-token", [1, 0, FORM, 0, 0], String::new()),
        (
            "other-grant",
            POST,
            "grant_type=authorization_code&code=x&client_id=spa".into(),
        ),
        ("long-token", POST, spa_refresh(&"A".repeat(10_240))),
        (
            "revoke",
            [0, 1, FORM, 0, 0],
            "token=$R&token_type_hint=refresh_token&client_id=spa".into(),
        ),
        (
            "revoke-garbage",
            [0, 1, FORM, 0, 0],
            "token=rt1_garbage&client_id=spa".into(),
        ),
        ("introspect", [0, 2, FORM, 3, 0], "token=$R".into()),
        (
            "introspect-unauthorised",
            [0, 2, FORM, 0, 0],
            "token=$R&client_id=spa".into(),
        ),
        ("metadata", [1, 3, 0, 0, 0], String::new()),
        ("jwks", [1, 4, 0, 0, 0], String::new()),
        ("unknown-path", [0, 5, FORM, 0, 0], "x=y".into()),
        (
            "own-authorization-header",
            [0, 0, FORM, 6, 0],
            format!("Basic d2ViOg==\ngrant_type=refresh_token&refresh_token=$W&x={web}"),
        ),
        (
            "bearer-header",
            [0, 0, FORM, 7, 0],
            "Bearer $R\ngrant_type=refresh_token&refresh_token=$R".into(),
        ),
        (
            "dpop-garbage",
            [0, 0, FORM, 0, 1],
            format!("eyJhbGciOiJFUzI1NiJ9.e30.AAAA\n{}", spa_refresh("$R")),
        ),
        ("two-dpop-headers", [0, 0, FORM, 0, 5], spa_refresh("$R")),
        ("two-content-types", [0, 0, 6, 0, 2], spa_refresh("$R")),
    ];
    for (name, head, body) in seeds {
        let mut v = head.to_vec();
        v.extend_from_slice(body.as_bytes());
        out.push(("http", format!("seed-{name}"), v));
    }
    let mut v = vec![0, 0, FORM, 0, 0];
    v.extend_from_slice(b"grant_type=refresh_token&client_id=\xff\xfe&refresh_token=$R");
    out.push(("http", "seed-non-utf8".into(), v));
}
