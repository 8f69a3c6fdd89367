//! POST /api/v1/identify: every face of a frame, each searched in one or more partitions.

use actix_web::{web, HttpRequest, HttpResponse};
use facegate_models::Purpose;
use serde::Deserialize;

use facegate_actors::Candidate;
use facegate_models::pipeline::FaceReport;

use crate::{
    app::{self, AppState},
    auth::{Authed, Search},
    body,
    error::ApiError,
    events::Event,
    xml,
};

/// One face of the frame: what its gates measured and, when it was searched, the
/// candidates of each partition in the request's order.
pub struct IdentifiedFace {
    pub report: FaceReport,
    pub hits: Vec<(String, Vec<Candidate>)>,
}

/// Partitions one frame may be searched in: each is a search of every face.
pub const MAX_PARTITIONS: usize = 8;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentifyRequest {
    image: String,
    partitions: Option<Vec<String>>,
    top_k: Option<i64>,
    min_score: Option<f64>,
    max_faces: Option<i64>,
}

/// POST /api/v1/identify. Every partition is checked against the key's rights before any
/// is looked up, so a partition the key may not read is refused alike whether or not it
/// exists, exactly as search refuses it.
pub async fn handle(
    caller: Authed<Search>,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let started = super::start(&state, caller, &req, payload, true).await?;
    let r: IdentifyRequest = started.json()?;
    let partitions = started.partitions(r.partitions, MAX_PARTITIONS)?;
    let top_k = body::top_k(r.top_k, state.cfg.server.default_top_k, state.cfg.server.max_top_k)?;
    let min_score = body::min_score(r.min_score)?;
    let limits = &state.cfg.pipeline.identify;
    let max_faces = match r.max_faces {
        None => limits.default_max_faces,
        Some(n) if n >= 1 && n as u64 <= limits.max_faces_ceiling as u64 => n as usize,
        Some(n) => {
            return Err(ApiError::InvalidRequest(format!(
                "max_faces must be between 1 and {}, got {n}",
                limits.max_faces_ceiling
            )))
        }
    };
    let image = body::image(&r.image, state.cfg.pipeline.limits.max_image_bytes)?;
    if let Some(p) = partitions.iter().find(|p| !state.gallery.exists(p)) {
        return Err(ApiError::NotFound(format!("partition {p:?} not found")));
    }
    let frame = state.identify(image, Purpose::Search, max_faces).await?;
    let model_id = state.pool.model_id().to_string();
    let mut faces = Vec::with_capacity(frame.faces.len());
    for report in frame.faces {
        let mut hits = Vec::new();
        if let Ok(vector) = &report.outcome {
            for p in &partitions {
                hits.push((
                    p.clone(),
                    state.gallery.search(p, vector.clone(), &model_id, top_k, min_score).await?,
                ));
            }
        }
        faces.push(IdentifiedFace { report, hits });
    }
    let request_id = app::request_id(&req);
    state
        .events
        .publish(Event::Identified {
            partitions: &partitions,
            faces: &faces,
            request_id: &request_id,
        })
        .await;
    Ok(super::xml(xml::identify(frame.detected, &faces, &model_id)))
}
