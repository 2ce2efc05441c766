//! The C and Python examples in `docs/ffi.md` are complete programs: this
//! test cuts each block marked `<!-- tested: NAME -->` out of the document,
//! compiles or runs it against the freshly built library, and checks what
//! it prints, so the documentation cannot drift from the API.

mod support;

use std::path::Path;
use std::process::Command;

use support::{cc, crate_dir, dylib_name, have, lib_dir, run_ok};

/// The fenced code block after `<!-- tested: name -->` in docs/ffi.md.
fn example(name: &str) -> String {
    let path = crate_dir().join("../../docs/ffi.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let marker = format!("<!-- tested: {name} -->");
    let after = doc
        .split_once(&marker)
        .unwrap_or_else(|| panic!("docs/ffi.md has no {marker}"))
        .1;
    let mut lines = after.trim_start().lines();
    let fence = lines.next().unwrap_or_default();
    assert!(fence.starts_with("```"), "{marker} must be followed by a code fence");
    let body: Vec<&str> = lines.take_while(|l| !l.starts_with("```")).collect();
    body.join("\n") + "\n"
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    p
}

#[test]
fn c_example_in_the_docs_compiles_and_runs() {
    if !have(&cc(), "compile the C example of docs/ffi.md", true) {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let src = write(dir.path(), "example.c", &example("example.c"));
    let exe = dir.path().join("example");
    let lib = lib_dir();
    run_ok(
        Command::new(cc())
            .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-I"])
            .arg(crate_dir().join("include"))
            .arg(&src)
            .arg("-o")
            .arg(&exe)
            .arg("-L")
            .arg(&lib)
            .arg("-lrotoken_ffi")
            .arg(format!("-Wl,-rpath,{}", lib.display()))
            .arg("-pthread"),
    );
    // Twice: the second run finds the key file and the database already there.
    for _ in 0..2 {
        let out = run_ok(Command::new(&exe).current_dir(dir.path()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("retry: same successor = yes"), "{stdout}");
        assert!(stdout.contains("replay detected, family revoked"), "{stdout}");
    }
}

#[test]
fn python_example_in_the_docs_runs() {
    if !have("python3", "run the Python example of docs/ffi.md", true) {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let script = write(dir.path(), "example.py", &example("example.py"));
    for _ in 0..2 {
        let out = run_ok(
            Command::new("python3")
                .arg(&script)
                .current_dir(dir.path())
                .env("ROTOKEN_LIB", lib_dir().join(dylib_name())),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("retry: same successor = True"), "{stdout}");
        assert!(stdout.contains("replay detected, family revoked"), "{stdout}");
    }
}
