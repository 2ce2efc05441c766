//! The C ABI driven from C: the programs in `tests/c/` are compiled with the
//! system C compiler against `include/rotoken.h` and the freshly built
//! library, then run. Each program checks every status code itself and
//! exits non-zero on the first surprise.
//!
//! valgrind (memcheck, leak check) runs the programs too when it is
//! installed, and the threads program also runs under AddressSanitizer and
//! UndefinedBehaviorSanitizer when the compiler supports them. Missing tools
//! are announced on the terminal, not silently passed; `cc` is required
//! when `CI` is set.

#![allow(unsafe_code)] // one test opens a store through the Rust view of the C ABI

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{STATICLIB, announce, cc, crate_dir, dylib_name, have, lib_dir, run_ok};

const CFLAGS: &[&str] = &[
    "-std=c11",
    "-D_POSIX_C_SOURCE=200809L",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-pedantic",
    "-g",
];

enum Link {
    Dynamic,
    Static,
}

/// Compiles `tests/c/<name>.c` into `dir`, linked against the library.
fn compile(name: &str, dir: &Path, link: Link, extra: &[&str]) -> PathBuf {
    let lib = lib_dir();
    let exe = dir.join(format!("{name}{}", if extra.is_empty() { "" } else { "-instrumented" }));
    let mut cmd = Command::new(cc());
    cmd.args(CFLAGS)
        .args(extra)
        .arg("-I")
        .arg(crate_dir().join("include"))
        .arg(crate_dir().join("tests/c").join(format!("{name}.c")))
        .arg("-o")
        .arg(&exe);
    match link {
        Link::Dynamic => {
            cmd.arg("-L")
                .arg(&lib)
                .arg("-lrotoken_ffi")
                .arg(format!("-Wl,-rpath,{}", lib.display()));
        }
        // What a Rust staticlib needs from the system on Linux (`--print native-static-libs`).
        Link::Static => {
            cmd.arg(lib.join(STATICLIB))
                .args(["-lgcc_s", "-lutil", "-lrt", "-lpthread", "-lm", "-ldl", "-lc"]);
        }
    }
    cmd.arg("-pthread");
    run_ok(&mut cmd);
    exe
}

fn stdout_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Compiles `tests/c/<name>.c` into `dir` (as [`compile`]) and makes the
/// empty data directory it runs on; returns both paths.
fn compile_with_data(name: &str, dir: &Path, link: Link, extra: &[&str]) -> (PathBuf, PathBuf) {
    let exe = compile(name, dir, link, extra);
    let data = dir.join("data");
    std::fs::create_dir(&data).unwrap_or_else(|e| panic!("{e}"));
    (exe, data)
}

/// Compiles `tests/c/<name>.c` in a new temporary directory, runs it on a
/// data directory there with `args`, and checks it passed all its checks.
fn run_c_program(name: &str, link: Link, extra: &[&str], args: &[&str]) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (exe, data) = compile_with_data(name, dir.path(), link, extra);
    let out = run_ok(Command::new(&exe).arg(&data).args(args));
    assert!(stdout_of(&out).contains(&format!("{name}: all checks passed")));
}

#[test]
fn header_compiles_on_its_own_as_c_and_cpp() {
    if !have(&cc(), "compile the header", true) {
        return;
    }
    let header = crate_dir().join("include/rotoken.h");
    for std in ["-std=c99", "-std=c11"] {
        run_ok(
            Command::new(cc())
                .args([
                    std,
                    "-pedantic",
                    "-Wall",
                    "-Wextra",
                    "-Werror",
                    "-fsyntax-only",
                    "-x",
                    "c",
                ])
                .arg(&header),
        );
    }
    if have("c++", "compile the header as C++", false) {
        run_ok(
            Command::new("c++")
                .args([
                    "-std=c++11",
                    "-pedantic",
                    "-Wall",
                    "-Werror",
                    "-fsyntax-only",
                    "-x",
                    "c++",
                ])
                .arg(&header),
        );
    }
}

#[test]
fn c_lifecycle_issue_rotate_grace_reuse_revoke() {
    if !have(&cc(), "run the C lifecycle program", true) {
        return;
    }
    run_c_program("lifecycle", Link::Dynamic, &[], &[]);
}

#[test]
fn c_lifecycle_linked_statically() {
    if !have(&cc(), "link the C lifecycle program against the staticlib", true) {
        return;
    }
    run_c_program("lifecycle", Link::Static, &[], &[]);
}

#[test]
fn c_null_pointers_invalid_utf8_and_a_1mb_token_are_error_codes() {
    if !have(&cc(), "run the C bad-input program", true) {
        return;
    }
    run_c_program("bad_input", Link::Dynamic, &[], &[]);
}

#[test]
fn c_four_threads_one_handle_then_close_under_them() {
    if !have(&cc(), "run the C threads program", true) {
        return;
    }
    run_c_program("threads", Link::Dynamic, &[], &["100"]);
}

/// Runs a C program under valgrind's memcheck: any invalid read or write,
/// use of uninitialised memory, or leak (definite or possible) fails it.
fn under_valgrind(name: &str, args: &[&str]) {
    if !have(&cc(), "compile a C program for valgrind", true)
        || !have("valgrind", "run the C programs under valgrind", false)
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (exe, data) = compile_with_data(name, dir.path(), Link::Dynamic, &[]);
    let out = run_ok(
        Command::new("valgrind")
            .args([
                "--error-exitcode=99",
                "--leak-check=full",
                "--errors-for-leak-kinds=definite,possible",
            ])
            .arg(format!(
                "--suppressions={}",
                crate_dir().join("tests/c/valgrind.supp").display()
            ))
            .arg(&exe)
            .arg(&data)
            .args(args),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ERROR SUMMARY: 0 errors"),
        "valgrind reported errors:\n{stderr}"
    );
    assert!(stdout_of(&out).contains("all checks passed"));
    announce(&format!(
        "valgrind memcheck: {name} clean (0 errors, no definite or possible leaks)"
    ));
}

#[test]
fn valgrind_threads() {
    under_valgrind("threads", &["20"]);
}

#[test]
fn valgrind_bad_input() {
    under_valgrind("bad_input", &[]);
}

#[test]
fn valgrind_lifecycle() {
    under_valgrind("lifecycle", &[]);
}

/// The threads program built with AddressSanitizer and UBSan (the C side is
/// instrumented; every allocation, the library's included, goes through
/// ASan's allocator, so heap misuse across the boundary is caught).
#[test]
fn sanitizers_threads() {
    if !have(&cc(), "compile a C program with sanitizers", true) {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let flags = [
        "-fsanitize=address,undefined",
        "-fno-omit-frame-pointer",
        "-fno-sanitize-recover=all",
    ];
    let probe = dir.path().join("probe.c");
    std::fs::write(&probe, "int main(void) { return 0; }\n").unwrap_or_else(|e| panic!("{e}"));
    let supported = Command::new(cc())
        .args(flags)
        .arg(&probe)
        .arg("-o")
        .arg(dir.path().join("probe"))
        .status()
        .is_ok_and(|s| s.success())
        && Command::new(dir.path().join("probe"))
            .status()
            .is_ok_and(|s| s.success());
    if !supported {
        announce("SKIPPED: the C compiler cannot build with -fsanitize=address,undefined here");
        return;
    }
    run_c_program("threads", Link::Dynamic, &flags, &["50"]);
}

/// A database file belongs to one process: while this test process holds it
/// open, a C program in another process gets ROTOKEN_STATUS_LOCKED; once
/// closed, it opens.
#[test]
fn second_process_gets_locked() {
    use rotoken_ffi::{Handle, Status, rotoken_close, rotoken_keys_generate, rotoken_open};
    use std::ffi::CString;

    if !have(&cc(), "run the C open program", true) {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let exe = compile("open_status", dir.path(), Link::Dynamic, &[]);
    let db = dir.path().join("tokens.redb");
    let keys = dir.path().join("rotoken.keys");
    let c = |p: &Path| CString::new(p.to_string_lossy().into_owned()).unwrap_or_else(|e| panic!("{e}"));
    let (db_c, keys_c) = (c(&db), c(&keys));
    let mut h: *mut Handle = std::ptr::null_mut();
    // SAFETY: NUL-terminated paths, a writable out-pointer, no error out-param.
    unsafe {
        assert_eq!(rotoken_keys_generate(keys_c.as_ptr(), std::ptr::null_mut()), Status::Ok);
        assert_eq!(
            rotoken_open(
                db_c.as_ptr(),
                keys_c.as_ptr(),
                std::ptr::null(),
                &mut h,
                std::ptr::null_mut()
            ),
            Status::Ok
        );
    }
    let out = run_ok(Command::new(&exe).arg(&db).arg(&keys).arg("locked"));
    assert!(
        stdout_of(&out).contains("serve"),
        "the message points multi-process servers to the sidecar"
    );
    // SAFETY: `h` came from rotoken_open.
    assert_eq!(unsafe { rotoken_close(h, std::ptr::null_mut()) }, Status::Ok);
    run_ok(Command::new(&exe).arg(&db).arg(&keys).arg("ok"));
}

#[test]
fn library_files_are_where_the_docs_say() {
    let lib = lib_dir();
    assert!(lib.join(dylib_name()).is_file());
    assert!(lib.join(STATICLIB).is_file());
}
