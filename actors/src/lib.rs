//! facegate's engine: the pool of pipeline workers and one gallery actor per partition.
//!
//! `facegate-actors` knows nothing of HTTP or XML: the server crate translates its typed
//! results and errors into responses.

pub mod directory;
mod error;
pub mod gallery;
pub mod names;
pub mod pool;
pub mod seal;

pub use directory::{GalleryConfig, GalleryDirectory};
pub use error::GalleryError;
pub use gallery::postgres::{Backend as GalleryBackend, PostgresConfig};
pub use gallery::{Candidate, IndexKind, PartitionStatus};
pub use pool::{FrameAnalysis, PipelinePool, PoolConfig, PoolError};
