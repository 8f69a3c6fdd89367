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

use actix_web::{web, HttpRequest, HttpResponse};
use facegate_actors::names;
use serde::Deserialize;

use crate::{app::AppState, auth::Caller, body, config::Right, error::ApiError};

pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such endpoint; see /api/v1/openapi.json".into()))
}

/// A 200 XML answer.
pub fn xml(body: String) -> HttpResponse {
    HttpResponse::Ok().content_type(crate::xml::CONTENT_TYPE).body(body)
}

pub fn default_partition() -> String {
    "default".into()
}

/// The body of verify and enrol: a photo of one subject in one partition.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectPhoto {
    pub image: String,
    pub subject_id: String,
    #[serde(default = "default_partition")]
    pub partition: String,
}

/// Read a `SubjectPhoto` and its image bytes, checking in the order that costs least: the
/// key (401), the JSON and names (400), the key's rights on the partition (403), base64.
pub async fn subject_photo<'a>(
    state: &'a AppState,
    req: &HttpRequest,
    payload: web::Payload,
    right: Right,
) -> Result<(Caller<'a>, SubjectPhoto, Vec<u8>), ApiError> {
    let caller = state.keys.caller(req)?;
    let r: SubjectPhoto = body::json(payload, state.cfg.server.max_body_bytes).await?;
    names::validate_partition(&r.partition)?;
    names::validate_subject(&r.subject_id)?;
    caller.require(&r.partition, right)?;
    let image = body::image(&r.image, state.cfg.pipeline.limits.max_image_bytes)?;
    Ok((caller, r, image))
}
