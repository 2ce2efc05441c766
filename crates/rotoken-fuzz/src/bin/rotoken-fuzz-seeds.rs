//! Writes the seed corpora to `fuzz/corpus/<target>/seed-*`, replacing the
//! old seeds and leaving every other file (inputs the fuzzers found) alone.
//!
//! ```text
//! cargo run -p rotoken-fuzz --bin rotoken-fuzz-seeds            # writes ./fuzz/corpus
//! cargo run -p rotoken-fuzz --bin rotoken-fuzz-seeds -- DIR     # writes DIR/<target>/
//! ```

#![forbid(unsafe_code)]

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let root = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("fuzz/corpus"));
    for target in rotoken_fuzz::TARGETS {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seed-"))
            {
                std::fs::remove_file(path)?;
            }
        }
    }
    let seeds = rotoken_fuzz::seeds::seed_corpus();
    for (target, name, bytes) in &seeds {
        std::fs::write(root.join(target).join(name), bytes)?;
    }
    println!("wrote {} seeds under {}", seeds.len(), root.display());
    Ok(())
}
