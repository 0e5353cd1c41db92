//! misim's tidy checks: repository rules run as tests (`tests/tidy.rs`), as rust-analyzer's
//! `xtask/src/tidy.rs` does; `cargo nextest run -p misim-tidy` runs the rules. The library holds
//! what a rule needs beyond reading files: [`long_functions`], a scan for long functions.

mod long_fns;

pub use long_fns::{LongFn, long_functions};
