//! Writes the seed corpora to `fuzz/corpus/<target>/seed-*`, replacing the
//! old seeds and leaving every other file (inputs the fuzzers found) alone.
//!
//! ```text
//! cargo run -p rotoken-fuzz --bin rotoken-fuzz-seeds                    # writes ./fuzz/corpus
//! cargo run -p rotoken-fuzz --bin rotoken-fuzz-seeds -- DIR             # writes DIR/<target>/
//! cargo run -p rotoken-fuzz --bin rotoken-fuzz-seeds -- DIR http token  # only these targets
//! ```

#![forbid(unsafe_code)]

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = args.first().map_or_else(|| PathBuf::from("fuzz/corpus"), PathBuf::from);
    let only: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    let chosen = |t: &str| only.is_empty() || only.contains(&t);
    for target in rotoken_fuzz::TARGETS.into_iter().filter(|t| chosen(t)) {
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
    let seeds: Vec<_> = rotoken_fuzz::seeds::seed_corpus()
        .into_iter()
        .filter(|s| chosen(s.0))
        .collect();
    for (target, name, bytes) in &seeds {
        std::fs::write(root.join(target).join(name), bytes)?;
    }
    println!("wrote {} seeds under {}", seeds.len(), root.display());
    Ok(())
}
