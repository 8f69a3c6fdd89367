//! facegate-tools as a library, so its integration tests drive the same code as the binary.

pub mod abuse;
pub mod bench;
mod bench_audit;
pub mod client;
pub mod config;
pub mod enrol_dir;
pub mod eval;
pub mod faces;
pub mod photo_sets;
pub mod watch;
