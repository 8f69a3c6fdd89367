use actix_web::{web, HttpRequest, HttpResponse};
use facegate_actors::names;
use facegate_models::Purpose;
use serde::Deserialize;

use crate::{app::AppState, body, config::Right, error::ApiError, xml};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyRequest {
    image: String,
    subject_id: String,
    #[serde(default = "super::search::default_partition")]
    partition: String,
}

/// POST /api/v1/verify: 1:1 against the subject's best template.
pub async fn handle(state: web::Data<AppState>, req: HttpRequest, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let caller = state.keys.caller(&req)?;
    let r: VerifyRequest = body::json(payload, state.cfg.server.max_body_bytes).await?;
    names::validate_partition(&r.partition)?;
    names::validate_subject(&r.subject_id)?;
    caller.require(&r.partition, Right::Search)?;
    let image = body::image(&r.image, state.cfg.pipeline.limits.max_image_bytes)?;
    // An unknown subject costs no pipeline run.
    if !state.gallery.contains(&r.partition, &r.subject_id)? {
        return Err(ApiError::NotFound(format!("subject {:?} not found", r.subject_id)));
    }
    let face = state.analyze(image, Purpose::Verify).await?;
    let score = state
        .gallery
        .verify(&r.partition, &r.subject_id, face.vector, &face.model_id)
        .await?;
    let matched = score >= state.cfg.pipeline.recognizer.verify_threshold;
    Ok(super::xml(xml::verify(matched, score, &r.subject_id, face.quality, &face.model_id)))
}
