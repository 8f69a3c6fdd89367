use actix_web::{web, HttpRequest, HttpResponse};
use facegate_models::Purpose;

use crate::{app::AppState, config::Right, error::ApiError, xml};

/// POST /api/v1/enrol: answered only once the template is durable.
pub async fn handle(state: web::Data<AppState>, req: HttpRequest, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let (r, image) = super::subject_photo(&state, &req, payload, Right::Enrol).await?;
    let face = state.analyze(image, Purpose::Enrol).await?;
    state
        .gallery
        .enrol(&r.partition, &r.subject_id, face.vector, &face.model_id, face.quality)
        .await?;
    Ok(super::xml(xml::enrol(&r.subject_id, face.quality, &face.model_id)))
}
