use actix_web::{web, HttpRequest, HttpResponse};
use facegate_models::Purpose;

use crate::{
    app::{self, AppState},
    auth::{Authed, Enrol},
    collision,
    error::ApiError,
    events::Event,
    xml,
};

/// POST /api/v1/enrol: answered only once the template is durable. A face that matches
/// another subject is refused or flagged first, as `collision` configures.
pub async fn handle(
    caller: Authed<Enrol>,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (started, partition, subject, image) = super::subject_photo(&state, caller, &req, payload).await?;
    let face = state.analyze(image, Purpose::Enrol).await?;
    let flagged = collision::screen(&state, &started.caller.caller, &partition, &subject, &face).await?;
    state
        .gallery
        .enrol(&partition, &subject, face.vector, &face.model_id, face.quality)
        .await?;
    // The template is durable: the event is queued before the answer, never instead of it.
    let request_id = app::request_id(&req);
    state
        .events
        .publish(Event::Enrolled {
            partition: &partition,
            subject_id: &subject,
            quality: face.quality,
            request_id: &request_id,
        })
        .await;
    let mut res = super::xml(xml::enrol(&subject, face.quality, &face.model_id));
    if let Some(c) = flagged {
        if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&c.describe()) {
            res.headers_mut().insert(collision::HEADER, v);
        }
    }
    Ok(res)
}
