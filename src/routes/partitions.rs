use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::{app::AppState, error::ApiError};

/// GET /api/v1/partitions: the partitions the caller's key may see.
pub async fn handle(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let caller = state.keys.caller(&req)?;
    let names: Vec<String> = state.gallery.names().into_iter().filter(|p| caller.may_see(p)).collect();
    Ok(HttpResponse::Ok().json(json!({ "partitions": names })))
}
