//! `facegate-tools eval lfw`: every photo through the code path of the endpoints, as a user
//! sends it, and the figures of ISO/IEC 19795-1 and NIST FRTE counted on that path.
//!
//! Each photo's bytes go through `Pipeline::analyze` with `Purpose::Enrol` (what
//! `POST /enrol` runs: subject choice and ambiguity, PAD, MAD, quality, embedding, at the
//! enrolment thresholds) and with `Purpose::Verify` and `Purpose::Search` (what verify and
//! search run, at theirs). When search and verify have the same thresholds their paths are
//! the same code on the same bytes, and the verify outcome is used for both. Then:
//! * verification: every ordered pair (reference enrolled from photo a, probe b) is a
//!   transaction; a refused reference or probe is a non-match end to end. Impostors are all
//!   cross-identity pairs. LFW View 2 pairs are the official (a, b) order.
//! * open-set 1:N: a gallery of the first enrolable photo of each person with two or more
//!   photos; their other photos are mated probes, photos of one-photo people non-mated.
//!   Scores are the gallery's: cosine of L2-normalised templates, each subject once.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use facegate_models::{recognize::cosine, Pipeline, Purpose, Rejection};

use super::plot::{self, Curve};
use super::rates::{self, Comparisons, Searches};
use super::{parallel, workers_or_cores, AnyError};
use crate::config::Config;

#[derive(clap::Args)]
pub struct LfwArgs {
    /// A folder laid out like shared/data/faces (lfw/images/<person>/*.jpg and
    /// pairs/lfw_view2_folds1-5.csv), or any folder of <person>/<photo> sub-folders.
    #[arg(long)]
    data: PathBuf,
    /// Worker threads (each with its own sessions); 0 = one per core.
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Where the report's pictures (SVG) and the per-photo table (images.csv) go.
    #[arg(long, default_value = "eval-out/lfw")]
    out: PathBuf,
    /// Also write the recognizer's calibration table (cosine -> FMR, FNMR) here.
    #[arg(long)]
    calibration: Option<PathBuf>,
}

/// Why a photo did not give a template on one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Refusal {
    Unreadable,
    Decode,
    NoFace,
    Ambiguous,
    Pad,
    Mad,
    Quality,
    ServiceError,
}

impl Refusal {
    pub fn name(self) -> &'static str {
        match self {
            Refusal::Unreadable => "unreadable file",
            Refusal::Decode => "decode failed (DECODE_FAILED / PAYLOAD_TOO_LARGE)",
            Refusal::NoFace => "no face (NO_FACE)",
            Refusal::Ambiguous => "competing faces (INVALID_REQUEST)",
            Refusal::Pad => "PAD (SPOOF_DETECTED)",
            Refusal::Mad => "MAD (MORPH_DETECTED)",
            Refusal::Quality => "quality (QUALITY_REJECTED)",
            Refusal::ServiceError => "service error",
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Refusal::Unreadable => "unreadable",
            Refusal::Decode => "decode",
            Refusal::NoFace => "no_face",
            Refusal::Ambiguous => "ambiguous",
            Refusal::Pad => "pad",
            Refusal::Mad => "mad",
            Refusal::Quality => "quality",
            Refusal::ServiceError => "error",
        }
    }

    fn of(r: &Rejection) -> Self {
        match r {
            Rejection::DecodeFailed(_) => Refusal::Decode,
            Rejection::NoFace => Refusal::NoFace,
            Rejection::AmbiguousSubject { .. } => Refusal::Ambiguous,
            Rejection::SpoofDetected { .. } => Refusal::Pad,
            Rejection::MorphDetected { .. } => Refusal::Mad,
            Rejection::QualityRejected { .. } => Refusal::Quality,
        }
    }
}

/// One path's outcome for one photo, with the scores its gates measured.
#[derive(Debug, Clone, Default)]
pub struct PathOutcome {
    pub refused: Option<Refusal>,
    pub pad: Option<f32>,
    pub mad: Option<f32>,
    pub quality: Option<f32>,
    pub vector: Option<Vec<f32>>,
    /// Detected faces: (x, y, w, h, prominence relative to the subject's).
    pub faces: Vec<([i32; 4], f32)>,
}

impl PathOutcome {
    pub fn ok(&self) -> bool {
        self.refused.is_none()
    }

    fn refused(r: Refusal) -> Self {
        Self {
            refused: Some(r),
            ..Self::default()
        }
    }
}

/// Run one photo's bytes through one endpoint's path.
pub fn run_path(p: &mut Pipeline, bytes: &[u8], purpose: Purpose) -> PathOutcome {
    match p.analyze(bytes, purpose) {
        Err(e) => {
            eprintln!("service error: {e}");
            PathOutcome::refused(Refusal::ServiceError)
        }
        Ok(a) => {
            let top = a.scores.faces.first().map(|r| r.prominence).unwrap_or(0.0);
            let faces = a
                .scores
                .faces
                .iter()
                .map(|r| {
                    let rel = if top > 0.0 { r.prominence / top } else { 0.0 };
                    (facegate_models::subject::pixel_box(&r.face), rel)
                })
                .collect();
            let (refused, vector) = match a.outcome {
                Ok(t) => (None, Some(t.vector)),
                Err(r) => (Some(Refusal::of(&r)), None),
            };
            PathOutcome {
                refused,
                pad: a.scores.pad,
                mad: a.scores.mad,
                quality: a.scores.quality.map(|q| q.score),
                vector,
                faces,
            }
        }
    }
}

pub(super) struct Photo {
    pub person: String,
    pub rel: String,
}

/// One photo through each endpoint's path.
pub(super) struct Seen {
    pub enrol: PathOutcome,
    pub verify: PathOutcome,
    /// None: search has the same gates as verify and shares its outcome.
    pub search: Option<PathOutcome>,
}

/// Whether search's gates are verify's, so that one run serves both.
pub(super) fn search_shares_verify(cfg: &Config) -> bool {
    let pc = &cfg.pipeline;
    pc.pad.threshold.search == pc.pad.threshold.verify && pc.quality.threshold.search == pc.quality.threshold.verify
}

/// The images folder of a data folder: DIR/lfw/images when there is one, else DIR.
pub(super) fn images_root(data: &Path) -> PathBuf {
    if data.join("lfw/images").is_dir() {
        data.join("lfw/images")
    } else {
        data.to_path_buf()
    }
}

impl Seen {
    /// The photo file's bytes (or why they could not be read) through every path.
    pub(super) fn of(p: &mut Pipeline, file: &Path, search_shares_verify: bool) -> Self {
        match std::fs::read(file) {
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                let r = || PathOutcome::refused(Refusal::Unreadable);
                Seen {
                    enrol: r(),
                    verify: r(),
                    search: None,
                }
            }
            Ok(bytes) => Seen {
                enrol: run_path(p, &bytes, Purpose::Enrol),
                verify: run_path(p, &bytes, Purpose::Verify),
                search: (!search_shares_verify).then(|| run_path(p, &bytes, Purpose::Search)),
            },
        }
    }

    pub(super) fn search(&self) -> &PathOutcome {
        self.search.as_ref().unwrap_or(&self.verify)
    }
    /// The template, from whichever path computed it (the same face, the same network).
    fn vector(&self) -> Option<&[f32]> {
        [&self.enrol, &self.verify]
            .into_iter()
            .chain(self.search.as_ref())
            .find_map(|o| o.vector.as_deref())
    }
}

/// The photos: `<root>/<person>/<file>`, sorted.
pub(super) fn photos(root: &Path) -> Result<Vec<Photo>, AnyError> {
    let mut out = Vec::new();
    let mut people: Vec<_> = std::fs::read_dir(root)
        .map_err(|e| format!("{}: {e}", root.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .collect();
    people.sort_by_key(|e| e.file_name());
    for person in people {
        let name = person.file_name().to_string_lossy().into_owned();
        let mut files: Vec<_> = std::fs::read_dir(person.path())?
            .filter_map(Result::ok)
            .filter(|e| e.path().is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        out.extend(files.into_iter().map(|f| Photo {
            rel: format!("{name}/{f}"),
            person: name.clone(),
        }));
    }
    Ok(out)
}

/// A row of the official View 2 pairs file (other columns are ignored).
#[derive(serde::Deserialize)]
struct PairRow {
    fold: u32,
    path_a: String,
    path_b: String,
    same: u8,
}

/// The official View 2 pairs, as (fold, a, b, same) with paths relative to the images root.
fn view2_pairs(data: &Path) -> Result<Vec<(u32, String, String, bool)>, AnyError> {
    let path = data.join("pairs/lfw_view2_folds1-5.csv");
    if !path.exists() {
        return Ok(Vec::new());
    }
    let strip = |p: &str| p.strip_prefix("lfw/images/").unwrap_or(p).to_string();
    let mut out = Vec::new();
    for row in csv::Reader::from_path(&path)?.deserialize::<PairRow>() {
        let r = row.map_err(|e| format!("{}: {e}", path.display()))?;
        out.push((r.fold, strip(&r.path_a), strip(&r.path_b), r.same == 1));
    }
    Ok(out)
}

pub fn run(cfg: &Config, args: LfwArgs) -> Result<(), AnyError> {
    let root = images_root(&args.data);
    let photos = photos(&root)?;
    if photos.is_empty() {
        return Err(format!("{}: no <person>/<photo> files", root.display()).into());
    }
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let pc = &cfg.pipeline;
    let search_shares_verify = search_shares_verify(cfg);
    let workers = workers_or_cores(args.workers);
    let start = Instant::now();
    let seen = parallel(pc, &photos, workers, "photos", |p, photo| {
        Seen::of(p, &root.join(&photo.rel), search_shares_verify)
    })?;
    let wall = start.elapsed();
    let people: std::collections::BTreeSet<&str> = photos.iter().map(|p| p.person.as_str()).collect();
    println!(
        "{} photos of {} people under {}, model {}; every photo through the enrol, verify and search paths{}",
        photos.len(),
        people.len(),
        root.display(),
        pc.recognizer.model_id,
        if search_shares_verify {
            " (search has verify's thresholds: one run serves both)"
        } else {
            ""
        }
    );
    println!(
        "  {:.1} s on {workers} workers ({:.1} photos/s, each analysed {} times)",
        wall.as_secs_f64(),
        photos.len() as f64 / wall.as_secs_f64(),
        if search_shares_verify { 2 } else { 3 }
    );

    refusals(cfg, &seen);
    let (comparisons, worst) = verification(cfg, &photos, &seen);
    view2(cfg, &args.data, &photos, &seen)?;
    let searches = identification(cfg, &photos, &seen);
    collisions(cfg, &photos, &seen, &comparisons);
    pictures(cfg, &args.out, &comparisons, &searches, &seen)?;
    write_images(&args.out.join("images.csv"), &photos, &seen, &worst)?;
    if let Some(path) = &args.calibration {
        write_calibration(path, cfg, &comparisons)?;
        println!("  calibration table: {}", path.display());
    }
    println!("  pictures and images.csv in {}", args.out.display());
    Ok(())
}

/// FTE and FTA, each by the gate that refused, and each gate's refusal rate among the
/// photos that reached it.
fn refusals(cfg: &Config, seen: &[Seen]) {
    let n = seen.len();
    let pc = &cfg.pipeline;
    let mad_threshold = facegate_models::mad::threshold_of(pc).ok().flatten();
    let paths: [(&str, Purpose, Vec<&PathOutcome>); 3] = [
        ("enrol", Purpose::Enrol, seen.iter().map(|s| &s.enrol).collect()),
        ("verify", Purpose::Verify, seen.iter().map(|s| &s.verify).collect()),
        ("search", Purpose::Search, seen.iter().map(Seen::search).collect()),
    ];
    for (name, purpose, outcomes) in &paths {
        let refused: Vec<Refusal> = outcomes.iter().filter_map(|o| o.refused).collect();
        let what = if *purpose == Purpose::Enrol {
            "FTE (failure to enrol)"
        } else {
            "FTA (failure to acquire)"
        };
        println!(
            "  {name}: {what} {:.2} % ({} of {n}); thresholds PAD {:.3}, quality {:.3}{}",
            100.0 * refused.len() as f64 / n.max(1) as f64,
            refused.len(),
            pc.pad.threshold.get(*purpose),
            pc.quality.threshold.get(*purpose),
            if *purpose == Purpose::Enrol {
                format!(", MAD {}", mad_threshold.map_or("none".into(), |t| t.to_string()))
            } else {
                String::new()
            }
        );
        let mut by: BTreeMap<Refusal, usize> = BTreeMap::new();
        for r in &refused {
            *by.entry(*r).or_default() += 1;
        }
        for (r, c) in &by {
            println!("      {:<50} {c:>5}  {:.2} %", r.name(), 100.0 * *c as f64 / n.max(1) as f64);
        }
        // Bona fide refusal rate of each gate among the photos that reached it.
        let gate = |g: Refusal, reached: &dyn Fn(&PathOutcome) -> bool| {
            let reached: Vec<&&PathOutcome> = outcomes.iter().filter(|o| reached(o)).collect();
            let refused = reached.iter().filter(|o| o.refused == Some(g)).count();
            (refused, reached.len())
        };
        let mut line = String::from("      bona fide refusal at each gate, of the photos that reached it:");
        for (g, label) in [(Refusal::Pad, "PAD"), (Refusal::Mad, "MAD"), (Refusal::Quality, "quality")] {
            let (r, of) = match g {
                Refusal::Pad => gate(g, &|o| o.pad.is_some()),
                Refusal::Mad => gate(g, &|o| o.mad.is_some()),
                _ => gate(g, &|o| o.quality.is_some()),
            };
            if of > 0 {
                let _ = write!(line, " {label} {:.2} % ({r} of {of})", 100.0 * r as f64 / of as f64);
            }
        }
        println!("{line}");
    }
}

/// Dot products of every pair of templates, split over the workers' cores.
fn all_pairs(vectors: &[Option<&[f32]>], threads: usize) -> Vec<Vec<(u32, f32)>> {
    let n = vectors.len();
    let rows: Vec<usize> = (0..n).collect();
    let chunks: Vec<&[usize]> = rows.chunks(n.div_ceil(threads.max(1)).max(1)).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|&i| match vectors[i] {
                            None => Vec::new(),
                            Some(a) => (i + 1..n).filter_map(|j| vectors[j].map(|b| (j as u32, cosine(a, b)))).collect(),
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    })
}

/// All ordered (reference, probe) pairs: references enrolled, probes through verify.
/// Also returns each photo's lowest score against another photo of its person, gates
/// aside (which photos match their own person worst).
fn verification(cfg: &Config, photos: &[Photo], seen: &[Seen]) -> (Comparisons, Vec<Option<f32>>) {
    let n = photos.len();
    let vectors: Vec<Option<&[f32]>> = seen.iter().map(Seen::vector).collect();
    let scores = all_pairs(&vectors, workers_or_cores(0));
    let (mut genuine, mut impostor) = (Vec::new(), Vec::new());
    let (mut refused_g, mut refused_i) = (0usize, 0usize);
    let mut worst: Vec<Option<f32>> = vec![None; n];
    for (i, row) in scores.iter().enumerate() {
        // The row holds (j, score) for every later photo j with a template, j ascending.
        let mut row = row.iter().peekable();
        for j in i + 1..n {
            let score = row.next_if(|(k, _)| *k as usize == j).map(|(_, s)| *s);
            let same = photos[i].person == photos[j].person;
            if let (true, Some(s)) = (same, score) {
                for k in [i, j] {
                    worst[k] = Some(worst[k].map_or(s, |w: f32| w.min(s)));
                }
            }
            for (r, p) in [(i, j), (j, i)] {
                let compared = seen[r].enrol.ok() && seen[p].verify.ok();
                match (compared, score) {
                    (true, Some(s)) if same => genuine.push(s),
                    (true, Some(s)) => impostor.push(s),
                    _ if same => refused_g += 1,
                    _ => refused_i += 1,
                }
            }
        }
    }
    let c = Comparisons::new(genuine, impostor, refused_g, refused_i);
    let (g, i) = c.transactions();
    println!(
        "  verification, every ordered pair (enrolled reference, verify probe): {g} genuine, {i} impostor transactions; refused before comparison: {} genuine, {} impostor",
        c.refused().0,
        c.refused().1
    );
    let (eer, eer_t) = c.eer();
    println!("      EER (comparisons that happened) {:.3} % at cosine {eer_t:.3}", eer * 100.0);
    for fmr in [1e-2, 1e-3, 1e-4, 1e-5] {
        let t = c.threshold_at_fmr(fmr);
        println!(
            "      FMR {fmr:.0e}: threshold {t:.4}; FNMR {:.3} % (comparisons that happened), {:.3} % end to end (refusals as non-matches)",
            100.0 * c.fnmr(t),
            100.0 * c.fnmr_e2e(t)
        );
    }
    let vt = cfg.pipeline.recognizer.verify_threshold;
    println!(
        "      at the configured verify_threshold {vt:.3}: FMR {:.2e}, FNMR {:.3} % (happened), {:.3} % end to end",
        c.fmr(vt),
        100.0 * c.fnmr(vt),
        100.0 * c.fnmr_e2e(vt)
    );
    (c, worst)
}

/// LFW View 2 pairs in their official order: accuracy end to end and on the pairs that
/// passed every gate.
fn view2(cfg: &Config, data: &Path, photos: &[Photo], seen: &[Seen]) -> Result<(), AnyError> {
    let pairs = view2_pairs(data)?;
    if pairs.is_empty() {
        return Ok(());
    }
    let index: HashMap<&str, usize> = photos.iter().enumerate().map(|(i, p)| (p.rel.as_str(), i)).collect();
    let mut scored: Vec<(u32, bool, Option<f32>, bool)> = Vec::new();
    for (fold, a, b, same) in &pairs {
        let (Some(&i), Some(&j)) = (index.get(a.as_str()), index.get(b.as_str())) else {
            return Err(format!("View 2 pair {a} / {b}: photo missing under the images folder").into());
        };
        let passed = seen[i].enrol.ok() && seen[j].verify.ok();
        let score = match (seen[i].vector(), seen[j].vector()) {
            (Some(x), Some(y)) => Some(cosine(x, y)),
            _ => None,
        };
        scored.push((*fold, *same, if passed { score } else { None }, passed));
    }
    let lofo = |rows: &[(u32, bool, Option<f32>, bool)]| {
        let folds: std::collections::BTreeSet<u32> = rows.iter().map(|r| r.0).collect();
        let accs: Vec<f64> = folds
            .iter()
            .map(|f| {
                let train: Vec<(bool, Option<f32>)> = rows.iter().filter(|r| r.0 != *f).map(|r| (r.1, r.2)).collect();
                let test: Vec<(bool, Option<f32>)> = rows.iter().filter(|r| r.0 == *f).map(|r| (r.1, r.2)).collect();
                rates::accuracy(&test, rates::best_threshold(&train))
            })
            .collect();
        let mean = accs.iter().sum::<f64>() / accs.len().max(1) as f64;
        let sd = (accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / accs.len().max(1) as f64).sqrt();
        (mean, sd, folds.len())
    };
    let vt = cfg.pipeline.recognizer.verify_threshold;
    let all: Vec<(bool, Option<f32>)> = scored.iter().map(|r| (r.1, r.2)).collect();
    let passed: Vec<(u32, bool, Option<f32>, bool)> = scored.iter().filter(|r| r.3).cloned().collect();
    let passed_pairs: Vec<(bool, Option<f32>)> = passed.iter().map(|r| (r.1, r.2)).collect();
    let (m, sd, folds) = lofo(&scored);
    let (pm, psd, _) = lofo(&passed);
    println!(
        "  LFW View 2 ({} pairs, {folds} folds; reference a enrolled, probe b verified): {} pairs refused",
        pairs.len(),
        pairs.len() - passed.len()
    );
    println!(
        "      end to end (refusal = non-match): {:.2} % at the configured verify_threshold {vt:.3}; {:.2} % +- {:.2} leave-one-fold-out",
        100.0 * rates::accuracy(&all, vt),
        100.0 * m,
        100.0 * sd
    );
    println!(
        "      on the {} pairs that passed every gate: {:.2} % at {vt:.3}; {:.2} % +- {:.2} leave-one-fold-out",
        passed.len(),
        100.0 * rates::accuracy(&passed_pairs, vt),
        100.0 * pm,
        100.0 * psd
    );
    Ok(())
}

/// Open-set 1:N: one enrolled photo per person of two or more photos.
fn identification(cfg: &Config, photos: &[Photo], seen: &[Seen]) -> Searches {
    let mut by_person: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, p) in photos.iter().enumerate() {
        by_person.entry(&p.person).or_default().push(i);
    }
    let mut gallery: Vec<(&str, &[f32])> = Vec::new();
    let mut mated_idx: Vec<(usize, &str)> = Vec::new();
    let mut non_mated_idx: Vec<usize> = Vec::new();
    let mut unenrolable = 0;
    for (person, idx) in &by_person {
        if idx.len() == 1 {
            non_mated_idx.push(idx[0]);
            continue;
        }
        match idx.iter().find(|&&i| seen[i].enrol.ok()) {
            Some(&g) => {
                gallery.push((person, seen[g].vector().unwrap_or_default()));
                mated_idx.extend(idx.iter().filter(|&&i| i != g).map(|&i| (i, *person)));
            }
            None => unenrolable += 1,
        }
    }
    let top = |i: usize| -> Option<(&str, f32)> {
        let o = seen[i].search();
        let v = o.vector.as_deref().filter(|_| o.ok())?;
        gallery.iter().map(|(p, g)| (*p, cosine(v, g))).max_by(|a, b| a.1.total_cmp(&b.1))
    };
    let s = Searches {
        mated: mated_idx
            .iter()
            .map(|&(i, person)| top(i).map(|(p, sc)| (p == person, sc)))
            .collect(),
        non_mated: non_mated_idx.iter().map(|&i| top(i).map(|t| t.1)).collect(),
    };
    println!(
        "  open-set 1:N: gallery of {} people (one enrolled photo each; {unenrolable} people with no enrolable photo left out), {} mated and {} non-mated search probes",
        gallery.len(),
        s.mated.len(),
        s.non_mated.len()
    );
    println!(
        "      rank-1 {:.2} % end to end (refused probes are misses), {:.2} % of the probes searched",
        100.0 * s.rank1(),
        100.0 * s.rank1_acquired()
    );
    for fpir in [1e-2, 1e-3] {
        let t = s.threshold_at_fpir(fpir);
        println!("      FPIR {fpir:.0e}: threshold {t:.4}, FNIR {:.2} %", 100.0 * s.fnir(t));
    }
    let vt = cfg.pipeline.recognizer.verify_threshold;
    println!(
        "      at min_score = verify_threshold {vt:.3}: FPIR {:.2} %, FNIR {:.2} %",
        100.0 * s.fpir(vt),
        100.0 * s.fnir(vt)
    );
    s
}

/// The identity-collision check's false collisions: a new person's enrolment photo
/// searched against galleries of other people's enrolled photos (one per person), measured
/// at 1k and 2k people and extrapolated to 10k and 100k from the per-comparison FMR as
/// 1 - (1 - FMR)^N (comparisons taken as independent; the measured sizes show how far that
/// holds), at the configured threshold and a few round ones.
fn collisions(cfg: &Config, photos: &[Photo], seen: &[Seen], c: &Comparisons) {
    let enrolled = first_enrolled(photos, seen);
    let configured = cfg.collision.threshold;
    println!(
        "  identity collisions (collision.threshold {configured:.3}, policy {:?}): a new person's enrolment photo against a gallery of other people's, false collisions",
        cfg.collision.policy
    );
    let mut thresholds = vec![0.30f32, 0.35, 0.40, 0.45, configured];
    thresholds.sort_by(f32::total_cmp);
    thresholds.dedup();
    let mut rows: Vec<String> = thresholds
        .iter()
        .map(|t| format!("      at {t:.3} (FMR {:.2e}):", c.fmr(*t)))
        .collect();
    for size in [1000usize, 2000] {
        if enrolled.len() <= size {
            continue;
        }
        let tops = new_people_best_scores(&enrolled, size, seen);
        for (row, t) in rows.iter_mut().zip(&thresholds) {
            let hits = tops.iter().filter(|s| **s >= *t).count();
            let _ = write!(
                row,
                " {size} people {:.2} % ({hits} of {}; 1-(1-FMR)^N {:.2} %);",
                100.0 * hits as f64 / tops.len().max(1) as f64,
                tops.len(),
                100.0 * (1.0 - (1.0 - c.fmr(*t)).powi(size as i32))
            );
        }
    }
    for (row, t) in rows.iter_mut().zip(&thresholds) {
        for size in [10_000i32, 100_000] {
            let _ = write!(
                row,
                " {size} people {:.2} % (extrapolated);",
                100.0 * (1.0 - (1.0 - c.fmr(*t)).powi(size))
            );
        }
        println!("{row}");
    }
}

/// Each person's first photo that enrolled, in name order.
fn first_enrolled(photos: &[Photo], seen: &[Seen]) -> Vec<usize> {
    let mut first: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, p) in photos.iter().enumerate() {
        if seen[i].enrol.ok() {
            first.entry(&p.person).or_insert(i);
        }
    }
    first.values().copied().collect()
}

/// A gallery of `size` of the `enrolled` photos, the rest new people: each new person's
/// best score against the gallery.
fn new_people_best_scores(enrolled: &[usize], size: usize, seen: &[Seen]) -> Vec<f32> {
    // Every other person of the name order into the gallery first, so that both sides
    // mix the alphabet; the rest are the new people. Each new person's best score.
    let mut order: Vec<usize> = enrolled
        .iter()
        .step_by(2)
        .chain(enrolled.iter().skip(1).step_by(2))
        .copied()
        .collect();
    let probes = order.split_off(size);
    probes
        .iter()
        .map(|&p| {
            let v = seen[p].vector().unwrap_or_default();
            order
                .iter()
                .map(|&g| cosine(v, seen[g].vector().unwrap_or_default()))
                .fold(f32::NEG_INFINITY, f32::max)
        })
        .collect()
}

fn pictures(cfg: &Config, out: &Path, c: &Comparisons, s: &Searches, seen: &[Seen]) -> Result<(), AnyError> {
    let vt = cfg.pipeline.recognizer.verify_threshold;
    let acquired = c.det(200, false);
    let e2e = c.det(200, true);
    plot::det(
        &out.join("det.svg"),
        "Verification DET, LFW, enrol -> verify path",
        ("FMR", "FNMR"),
        &[
            Curve {
                label: "comparisons that happened".into(),
                points: &acquired,
            },
            Curve {
                label: "end to end (refusals = non-matches)".into(),
                points: &e2e,
            },
        ],
        &[(format!("verify_threshold {vt:.3}"), c.fmr_e2e(vt), c.fnmr_e2e(vt))],
    )?;
    plot::det(
        &out.join("det-1n.svg"),
        "Open-set 1:N, LFW, search path",
        ("FPIR", "FNIR"),
        &[Curve {
            label: "end to end".into(),
            points: &identification_det(s),
        }],
        &[(format!("min_score {vt:.3}"), s.fpir(vt), s.fnir(vt))],
    )?;
    // Impostor scores are subsampled for the histogram (it shows shares, not counts).
    let step = (c.impostor().len() / 2_000_000).max(1);
    let impostor: Vec<f32> = c.impostor().iter().step_by(step).copied().collect();
    plot::histogram(
        &out.join("scores.svg"),
        "Cosine scores, LFW, comparisons that happened",
        "cosine",
        (-0.3, 1.0),
        &[("genuine".into(), c.genuine()), ("impostor".into(), &impostor)],
        &[("verify_threshold".into(), vt)],
    )?;
    gate_histograms(cfg, out, seen)
}

/// The open-set DET: (FPIR, FNIR) at every non-mated top score, from the highest down.
fn identification_det(s: &Searches) -> Vec<(f64, f64)> {
    let mut ident: Vec<(f64, f64)> = Vec::new();
    let mut tops: Vec<f32> = s.non_mated.iter().flatten().copied().collect();
    tops.sort_by(|a, b| b.total_cmp(a));
    for t in tops.iter().copied() {
        let p = (s.fpir(t), s.fnir(t));
        if p.0 > 0.0 && ident.last() != Some(&p) {
            ident.push(p);
        }
    }
    ident
}

/// A histogram of each gate's scores on the photos that reached it, with its thresholds.
fn gate_histograms(cfg: &Config, out: &Path, seen: &[Seen]) -> Result<(), AnyError> {
    let pc = &cfg.pipeline;
    let mad_threshold = facegate_models::mad::threshold_of(pc)?;
    let collect = |f: &dyn Fn(&Seen) -> Option<f32>| -> Vec<f32> { seen.iter().filter_map(f).collect() };
    let pad = collect(&|s| s.verify.pad);
    let quality = collect(&|s| s.verify.quality.or(s.enrol.quality));
    let mad = collect(&|s| s.enrol.mad);
    let per_purpose = |t: facegate_models::config::PerPurpose| {
        vec![
            ("enrol threshold".to_string(), t.enrol),
            ("verify threshold".to_string(), t.verify),
            ("search threshold".to_string(), t.search),
        ]
    };
    let gates = [
        (
            "pad",
            "PAD bona fide score",
            "bona fide probability",
            pad,
            per_purpose(pc.pad.threshold),
        ),
        (
            "quality",
            "Quality score",
            "quality score",
            quality,
            per_purpose(pc.quality.threshold),
        ),
        (
            "mad",
            "MAD morph score at enrol",
            "morph probability",
            mad,
            mad_threshold.map(|t| ("enrol threshold".to_string(), t)).into_iter().collect(),
        ),
    ];
    for (name, what, x_desc, scores, thresholds) in gates.iter().filter(|g| !g.3.is_empty()) {
        plot::histogram(
            &out.join(format!("gate-{name}.svg")),
            &format!("{what}, LFW photos that reached the gate"),
            x_desc,
            (0.0, 1.0),
            &[("LFW bona fide".into(), scores)],
            thresholds,
        )?;
    }
    Ok(())
}

/// One row per photo: what each path decided and measured (for choosing thresholds).
fn write_images(path: &Path, photos: &[Photo], seen: &[Seen], worst: &[Option<f32>]) -> Result<(), AnyError> {
    let mut out = String::from("path,person,enrol,verify,search,pad,quality,mad,worst_genuine,faces\n");
    let opt = |v: Option<f32>| v.map(|v| format!("{v:.5}")).unwrap_or_default();
    let outcome = |o: &PathOutcome| o.refused.map(Refusal::code).unwrap_or("ok");
    for ((p, s), w) in photos.iter().zip(seen).zip(worst) {
        // Faces as x:y:w:h:relative prominence, the subject's first.
        let faces: Vec<String> = s
            .enrol
            .faces
            .iter()
            .map(|(b, r)| format!("{}:{}:{}:{}:{r:.3}", b[0], b[1], b[2], b[3]))
            .collect();
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{}",
            p.rel,
            p.person,
            outcome(&s.enrol),
            outcome(&s.verify),
            outcome(s.search()),
            opt(s.verify.pad.or(s.enrol.pad)),
            opt(s.verify.quality.or(s.enrol.quality)),
            opt(s.enrol.mad),
            opt(*w),
            faces.join(" ")
        );
    }
    std::fs::write(path, out).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(())
}

/// The recognizer's calibration table: cosine -> FMR and FNMR over the comparisons that
/// happened, at round scores and at the thresholds of round FMRs.
fn write_calibration(path: &Path, cfg: &Config, c: &Comparisons) -> Result<(), AnyError> {
    let (g, i) = (c.genuine().len(), c.impostor().len());
    let mut out = format!(
        "# {} calibration: cosine score -> FMR and FNMR, measured by `facegate-tools eval lfw` on LFW View 2 folds 1-5\n\
         # ({g} genuine, {i} impostor comparisons: every ordered cross-identity pair of photos that passed the\n\
         # enrol and verify gates). FMR below about 10/{i} rests on fewer than ten impostor scores.\n\
         score,fmr,fnmr,impostors_at_or_above\n",
        cfg.pipeline.recognizer.model_id
    );
    let mut rows: Vec<f32> = (0..=70).map(|k| 0.05 + k as f32 * 0.01).collect();
    rows.extend([1e-2, 1e-3, 1e-4, 1e-5, 1e-6].map(|f| c.threshold_at_fmr(f)));
    rows.sort_by(f32::total_cmp);
    rows.dedup();
    for t in rows.into_iter().filter(|t| t.is_finite()) {
        let n = (c.fmr(t) * i as f64).round() as usize;
        let _ = writeln!(out, "{t:.4},{:.3e},{:.5},{n}", c.fmr(t), c.fnmr(t));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, out).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(())
}
