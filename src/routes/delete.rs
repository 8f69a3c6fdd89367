use actix_web::{web, HttpRequest, HttpResponse};
use facegate_actors::names;
use serde::Deserialize;

use crate::{
    app::{self, AppState},
    auth::{Authed, Enrol},
    error::ApiError,
    events::Event,
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
    let request_id = app::request_id(&req);
    state
        .events
        .publish(Event::Deleted {
            partition: &partition,
            subject_id: &r.subject_id,
            request_id: &request_id,
        })
        .await;
    Ok(super::xml(xml::delete(&r.subject_id)))
}
