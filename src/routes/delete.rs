use actix_web::{web, HttpRequest, HttpResponse};
use facegate_actors::names;
use serde::Deserialize;

use crate::{
    app::AppState,
    audit::Operation,
    auth::{Authed, Enrol},
    error::ApiError,
    xml,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteRequest {
    subject_id: String,
    partition: Option<String>,
}

/// POST /api/v1/delete: removes every template of the subject, durably.
pub async fn handle(
    caller: Authed<Enrol>,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let started = super::start(&state, caller, &req, payload, false).await?;
    let r: DeleteRequest = started.json()?;
    names::validate_subject(&r.subject_id)?;
    let partition = started.partition(r.partition)?;
    let mut audit = state.audit.entry(&req, &started.caller.caller, Operation::Delete, &partition)?;
    audit.subject(&r.subject_id, None);
    let outcome = state.gallery.delete(&partition, &r.subject_id).await;
    audit
        .finish(outcome.map(|()| super::xml(xml::delete(&r.subject_id))).map_err(ApiError::from))
        .await
}
