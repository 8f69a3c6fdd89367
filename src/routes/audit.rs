use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::{
    app::AppState,
    audit::query::{self, Params},
    auth::{Admin, Authed},
    error::ApiError,
};

/// GET /api/v1/audit: audit records by time range, partition and subject, in chain order,
/// from the partitions the key may use only.
pub async fn handle(caller: Authed<Admin>, state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let params = web::Query::<Params>::from_query(req.query_string())
        .map_err(|e| ApiError::InvalidRequest(format!("bad query string: {e}")))?
        .into_inner();
    let q = params.check(&caller)?;
    let path = state.audit.path().to_path_buf();
    let read = web::block(move || query::run(&path, &q)).await;
    let (records, truncated) = read
        .map_err(|e| ApiError::internal(&req, e))?
        .map_err(|e| ApiError::internal(&req, format!("audit query: {e}")))?;
    Ok(HttpResponse::Ok().json(json!({ "records": records, "truncated": truncated })))
}
