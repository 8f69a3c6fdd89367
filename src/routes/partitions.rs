use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::openapi::{Unauthorized, WrongMethod};
use crate::{
    app::AppState,
    auth::{AnyKey, Authed},
    error::ApiError,
};

#[derive(Serialize, ToSchema)]
pub struct Partitions {
    partitions: Vec<String>,
}

/// Partitions the caller may see
#[utoipa::path(
    get,
    path = "/api/v1/partitions",
    security((), ("apiKey" = [])),
    responses(
        (status = 200, description = "names", body = Partitions),
        (status = 401, response = Unauthorized),
        (status = 405, response = WrongMethod),
    )
)]
pub async fn handle(Authed { caller, .. }: Authed<AnyKey>, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let partitions = state.gallery.names().into_iter().filter(|p| caller.may_see(p)).collect();
    Ok(HttpResponse::Ok().json(Partitions { partitions }))
}
