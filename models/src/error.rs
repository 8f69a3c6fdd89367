use std::path::PathBuf;

/// A failure of the models themselves (not of the caller's image): a missing or corrupt
/// file, a model whose inputs or outputs are not what its role needs, or ONNX Runtime
/// failing. Rejections of an image are `pipeline::Rejection`, not errors.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("model {model}: {reason}")]
    Shape { model: String, reason: String },
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    #[error("configuration: {0}")]
    Config(String),
}

impl From<ort::Error> for ModelError {
    fn from(e: ort::Error) -> Self {
        ModelError::Runtime(e.to_string())
    }
}
