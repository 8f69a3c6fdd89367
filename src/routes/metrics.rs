use actix_web::{web, HttpResponse};

use super::openapi::{Forbidden, Unauthorized, WrongMethod};
use crate::{
    app::AppState,
    auth::{Admin, Authed},
    error::ApiError,
};

/// Prometheus metrics (admin right when keys are configured)
///
/// Only the series of the partitions the key may see.
#[utoipa::path(
    get,
    path = "/metrics",
    security((), ("apiKey" = [])),
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 405, response = WrongMethod),
    )
)]
pub async fn handle(Authed { caller, .. }: Authed<Admin>, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    for p in state.gallery.info() {
        if let Some(n) = p.subjects {
            state.metrics.subjects.with_label_values(&[p.name.as_str()]).set(n as i64);
        }
    }
    state.metrics.in_flight.set(state.pool.in_flight() as i64);
    state.metrics.body_bytes.set(state.bodies.held() as i64);
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render(|p| caller.may_see(p))))
}
