use actix_web::{web, HttpResponse};
use facegate_actors::PartitionStatus;
use serde_json::json;

use crate::{
    app::AppState,
    auth::{AnyKey, Authed},
    error::ApiError,
};

/// GET /api/v1/stats: subjects per partition the caller may see; partitions that are
/// restarting are listed under `degraded` instead of being counted.
pub async fn handle(Authed { caller, .. }: Authed<AnyKey>, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut total = 0;
    let mut partitions = serde_json::Map::new();
    let mut degraded = Vec::new();
    for p in state.gallery.info().into_iter().filter(|p| caller.may_see(&p.name)) {
        match (p.status, p.subjects) {
            (PartitionStatus::Ready, Some(n)) => {
                state.metrics.subjects.with_label_values(&[p.name.as_str()]).set(n as i64);
                total += n;
                partitions.insert(p.name, json!(n));
            }
            _ => degraded.push(p.name),
        }
    }
    let mut body = json!({ "total_subjects": total, "partitions": partitions });
    if !degraded.is_empty() {
        body["degraded"] = json!(degraded);
    }
    Ok(HttpResponse::Ok().json(body))
}
