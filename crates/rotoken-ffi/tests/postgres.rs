//! The C ABI opens a PostgreSQL store by URL: two handles on one database
//! (two "servers") see one set of families, where two handles on one redb
//! file get `ROTOKEN_STATUS_LOCKED`.

#![allow(
    unsafe_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::undocumented_unsafe_blocks
)]

use std::ffi::{CStr, CString, c_char};
use std::ptr::{null, null_mut};

use rotoken_ffi::{
    Handle, Issued, Rotated, Status, rotoken_close, rotoken_issue, rotoken_issued_clear, rotoken_keys_generate,
    rotoken_open, rotoken_rotate, rotoken_rotated_clear,
};

fn open(store: &CStr, keys: &CStr) -> *mut Handle {
    let mut h = null_mut();
    let status = unsafe { rotoken_open(store.as_ptr(), keys.as_ptr(), null(), &raw mut h, null_mut()) };
    assert_eq!(status, Status::Ok, "opening {store:?}");
    h
}

fn rotate(h: *mut Handle, token: *const c_char) -> (Status, Rotated) {
    let mut out = Rotated::empty();
    let web = c"web";
    let status = unsafe { rotoken_rotate(h, token, web.as_ptr(), null(), null(), &raw mut out, null_mut()) };
    (status, out)
}

#[test]
fn two_handles_share_one_postgres_store() {
    let Some(db) = rotoken_postgres::testing::database() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let keys = CString::new(dir.path().join("k.keys").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { rotoken_keys_generate(keys.as_ptr(), null_mut()) }, Status::Ok);
    let url = CString::new(db.url()).unwrap();
    let (a, b) = (open(&url, &keys), open(&url, &keys));

    let mut issued = Issued::empty();
    let status = unsafe {
        rotoken_issue(
            a,
            c"alice".as_ptr(),
            c"web".as_ptr(),
            c"openid offline_access".as_ptr(),
            null(),
            null(),
            0,
            &raw mut issued,
            null_mut(),
        )
    };
    assert_eq!(status, Status::Ok);
    // Rotated on B, retried on A: the same successor (the grace answer).
    let (s1, mut r1) = rotate(b, issued.refresh_token);
    assert_eq!(s1, Status::Ok);
    let (s2, mut r2) = rotate(a, issued.refresh_token);
    assert_eq!(s2, Status::Ok);
    assert!(r2.retried);
    let (t1, t2) = unsafe { (CStr::from_ptr(r1.refresh_token), CStr::from_ptr(r2.refresh_token)) };
    assert_eq!(t1, t2);
    // A replay after the successor was itself rotated, on A: reuse, seen by B.
    let (s3, mut r3) = rotate(a, r1.refresh_token);
    assert_eq!(s3, Status::Ok);
    let (s4, _) = rotate(b, issued.refresh_token);
    assert_eq!(s4, Status::ReuseDetected);
    let (s5, _) = rotate(b, r3.refresh_token);
    assert_eq!(s5, Status::Revoked);
    unsafe {
        rotoken_rotated_clear(&raw mut r1);
        rotoken_rotated_clear(&raw mut r2);
        rotoken_rotated_clear(&raw mut r3);
        rotoken_issued_clear(&raw mut issued);
        assert_eq!(rotoken_close(a, null_mut()), Status::Ok);
        assert_eq!(rotoken_close(b, null_mut()), Status::Ok);
    }
}
