use actix_web::{web, HttpResponse};
use facegate_actors::PartitionStatus;
use serde::Serialize;
use utoipa::ToSchema;

use super::openapi::{Unauthorized, WrongMethod};
use crate::{
    app::AppState,
    auth::{AnyKey, Authed},
    error::ApiError,
};

#[derive(Serialize, ToSchema)]
pub struct Stats {
    total_subjects: usize,
    partitions: std::collections::BTreeMap<String, usize>,
    /// Partitions restarting or unreadable, listed instead of counted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    degraded: Vec<String>,
}

/// Subjects per partition the caller may see
///
/// Partitions that are restarting are listed under `degraded` instead of being counted.
#[utoipa::path(
    get,
    path = "/api/v1/stats",
    security((), ("apiKey" = [])),
    responses(
        (status = 200, description = "counts", body = Stats),
        (status = 401, response = Unauthorized),
        (status = 405, response = WrongMethod),
    )
)]
pub async fn handle(Authed { caller, .. }: Authed<AnyKey>, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut total = 0;
    let mut partitions = std::collections::BTreeMap::new();
    let mut degraded = Vec::new();
    for p in state.gallery.info().into_iter().filter(|p| caller.may_see(&p.name)) {
        match (p.status, p.subjects) {
            (PartitionStatus::Ready, Some(n)) => {
                state.metrics.subjects.with_label_values(&[p.name.as_str()]).set(n as i64);
                total += n;
                partitions.insert(p.name, n);
            }
            _ => degraded.push(p.name),
        }
    }
    Ok(HttpResponse::Ok().json(Stats {
        total_subjects: total,
        partitions,
        degraded,
    }))
}
