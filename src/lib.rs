//! facegate's HTTP layer: configuration, the error table, XML bodies, API keys, metrics
//! and one handler module per resource. The engine lives in `facegate-actors`.

pub mod abuse;
pub mod app;
pub mod auth;
pub mod bench;
pub mod body;
pub mod client;
pub mod collision;
pub mod config;
pub mod enrol_dir;
pub mod error;
pub mod eval;
pub mod faces;
pub mod intake;
pub mod metrics;
pub mod procfs;
pub mod routes;
pub mod xml;
