use actix_web::{web, HttpRequest, HttpResponse};
use facegate_models::Purpose;

use crate::{
    app::AppState,
    audit::Operation,
    auth::{Authed, Enrol},
    collision,
    error::ApiError,
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
