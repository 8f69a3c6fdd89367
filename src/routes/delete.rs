use actix_web::{web, HttpRequest, HttpResponse};
use facegate_actors::names;
use serde::Deserialize;

use crate::{
    app::{self, AppState},
    audit::Operation,
    auth::{Authed, Enrol},
    error::ApiError,
    events::Event,
    xml,
};

use super::openapi::{Forbidden, Invalid, NotFound, Timeout, Unauthorized, Unavailable, WrongMethod};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    #[schema(schema_with = super::openapi::field::subject_id)]
    subject_id: String,
    #[schema(schema_with = super::openapi::field::partition)]
    partition: Option<String>,
}

/// Delete every template of a subject
///
/// Answered once the removal is durable.
#[utoipa::path(
    post,
    path = "/api/v1/delete",
    request_body = DeleteRequest,
    params(super::PartitionParam),
    security((), ("apiKey" = [])),
    responses(
        (status = 200, description = "<DeleteResponse>", content_type = "application/xml", body = String),
        (status = 400, response = Invalid),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 405, response = WrongMethod),
        (status = 408, response = Timeout),
        (status = 503, response = Unavailable),
    )
)]
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
    if outcome.is_ok() {
        let request_id = app::request_id(&req);
        state
            .events
            .publish(Event::Deleted {
                partition: &partition,
                subject_id: &r.subject_id,
                request_id: &request_id,
            })
            .await;
    }
    audit
        .finish(outcome.map(|()| super::xml(xml::delete(&r.subject_id))).map_err(ApiError::from))
        .await
}
