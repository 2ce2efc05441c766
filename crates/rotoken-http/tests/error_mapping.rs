//! The public mapping from core errors to OAuth errors, row by row: what a
//! server calling the engine directly answers with `OAuthError::from`.
#![allow(clippy::unwrap_used)]

use rotoken::{
    Code, ExpiryKind, FamilyId, InvalidInput, KeyError, OpenError, ParseError, RevokeError, RevokeReason, RotateError,
    StoreError,
};
use rotoken_http::{DpopError, ErrorCode, IssueTokensError, MintError, OAuthError};

/// One row: the error's OAuth code, its status, the start of its
/// description (its stable cause), and the core code it remembers.
fn row(e: &OAuthError) -> (&'static str, u16, String, Option<Code>) {
    let cause = e.description().split(':').next().unwrap_or_default().to_owned();
    (e.code().as_str(), e.status().as_u16(), cause, e.core_code())
}

fn expect(e: impl Into<OAuthError>, code: &str, status: u16, cause: &str, core: Option<Code>) {
    let e = e.into();
    let (c, s, d, k) = row(&e);
    assert_eq!((c, s, k), (code, status, core), "{e}");
    if !cause.is_empty() {
        assert_eq!(d, cause, "{e}");
    }
    // Every answer is a valid RFC 6749 §5.2 body.
    let json: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
    assert_eq!(json["error"], code);
}

fn family() -> FamilyId {
    "000102030405060708090a0b0c0d0e0f".parse().unwrap()
}

fn corrupt() -> StoreError {
    StoreError::Corrupt {
        table: "families",
        reason: "bad MAC".into(),
    }
}

#[test]
fn rotate_errors_map_to_invalid_grant_with_a_stable_cause_and_storage_to_500() {
    let f = family();
    let bad = "refresh_token_invalid";
    expect(
        RotateError::Malformed(ParseError::Prefix),
        "invalid_grant",
        400,
        bad,
        Some(Code::InvalidToken),
    );
    expect(
        RotateError::InvalidToken,
        "invalid_grant",
        400,
        bad,
        Some(Code::InvalidToken),
    );
    expect(
        RotateError::Unknown,
        "invalid_grant",
        400,
        bad,
        Some(Code::UnknownToken),
    );
    expect(
        RotateError::InvalidInput(InvalidInput::Empty("client_id")),
        "invalid_request",
        400,
        "",
        Some(Code::InvalidInput),
    );
    expect(
        RotateError::Revoked(RevokeReason::Subject),
        "invalid_grant",
        400,
        "session_revoked",
        Some(Code::Revoked),
    );
    expect(
        RotateError::ClientMismatch,
        "invalid_grant",
        400,
        "client_mismatch",
        Some(Code::ClientMismatch),
    );
    expect(
        RotateError::ConfirmationMismatch,
        "invalid_grant",
        400,
        "dpop_key_mismatch",
        Some(Code::ConfirmationMismatch),
    );
    expect(
        RotateError::Expired { kind: ExpiryKind::Idle },
        "invalid_grant",
        400,
        "session_expired",
        Some(Code::Expired),
    );
    expect(
        RotateError::ReuseDetected { family: f },
        "invalid_grant",
        400,
        "refresh_token_reused",
        Some(Code::ReuseDetected),
    );
    expect(
        RotateError::Diverged { family: f },
        "invalid_grant",
        400,
        "refresh_token_diverged",
        Some(Code::Diverged),
    );
    expect(
        RotateError::ScopeWidened,
        "invalid_scope",
        400,
        "",
        Some(Code::ScopeWidened),
    );
    expect(
        RotateError::TooManyGenerations,
        "invalid_grant",
        400,
        "refresh_limit_reached",
        Some(Code::TooManyGenerations),
    );
    expect(
        RotateError::Store(corrupt()),
        "server_error",
        500,
        "",
        Some(Code::Corrupt),
    );
}

#[test]
fn the_caller_can_still_ask_whether_a_family_was_revoked_and_whose_fault_it_was() {
    let reused = OAuthError::from(RotateError::ReuseDetected { family: family() });
    let code = reused.core_code().unwrap();
    assert!(code.revoked_a_family() && code.is_client_error());
    let expired = OAuthError::from(RotateError::Expired {
        kind: ExpiryKind::Absolute,
    });
    assert!(!expired.core_code().unwrap().revoked_a_family());
    let storage = OAuthError::from(StoreError::Unavailable("shutting down"));
    assert!(!storage.core_code().unwrap().is_client_error());
    assert!(storage.core_code().unwrap().is_retryable());
    // Errors made here, not from the core, carry no core code.
    assert_eq!(OAuthError::invalid_request("x").core_code(), None);
}

#[test]
fn revoke_errors_map_like_rotation_except_another_clients_token() {
    expect(
        RevokeError::ClientMismatch,
        "unauthorized_client",
        400,
        "",
        Some(Code::ClientMismatch),
    );
    expect(
        RevokeError::Malformed(ParseError::Checksum),
        "invalid_grant",
        400,
        "refresh_token_invalid",
        Some(Code::InvalidToken),
    );
    expect(
        RevokeError::InvalidToken,
        "invalid_grant",
        400,
        "refresh_token_invalid",
        Some(Code::InvalidToken),
    );
    expect(
        RevokeError::InvalidInput(InvalidInput::ScopeCharacter),
        "invalid_request",
        400,
        "",
        Some(Code::InvalidInput),
    );
    expect(
        RevokeError::Store(StoreError::Conflict("retried".into())),
        "temporarily_unavailable",
        503,
        "store_unavailable",
        Some(Code::StorageError),
    );
}

/// Store trouble a retry may cure is 503 `temporarily_unavailable` with
/// `Retry-After`, never `invalid_grant` and never a bare 500; damaged data,
/// wrong keys and the like stay 500 `server_error`.
#[test]
fn retryable_store_errors_are_503_and_the_rest_server_errors() {
    let io = StoreError::storage(std::io::Error::other("disk full"));
    for (e, code, cause) in [
        (io.clone(), Code::StorageError, "store_unavailable"),
        (
            StoreError::Conflict("x".into()),
            Code::StorageError,
            "store_unavailable",
        ),
        (StoreError::Unavailable("gone"), Code::Unavailable, "store_unavailable"),
        (StoreError::Busy("row lock".into()), Code::Busy, "busy"),
        (StoreError::DeadlinePassed, Code::DeadlinePassed, "deadline_passed"),
        (
            StoreError::outcome_unknown(std::io::Error::other("connection reset")),
            Code::OutcomeUnknown,
            "outcome_unknown",
        ),
    ] {
        let answer = OAuthError::from(e.clone()).into_response();
        assert_eq!(answer.headers()[http::header::RETRY_AFTER], "1");
        expect(e.clone(), "temporarily_unavailable", 503, cause, Some(code));
        expect(RotateError::Store(e), "temporarily_unavailable", 503, cause, Some(code));
    }
    expect(corrupt(), "server_error", 500, "", Some(Code::Corrupt));
    assert!(
        !OAuthError::from(corrupt())
            .into_response()
            .headers()
            .contains_key(http::header::RETRY_AFTER)
    );
    for (e, code) in [
        (OpenError::Locked, Code::Locked),
        (OpenError::NotRotoken, Code::NotRotoken),
        (
            OpenError::UnsupportedSchema { found: 9, supported: 1 },
            Code::UnsupportedSchema,
        ),
        (OpenError::WrongKeys, Code::WrongKeys),
        (OpenError::InvalidPolicy("grace".into()), Code::InvalidPolicy),
    ] {
        expect(e, "server_error", 500, "", Some(code));
    }
    expect(
        OpenError::Store(io.clone()),
        "temporarily_unavailable",
        503,
        "store_unavailable",
        Some(Code::StorageError),
    );
    expect(
        rotoken::IssueError::InvalidInput(InvalidInput::Empty("subject")),
        "invalid_request",
        400,
        "",
        Some(Code::InvalidInput),
    );
    expect(
        rotoken::IssueError::Store(io),
        "temporarily_unavailable",
        503,
        "store_unavailable",
        Some(Code::StorageError),
    );
    expect(
        rotoken::Error::Keys(KeyError::RetireActive(1)),
        "server_error",
        500,
        "",
        Some(Code::RetireActive),
    );
    expect(
        rotoken::Error::Rotate(RotateError::Unknown),
        "invalid_grant",
        400,
        "refresh_token_invalid",
        Some(Code::UnknownToken),
    );
}

#[test]
fn http_issue_mint_and_dpop_errors_convert_too() {
    expect(IssueTokensError::UnknownClient, "invalid_client", 401, "", None);
    expect(
        IssueTokensError::Mint(MintError::Signing("hsm down".into())),
        "server_error",
        500,
        "",
        None,
    );
    expect(
        IssueTokensError::Core(rotoken::IssueError::InvalidInput(InvalidInput::Empty("scope"))),
        "invalid_request",
        400,
        "",
        Some(Code::InvalidInput),
    );
    expect(DpopError::UseNonce, "use_dpop_nonce", 400, "", None);
    expect(DpopError::Replayed, "invalid_dpop_proof", 400, "", None);
    expect(DpopError::NonceUnavailable, "server_error", 500, "", None);
    // invalid_client carries its challenge.
    let r = OAuthError::from(IssueTokensError::UnknownClient).into_response();
    assert!(r.headers().contains_key(http::header::WWW_AUTHENTICATE));
    assert_eq!(OAuthError::from_code(Code::Corrupt).code(), ErrorCode::ServerError);
}

/// A server's own handler calling the core directly: `?` is the whole mapping.
#[test]
fn a_handler_calling_the_engine_directly_answers_with_question_marks() {
    fn refresh(engine: &rotoken::Engine, token: &str) -> Result<String, OAuthError> {
        let rotated = engine.rotate(token, &rotoken::RotateRequest::new("web"))?;
        Ok(rotated.refresh_token.expose().to_owned())
    }
    let engine =
        rotoken::Engine::in_memory(rotoken::Keyring::generate().unwrap(), rotoken::Options::default()).unwrap();
    let grant = rotoken::Grant::new("alice", "web", rotoken::Scope::parse("offline_access").unwrap());
    let first = engine.issue(&grant).unwrap();
    let token = first.refresh_token.expose();
    assert!(refresh(&engine, token).is_ok());
    let e = refresh(&engine, "rt1_not-a-token").unwrap_err();
    assert_eq!((e.code(), e.status().as_u16()), (ErrorCode::InvalidGrant, 400));
}

/// `rotoken_http::IssueError` was renamed `IssueTokensError`; the old name
/// still compiles (with a deprecation warning) and is the same type.
#[test]
#[allow(deprecated)]
fn the_former_issue_error_name_is_the_same_type() {
    let e: rotoken_http::IssueError = IssueTokensError::UnknownClient;
    assert_eq!(e.code(), "unknown_client");
}
