//! The sections of the service's configuration the engine tools read (the same layers as
//! the server: config/default.toml, `--config`, `FACEGATE__SECTION__KEY`): the ONNX
//! Runtime, the pipeline and its gates, and the identity-collision threshold. HTTP tools
//! read none of it.

use std::path::Path;

use facegate::config::{CollisionConfig, ConfigError, RuntimeConfig};
use facegate_models::PipelineConfig;
use serde::Deserialize;

pub use facegate::config::resolve;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Config {
    pub runtime: RuntimeConfig,
    pub pipeline: PipelineConfig,
    pub collision: CollisionConfig,
}

impl Config {
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut cfg: Config = facegate::config::extract(file)?;
        cfg.runtime.onnxruntime = resolve(&cfg.runtime.onnxruntime);
        cfg.pipeline.models_dir = resolve(&cfg.pipeline.models_dir);
        cfg.pipeline
            .validate()
            .map_err(|e| ConfigError(e.to_string().replace("configuration: ", "")))?;
        Ok(cfg)
    }
}
