//! facegate's face models: one module per role of the pipeline, each a trait with its
//! ONNX Runtime implementation, and the `Pipeline` that chains them.
//!
//! Nothing here knows about HTTP or actors. A `Pipeline` is owned by one thread at a time
//! (ONNX Runtime sessions need `&mut` to run), so a pool of workers holds one each.

pub mod align;
pub mod config;
pub mod decode;
pub mod detect;
mod error;
pub mod floor;
pub mod mad;
pub mod manifest;
mod onnx_edit;
pub mod pad;
pub mod photo;
pub mod pipeline;
pub mod quality;
pub mod recognize;
pub mod resize;
pub mod runtime;
pub mod subject;

pub use config::PipelineConfig;
pub use error::ModelError;
pub use pipeline::{Analysis, FaceTemplate, Measurement, Pipeline, Purpose, Rejection, Scores, StageTimings};
