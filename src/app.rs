//! The application: shared state, routes, and the middleware that gives every request an
//! id, a tracing span and its metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};
use facegate_actors::{GalleryDirectory, PipelinePool};
use facegate_models::{FaceTemplate, Purpose};
use tracing::Instrument;

use crate::auth::Keys;
use crate::config::Config;
use crate::error::ApiError;
use crate::intake::BodyBudget;
use crate::metrics::Metrics;
use crate::routes;

pub struct AppState {
    pub cfg: Config,
    pub pool: PipelinePool,
    pub gallery: Arc<GalleryDirectory>,
    pub keys: Keys,
    pub metrics: Metrics,
    /// Request body bytes held in memory across every connection.
    pub bodies: BodyBudget,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Models(#[from] facegate_models::ModelError),
    #[error("gallery storage: {0}")]
    Storage(#[from] std::io::Error),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl AppState {
    /// Load the models and the partitions. Runs inside an actix system.
    pub fn start(cfg: Config) -> Result<Arc<Self>, StartError> {
        let pool = PipelinePool::start(
            &cfg.pool,
            &cfg.pipeline,
            &cfg.runtime.onnxruntime,
            facegate_models::runtime::Provider::parse(&cfg.runtime.provider, cfg.runtime.provider_required)?,
        )?;
        let gallery = GalleryDirectory::open(cfg.gallery.clone(), pool.info().dim)?;
        let keys = Keys::new(cfg.auth.keys.clone());
        Ok(Arc::new(Self {
            pool,
            gallery,
            keys,
            metrics: Metrics::new()?,
            bodies: BodyBudget::new(cfg.server.body_budget_bytes, cfg.server.max_body_bytes),
            cfg,
        }))
    }

    /// Run the face pipeline, bounded by the request timeout; rejections become errors.
    pub async fn analyze(&self, image: Vec<u8>, purpose: Purpose) -> Result<FaceTemplate, ApiError> {
        self.metrics.in_flight.set(self.pool.in_flight() as i64 + 1);
        let timeout = Duration::from_secs(self.cfg.server.request_timeout_secs);
        let result = tokio::time::timeout(timeout, self.pool.analyze(image, purpose)).await;
        self.metrics.in_flight.set(self.pool.in_flight() as i64);
        let analysis =
            result.map_err(|_| ApiError::Unavailable(format!("the face pipeline did not answer within {} s", timeout.as_secs())))??;
        self.metrics.record_stages(&analysis.timings);
        let timings: Vec<String> = analysis
            .timings
            .0
            .iter()
            .map(|(s, d)| format!("{}={:.1}ms", s.name(), d.as_secs_f64() * 1e3))
            .collect();
        tracing::info!(stages = %timings.join(" "), "pipeline");
        analysis.outcome.map_err(|r| {
            let e = ApiError::from(r);
            if let Some(gate) = e.gate() {
                self.metrics.rejections.with_label_values(&[gate]).inc();
            }
            e
        })
    }
}

/// Every route of API.md; a known path asked with another method answers 405 with Allow.
pub fn routes(cfg: &mut web::ServiceConfig) {
    use actix_web::http::Method;
    cfg.service(
        web::scope("/api/v1")
            .service(resource("/search", Method::POST, routes::search::handle))
            .service(resource("/verify", Method::POST, routes::verify::handle))
            .service(resource("/enrol", Method::POST, routes::enrol::handle))
            .service(resource("/delete", Method::POST, routes::delete::handle))
            .service(resource("/health", Method::GET, routes::health::handle))
            .service(resource("/partitions", Method::GET, routes::partitions::handle))
            .service(resource("/stats", Method::GET, routes::stats::handle))
            .service(resource("/openapi.json", Method::GET, routes::openapi::handle)),
    )
    .service(resource("/metrics", Method::GET, routes::metrics::handle))
    .default_service(web::to(routes::not_found));
}

/// A path taking one method; any other gets 405 naming it. The handler's first argument
/// must say who may call it (`auth::Guarded`): a route without one does not compile.
fn resource<F, Args>(path: &'static str, method: actix_web::http::Method, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + crate::auth::Guarded + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::method(method.clone()).to(handler))
        .default_service(web::to(routes::wrong_method(method)))
}

/// The request id a caller sent (if sane) or a new one.
#[derive(Clone)]
pub struct RequestId(pub String);

const REQUEST_ID: &str = "x-request-id";

/// Request id, tracing span, access log and metrics for every request.
pub async fn observe(req: ServiceRequest, next: Next<impl MessageBody>) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let endpoint = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), endpoint = %endpoint);
    let start = Instant::now();
    let mut res = next.call(req).instrument(span.clone()).await?;
    let status = res.status();
    let elapsed = start.elapsed();
    if let Some(state) = state {
        let labels = [endpoint.as_str(), status.as_str()];
        state.metrics.requests.with_label_values(&labels).inc();
        state.metrics.latency.with_label_values(&labels).observe(elapsed.as_secs_f64());
    }
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            ms = format!("{:.1}", elapsed.as_secs_f64() * 1e3),
            "answered"
        )
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(HeaderName::from_static(REQUEST_ID), v);
    }
    Ok(res)
}
