//! The child process of `tests/kill.rs`: rotates tokens as fast as it can
//! and reports each acknowledged rotation on standard output, until it is
//! killed with SIGKILL.
//!
//! ```text
//! rotoken-crash-child DB KEYS THREADS < tokens
//! ```
//!
//! Standard input holds one current token per line. The child opens the
//! database, prints `ready`, then each of THREADS threads rotates its share
//! of the tokens in turn. After each rotation returns, it prints
//! `ack <family> <generation> <token>` as one write and flushes: a line on
//! the pipe is a rotation the engine acknowledged. Any refusal is printed
//! as `err <family> <code>` and ends the process with status 2.

#![forbid(unsafe_code)]

use std::io::{BufRead, Write};
use std::sync::Arc;

use rotoken::{Engine, Keyring, Options, RotateRequest};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, db, keys, threads] = args.as_slice() else {
        eprintln!("usage: rotoken-crash-child DB KEYS THREADS < tokens");
        std::process::exit(64);
    };
    let threads: usize = threads.parse().unwrap_or(4).max(1);
    let tokens: Vec<String> = std::io::stdin()
        .lock()
        .lines()
        .map_while(Result::ok)
        .filter(|l| !l.is_empty())
        .collect();
    let keys = Keyring::load(keys).unwrap_or_else(|e| fail(&format!("keys: {e}")));
    let engine = Arc::new(Engine::open(db, keys, Options::default()).unwrap_or_else(|e| fail(&format!("open: {e}"))));
    say("ready\n");
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let engine = Arc::clone(&engine);
            let mut mine: Vec<String> = tokens.iter().skip(t).step_by(threads).cloned().collect();
            std::thread::spawn(move || {
                let request = RotateRequest::new("web");
                loop {
                    for current in &mut mine {
                        match engine.rotate(current, &request) {
                            Ok(r) => {
                                say(&format!(
                                    "ack {} {} {}\n",
                                    r.family,
                                    r.generation,
                                    r.refresh_token.expose()
                                ));
                                *current = r.refresh_token.expose().to_owned();
                            }
                            Err(e) => {
                                let family = rotoken::token::parse(current.as_bytes())
                                    .map(|t| t.family.to_string())
                                    .unwrap_or_default();
                                say(&format!("err {family} {}\n", e.code()));
                                std::process::exit(2);
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
}

/// One line, one write, flushed: a line on the pipe is a fact.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    if out.write_all(line.as_bytes()).and_then(|()| out.flush()).is_err() {
        std::process::exit(3);
    }
}

fn fail(why: &str) -> ! {
    eprintln!("rotoken-crash-child: {why}");
    std::process::exit(1);
}
