//! The C ABI driven from Python: `tests/python/test_rotoken.py` loads the
//! freshly built cdylib with ctypes (through the small binding in
//! `tests/python/rotoken_ctypes.py`) and runs the same checks as the C
//! programs. Uses the machine's `python3`; required when `CI` is set, a
//! loud skip otherwise.

mod support;

use std::process::Command;

use support::{crate_dir, dylib_name, have, lib_dir, run_ok};

#[test]
fn python_ctypes_issue_rotate_grace_reuse_revoke_bad_input_threads() {
    if !have("python3", "run the Python ctypes tests", true) {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let out = run_ok(
        Command::new("python3")
            .arg(crate_dir().join("tests/python/test_rotoken.py"))
            .arg(lib_dir().join(dylib_name()))
            .arg(dir.path())
            .env("PYTHONDONTWRITEBYTECODE", "1"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("python: 5 passed, 0 failed"), "{stdout}");
}
