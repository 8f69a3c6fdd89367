use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::openapi::{Forbidden, Invalid, Unauthorized, WrongMethod};
use crate::{
    app::AppState,
    audit::{
        query::{self, Params},
        record::Record,
    },
    auth::{Admin, Authed},
    error::ApiError,
};

#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    /// In chain order, each as it is stored (the bytes the chain hashes).
    #[schema(value_type = Vec<Record>)]
    records: Vec<serde_json::Value>,
    /// More records matched than `limit`.
    truncated: bool,
}

/// Audit records by time range, partition and subject (admin right; the key's partitions only)
///
/// In chain order, from the partitions the key may use only.
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    params(Params),
    security((), ("apiKey" = [])),
    responses(
        (status = 200, description = "records in chain order", body = AuditPage),
        (status = 400, response = Invalid),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 405, response = WrongMethod),
    )
)]
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
    Ok(HttpResponse::Ok().json(AuditPage { records, truncated }))
}
