use actix_web::{web, HttpRequest, HttpResponse};
use facegate_actors::names;
use serde::Deserialize;

use crate::{
    app::AppState,
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
    state.gallery.delete(&partition, &r.subject_id).await?;
    Ok(super::xml(xml::delete(&r.subject_id)))
}
