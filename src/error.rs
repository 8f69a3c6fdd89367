//! The one error table: every failure a request can meet, its machine code, HTTP status
//! and message. Domain errors are mapped with exhaustive matches, so a new variant does not
//! compile until it has a row here. Messages never carry paths or internals.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use facegate_actors::{GalleryError, PoolError};
use facegate_models::{decode::DecodeError, Rejection};

use crate::xml;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    DecodeFailed(String),
    #[error("{0}")]
    NoFace(String),
    #[error("{message}")]
    QualityRejected { message: String, score: f32 },
    #[error("{message}")]
    SpoofDetected { message: String, score: f32 },
    #[error("{message}")]
    MorphDetected { message: String, score: f32 },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("a valid API key is required (header X-API-Key)")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    IdentityCollision(String),
    #[error("{message}")]
    MethodNotAllowed { message: String, allow: String },
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    Overloaded(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error; see the server log for request {0}")]
    Internal(String),
}

/// Seconds a client should wait after an Overloaded answer.
const RETRY_AFTER_SECS: &str = "1";

#[deny(clippy::wildcard_enum_match_arm)]
impl ApiError {
    /// A failure of the server's own: the cause goes to the log under the request id, the
    /// caller gets the id to quote.
    pub fn internal(req: &actix_web::HttpRequest, cause: impl std::fmt::Display) -> Self {
        let id = crate::app::request_id(req);
        tracing::error!(request_id = %id, %cause, "internal error");
        ApiError::Internal(id)
    }

    /// The machine code of API.md.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest(_) => "INVALID_REQUEST",
            ApiError::DecodeFailed(_) => "DECODE_FAILED",
            ApiError::NoFace(_) => "NO_FACE",
            ApiError::QualityRejected { .. } => "QUALITY_REJECTED",
            ApiError::SpoofDetected { .. } => "SPOOF_DETECTED",
            ApiError::MorphDetected { .. } => "MORPH_DETECTED",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::PayloadTooLarge(_) => "PAYLOAD_TOO_LARGE",
            ApiError::Unauthorized => "UNAUTHORIZED",
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::Conflict(_) => "CONFLICT",
            ApiError::IdentityCollision(_) => "IDENTITY_COLLISION",
            ApiError::MethodNotAllowed { .. } => "METHOD_NOT_ALLOWED",
            ApiError::RequestTimeout(_) => "REQUEST_TIMEOUT",
            ApiError::Overloaded(_) => "OVERLOADED",
            ApiError::Unavailable(_) => "UNAVAILABLE",
            ApiError::Internal(_) => "INTERNAL",
        }
    }

    /// The measured score a gate rejection carries, with its element name.
    pub fn gate_score(&self) -> Option<(&'static str, f32)> {
        match self {
            ApiError::QualityRejected { score, .. } => Some(("quality_score", *score)),
            ApiError::SpoofDetected { score, .. } => Some(("pad_score", *score)),
            ApiError::MorphDetected { score, .. } => Some(("mad_score", *score)),
            // Every other error named, so a new gate's error cannot be left out unseen.
            ApiError::NoFace(_)
            | ApiError::DecodeFailed(_)
            | ApiError::InvalidRequest(_)
            | ApiError::NotFound(_)
            | ApiError::PayloadTooLarge(_)
            | ApiError::Unauthorized
            | ApiError::Forbidden(_)
            | ApiError::Conflict(_)
            | ApiError::IdentityCollision(_)
            | ApiError::MethodNotAllowed { .. }
            | ApiError::RequestTimeout(_)
            | ApiError::Overloaded(_)
            | ApiError::Unavailable(_)
            | ApiError::Internal(_) => None,
        }
    }

    /// The gate that rejected, for metrics.
    pub fn gate(&self) -> Option<&'static str> {
        match self {
            ApiError::NoFace(_) => Some("detection"),
            ApiError::QualityRejected { .. } => Some("quality"),
            ApiError::SpoofDetected { .. } => Some("pad"),
            ApiError::MorphDetected { .. } => Some("mad"),
            ApiError::DecodeFailed(_) => Some("decode"),
            // Every other error named, so a new gate's error cannot be left out unseen.
            ApiError::InvalidRequest(_)
            | ApiError::NotFound(_)
            | ApiError::PayloadTooLarge(_)
            | ApiError::Unauthorized
            | ApiError::Forbidden(_)
            | ApiError::Conflict(_)
            | ApiError::IdentityCollision(_)
            | ApiError::MethodNotAllowed { .. }
            | ApiError::RequestTimeout(_)
            | ApiError::Overloaded(_)
            | ApiError::Unavailable(_)
            | ApiError::Internal(_) => None,
        }
    }
}

#[deny(clippy::wildcard_enum_match_arm)]
impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest(_) | ApiError::DecodeFailed(_) | ApiError::NoFace(_) => StatusCode::BAD_REQUEST,
            ApiError::QualityRejected { .. } | ApiError::MorphDetected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::SpoofDetected { .. } => StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Conflict(_) | ApiError::IdentityCollision(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Overloaded(_) | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        // A restarting partition or a database that went away comes back by itself.
        if matches!(self, ApiError::Overloaded(_) | ApiError::Unavailable(_)) {
            res.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS));
        }
        if let ApiError::MethodNotAllowed { allow, .. } = self {
            res.insert_header((header::ALLOW, allow.as_str()));
        }
        // A body that stalled is not read further: the connection is not reused.
        if matches!(self, ApiError::RequestTimeout(_)) {
            res.force_close();
        }
        if matches!(self, ApiError::Unauthorized) {
            res.insert_header((header::WWW_AUTHENTICATE, "ApiKey header=\"X-API-Key\""));
        }
        res.content_type(xml::CONTENT_TYPE)
            .body(xml::error(self.code(), &self.to_string(), self.gate_score()))
    }
}

#[deny(clippy::wildcard_enum_match_arm)]
impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        let message = r.to_string();
        match r {
            Rejection::DecodeFailed(e) => e.into(),
            Rejection::NoFace => ApiError::NoFace(message),
            Rejection::AmbiguousSubject { .. } => ApiError::InvalidRequest(message),
            Rejection::QualityRejected { score, .. } => ApiError::QualityRejected { message, score },
            Rejection::SpoofDetected { score, .. } => ApiError::SpoofDetected { message, score },
            Rejection::MorphDetected { score, .. } => ApiError::MorphDetected { message, score },
        }
    }
}

impl From<DecodeError> for ApiError {
    fn from(e: DecodeError) -> Self {
        if e.is_too_large() {
            ApiError::PayloadTooLarge(e.to_string())
        } else {
            ApiError::DecodeFailed(e.to_string())
        }
    }
}

impl From<GalleryError> for ApiError {
    fn from(e: GalleryError) -> Self {
        let message = e.to_string();
        match e {
            GalleryError::PartitionNotFound(_) | GalleryError::SubjectNotFound(_) => ApiError::NotFound(message),
            GalleryError::InvalidName(_) => ApiError::InvalidRequest(message),
            GalleryError::ModelMismatch { .. } => ApiError::Conflict(message),
            GalleryError::Unavailable(_) => ApiError::Unavailable(message),
            GalleryError::Storage { partition, .. } | GalleryError::Index { partition, .. } => {
                tracing::error!(error = %message, "gallery failure");
                ApiError::Unavailable(format!("partition {partition:?} failed and is restarting; retry shortly"))
            }
        }
    }
}

impl From<PoolError> for ApiError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Overloaded(_) => ApiError::Overloaded(e.to_string()),
            PoolError::WorkerFailed => ApiError::Unavailable(e.to_string()),
            PoolError::Model(m) => {
                tracing::error!(error = %m, "model failure");
                ApiError::Unavailable("the face pipeline failed on this request; it has been logged".into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(e: ApiError) -> (u16, &'static str, Option<&'static str>) {
        (e.status_code().as_u16(), e.code(), e.gate_score().map(|g| g.0))
    }

    /// API.md's error table, row by row, from the domain outcomes.
    #[test]
    fn every_domain_outcome_has_its_row() {
        let decode = |e: DecodeError| row(Rejection::DecodeFailed(e).into());
        assert_eq!(decode(DecodeError::Corrupt("x".into())), (400, "DECODE_FAILED", None));
        assert_eq!(
            decode(DecodeError::TooManyBytes { size: 2, limit: 1 }),
            (413, "PAYLOAD_TOO_LARGE", None)
        );
        assert_eq!(row(Rejection::NoFace.into()), (400, "NO_FACE", None));
        assert_eq!(
            row(Rejection::AmbiguousSubject {
                subject: [0, 0, 80, 80],
                competitors: vec![]
            }
            .into()),
            (400, "INVALID_REQUEST", None)
        );
        assert_eq!(
            row(Rejection::QualityRejected {
                score: 0.1,
                threshold: 0.2
            }
            .into()),
            (422, "QUALITY_REJECTED", Some("quality_score"))
        );
        assert_eq!(
            row(Rejection::SpoofDetected {
                score: 0.01,
                threshold: 0.1
            }
            .into()),
            (451, "SPOOF_DETECTED", Some("pad_score"))
        );
        assert_eq!(
            row(Rejection::MorphDetected {
                score: 0.9,
                threshold: 0.5
            }
            .into()),
            (422, "MORPH_DETECTED", Some("mad_score"))
        );
        assert_eq!(row(GalleryError::SubjectNotFound("s".into()).into()), (404, "NOT_FOUND", None));
        assert_eq!(row(GalleryError::PartitionNotFound("p".into()).into()), (404, "NOT_FOUND", None));
        assert_eq!(row(GalleryError::InvalidName("n".into()).into()), (400, "INVALID_REQUEST", None));
        let mismatch = GalleryError::ModelMismatch {
            partition: "p".into(),
            stored: "a".into(),
            requested: "b".into(),
        };
        assert_eq!(row(mismatch.into()), (409, "CONFLICT", None));
        assert_eq!(row(GalleryError::Unavailable("p".into()).into()), (503, "UNAVAILABLE", None));
        let storage: ApiError = GalleryError::Storage {
            partition: "p".into(),
            detail: "/var/lib/secret: disk I/O error".into(),
        }
        .into();
        assert!(!storage.to_string().contains("/var/lib"), "internals leak: {storage}");
        assert_eq!(row(PoolError::Overloaded(8).into()), (503, "OVERLOADED", None));
        assert_eq!(row(PoolError::WorkerFailed.into()), (503, "UNAVAILABLE", None));
        assert_eq!(row(ApiError::Unauthorized), (401, "UNAUTHORIZED", None));
        assert_eq!(row(ApiError::Forbidden("f".into())), (403, "FORBIDDEN", None));
        let wrong_method = ApiError::MethodNotAllowed {
            message: "m".into(),
            allow: "POST".into(),
        };
        assert_eq!(row(wrong_method), (405, "METHOD_NOT_ALLOWED", None));
        assert_eq!(row(ApiError::RequestTimeout("t".into())), (408, "REQUEST_TIMEOUT", None));
    }

    #[test]
    fn gate_rejections_carry_their_score_in_the_body() {
        let e: ApiError = Rejection::MorphDetected {
            score: 0.91,
            threshold: 0.5,
        }
        .into();
        let res = e.error_response();
        assert_eq!(res.status().as_u16(), 422);
        let body = xml::error(e.code(), &e.to_string(), e.gate_score());
        assert!(body.contains("<mad_score>0.910</mad_score>"), "{body}");
    }
}
