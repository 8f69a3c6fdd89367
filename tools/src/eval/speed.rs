//! `eval speed`: where a photo's time goes, per photo set. For each set and purpose: the
//! pipeline's stages with one worker (p50), images per second with one worker per core,
//! and the floor beside them: the JPEG decode at the scale the pipeline uses plus each
//! model's raw ONNX Runtime time at the input size it is fed (`facegate_models::floor`),
//! and the ceiling that floor allows on this machine's cores.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use facegate_models::decode::{self, Scale};
use facegate_models::{floor, Pipeline, Purpose};

use super::{workers_or_cores, AnyError};
use crate::config::Config;
use crate::photo_sets::{self, PhotoSet};

#[derive(clap::Args)]
pub struct SpeedArgs {
    /// Photo sets: a file, or a folder whose first 40 images (sorted) form one set.
    /// Default: a 640x480 JPEG of the registry test photo, then 40 LFW photos, obama2.jpg,
    /// deepface's img2.jpg and img1.jpg (those present).
    #[arg(long, value_delimiter = ',')]
    photos: Vec<PathBuf>,
    /// Purposes measured.
    #[arg(long, value_delimiter = ',', default_value = "search,enrol")]
    purposes: Vec<String>,
    /// Timed runs per set and purpose with one worker (and per worker for throughput).
    #[arg(long, default_value_t = 60)]
    runs: usize,
}

pub fn run(cfg: &Config, args: SpeedArgs) -> Result<(), AnyError> {
    let sets = sets(&args.photos)?;
    let purposes = parse_purposes(&args.purposes)?;
    let workers = workers_or_cores(0);
    let runs = args.runs.max(10);
    println!(
        "{runs} runs per set with one worker, then {workers} workers; scaled JPEG decoding {}",
        if cfg.pipeline.scaled_jpeg { "on" } else { "off" }
    );
    let mut p = Pipeline::load(&cfg.pipeline)?;
    for set in &sets {
        let (w, h) = detector_input(cfg, &set.photos[0])?;
        let floor = Floor {
            models: floor::measure(&cfg.pipeline, (w, h), runs)?,
            decode: decode_p50(cfg, &set.photos, runs)?,
        };
        let model = |role: &str| floor.model(role);
        println!("\n{} ({} photos, detector input {w}x{h})", set.name, set.photos.len());
        println!(
            "  floor: decode {:.2} ms, detect {:.2}, pad {:.2}, quality {:.2}, embed {:.2}, mad {:.2} ms",
            floor.decode,
            model("detect"),
            model("pad"),
            model("quality"),
            model("embed"),
            model("mad")
        );
        for &purpose in &purposes {
            report_purpose(cfg, &mut p, set, purpose, &floor, (runs, workers))?;
        }
    }
    Ok(())
}

fn parse_purposes(names: &[String]) -> Result<Vec<Purpose>, String> {
    names
        .iter()
        .map(|p| match p.as_str() {
            "search" => Ok(Purpose::Search),
            "verify" => Ok(Purpose::Verify),
            "enrol" => Ok(Purpose::Enrol),
            other => Err(format!("--purposes: {other:?} is not search, verify or enrol")),
        })
        .collect()
}

/// The floor of one photo set: the decode's p50 and each model's raw p50, in ms.
struct Floor {
    models: Vec<floor::FloorModel>,
    decode: f64,
}

impl Floor {
    fn model(&self, role: &str) -> f64 {
        self.models.iter().find(|m| m.role == role).map_or(0.0, |m| ms(m.p50))
    }

    /// The models' time for one photo on `purpose`'s path.
    fn models_ms(&self, purpose: Purpose) -> f64 {
        let model = |role: &str| self.model(role);
        // Search and verify: one recognizer run. Enrolment: the MAD stage runs the
        // recognizer on two crops and the MAD model; no separate embedding.
        model("detect")
            + model("pad")
            + model("quality")
            + if purpose == Purpose::Enrol && model("mad") > 0.0 {
                2.0 * model("embed") + model("mad")
            } else {
                model("embed")
            }
    }
}

/// One set and purpose: the stages with one worker, then throughput against the ceiling.
fn report_purpose(
    cfg: &Config,
    p: &mut Pipeline,
    set: &PhotoSet,
    purpose: Purpose,
    floor: &Floor,
    (runs, workers): (usize, usize),
) -> Result<(), AnyError> {
    let models_ms = floor.models_ms(purpose);
    let floor_ms = floor.decode + models_ms;
    let (stages, total, refused) = one_worker(p, &set.photos, purpose, runs)?;
    let rate = throughput(cfg, &set.photos, purpose, runs, workers)?;
    let stages: Vec<String> = stages.iter().map(|(s, v)| format!("{s} {v:.2}")).collect();
    println!(
        "  {purpose:?}: {} ms; total p50 {total:.2} ms{}",
        stages.join(", "),
        if refused > 0 {
            format!(" ({refused} of {runs} runs refused)")
        } else {
            String::new()
        }
    );
    println!(
        "    {workers} workers: {rate:.1} photos/s; floor {floor_ms:.2} ms ({:.0} % of it inference) -> ceiling {:.1}/s; facegate at {:.0} % of the ceiling",
        100.0 * models_ms / floor_ms,
        workers as f64 * 1e3 / floor_ms,
        100.0 * rate / (workers as f64 * 1e3 / floor_ms)
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn p50(v: &mut [Duration]) -> f64 {
    v.sort();
    v.get(v.len() / 2).map_or(0.0, |d| ms(*d))
}

/// The size the detector is fed for this photo: its decoded size, reduced to the
/// detector's longer side.
fn detector_input(cfg: &Config, bytes: &[u8]) -> Result<(u32, u32), AnyError> {
    let image = decode::decode(bytes, &cfg.pipeline.limits)?;
    let (w, h) = image.dimensions();
    let s = (cfg.pipeline.detector.max_side as f32 / w.max(h) as f32).min(1.0);
    Ok((((w as f32 * s).round() as u32).max(1), ((h as f32 * s).round() as u32).max(1)))
}

/// The decode at the scale the pipeline asks for.
fn decode_p50(cfg: &Config, photos: &[Vec<u8>], runs: usize) -> Result<f64, AnyError> {
    let scale = if cfg.pipeline.scaled_jpeg {
        Scale::Fit(cfg.pipeline.detector.max_side)
    } else {
        Scale::Full
    };
    let mut times = Vec::with_capacity(runs);
    for i in 0..runs {
        let start = Instant::now();
        decode::decode_scaled(&photos[i % photos.len()], &cfg.pipeline.limits, scale)?;
        times.push(start.elapsed());
    }
    Ok(p50(&mut times))
}

type Stages = Vec<(&'static str, f64)>;

/// Per-stage p50 (a stage run twice in one photo, as decode when the face needs a finer
/// one, counts as their sum), the total's p50, and how many runs a gate refused.
fn one_worker(p: &mut Pipeline, photos: &[Vec<u8>], purpose: Purpose, runs: usize) -> Result<(Stages, f64, usize), AnyError> {
    for photo in photos.iter().take(3) {
        p.analyze(photo, purpose)?;
    }
    let mut per_stage: HashMap<&'static str, Vec<Duration>> = HashMap::new();
    let mut totals = Vec::with_capacity(runs);
    let mut refused = 0;
    for i in 0..runs {
        let a = p.analyze(&photos[i % photos.len()], purpose)?;
        refused += usize::from(a.outcome.is_err());
        let mut sums: HashMap<&'static str, Duration> = HashMap::new();
        for (s, d) in &a.timings.0 {
            *sums.entry(s.name()).or_default() += *d;
        }
        for (s, d) in sums {
            per_stage.entry(s).or_default().push(d);
        }
        totals.push(a.timings.total());
    }
    let stages = facegate_models::pipeline::Stage::ALL
        .iter()
        .filter_map(|s| per_stage.get_mut(s.name()).map(|v| (s.name(), p50(v))))
        .collect();
    Ok((stages, p50(&mut totals), refused))
}

/// Photos per second with one pipeline per worker, loaded and warmed before the clock starts.
fn throughput(cfg: &Config, photos: &[Vec<u8>], purpose: Purpose, runs: usize, workers: usize) -> Result<f64, AnyError> {
    let mut pipelines = Vec::with_capacity(workers);
    for _ in 0..workers {
        let mut p = Pipeline::load(&cfg.pipeline)?;
        p.analyze(&photos[0], purpose)?;
        pipelines.push(p);
    }
    let start = Instant::now();
    std::thread::scope(|s| {
        for (w, mut p) in pipelines.into_iter().enumerate() {
            s.spawn(move || {
                for i in 0..runs {
                    let _ = p.analyze(&photos[(w + i * workers) % photos.len()], purpose);
                }
            });
        }
    });
    Ok((runs * workers) as f64 / start.elapsed().as_secs_f64())
}

/// A 640x480 camera frame, then the benchmark photo sets.
fn sets(given: &[PathBuf]) -> Result<Vec<PhotoSet>, AnyError> {
    let mut sets = Vec::new();
    if given.is_empty() {
        sets.push(PhotoSet {
            name: "obama.jpg at 640x480".into(),
            photos: vec![default_photo()?],
        });
    }
    sets.extend(photo_sets::load(given)?);
    Ok(sets)
}

/// The registry test photo as a 640x480 JPEG, the size of a typical camera frame.
fn default_photo() -> Result<Vec<u8>, AnyError> {
    let path = crate::config::resolve(Path::new("models/testdata/obama.jpg"));
    let img = image::load_from_memory(&std::fs::read(&path).map_err(|e| format!("{}: {e}; run python3 models/fetch.py", path.display()))?)?;
    let img = img.resize_exact(640, 480, image::imageops::FilterType::Triangle).to_rgb8();
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Jpeg)?;
    Ok(out)
}
