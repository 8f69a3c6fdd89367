//! POST /api/v1/identify: every face of a frame, each searched in one or more partitions.

use actix_web::{web, HttpRequest, HttpResponse};
use facegate_models::Purpose;
use serde::Deserialize;

use facegate_actors::Candidate;
use facegate_models::pipeline::FaceReport;

use crate::{
    app::{self, AppState},
    audit::Operation,
    auth::{Authed, Search},
    body,
    error::ApiError,
    events::Event,
    xml,
};

use super::openapi::{field, Conflict, Forbidden, Invalid, NotFound, Timeout, TooLarge, Unauthorized, Unavailable, WrongMethod};

/// One face of the frame: what its gates measured and, when it was searched, the
/// candidates of each partition in the request's order.
pub struct IdentifiedFace {
    pub report: FaceReport,
    pub hits: Vec<(String, Vec<Candidate>)>,
}

/// Partitions one frame may be searched in: each is a search of every face.
pub const MAX_PARTITIONS: usize = 8;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentifyRequest {
    #[schema(schema_with = field::image)]
    image: String,
    /// Partitions each face is searched in (default ["default"], at most 8), each checked
    /// against the key (403) before any is looked up (404). The query parameter partition,
    /// when given, must be one of them.
    #[schema(nullable = false, min_items = 1, max_items = 8)]
    partitions: Option<Vec<String>>,
    #[schema(nullable = false, minimum = 1, maximum = 100, default = 5)]
    top_k: Option<i64>,
    /// Candidates scoring below this cosine are left out (as in search).
    #[schema(nullable = false, minimum = 0, maximum = 1)]
    min_score: Option<f64>,
    /// The largest faces analysed (largest first); at most pipeline.identify.max_faces_ceiling.
    #[schema(nullable = false, minimum = 1, maximum = 20, default = 10)]
    max_faces: Option<i64>,
}

/// Every face of a frame, each searched in the given partitions (ours)
///
/// Every partition is checked against the key's rights before any is looked up, so a
/// partition the key may not read is refused alike whether or not it exists, exactly as
/// search refuses it. A frame without faces is 200 with `<faces/>`.
#[utoipa::path(
    post,
    path = "/api/v1/identify",
    request_body = IdentifyRequest,
    params(super::PartitionParam),
    security((), ("apiKey" = [])),
    responses(
        (status = 200, description = "<IdentifyResponse>: faces_detected and every analysed face, largest first: box, 5 landmarks, detection_score, quality_score, pad_score, pad_decision (live|spoof), and either searched=true with candidates per partition or searched=false with not_searched (too_small, quality, spoof)", content_type = "application/xml", body = String),
        (status = 400, response = Invalid),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 405, response = WrongMethod),
        (status = 408, response = Timeout),
        (status = 409, response = Conflict),
        (status = 413, response = TooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn handle(
    caller: Authed<Search>,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let started = super::start(&state, caller, &req, payload, true).await?;
    let mut r: IdentifyRequest = started.json()?;
    let partitions = started.partitions(r.partitions.take(), MAX_PARTITIONS)?;
    let first = partitions
        .first()
        .ok_or_else(|| ApiError::InvalidRequest("partitions must list at least one partition".into()))?;
    let mut audit = state.audit.entry(&req, &started.caller.caller, Operation::Identify, first)?;
    let outcome = identify(&state, &req, r, &partitions, &mut audit).await;
    audit.finish(outcome).await
}

/// The frame's faces, each searched in `partitions`; every candidate returned goes into the
/// audit record of its partition.
async fn identify(
    state: &AppState,
    req: &HttpRequest,
    r: IdentifyRequest,
    partitions: &[String],
    audit: &mut crate::audit::Entry<'_>,
) -> Result<HttpResponse, ApiError> {
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
            for p in partitions {
                hits.push((
                    p.clone(),
                    state.gallery.search(p, vector.clone(), &model_id, top_k, min_score).await?,
                ));
            }
        }
        faces.push(IdentifiedFace { report, hits });
    }
    audit.model(&model_id);
    for (i, p) in partitions.iter().enumerate() {
        let hits: Vec<Candidate> = faces
            .iter()
            .flat_map(|f| f.hits.iter().filter(|(q, _)| q == p).flat_map(|(_, h)| h.iter().cloned()))
            .collect();
        if i == 0 {
            audit.candidates(&hits);
        } else {
            audit.also_in(p, &hits);
        }
    }
    let request_id = app::request_id(req);
    state
        .events
        .publish(Event::Identified {
            partitions,
            faces: &faces,
            request_id: &request_id,
        })
        .await;
    Ok(super::xml(xml::identify(frame.detected, &faces, &model_id)))
}
