//! facegate's HTTP layer: configuration, the error table, XML bodies, API keys, metrics
//! and one handler module per resource. The engine lives in `facegate-actors`.

pub mod app;
pub mod audit;
pub mod auth;
pub mod body;
pub mod collision;
pub mod config;
pub mod error;
pub mod events;
pub mod intake;
pub mod metrics;
pub mod procfs;
pub mod routes;
pub mod xml;
