//! P1, reliability checklist row 11: nothing usable at rest.
//!
//! Issues families with distinctive subjects, client ids, scopes,
//! confirmation thumbprints and metadata, rotates some, revokes one, closes
//! the engine and scans the raw database file for every token (all
//! generations), every token body and raw secret, and every grant string in
//! UTF-8, UTF-16LE and base64 forms.

use crate::{Backend, Harness, scope};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use rotoken::{Grant, RevokeTarget, RotateRequest};

/// The byte strings that must not appear in the file, with a label each.
struct Needles(Vec<(String, Vec<u8>)>);

impl Needles {
    /// Bytes, and their lower- and upper-case hex (a text dump shows
    /// binary columns as hex).
    fn add(&mut self, label: impl Into<String>, bytes: impl Into<Vec<u8>>) {
        let (label, bytes) = (label.into(), bytes.into());
        assert!(bytes.len() >= 8, "needle too short to be meaningful");
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.0.push((format!("{label} hex"), hex.clone().into_bytes()));
        self.0.push((format!("{label} HEX"), hex.to_uppercase().into_bytes()));
        self.0.push((label, bytes));
    }

    /// A string in UTF-8, UTF-16LE, UTF-16BE and base64 (at every 3-byte
    /// alignment, so it is found wherever it sits inside a larger encoded blob).
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
                // With `shift` unknown bytes before the string, the first
                // group and the last group depend on the neighbours; the
                // middle is fixed.
                let mut input = vec![0u8; shift];
                input.extend_from_slice(s.as_bytes());
                let enc = engine.encode(&input);
                let inner = &enc.as_bytes()[4..enc.len() - 4];
                self.add(format!("{label} {name} shift {shift}"), inner);
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
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
        subject: "carol.oyelaran-2209@example.com",
        client: "client-quetzalcoatl-9931",
        scope: "openid offline_access mail.sendCERULEAN",
        confirmation: Some("jkt-ZjJlNDc0YmEtOTI0OC00ZDIwLTk3ZDgtSAFFRON"),
        metadata: "tenant=OBSIDIAN-tenant-161803398;role=auditor",
        rotations: 7,
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

/// Store holds no token secret or grant text.
pub fn store_holds_no_token_secret_or_grant_text(backend: &dyn Backend) {
    let h = Harness::new(backend, crate::small_policy(1_000));
    let engine = h.open();
    let mut tokens: Vec<String> = Vec::new();
    let mut revoke_me = None;
    for (i, f) in FAMILIES.iter().enumerate() {
        let mut grant = Grant::new(f.subject, f.client, scope(f.scope)).with_metadata(f.metadata.as_bytes());
        if let Some(c) = f.confirmation {
            grant = grant.with_confirmation(c);
        }
        let issued = engine.issue(&grant).unwrap();
        let mut current = issued.refresh_token.expose().to_owned();
        tokens.push(current.clone());
        let mut request = RotateRequest::new(f.client);
        request.confirmation = f.confirmation.map(str::to_owned);
        for _ in 0..f.rotations {
            h.advance_ms(1_000);
            let r = engine.rotate(&current, &request).unwrap();
            // A grace retry too, so a successor is handed out twice.
            let again = engine.rotate(&current, &request).unwrap();
            assert!(again.retried);
            current = r.refresh_token.expose().to_owned();
            tokens.push(current.clone());
        }
        if i == 3 {
            revoke_me = Some(current.clone());
        }
    }
    assert_eq!(
        engine
            .revoke(RevokeTarget::Token(revoke_me.as_deref().unwrap()))
            .unwrap(),
        1
    );
    crate::assert_check(&engine);
    drop(engine);

    let mut needles = Needles(Vec::new());
    for (i, t) in tokens.iter().enumerate() {
        needles.add(format!("token {i}"), t.as_bytes());
        let body = t.strip_prefix(rotoken::token::PREFIX).unwrap();
        needles.add(format!("token {i} base64 body"), body.as_bytes());
        // The body with its checksum cut off, in case only a prefix is kept.
        needles.add(format!("token {i} base64 body prefix"), &body.as_bytes()[..40]);
        let parsed = rotoken::token::parse(t.as_bytes()).unwrap();
        needles.add(format!("token {i} secret"), parsed.secret.expose().as_slice());
        needles.add(format!("token {i} authenticator"), parsed.authenticator.as_slice());
        let hex: String = parsed.secret.expose().iter().map(|b| format!("{b:02x}")).collect();
        needles.add(format!("token {i} secret hex"), hex.as_bytes());
        needles.add_text(
            &format!("token {i} secret base64"),
            &URL_SAFE_NO_PAD.encode(parsed.secret.expose()),
        );
    }
    for (i, f) in FAMILIES.iter().enumerate() {
        needles.add_text(&format!("family {i} subject"), f.subject);
        needles.add_text(&format!("family {i} client"), f.client);
        needles.add_text(&format!("family {i} metadata"), f.metadata);
        // Scopes are sealed too; the distinctive token is enough to find them.
        let distinctive = f.scope.split(' ').next_back().unwrap();
        needles.add_text(&format!("family {i} scope"), distinctive);
        needles.add_text(&format!("family {i} scope string"), &scope(f.scope).to_string());
        if let Some(c) = f.confirmation {
            needles.add_text(&format!("family {i} confirmation"), c);
        }
    }

    let bytes = h.db.at_rest();
    assert!(bytes.len() > 4096, "the database was written");
    let found: Vec<String> = needles
        .0
        .iter()
        .filter_map(|(label, n)| find(&bytes, n).map(|at| format!("{label} at offset {at}")))
        .collect();
    assert!(
        found.is_empty(),
        "found in what the {} store holds at rest: {found:#?}",
        backend.name()
    );

    // The scan itself can find things: the same bytes planted in a copy are found.
    let mut planted = bytes.clone();
    let secret = rotoken::token::parse(tokens[5].as_bytes()).unwrap();
    planted[1000..1016].copy_from_slice(secret.secret.expose());
    assert!(find(&planted, secret.secret.expose()).is_some());
}
