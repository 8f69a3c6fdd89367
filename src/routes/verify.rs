use actix_web::{web, HttpRequest, HttpResponse};
use facegate_models::Purpose;

use crate::{
    app::AppState,
    auth::{Authed, Search},
    error::ApiError,
    xml,
};

/// POST /api/v1/verify: 1:1 against the subject's best template.
pub async fn handle(
    caller: Authed<Search>,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (_held, partition, subject, image) = super::subject_photo(&state, caller, &req, payload).await?;
    // An unknown subject costs no pipeline run.
    if !state.gallery.contains(&partition, &subject)? {
        return Err(ApiError::NotFound(format!("subject {subject:?} not found")));
    }
    let face = state.analyze(image, Purpose::Verify).await?;
    let score = state.gallery.verify(&partition, &subject, face.vector, &face.model_id).await?;
    let matched = score >= state.cfg.pipeline.recognizer.verify_threshold;
    Ok(super::xml(xml::verify(matched, score, &subject, face.quality, &face.model_id)))
}
