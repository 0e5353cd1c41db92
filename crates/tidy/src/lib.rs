//! misim's tidy checks: repository rules run as tests (`tests/tidy.rs`), as rust-analyzer's
//! `xtask/src/tidy.rs` does. The library is empty; `cargo nextest run -p misim-tidy` runs the rules.

#![warn(unreachable_pub)]
