//! One module per resource; handlers only translate between HTTP and the engine.

pub mod delete;
pub mod enrol;
pub mod health;
pub mod metrics;
pub mod openapi;
pub mod partitions;
pub mod search;
pub mod stats;
pub mod verify;

use actix_web::HttpResponse;

use crate::error::ApiError;

pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such endpoint; see /api/v1/openapi.json".into()))
}

/// A 200 XML answer.
pub fn xml(body: String) -> HttpResponse {
    HttpResponse::Ok().content_type(crate::xml::CONTENT_TYPE).body(body)
}
