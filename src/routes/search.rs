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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchRequest {
    image: String,
    partition: Option<String>,
    top_k: Option<i64>,
    min_score: Option<f64>,
}

/// POST /api/v1/search: 1:N.
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
