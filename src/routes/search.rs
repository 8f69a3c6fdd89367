use actix_web::{web, HttpRequest, HttpResponse};
use facegate_models::Purpose;
use serde::Deserialize;

use crate::{
    app::AppState,
    audit::Operation,
    auth::{Authed, Search},
    body,
    error::ApiError,
    xml,
};

use super::openapi::{
    field, Conflict, Forbidden, Invalid, NotFound, Rejected, Spoof, Timeout, TooLarge, Unauthorized, Unavailable, WrongMethod,
};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    #[schema(schema_with = field::image)]
    image: String,
    #[schema(schema_with = field::partition)]
    partition: Option<String>,
    /// How many candidates at most (server.max_top_k, 100 unless configured).
    #[schema(nullable = false, minimum = 1, maximum = 100, default = 5)]
    top_k: Option<i64>,
    /// Candidates scoring below this cosine are left out. What a score means in false
    /// matches is in the recognizer's calibration table (models/calibration/arcface-w600k-mbf.csv:
    /// cosine -> FMR, FNMR); 0.282, the default verify_threshold, gives FMR 1e-4 per
    /// comparison, and a gallery of N people multiplies the chance of a false candidate by about N.
    #[schema(nullable = false, minimum = 0, maximum = 1)]
    min_score: Option<f64>,
}

/// 1:N search of a partition
#[utoipa::path(
    post,
    path = "/api/v1/search",
    request_body = SearchRequest,
    params(super::PartitionParam),
    security((), ("apiKey" = [])),
    responses(
        (status = 200, description = "<SearchResponse> with candidates ranked by score (each subject once)", content_type = "application/xml", body = String),
        (status = 400, response = Invalid),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 405, response = WrongMethod),
        (status = 408, response = Timeout),
        (status = 409, response = Conflict),
        (status = 413, response = TooLarge),
        (status = 422, response = Rejected),
        (status = 451, response = Spoof),
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
    let r: SearchRequest = started.json()?;
    let partition = started.partition(r.partition)?;
    let mut audit = state.audit.entry(&req, &started.caller.caller, Operation::Search, &partition)?;
    let outcome = async {
        let top_k = body::top_k(r.top_k, state.cfg.server.default_top_k, state.cfg.server.max_top_k)?;
        let min_score = body::min_score(r.min_score)?;
        let image = body::image(&r.image, state.cfg.pipeline.limits.max_image_bytes)?;
        if !state.gallery.exists(&partition) {
            return Err(ApiError::NotFound(format!("partition {partition:?} not found")));
        }
        let face = state.analyze(image, Purpose::Search).await?;
        audit.face(&face);
        let model_id = face.model_id.clone();
        let hits = state.gallery.search(&partition, face.vector, &model_id, top_k, min_score).await?;
        audit.candidates(&hits);
        Ok::<_, ApiError>(super::xml(xml::search(&hits, face.quality, &model_id)))
    }
    .await;
    audit.finish(outcome).await
}
