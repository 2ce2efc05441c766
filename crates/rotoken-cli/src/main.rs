//! The `rotoken` command-line tool (being written).
fn main() {}
