//! The application: shared state, routes, and the middleware that gives every request an
//! id, a tracing span and its metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};
use facegate_actors::{FrameAnalysis, GalleryDirectory, PipelinePool};
use facegate_models::{FaceTemplate, Purpose};
use tracing::Instrument;

use crate::audit::Audit;
use crate::auth::Keys;
use crate::config::Config;
use crate::error::ApiError;
use crate::events::Events;
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
    pub audit: Audit,
    /// Webhook subscriptions, the outbox and its delivery workers.
    pub events: Arc<Events>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Models(#[from] facegate_models::ModelError),
    #[error("gallery storage: {0}")]
    Storage(#[from] std::io::Error),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("{0}")]
    Audit(String),
    #[error("{0}")]
    Events(#[from] crate::events::EventsError),
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
        // After the gallery, which makes the data directory (and the umask private).
        let audit = Audit::open(&cfg.audit, &cfg.gallery.data_dir).map_err(StartError::Audit)?;
        let metrics = Metrics::new()?;
        let events = Arc::new(Events::start(&cfg.webhooks, &cfg.gallery.data_dir, &metrics)?);
        Ok(Arc::new(Self {
            audit,
            pool,
            gallery,
            keys,
            metrics,
            events,
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

impl AppState {
    /// Every face of a frame through the pipeline, bounded by the request timeout. A frame
    /// that does not decode is refused as search refuses it; a frame without faces is not
    /// an error (identify answers it with zero faces).
    pub async fn identify(&self, image: Vec<u8>, purpose: Purpose, max_faces: usize) -> Result<FrameAnalysis, ApiError> {
        self.metrics.in_flight.set(self.pool.in_flight() as i64 + 1);
        let timeout = Duration::from_secs(self.cfg.server.request_timeout_secs);
        let result = tokio::time::timeout(timeout, self.pool.identify(image, purpose, max_faces)).await;
        self.metrics.in_flight.set(self.pool.in_flight() as i64);
        let frame =
            result.map_err(|_| ApiError::Unavailable(format!("the face pipeline did not answer within {} s", timeout.as_secs())))??;
        let frame = frame.map_err(|e| {
            self.metrics.rejections.with_label_values(&["decode"]).inc();
            ApiError::from(e)
        })?;
        self.metrics.record_stages(&frame.timings);
        for f in &frame.faces {
            self.metrics.record_stages(&f.timings);
        }
        tracing::info!(detected = frame.detected, analysed = frame.faces.len(), "identify");
        Ok(frame)
    }
}

/// The request id the `observe` middleware gave this request.
pub fn request_id(req: &actix_web::HttpRequest) -> String {
    req.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default()
}

/// The API's route table, written once: `ROUTES` lists it (the OpenAPI test compares the
/// document with it both ways) and `routes` serves it. A path answers 405 naming its methods
/// for any other.
macro_rules! route_table {
    ($($path:literal => [$($method:ident $handler:path),+],)*) => {
        /// Every API route: path and method.
        pub const ROUTES: &[(&str, actix_web::http::Method)] = &[$($(($path, actix_web::http::Method::$method)),+),*];

        /// Every route of API.md and ours, and the console (a web page, not part of the API).
        pub fn routes(cfg: &mut web::ServiceConfig) {
            $(cfg.service(
                web::resource($path)
                    $(.route(route(actix_web::http::Method::$method, $handler)))+
                    .default_service(web::to(routes::wrong_method(&[$(stringify!($method)),+].join(", ")))),
            );)*
            cfg.service(resource("/console", actix_web::http::Method::GET, routes::console::page))
                .service(resource("/console/{asset}", actix_web::http::Method::GET, routes::console::asset))
                .default_service(web::to(routes::not_found));
        }
    };
}

route_table! {
    "/api/v1/search" => [POST routes::search::handle],
    "/api/v1/verify" => [POST routes::verify::handle],
    "/api/v1/enrol" => [POST routes::enrol::handle],
    "/api/v1/delete" => [POST routes::delete::handle],
    "/api/v1/identify" => [POST routes::identify::handle],
    "/api/v1/webhooks" => [POST routes::webhooks::create, GET routes::webhooks::list, DELETE routes::webhooks::remove],
    "/api/v1/health" => [GET routes::health::handle],
    "/api/v1/partitions" => [GET routes::partitions::handle],
    "/api/v1/stats" => [GET routes::stats::handle],
    "/api/v1/audit" => [GET routes::audit::handle],
    "/api/v1/openapi.json" => [GET routes::openapi::handle],
    "/metrics" => [GET routes::metrics::handle],
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
        .route(route(method.clone(), handler))
        .default_service(web::to(routes::wrong_method(method.as_str())))
}

/// One method of a path, for a handler that says who may call it.
fn route<F, Args>(method: actix_web::http::Method, handler: F) -> actix_web::Route
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + crate::auth::Guarded + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::method(method).to(handler)
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
