//! `facegate-tools eval`: the real pipeline measured on real photos.
//!
//! * `eval lfw --data DIR`: every photo through the enrol, verify and search paths: FTE,
//!   FTA, FNMR at FMR, LFW View 2 accuracy, open-set FNIR at FPIR, each gate's bona fide
//!   refusals, DET curves and histograms (`eval/lfw.rs`).
//! * `eval morphs --data DIR`: the morph defence, MAD and identity collisions, against
//!   morphs of enrolled contributors (`eval/morphs.rs`).
//! * `eval pad --data DIR`: the PAD gate on real attacks and bona fide captures, in
//!   ISO/IEC 30107-3 terms (`eval/pad.rs`).
//! * `eval mad --data DIR`: the MAD gate's D-EER, APCER and BPCER on bona fide photos and
//!   morphs, per source (`eval/mad.rs`).
//! * `eval speed [--photos FILE|DIR ...]`: per photo set, per-stage latency with one
//!   worker, throughput with one worker per core, and the floor: what decoding and the
//!   models alone cost (`eval/speed.rs`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use clap::Subcommand;
use facegate_models::{runtime, Pipeline, PipelineConfig};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Config;

mod lfw;
mod mad;
mod morphs;
mod pad;
mod plot;
pub(crate) mod rates;
mod speed;

pub(crate) use rates::percentile;

#[derive(Subcommand)]
pub enum EvalSet {
    /// Every photo through the endpoints' paths: FTE, FTA, verification and open-set 1:N.
    Lfw(lfw::LfwArgs),
    /// The PAD gate on real presentation attacks (ISO/IEC 30107-3 rates).
    Pad(pad::PadArgs),
    /// The morph defence (MAD gate and identity-collision check) against morphs of enrolled contributors.
    Morphs(morphs::MorphArgs),
    /// The MAD gate on bona fide photos and morphs (ISO/IEC 30107-3 rates).
    Mad(mad::MadArgs),
    /// Pipeline latency per stage, throughput, and the models' floor, per photo set.
    Speed(speed::SpeedArgs),
}

pub(crate) type AnyError = Box<dyn std::error::Error>;

/// ONNX Runtime loaded and every configured model file checked, before workers load sessions.
pub(crate) fn init_models(cfg: &Config) -> Result<(), AnyError> {
    runtime::init(
        &cfg.runtime.onnxruntime,
        runtime::Provider::parse(&cfg.runtime.provider, cfg.runtime.provider_required)?,
    )?;
    Pipeline::verify_files(&cfg.pipeline)?;
    Ok(())
}

pub fn run(cfg: &Config, set: EvalSet) -> Result<(), AnyError> {
    init_models(cfg)?;
    match set {
        EvalSet::Lfw(args) => lfw::run(cfg, args),
        EvalSet::Pad(args) => pad::run(cfg, args),
        EvalSet::Morphs(args) => morphs::run(cfg, args),
        EvalSet::Mad(args) => mad::run(cfg, args),
        EvalSet::Speed(args) => speed::run(cfg, args),
    }
}

pub(crate) fn workers_or_cores(n: usize) -> usize {
    if n > 0 {
        n
    } else {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    }
}

/// Run `f` over `items` on `workers` threads, each with its own pipeline.
pub(crate) fn parallel<T: Sync, R: Send>(
    pcfg: &PipelineConfig,
    items: &[T],
    workers: usize,
    label: &str,
    f: impl Fn(&mut Pipeline, &T) -> R + Sync,
) -> Result<Vec<R>, AnyError> {
    let bar = ProgressBar::new(items.len() as u64);
    bar.set_style(ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")?.progress_chars("=> "));
    bar.set_message(label.to_string());
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    let failure: Mutex<Option<String>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let mut p = match Pipeline::load(pcfg) {
                    Ok(p) => p,
                    Err(e) => {
                        *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                        return;
                    }
                };
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= items.len() {
                        break;
                    }
                    let r = f(&mut p, &items[i]);
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                    bar.inc(1);
                }
            });
        }
    });
    bar.finish();
    if let Some(e) = failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e.into());
    }
    Ok(results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect())
}
