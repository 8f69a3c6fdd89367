//! `facegate-tools eval morphs`: the morph defence as an attacker meets it. Contributor A is
//! enrolled (with another photo of A than the one the morph is made from); the attacker B,
//! A's closest lookalike among the others, enrols the morph of A's and B's photos as a new
//! subject. What stops it: the MAD gate, any other enrol gate, the identity-collision check
//! (the morph's template against the gallery of every enrolled contributor), or none.
//!
//! The morphs are made here, by a tool the MAD model never saw: both photos warped by the
//! similarity on the 5 landmarks into one 150x150 frame and blended whole at B's share w
//! (`crossgen.py`'s "average" kind), then sent as PNG bytes through `Pipeline::analyze` with
//! `Purpose::Enrol`, the enrol endpoint's path. Genuine new people (photos of one-photo
//! people, never in the gallery) through the same path and check give the defence's BPCER.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use facegate_models::{align, config::ARCFACE_TEMPLATE, recognize::cosine, Pipeline, Purpose};

use super::lfw::{images_root, photos, run_path, Refusal};
use super::{parallel, workers_or_cores, AnyError};
use crate::config::Config;

#[derive(clap::Args)]
pub struct MorphArgs {
    /// A folder like shared/data/faces (lfw/images/<person>/*.jpg), or of <person>/<photo>.
    #[arg(long)]
    data: PathBuf,
    /// Contributor pairs (each morphed at every weight).
    #[arg(long, default_value_t = 300)]
    pairs: usize,
    #[arg(long, default_value_t = 0)]
    workers: usize,
}

const WEIGHTS: [f32; 5] = [0.3, 0.4, 0.5, 0.6, 0.7];
const FRAME: u32 = 150;

/// A usable photo: the image, its subject's landmarks and its template.
type Source = (image::RgbImage, [[f32; 2]; 5], Vec<f32>);

/// What the pipeline made of one person's two photos.
struct Person {
    /// The enrolment template of the second photo (None: it did not enrol).
    enrolled: Option<Vec<f32>>,
    /// The first photo, its subject's landmarks and template (None: no usable face).
    source: Option<Source>,
}

/// One morph through the enrol path: the gate that refused it, and for a morph that got
/// a template its score to A's enrolment, whether it collides, and its score to B's.
type MorphOutcome = (Option<Refusal>, Option<(f32, bool, f32)>);

/// Both faces in one frame, blended at `w` of the second.
fn morph(a: &Source, b: &Source, w: f32) -> Option<Vec<u8>> {
    // The ArcFace template moved to the middle of a 150x150 frame: about LFW's framing.
    let shift = (FRAME as f32 - 112.0) / 2.0;
    let frame = ARCFACE_TEMPLATE.map(|[x, y]| [x + shift, y + shift]);
    let fa = align::align(&a.0, &a.1, &frame, FRAME)?;
    let fb = align::align(&b.0, &b.1, &frame, FRAME)?;
    let blended = image::RgbImage::from_fn(FRAME, FRAME, |x, y| {
        let (pa, pb) = (fa.image.get_pixel(x, y), fb.image.get_pixel(x, y));
        image::Rgb(std::array::from_fn(|c| {
            (f32::from(pa[c]) * (1.0 - w) + f32::from(pb[c]) * w).round() as u8
        }))
    });
    let mut png = Vec::new();
    blended
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .ok()?;
    Some(png)
}

fn source(p: &mut Pipeline, bytes: &[u8]) -> Option<Source> {
    let img = image::load_from_memory(bytes).ok()?.to_rgb8();
    let face = p.subject_face(&img).ok()??;
    let vector = run_path(p, bytes, Purpose::Search).vector?;
    Some((img, face.landmarks, vector))
}

/// Each person's photos, relative to the images root.
type PhotosOf = Vec<(String, Vec<String>)>;

/// The people's photos, split into people with two or more (contributors) and one-photo
/// people (genuine new people).
fn people_by_photo_count(root: &Path) -> Result<(PhotosOf, PhotosOf), AnyError> {
    let mut by_person: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in &photos(root)? {
        by_person.entry(p.person.clone()).or_default().push(p.rel.clone());
    }
    Ok(by_person.into_iter().partition(|(_, v)| v.len() >= 2))
}

/// Contributor pairs: each enrolled person A with a usable photo and the other person
/// whose photo looks most like it (lookalikes make the morphs that match both).
fn lookalike_pairs(people: &[Person], max: usize) -> Vec<(usize, usize)> {
    let usable: Vec<usize> = (0..people.len()).filter(|&i| people[i].source.is_some()).collect();
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    for &a in usable.iter().filter(|&&a| people[a].enrolled.is_some()) {
        let va = &people[a].source.as_ref().map(|s| &s.2).unwrap_or_else(|| unreachable!());
        let b = usable.iter().filter(|&&b| b != a).max_by(|&&x, &&y| {
            let s = |i: usize| people[i].source.as_ref().map_or(-1.0, |s| cosine(va, &s.2));
            s(x).total_cmp(&s(y))
        });
        if let Some(&b) = b {
            pairs.push((a, b));
        }
        if pairs.len() == max {
            break;
        }
    }
    pairs
}

/// Every enrolled contributor's template, and the identity-collision threshold.
struct Gallery<'a> {
    members: Vec<(usize, &'a [f32])>,
    threshold: f32,
}

impl Gallery<'_> {
    /// The best gallery score of a template, leaving out the attacker's own enrolment.
    fn collides(&self, v: &[f32], attacker: Option<usize>) -> bool {
        self.members
            .iter()
            .filter(|(i, _)| Some(*i) != attacker)
            .map(|(_, g)| cosine(v, g))
            .fold(f32::NEG_INFINITY, f32::max)
            >= self.threshold
    }
}

pub fn run(cfg: &Config, args: MorphArgs) -> Result<(), AnyError> {
    let root = images_root(&args.data);
    let (multi, single) = people_by_photo_count(&root)?;
    let workers = workers_or_cores(args.workers);
    let read = |rel: &str| std::fs::read(root.join(rel)).ok();
    let people: Vec<Person> = parallel(&cfg.pipeline, &multi, workers, "people", |p, (_, rels)| Person {
        enrolled: read(&rels[1]).and_then(|b| run_path(p, &b, Purpose::Enrol).vector),
        source: read(&rels[0]).and_then(|b| source(p, &b)),
    })?;
    let gallery = Gallery {
        members: people
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.enrolled.as_deref().map(|v| (i, v)))
            .collect(),
        threshold: cfg.collision.threshold,
    };
    let pairs = lookalike_pairs(&people, args.pairs);
    let jobs: Vec<(usize, usize, f32)> = pairs.iter().flat_map(|&(a, b)| WEIGHTS.map(|w| (a, b, w))).collect();
    let outcomes = parallel(&cfg.pipeline, &jobs, workers, "morphs", |p, &(a, b, w)| {
        morph_outcome(p, &people, &gallery, (a, b, w))
    })?;
    let t = gallery.threshold;
    println!(
        "Morph defence on {} contributor pairs ({} people with two photos, {} enrolled; B is A's closest lookalike), morphs blended whole after a 5-landmark similarity, at collision.threshold {t:.3} (policy {:?}) and MAD threshold {}",
        pairs.len(),
        people.len(),
        gallery.members.len(),
        cfg.collision.policy,
        facegate_models::mad::threshold_of(&cfg.pipeline)?.map_or("none (no MAD model)".into(), |t| t.to_string())
    );
    println!("  w = B's share; stopped by MAD / by another gate / by the collision check (of those that got a template) / by either; the morph's score against A's enrolled photo");
    report_weights(&jobs, &outcomes, cfg.pipeline.recognizer.verify_threshold);
    // Genuine new people: one-photo people, never enrolled, through the same path.
    let bona = parallel(&cfg.pipeline, &single, workers, "new people", |p, (_, rels)| {
        read(&rels[0]).map(|b| {
            let o = run_path(p, &b, Purpose::Enrol);
            (o.refused, o.vector.is_some_and(|v| gallery.collides(&v, None)))
        })
    })?;
    new_people_rates(&bona.into_iter().flatten().collect::<Vec<_>>(), gallery.members.len());
    Ok(())
}

/// The morph of A's and B's photos at B's share `w` through the enrol path and the
/// collision check (None: no morph could be made).
fn morph_outcome(p: &mut Pipeline, people: &[Person], gallery: &Gallery, (a, b, w): (usize, usize, f32)) -> Option<MorphOutcome> {
    let (Some(sa), Some(sb)) = (&people[a].source, &people[b].source) else {
        return None;
    };
    let png = morph(sa, sb, w)?;
    let o = run_path(p, &png, Purpose::Enrol);
    let score = |i: usize, v: &[f32]| people[i].enrolled.as_deref().map_or(f32::NEG_INFINITY, |e| cosine(v, e));
    Some((
        o.refused,
        o.vector.map(|v| (score(a, &v), gallery.collides(&v, Some(b)), score(b, &v))),
    ))
}

/// Prints a line per weight and one for all weights together.
fn report_weights(jobs: &[(usize, usize, f32)], outcomes: &[Option<MorphOutcome>], vt: f32) {
    let mut total = (0usize, 0usize, 0usize, 0usize);
    for w in WEIGHTS {
        let rows: Vec<&MorphOutcome> = jobs
            .iter()
            .zip(outcomes)
            .filter(|(j, _)| j.2 == w)
            .filter_map(|(_, o)| o.as_ref())
            .collect();
        let r = report_weight(w, &rows, vt);
        total = (total.0 + r.0, total.1 + r.1, total.2 + r.2, total.3 + r.3);
    }
    println!(
        "  all weights: stopped {:.1} % ({} of {}); let through and potent (matching both contributors): {} ({:.1} % of all morphs)",
        100.0 * total.0 as f64 / total.1.max(1) as f64,
        total.0,
        total.1,
        total.3,
        100.0 * total.3 as f64 / total.1.max(1) as f64
    );
}

/// Prints one weight's line; returns (stopped, morphs, potent past the gates, potent that
/// the collision check let through).
fn report_weight(w: f32, rows: &[&MorphOutcome], vt: f32) -> (usize, usize, usize, usize) {
    // A potent morph matches both contributors' enrolment photos at the verify threshold:
    // both could use it. Among those, the share stopped is the defence's rate.
    let n = rows.len();
    let mad = rows.iter().filter(|(r, _)| *r == Some(Refusal::Mad)).count();
    let other = rows.iter().filter(|(r, _)| r.is_some() && *r != Some(Refusal::Mad)).count();
    let reached: Vec<&(f32, bool, f32)> = rows.iter().filter_map(|(_, v)| v.as_ref()).collect();
    let collided = reached.iter().filter(|v| v.1).count();
    let stopped = n - reached.iter().filter(|v| !v.1).count();
    let mut to_a: Vec<f32> = reached.iter().map(|v| v.0).collect();
    to_a.sort_by(f32::total_cmp);
    // Potency needs the template: the morph's own, computed for every morph the gates
    // let through; a refused one is counted as stopped and not judged for potency.
    let potent_passed = reached.iter().filter(|v| v.0 >= vt && v.2 >= vt).count();
    let potent_missed = reached.iter().filter(|v| v.0 >= vt && v.2 >= vt && !v.1).count();
    let pct = |k: usize, of: usize| 100.0 * k as f64 / of.max(1) as f64;
    println!(
        "  w {w:.1}: {n} morphs; MAD {:.1} % ({mad}), other gates {:.1} % ({other}), collision {:.1} % ({collided} of {}), either {:.1} % ({stopped}); score to A median {:.3}; past the gates and matching both A and B at {vt:.3}: {potent_passed}, of which the collision check let {potent_missed} through",
        pct(mad, n),
        pct(other, n),
        pct(collided, reached.len()),
        reached.len(),
        pct(stopped, n),
        to_a.get(to_a.len() / 2).copied().unwrap_or(f32::NAN)
    );
    (stopped, n, potent_passed, potent_missed)
}

/// The defence's BPCER: genuine new people (the gate that refused each, and whether it
/// collided) against the gallery of `gallery_size` people.
fn new_people_rates(bona: &[(Option<Refusal>, bool)], gallery_size: usize) {
    let n = bona.len();
    let mad = bona.iter().filter(|(r, _)| *r == Some(Refusal::Mad)).count();
    let other = bona.iter().filter(|(r, _)| r.is_some() && *r != Some(Refusal::Mad)).count();
    let collided = bona.iter().filter(|(_, c)| *c).count();
    println!(
        "  {n} genuine new people against the {gallery_size}-person gallery: BPCER of the defence (MAD or collision) {:.2} % (MAD {mad}, collision {collided}); other gates refused {other}",
        100.0 * (mad + collided) as f64 / n.max(1) as f64
    );
}
