//! Fuzz target bodies for rotoken.
#![forbid(unsafe_code)]
