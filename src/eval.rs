//! `facegate eval`: the real pipeline measured on real photos.
//!
//! * `eval lfw --data DIR`: LFW View 2 pairs (DIR laid out like shared/data/faces) ->
//!   leave-one-fold-out accuracy, EER, TAR at FAR 1e-3, failures to detect, the share of
//!   bona fide images each gate refuses at its configured threshold, chosen thresholds.
//! * `eval mad --data DIR`: the MAD gate's D-EER, APCER and BPCER on bona fide photos and
//!   morphs, per source (`eval/mad.rs`).
//! * `eval speed [--image FILE]`: per-stage latency with one worker, throughput with one
//!   worker per core, on a 640x480 JPEG.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Subcommand;
use facegate_models::{recognize::cosine, runtime, Pipeline, PipelineConfig, Purpose, Rejection};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Config;

mod mad;

#[derive(Subcommand)]
pub enum EvalSet {
    /// LFW View 2 pairs of pairs/lfw_view2_folds1-5.csv under DIR.
    Lfw {
        #[arg(long)]
        data: PathBuf,
        /// Worker threads (each with its own sessions); 0 = one per core.
        #[arg(long, default_value_t = 0)]
        workers: usize,
    },
    /// The MAD gate on bona fide photos and morphs (ISO/IEC 30107-3 rates).
    Mad(mad::MadArgs),
    /// Pipeline latency and throughput on one photo.
    Speed {
        /// A face photo; default: the registry test photo obama.jpg resized to 640x480.
        #[arg(long)]
        image: Option<PathBuf>,
        #[arg(long, default_value_t = 200)]
        runs: usize,
    },
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
        EvalSet::Lfw { data, workers } => lfw(cfg, &data, workers),
        EvalSet::Mad(args) => mad::run(cfg, args),
        EvalSet::Speed { image, runs } => speed(cfg, image.as_deref(), runs),
    }
}

pub(crate) fn workers_or_cores(n: usize) -> usize {
    if n > 0 {
        n
    } else {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    }
}

/// What the pipeline made of one image, gates measured but not applied.
#[derive(Clone)]
enum Seen {
    Face { vector: Vec<f32>, pad: f32, quality: f32 },
    NoFace,
    Failed(String),
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

struct Pair {
    fold: u32,
    a: String,
    b: String,
    same: bool,
}

fn read_pairs(path: &Path) -> Result<Vec<Pair>, AnyError> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| format!("{}: no column {name}", path.display()))
    };
    let (fold, a, b, same) = (col("fold")?, col("path_a")?, col("path_b")?, col("same")?);
    let mut pairs = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        let get = |i: usize| f.get(i).copied().ok_or_else(|| format!("short line: {line}"));
        pairs.push(Pair {
            fold: get(fold)?.parse()?,
            a: get(a)?.to_string(),
            b: get(b)?.to_string(),
            same: get(same)? == "1",
        });
    }
    Ok(pairs)
}

fn lfw(cfg: &Config, data: &Path, workers: usize) -> Result<(), AnyError> {
    let pairs = read_pairs(&data.join("pairs/lfw_view2_folds1-5.csv"))?;
    let mut images: Vec<String> = pairs.iter().flat_map(|p| [p.a.clone(), p.b.clone()]).collect();
    images.sort();
    images.dedup();
    // Gates measured, not applied: every detected face gets a template and its scores.
    let mut pcfg = cfg.pipeline.clone();
    pcfg.pad.threshold = 0.0;
    pcfg.quality.threshold = 0.0;
    let workers = workers_or_cores(workers);
    let start = Instant::now();
    let seen = parallel(&pcfg, &images, workers, "lfw", |p, rel| match std::fs::read(data.join(rel)) {
        Err(e) => Seen::Failed(e.to_string()),
        Ok(bytes) => match p.analyze(&bytes, Purpose::Search) {
            Err(e) => Seen::Failed(e.to_string()),
            Ok(a) => match a.outcome {
                Ok(t) => Seen::Face {
                    vector: t.vector,
                    pad: t.pad,
                    quality: t.quality,
                },
                Err(Rejection::NoFace) => Seen::NoFace,
                Err(r) => Seen::Failed(r.to_string()),
            },
        },
    })?;
    let wall = start.elapsed();
    let by_path: HashMap<&str, &Seen> = images.iter().map(String::as_str).zip(seen.iter()).collect();

    let (mut no_face, mut failed, mut pads, mut qualities) = (0, 0, Vec::new(), Vec::new());
    for s in &seen {
        match s {
            Seen::Face { pad, quality, .. } => {
                pads.push(*pad);
                qualities.push(*quality);
            }
            Seen::NoFace => no_face += 1,
            Seen::Failed(e) => {
                failed += 1;
                eprintln!("failed: {e}");
            }
        }
    }
    // A pair with a missing template counts as a non-match (score -1): failures to
    // detect cost accuracy instead of being dropped.
    let scored: Vec<(u32, bool, f32)> = pairs
        .iter()
        .map(|p| {
            let s = match (by_path.get(p.a.as_str()), by_path.get(p.b.as_str())) {
                (Some(Seen::Face { vector: a, .. }), Some(Seen::Face { vector: b, .. })) => cosine(a, b),
                _ => -1.0,
            };
            (p.fold, p.same, s)
        })
        .collect();

    let folds: Vec<u32> = {
        let mut f: Vec<u32> = scored.iter().map(|s| s.0).collect();
        f.sort();
        f.dedup();
        f
    };
    let mut accs = Vec::new();
    for f in &folds {
        let train: Vec<(bool, f32)> = scored.iter().filter(|s| s.0 != *f).map(|s| (s.1, s.2)).collect();
        let test: Vec<(bool, f32)> = scored.iter().filter(|s| s.0 == *f).map(|s| (s.1, s.2)).collect();
        let t = best_threshold(&train);
        accs.push(accuracy(&test, t));
    }
    let all: Vec<(bool, f32)> = scored.iter().map(|s| (s.1, s.2)).collect();
    let mean = accs.iter().sum::<f64>() / accs.len().max(1) as f64;
    let sd = (accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / accs.len().max(1) as f64).sqrt();
    let (eer, eer_t) = eer(&all);
    let (tar, far_t, impostors) = tar_at_far(&all, 1e-3);

    println!(
        "LFW View 2, folds {folds:?}: {} pairs, {} images, model {}",
        pairs.len(),
        images.len(),
        cfg.pipeline.recognizer.model_id
    );
    println!(
        "  accuracy (threshold chosen on the other folds): {:.2} % +- {:.2}",
        mean * 100.0,
        sd * 100.0
    );
    println!("  EER: {:.2} % at cosine {:.3}", eer * 100.0, eer_t);
    println!(
        "  TAR at FAR 1e-3: {:.2} % at cosine {:.3} ({} impostor pairs)",
        tar * 100.0,
        far_t,
        impostors
    );
    println!(
        "  best-accuracy threshold over all pairs: {:.3} (configured verify_threshold {:.3})",
        best_threshold(&all),
        cfg.pipeline.recognizer.verify_threshold
    );
    let vt = cfg.pipeline.recognizer.verify_threshold;
    let (gen, imp): (Vec<_>, Vec<_>) = all.iter().partition(|p| p.0);
    let rate = |v: &[&(bool, f32)]| 100.0 * v.iter().filter(|p| p.1 >= vt).count() as f64 / v.len().max(1) as f64;
    println!(
        "  at the configured verify_threshold {vt:.3}: TAR {:.2} %, FAR {:.3} %",
        rate(&gen),
        rate(&imp)
    );
    println!(
        "  failures to detect: {no_face} of {} images ({:.2} %); other failures: {failed}",
        images.len(),
        100.0 * no_face as f64 / images.len() as f64
    );
    gate_line("PAD", "live score", cfg.pipeline.pad.threshold, &pads);
    gate_line("quality", "quality", cfg.pipeline.quality.threshold, &qualities);
    println!(
        "  {} images in {:.1} s on {workers} workers ({:.1} images/s)",
        images.len(),
        wall.as_secs_f64(),
        images.len() as f64 / wall.as_secs_f64()
    );
    Ok(())
}

/// The share of bona fide scores a gate refuses at `threshold`, and where they lie.
fn gate_line(gate: &str, score: &str, threshold: f32, v: &[f32]) {
    let refused = 100.0 * v.iter().filter(|x| **x < threshold).count() as f64 / v.len().max(1) as f64;
    let (p1, p5, p50) = (percentile(v, 1.0), percentile(v, 5.0), percentile(v, 50.0));
    println!("  bona fide refused by {gate} at {threshold:.3}: {refused:.2} %   ({score} p1 {p1:.3}, p5 {p5:.3}, median {p50:.3})");
}

fn accuracy(pairs: &[(bool, f32)], t: f32) -> f64 {
    pairs.iter().filter(|(same, s)| (*s >= t) == *same).count() as f64 / pairs.len().max(1) as f64
}

/// The threshold with the best accuracy (midpoints between sorted scores).
fn best_threshold(pairs: &[(bool, f32)]) -> f32 {
    let mut scores: Vec<f32> = pairs.iter().map(|p| p.1).collect();
    scores.sort_by(f32::total_cmp);
    let mut best = (0.0, 0.0f32);
    for w in scores.windows(2) {
        let t = (w[0] + w[1]) / 2.0;
        let a = accuracy(pairs, t);
        if a > best.0 {
            best = (a, t);
        }
    }
    best.1
}

/// Equal error rate and its threshold.
fn eer(pairs: &[(bool, f32)]) -> (f64, f32) {
    let genuine: Vec<f32> = pairs.iter().filter(|p| p.0).map(|p| p.1).collect();
    let impostor: Vec<f32> = pairs.iter().filter(|p| !p.0).map(|p| p.1).collect();
    let mut ts: Vec<f32> = pairs.iter().map(|p| p.1).collect();
    ts.sort_by(f32::total_cmp);
    let mut best = (f64::MAX, 1.0, 0.0f32);
    for t in ts {
        let frr = genuine.iter().filter(|s| **s < t).count() as f64 / genuine.len().max(1) as f64;
        let far = impostor.iter().filter(|s| **s >= t).count() as f64 / impostor.len().max(1) as f64;
        if (frr - far).abs() < best.0 {
            best = ((frr - far).abs(), (frr + far) / 2.0, t);
        }
    }
    (best.1, best.2)
}

/// TAR at the lowest threshold whose FAR is at most `far`.
fn tar_at_far(pairs: &[(bool, f32)], far: f64) -> (f64, f32, usize) {
    let mut impostor: Vec<f32> = pairs.iter().filter(|p| !p.0).map(|p| p.1).collect();
    impostor.sort_by(|a, b| b.total_cmp(a));
    let allowed = (far * impostor.len() as f64).floor() as usize;
    // Strictly above the (allowed+1)-th highest impostor score.
    let t = impostor.get(allowed).map(|s| s + 1e-6).unwrap_or(-1.0);
    let genuine: Vec<f32> = pairs.iter().filter(|p| p.0).map(|p| p.1).collect();
    let tar = genuine.iter().filter(|s| **s >= t).count() as f64 / genuine.len().max(1) as f64;
    (tar, t, impostor.len())
}

pub(crate) fn percentile(v: &[f32], p: f64) -> f32 {
    if v.is_empty() {
        return f32::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f32::total_cmp);
    s[((p / 100.0) * (s.len() - 1) as f64).round() as usize]
}

fn default_photo() -> Result<Vec<u8>, AnyError> {
    let path = crate::config::resolve(Path::new("models/testdata/obama.jpg"));
    let img = image::load_from_memory(&std::fs::read(&path).map_err(|e| format!("{}: {e}; run python3 models/fetch.py", path.display()))?)?;
    let img = img.resize_exact(640, 480, image::imageops::FilterType::Triangle).to_rgb8();
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Jpeg)?;
    Ok(out)
}

fn speed(cfg: &Config, image: Option<&Path>, runs: usize) -> Result<(), AnyError> {
    let bytes = match image {
        Some(p) => std::fs::read(p)?,
        None => default_photo()?,
    };
    let runs = runs.max(10);
    // One worker: latency per stage.
    let mut p = Pipeline::load(&cfg.pipeline)?;
    for _ in 0..5 {
        p.analyze(&bytes, Purpose::Enrol)?;
    }
    let mut per_stage: HashMap<&'static str, Vec<Duration>> = HashMap::new();
    let mut totals = Vec::new();
    for _ in 0..runs {
        let a = p.analyze(&bytes, Purpose::Enrol)?;
        if let Err(r) = &a.outcome {
            return Err(format!("the photo was refused: {r}").into());
        }
        for (s, d) in &a.timings.0 {
            per_stage.entry(s.name()).or_default().push(*d);
        }
        totals.push(a.timings.total());
    }
    let ms = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1e3
    };
    println!("one worker, {runs} runs, {} bytes JPEG:", bytes.len());
    for s in facegate_models::pipeline::Stage::ALL {
        if let Some(v) = per_stage.get_mut(s.name()) {
            println!("  {:<8} p50 {:>7.2} ms", s.name(), ms(v));
        }
    }
    println!("  total    p50 {:>7.2} ms", ms(&mut totals));
    drop(p);
    // One worker per core: throughput.
    let workers = workers_or_cores(0);
    let items: Vec<usize> = (0..runs * workers).collect();
    let start = Instant::now();
    parallel(&cfg.pipeline, &items, workers, "throughput", |p, _| {
        p.analyze(&bytes, Purpose::Enrol).map(|_| ()).map_err(|e| e.to_string())
    })?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{workers} workers: {:.1} images/s ({} images in {secs:.1} s, includes session loading)",
        items.len() as f64 / secs,
        items.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_on_a_separable_set() {
        let pairs = vec![(true, 0.9), (true, 0.7), (true, 0.6), (false, 0.1), (false, 0.2), (false, 0.65)];
        let t = best_threshold(&pairs);
        assert!((accuracy(&pairs, t) - 5.0 / 6.0).abs() < 1e-9);
        let (tar, thr, n) = tar_at_far(&pairs, 1e-3);
        assert_eq!(n, 3);
        assert!(thr > 0.65 && (tar - 2.0 / 3.0).abs() < 1e-9);
        let (e, _) = eer(&pairs);
        assert!(e > 0.0 && e < 0.5);
    }
}
