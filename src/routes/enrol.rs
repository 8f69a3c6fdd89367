use actix_web::{web, HttpRequest, HttpResponse};
use facegate_models::Purpose;

use crate::{app::AppState, collision, config::Right, error::ApiError, xml};

/// POST /api/v1/enrol: answered only once the template is durable. A face that matches
/// another subject is refused or flagged first, as `collision` configures.
pub async fn handle(state: web::Data<AppState>, req: HttpRequest, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let (caller, r, image) = super::subject_photo(&state, &req, payload, Right::Enrol).await?;
    let face = state.analyze(image, Purpose::Enrol).await?;
    let flagged = collision::screen(&state, &caller, &r.partition, &r.subject_id, &face).await?;
    state
        .gallery
        .enrol(&r.partition, &r.subject_id, face.vector, &face.model_id, face.quality)
        .await?;
    let mut res = super::xml(xml::enrol(&r.subject_id, face.quality, &face.model_id));
    if let Some(c) = flagged {
        if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&c.describe()) {
            res.headers_mut().insert(collision::HEADER, v);
        }
    }
    Ok(res)
}
