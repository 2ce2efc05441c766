//! Every Markdown document with a Rust snippet is compiled by the doc
//! tests (`doc_snippets` in src/lib.rs); a new one must be listed there.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

fn markdown_files(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("README.md")];
    for dir in ["docs", "crates"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            } else if path.join("README.md").is_file() {
                files.push(path.join("README.md"));
            }
        }
    }
    files
}

#[test]
fn every_document_with_a_rust_snippet_is_compiled_by_the_doc_tests() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = crate_dir.join("../..");
    let lib = std::fs::read_to_string(crate_dir.join("src/lib.rs")).unwrap();
    let mut missing = Vec::new();
    for file in markdown_files(&root) {
        let text = std::fs::read_to_string(&file).unwrap();
        let has_rust = text.lines().any(|l| {
            let info = l.trim_start().strip_prefix("```").unwrap_or_default();
            info.split(',').next().is_some_and(|lang| lang.trim() == "rust")
        });
        let relative = file.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/");
        let included = lib.contains(&format!("include_str!(\"../../../{relative}\")"));
        if has_rust && !included {
            missing.push(relative);
        }
    }
    assert!(missing.is_empty(), "not compiled by the doc tests: {missing:?}");
}
