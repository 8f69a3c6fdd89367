use actix_web::{web, HttpRequest, HttpResponse};
use facegate_actors::names;
use serde::Deserialize;

use crate::{app::AppState, body, config::Right, error::ApiError, xml};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteRequest {
    subject_id: String,
    #[serde(default = "super::default_partition")]
    partition: String,
}

/// POST /api/v1/delete: removes every template of the subject, durably.
pub async fn handle(state: web::Data<AppState>, req: HttpRequest, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let caller = state.keys.caller(&req)?;
    let r: DeleteRequest = body::json(payload, state.cfg.server.max_body_bytes).await?;
    names::validate_partition(&r.partition)?;
    names::validate_subject(&r.subject_id)?;
    caller.require(&r.partition, Right::Enrol)?;
    state.gallery.delete(&r.partition, &r.subject_id).await?;
    Ok(super::xml(xml::delete(&r.subject_id)))
}
