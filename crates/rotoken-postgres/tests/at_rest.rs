//! P1 in PostgreSQL: a `pg_dump` of the database holds no token, secret,
//! authenticator, subject, client id, scope, metadata or confirmation, in
//! any encoding (bytea is dumped as hex, so every needle is looked for in
//! hex as well).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use common::{SECOND, Servers};
use rotoken::{Grant, RevokeTarget, RotateRequest, Scope};
use rotoken_postgres::testing;

struct Needles(Vec<(String, Vec<u8>)>);

fn hex(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().flat_map(|b| format!("{b:02x}").into_bytes()).collect()
}

impl Needles {
    /// `bytes` as they are, and as lowercase hex (how bytea is dumped).
    fn add(&mut self, label: impl Into<String>, bytes: impl Into<Vec<u8>>) {
        let (label, bytes) = (label.into(), bytes.into());
        assert!(bytes.len() >= 8, "needle too short to be meaningful");
        self.0.push((format!("{label} hex"), hex(&bytes)));
        self.0.push((label, bytes));
    }

    /// A string in UTF-8, UTF-16 and base64 at every alignment.
    fn add_text(&mut self, label: &str, s: &str) {
        self.add(format!("{label} utf-8"), s.as_bytes());
        let le: Vec<u8> = s.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let be: Vec<u8> = s.encode_utf16().flat_map(u16::to_be_bytes).collect();
        self.add(format!("{label} utf-16le"), le);
        self.add(format!("{label} utf-16be"), be);
        for (name, engine) in [
            ("base64", &STANDARD),
            ("base64 no pad", &STANDARD_NO_PAD),
            ("base64url", &URL_SAFE),
            ("base64url no pad", &URL_SAFE_NO_PAD),
        ] {
            for shift in 0..3 {
                let mut input = vec![0u8; shift];
                input.extend_from_slice(s.as_bytes());
                let enc = engine.encode(&input);
                self.add(
                    format!("{label} {name} shift {shift}"),
                    &enc.as_bytes()[4..enc.len() - 4],
                );
            }
        }
    }

    fn found_in(&self, haystack: &[u8]) -> Vec<String> {
        self.0
            .iter()
            .filter(|(_, n)| haystack.windows(n.len()).any(|w| w == n.as_slice()))
            .map(|(label, _)| label.clone())
            .collect()
    }
}

struct Family {
    subject: &'static str,
    client: &'static str,
    scope: &'static str,
    confirmation: Option<&'static str>,
    metadata: &'static str,
    rotations: usize,
}

const FAMILIES: &[Family] = &[
    Family {
        subject: "alice.zephyrine-4417@example.org",
        client: "client-quetzalcoatl-9931",
        scope: "openid offline_access photos.readMARMALADE",
        confirmation: Some("jkt-NjVkYzE0MDAtZmIyNC00Yjk1LWE5ZmQtVIOLET"),
        metadata: "acr=urn:mace:incommon:iap:silver;amr=hwk;session=PLATYPUS-2718281828",
        rotations: 0,
    },
    Family {
        subject: "bob.kazimierz-8803@example.net",
        client: "client-thunderbird-5521",
        scope: "openid offline_access calendar.writeTANGERINE",
        confirmation: None,
        metadata: "{\"device\":\"HELIOTROPE-phone-314159\",\"ip\":\"203.0.113.77\"}",
        rotations: 3,
    },
    Family {
        subject: "dmitri.vasquez-0071@example.org",
        client: "client-albatross-7782",
        scope: "openid offline_access drive.readVERMILION",
        confirmation: None,
        metadata: "note=revoked-family-GLAUCOUS-1414213562",
        rotations: 2,
    },
];

#[test]
fn a_pg_dump_holds_no_token_secret_or_grant_text() {
    let Some(db) = testing::database() else { return };
    let s = Servers::new(db);
    let engine = s.engine();
    let mut tokens: Vec<String> = Vec::new();
    let mut last = String::new();
    for f in FAMILIES {
        let mut grant =
            Grant::new(f.subject, f.client, Scope::parse(f.scope).unwrap()).with_metadata(f.metadata.as_bytes());
        if let Some(c) = f.confirmation {
            grant = grant.with_confirmation(c);
        }
        let mut current = engine.issue(&grant).unwrap().refresh_token.expose().to_owned();
        tokens.push(current.clone());
        let mut request = RotateRequest::new(f.client);
        request.confirmation = f.confirmation.map(str::to_owned);
        for _ in 0..f.rotations {
            s.advance_ms(SECOND);
            let r = engine.rotate(&current, &request).unwrap();
            assert!(engine.rotate(&current, &request).unwrap().retried);
            current = r.refresh_token.expose().to_owned();
            tokens.push(current.clone());
        }
        last = current;
    }
    // A revocation writes an event too.
    assert_eq!(engine.revoke(RevokeTarget::Token(&last)).unwrap(), 1);
    drop(engine);

    let mut needles = Needles(Vec::new());
    for (i, t) in tokens.iter().enumerate() {
        needles.add(format!("token {i}"), t.as_bytes());
        let body = t.strip_prefix(rotoken::token::PREFIX).unwrap();
        needles.add(format!("token {i} body prefix"), &body.as_bytes()[..40]);
        let parsed = rotoken::token::parse(t.as_bytes()).unwrap();
        needles.add(format!("token {i} secret"), parsed.secret.expose().as_slice());
        needles.add(format!("token {i} authenticator"), parsed.authenticator.as_slice());
        needles.add_text(
            &format!("token {i} secret base64"),
            &URL_SAFE_NO_PAD.encode(parsed.secret.expose()),
        );
    }
    for (i, f) in FAMILIES.iter().enumerate() {
        needles.add_text(&format!("family {i} subject"), f.subject);
        needles.add_text(&format!("family {i} client"), f.client);
        needles.add_text(&format!("family {i} metadata"), f.metadata);
        needles.add_text(&format!("family {i} scope"), f.scope.split(' ').next_back().unwrap());
        if let Some(c) = f.confirmation {
            needles.add_text(&format!("family {i} confirmation"), c);
        }
    }

    let dump = s.db.pg_dump().unwrap();
    assert!(
        dump.windows(b"COPY public.rotoken_families".len())
            .any(|w| w == b"COPY public.rotoken_families"),
        "the dump holds the families table"
    );
    let found = needles.found_in(&dump);
    assert!(found.is_empty(), "found in pg_dump: {found:#?}");

    // The scan finds what is there: a secret planted in a bytea column is found.
    let parsed = rotoken::token::parse(tokens[2].as_bytes()).unwrap();
    let secret = &parsed.secret;
    let planted = format!(
        "CREATE TABLE planted (b bytea); INSERT INTO planted VALUES ('\\x{}'::bytea)",
        String::from_utf8(hex(secret.expose())).unwrap()
    );
    s.db.sql().unwrap().execute(&planted).unwrap();
    let found = needles.found_in(&s.db.pg_dump().unwrap());
    assert!(found.iter().any(|l| l == "token 2 secret hex"), "{found:?}");
}
