/// What a gallery operation can answer besides success. The HTTP layer maps each variant
/// to a status code exhaustively.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GalleryError {
    #[error("partition {0:?} not found")]
    PartitionNotFound(String),
    #[error("subject {0:?} not found")]
    SubjectNotFound(String),
    #[error("{0}")]
    InvalidName(String),
    #[error("partition {partition:?} holds templates of model {stored:?}; this service runs {requested:?}, and templates of different models are never compared")]
    ModelMismatch {
        partition: String,
        stored: String,
        requested: String,
    },
    #[error("partition {0:?} is restarting after a failure; retry shortly")]
    Unavailable(String),
    #[error("storage failure in partition {partition:?}: {detail}")]
    Storage { partition: String, detail: String },
    #[error("index failure in partition {partition:?}: {detail}")]
    Index { partition: String, detail: String },
}
