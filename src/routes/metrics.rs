use actix_web::{web, HttpRequest, HttpResponse};

use crate::{app::AppState, config::Right, error::ApiError};

/// GET /metrics: Prometheus text; needs the admin right when keys are configured.
pub async fn handle(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let caller = state.keys.caller(&req)?;
    if !caller.has(Right::Admin) {
        return Err(ApiError::Forbidden("metrics need a key with the admin right".into()));
    }
    for p in state.gallery.info() {
        if let Some(n) = p.subjects {
            state.metrics.subjects.with_label_values(&[p.name.as_str()]).set(n as i64);
        }
    }
    state.metrics.in_flight.set(state.pool.in_flight() as i64);
    state.metrics.body_bytes.set(state.bodies.held() as i64);
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render()))
}
