use actix_web::{web, HttpRequest, HttpResponse};
use facegate_models::Purpose;

use crate::{
    app::{self, AppState},
    audit::Operation,
    auth::{Authed, Enrol},
    collision,
    error::ApiError,
    events::Event,
    xml,
};

use super::openapi::{Conflict, Forbidden, Invalid, Rejected, Spoof, Timeout, TooLarge, Unauthorized, Unavailable, WrongMethod};

/// Enrol a subject's face (durable when answered)
///
/// A face that matches another subject is refused or flagged first, as `collision`
/// configures.
#[utoipa::path(
    post,
    path = "/api/v1/enrol",
    request_body = super::SubjectPhoto,
    params(super::PartitionParam),
    security((), ("apiKey" = [])),
    responses(
        (status = 200, description = "<EnrolResponse>", content_type = "application/xml", body = String),
        (status = 400, response = Invalid),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 405, response = WrongMethod),
        (status = 408, response = Timeout),
        (status = 409, response = Conflict),
        (status = 413, response = TooLarge),
        (status = 422, response = Rejected),
        (status = 451, response = Spoof),
        (status = 503, response = Unavailable),
    )
)]
pub async fn handle(
    caller: Authed<Enrol>,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (started, partition, subject, image) = super::subject_photo(&state, caller, &req, payload).await?;
    let caller = &started.caller.caller;
    let mut audit = state.audit.entry(&req, caller, Operation::Enrol, &partition)?;
    audit.subject(&subject, None);
    let outcome = async {
        let face = state.analyze(image, Purpose::Enrol).await?;
        audit.face(&face);
        let flagged = collision::screen(&state, caller, &partition, &subject, &face, &mut audit).await?;
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
        Ok::<_, ApiError>(res)
    }
    .await;
    audit.finish(outcome).await
}
