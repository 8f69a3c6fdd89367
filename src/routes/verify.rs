use actix_web::{web, HttpRequest, HttpResponse};
use facegate_models::Purpose;

use crate::{
    app::AppState,
    audit::Operation,
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
