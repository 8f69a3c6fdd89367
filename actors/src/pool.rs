//! The pool of pipeline workers: an actix `SyncArbiter` of N threads, each owning its own
//! ONNX Runtime sessions (ort needs `&mut Session` to run). Requests in flight are bounded:
//! past the bound the pool answers `Overloaded` at once instead of queueing without limit.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use facegate_models::{
    decode::DecodeError,
    detect::Face,
    manifest::VerifiedFile,
    pipeline::{FaceReport, Frame, ModelHealth},
    runtime::{self, RuntimeInfo},
    Analysis, ModelError, Pipeline, PipelineConfig, Purpose,
};
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Worker threads, each with its own sessions; 0 = one per core.
    pub workers: usize,
    /// Requests admitted at once (running + queued); beyond it: Overloaded (HTTP 503).
    pub max_inflight: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            workers: 0,
            max_inflight: 32,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("the face pipeline is at capacity ({0} requests in flight)")]
    Overloaded(usize),
    #[error("{0}")]
    Model(#[from] ModelError),
    #[error("a pipeline worker failed and is restarting")]
    WorkerFailed,
}

struct Analyze {
    bytes: Vec<u8>,
    purpose: Purpose,
}

impl Message for Analyze {
    type Result = Result<Analysis, PoolError>;
}

/// Decode a frame and detect every face in it (identify's one detector pass).
struct DetectFrame {
    bytes: Vec<u8>,
}

impl Message for DetectFrame {
    type Result = Result<Result<Frame, DecodeError>, PoolError>;
}

/// One face of a detected frame through align, PAD, quality and embed.
struct AnalyzeFace {
    frame: Arc<Frame>,
    face: Face,
    purpose: Purpose,
}

impl Message for AnalyzeFace {
    type Result = Result<FaceReport, PoolError>;
}

/// Every face of a frame, analysed.
#[derive(Debug, Clone)]
pub struct FrameAnalysis {
    /// Faces the detector found, whether or not they were analysed.
    pub detected: usize,
    /// The `max_faces` largest, largest first.
    pub faces: Vec<FaceReport>,
    /// The frame's decode and detection (each face's own stages are in its report).
    pub timings: facegate_models::StageTimings,
}

struct Probe;

impl Message for Probe {
    type Result = ModelHealth;
}

struct PipelineWorker {
    pipeline: Option<Pipeline>,
}

impl Actor for PipelineWorker {
    type Context = SyncContext<Self>;
}

impl Handler<Analyze> for PipelineWorker {
    type Result = Result<Analysis, PoolError>;

    fn handle(&mut self, msg: Analyze, ctx: &mut Self::Context) -> Self::Result {
        let Some(pipeline) = self.pipeline.as_mut() else {
            return Err(PoolError::WorkerFailed);
        };
        match catch_unwind(AssertUnwindSafe(|| pipeline.analyze(&msg.bytes, msg.purpose))) {
            Ok(result) => Ok(result?),
            Err(_) => {
                tracing::error!("pipeline worker panicked; restarting it with fresh sessions");
                ctx.stop(); // SyncContext builds a new worker from the factory
                Err(PoolError::WorkerFailed)
            }
        }
    }
}

/// Runs `f` on the worker's pipeline; a panic restarts the worker with fresh sessions.
fn guarded<T>(
    worker: &mut PipelineWorker,
    ctx: &mut SyncContext<PipelineWorker>,
    f: impl FnOnce(&mut Pipeline) -> Result<T, ModelError>,
) -> Result<T, PoolError> {
    let Some(pipeline) = worker.pipeline.as_mut() else {
        return Err(PoolError::WorkerFailed);
    };
    match catch_unwind(AssertUnwindSafe(|| f(pipeline))) {
        Ok(result) => Ok(result?),
        Err(_) => {
            tracing::error!("pipeline worker panicked; restarting it with fresh sessions");
            ctx.stop();
            Err(PoolError::WorkerFailed)
        }
    }
}

impl Handler<DetectFrame> for PipelineWorker {
    type Result = Result<Result<Frame, DecodeError>, PoolError>;

    fn handle(&mut self, msg: DetectFrame, ctx: &mut Self::Context) -> Self::Result {
        guarded(self, ctx, |p| p.detect_frame(&msg.bytes))
    }
}

impl Handler<AnalyzeFace> for PipelineWorker {
    type Result = Result<FaceReport, PoolError>;

    fn handle(&mut self, msg: AnalyzeFace, ctx: &mut Self::Context) -> Self::Result {
        guarded(self, ctx, |p| p.analyze_face(&msg.frame.image, &msg.face, msg.purpose))
    }
}

impl Handler<Probe> for PipelineWorker {
    type Result = MessageResult<Probe>;

    fn handle(&mut self, _: Probe, _: &mut Self::Context) -> Self::Result {
        MessageResult(
            self.pipeline
                .as_mut()
                .map(|p| catch_unwind(AssertUnwindSafe(|| p.probe())).unwrap_or_default())
                .unwrap_or_default(),
        )
    }
}

/// What the pool loaded, for the start-up log and health.
#[derive(Debug, Clone, Serialize)]
pub struct PoolInfo {
    pub runtime: RuntimeInfo,
    pub files: Vec<VerifiedFile>,
    pub model_id: String,
    pub dim: usize,
    pub workers: usize,
    /// The MAD model's version and the threshold it runs at, when one is configured.
    pub mad: Option<MadModel>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MadModel {
    pub version: String,
    pub threshold: f32,
}

pub struct PipelinePool {
    addr: Addr<PipelineWorker>,
    permits: Arc<Semaphore>,
    max_inflight: usize,
    info: PoolInfo,
    last_health: Mutex<Option<(Instant, ModelHealth)>>,
}

impl PipelinePool {
    /// Load ONNX Runtime, check every model file, load and warm up each worker's sessions.
    /// Any failure stops here, naming the file: the service never starts half-working.
    pub fn start(
        pool: &PoolConfig,
        cfg: &PipelineConfig,
        ort_library: &std::path::Path,
        provider: runtime::Provider,
    ) -> Result<Self, ModelError> {
        cfg.validate()?;
        let runtime = runtime::init(ort_library, provider)?;
        let files = Pipeline::verify_files(cfg)?;
        let workers = if pool.workers == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        } else {
            pool.workers
        };
        let mut ready = Vec::with_capacity(workers);
        for _ in 0..workers {
            let mut p = Pipeline::load(cfg)?;
            let warm = p.probe();
            if !(warm.detection && warm.recognition && warm.quality && warm.pad) {
                return Err(ModelError::Runtime(format!("warm-up pass failed: {warm:?}")));
            }
            ready.push(p);
        }
        let info = PoolInfo {
            runtime,
            files,
            model_id: ready[0].model_id().to_string(),
            dim: ready[0].dim(),
            workers,
            mad: ready[0].mad_model().map(|(threshold, version)| MadModel {
                version: version.to_string(),
                threshold,
            }),
        };
        let spare = Arc::new(Mutex::new(ready));
        let cfg = cfg.clone();
        let addr = SyncArbiter::start(workers, move || {
            // First start: the sessions loaded above; a restart after a panic: new ones.
            let pipeline = spare.lock().pop().or_else(|| match Pipeline::load(&cfg) {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::error!(error = %e, "pipeline worker could not reload its models");
                    None
                }
            });
            PipelineWorker { pipeline }
        });
        Ok(Self {
            addr,
            permits: Arc::new(Semaphore::new(pool.max_inflight.max(1))),
            max_inflight: pool.max_inflight.max(1),
            info,
            last_health: Mutex::new(None),
        })
    }

    pub fn info(&self) -> &PoolInfo {
        &self.info
    }

    pub fn model_id(&self) -> &str {
        &self.info.model_id
    }

    /// Requests admitted and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.max_inflight - self.permits.available_permits()
    }

    /// Whether a request would be admitted now: checked before a request's body is read,
    /// so that a full pipeline refuses at the cost of a header check. The place itself is
    /// taken by `analyze`, after the body has arrived, so that a slow upload never holds
    /// one.
    pub fn has_room(&self) -> Result<(), PoolError> {
        if self.permits.available_permits() > 0 {
            Ok(())
        } else {
            Err(PoolError::Overloaded(self.max_inflight))
        }
    }

    pub async fn analyze(&self, bytes: Vec<u8>, purpose: Purpose) -> Result<Analysis, PoolError> {
        let _permit = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| PoolError::Overloaded(self.max_inflight))?;
        self.addr
            .send(Analyze { bytes, purpose })
            .await
            .map_err(|_| PoolError::WorkerFailed)?
    }

    /// Every face of a frame: one detector pass, then the `max_faces` largest faces, each a
    /// job of its own for the workers. The frame holds one place in the pipeline, like any
    /// request; at most one job per worker of this frame is queued at a time, so the faces
    /// run in parallel across the workers while another request's job waits behind at most
    /// one of them per worker, never behind the whole frame.
    pub async fn identify(
        &self,
        bytes: Vec<u8>,
        purpose: Purpose,
        max_faces: usize,
    ) -> Result<Result<FrameAnalysis, DecodeError>, PoolError> {
        let _permit = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| PoolError::Overloaded(self.max_inflight))?;
        let frame = match self.addr.send(DetectFrame { bytes }).await.map_err(|_| PoolError::WorkerFailed)?? {
            Ok(frame) => frame,
            Err(e) => return Ok(Err(e)),
        };
        let detected = frame.faces.len();
        let chosen: Vec<Face> = frame.faces.iter().take(max_faces).cloned().collect();
        let timings = frame.timings.clone();
        let frame = Arc::new(frame);
        let reports: Vec<Result<FaceReport, PoolError>> = futures_util::stream::iter(chosen)
            .map(|face| {
                let job = self.addr.send(AnalyzeFace {
                    frame: frame.clone(),
                    face,
                    purpose,
                });
                async move { job.await.map_err(|_| PoolError::WorkerFailed).and_then(|r| r) }
            })
            .buffered(self.info.workers.max(1))
            .collect()
            .await;
        let faces = reports.into_iter().collect::<Result<Vec<_>, _>>()?;
        Ok(Ok(FrameAnalysis { detected, faces, timings }))
    }

    /// Every model's health from a real forward pass, re-probed at most every 5 s.
    pub async fn health(&self) -> ModelHealth {
        if let Some((at, h)) = *self.last_health.lock() {
            if at.elapsed() < Duration::from_secs(5) {
                return h;
            }
        }
        let h = match self.permits.clone().try_acquire_owned() {
            Ok(_permit) => self.addr.send(Probe).await.unwrap_or_default(),
            // Saturated: the workers are answering requests, which is health enough to
            // report the last probe rather than queue behind them.
            Err(_) => return self.last_health.lock().map(|(_, h)| h).unwrap_or_default(),
        };
        *self.last_health.lock() = Some((Instant::now(), h));
        h
    }
}
