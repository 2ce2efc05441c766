//! Shared by the tests that drive the built library from other languages:
//! where the cdylib and staticlib are, which tools exist, how to run them.

#![allow(dead_code)] // each test binary uses its own part

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The crate's directory.
pub(crate) fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `librotoken_ffi.so` (or `.dylib`) file name.
pub(crate) fn dylib_name() -> String {
    format!(
        "{}rotoken_ffi{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// `librotoken_ffi.a` file name.
pub(crate) const STATICLIB: &str = "librotoken_ffi.a";

/// The directory holding the freshly built cdylib and staticlib.
///
/// `cargo test` builds this crate's library with all its crate types into
/// `target/<profile>/deps`, beside the test binary; `cargo build` also
/// copies them up to `target/<profile>`. If neither has them (a test binary
/// run by hand), build them with cargo into the same target directory.
pub(crate) fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let deps = exe
        .parent()
        .unwrap_or_else(|| panic!("{} has no parent", exe.display()))
        .to_path_buf();
    let profile_dir = deps.parent().unwrap_or(&deps).to_path_buf();
    for dir in [&deps, &profile_dir] {
        if dir.join(dylib_name()).is_file() && dir.join(STATICLIB).is_file() {
            return dir.clone();
        }
    }
    let target_dir = profile_dir.parent().unwrap_or(&profile_dir);
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(["build", "-p", "rotoken-ffi", "--lib"])
        .env("CARGO_TARGET_DIR", target_dir);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().unwrap_or_else(|e| panic!("running cargo build: {e}"));
    assert!(status.success(), "cargo build -p rotoken-ffi failed");
    assert!(
        profile_dir.join(dylib_name()).is_file(),
        "cargo build did not produce {}",
        profile_dir.join(dylib_name()).display()
    );
    profile_dir
}

/// Says something on the terminal even when the test harness captures output
/// (a skipped check must be visible, not a silent pass).
pub(crate) fn announce(message: &str) {
    let _ = writeln!(std::io::stderr(), "{message}");
}

/// True if `program --version` runs. A missing tool is a failure under CI
/// (`CI` set) when `required_in_ci`, and a loud skip otherwise.
pub(crate) fn have(program: &str, what: &str, required_in_ci: bool) -> bool {
    let ok = Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !(required_in_ci && std::env::var_os("CI").is_some()),
            "{program} is required in CI to {what}, and it is not on PATH"
        );
        announce(&format!(
            "SKIPPED: {program} is not on PATH, so this test did not {what}"
        ));
    }
    ok
}

/// The C compiler: `$CC`, or `cc`.
pub(crate) fn cc() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".to_owned())
}

/// Runs a command and returns its output, failing with everything it printed if it failed.
pub(crate) fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    print!("{stdout}");
    eprint!("{stderr}");
    out
}
