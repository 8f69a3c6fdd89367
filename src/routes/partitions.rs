use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::{
    app::AppState,
    auth::{AnyKey, Authed},
    error::ApiError,
};

/// GET /api/v1/partitions: the partitions the caller's key may see.
pub async fn handle(Authed { caller, .. }: Authed<AnyKey>, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let names: Vec<String> = state.gallery.names().into_iter().filter(|p| caller.may_see(p)).collect();
    Ok(HttpResponse::Ok().json(json!({ "partitions": names })))
}
