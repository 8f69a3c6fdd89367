use actix_web::{web, HttpRequest, HttpResponse};
use facegate_actors::names;
use facegate_models::Purpose;
use serde::Deserialize;

use crate::{app::AppState, body, config::Right, error::ApiError, xml};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrolRequest {
    image: String,
    subject_id: String,
    #[serde(default = "super::search::default_partition")]
    partition: String,
}

/// POST /api/v1/enrol: answered only once the template is durable.
pub async fn handle(state: web::Data<AppState>, req: HttpRequest, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let caller = state.keys.caller(&req)?;
    let r: EnrolRequest = body::json(payload, state.cfg.server.max_body_bytes).await?;
    names::validate_partition(&r.partition)?;
    names::validate_subject(&r.subject_id)?;
    caller.require(&r.partition, Right::Enrol)?;
    let image = body::image(&r.image, state.cfg.pipeline.limits.max_image_bytes)?;
    let face = state.analyze(image, Purpose::Enrol).await?;
    state
        .gallery
        .enrol(&r.partition, &r.subject_id, face.vector, &face.model_id, face.quality)
        .await?;
    Ok(super::xml(xml::enrol(&r.subject_id, face.quality, &face.model_id)))
}
