use actix_web::{web, HttpRequest, HttpResponse};
use facegate_models::Purpose;

use crate::{
    app::AppState,
    audit::Operation,
    auth::{Authed, Search},
    error::ApiError,
    xml,
};

use super::openapi::{Conflict, Forbidden, Invalid, NotFound, Rejected, Spoof, Timeout, TooLarge, Unauthorized, Unavailable, WrongMethod};

/// 1:1 verification against an enrolled subject
///
/// Compared with the subject's best-matching template.
#[utoipa::path(
    post,
    path = "/api/v1/verify",
    request_body = super::SubjectPhoto,
    params(super::PartitionParam),
    security((), ("apiKey" = [])),
    responses(
        (status = 200, description = "<VerifyResponse>; match is score >= the model's verify threshold", content_type = "application/xml", body = String),
        (status = 400, response = Invalid),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
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
    caller: Authed<Search>,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (started, partition, subject, image) = super::subject_photo(&state, caller, &req, payload).await?;
    let mut audit = state.audit.entry(&req, &started.caller.caller, Operation::Verify, &partition)?;
    audit.subject(&subject, None);
    let outcome = async {
        // An unknown subject costs no pipeline run.
        if !state.gallery.contains(&partition, &subject)? {
            return Err(ApiError::NotFound(format!("subject {subject:?} not found")));
        }
        let face = state.analyze(image, Purpose::Verify).await?;
        audit.face(&face);
        let score = state.gallery.verify(&partition, &subject, face.vector, &face.model_id).await?;
        let matched = score >= state.cfg.pipeline.recognizer.verify_threshold;
        audit.subject(&subject, Some(score));
        audit.decision(if matched { "MATCH" } else { "NO_MATCH" });
        Ok::<_, ApiError>(super::xml(xml::verify(matched, score, &subject, face.quality, &face.model_id)))
    }
    .await;
    audit.finish(outcome).await
}
