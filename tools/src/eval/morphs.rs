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
use std::path::PathBuf;

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

/// What the pipeline made of one person's two photos.
struct Person {
    /// The enrolment template of the second photo (None: it did not enrol).
    enrolled: Option<Vec<f32>>,
    /// The first photo, its subject's landmarks and template (None: no usable face).
    source: Option<(image::RgbImage, [[f32; 2]; 5], Vec<f32>)>,
}

/// Both faces in one frame, blended at `w` of the second.
fn morph(a: &(image::RgbImage, [[f32; 2]; 5], Vec<f32>), b: &(image::RgbImage, [[f32; 2]; 5], Vec<f32>), w: f32) -> Option<Vec<u8>> {
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

fn source(p: &mut Pipeline, bytes: &[u8]) -> Option<(image::RgbImage, [[f32; 2]; 5], Vec<f32>)> {
    let img = image::load_from_memory(bytes).ok()?.to_rgb8();
    let face = p.subject_face(&img).ok()??;
    let vector = run_path(p, bytes, Purpose::Search).vector?;
    Some((img, face.landmarks, vector))
}

pub fn run(cfg: &Config, args: MorphArgs) -> Result<(), AnyError> {
    let root = images_root(&args.data);
    let all = photos(&root)?;
    let mut by_person: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in &all {
        by_person.entry(p.person.clone()).or_default().push(p.rel.clone());
    }
    let (multi, single): (Vec<_>, Vec<_>) = by_person.into_iter().partition(|(_, v)| v.len() >= 2);
    let workers = workers_or_cores(args.workers);
    let read = |rel: &str| std::fs::read(root.join(rel)).ok();
    let people: Vec<Person> = parallel(&cfg.pipeline, &multi, workers, "people", |p, (_, rels)| Person {
        enrolled: read(&rels[1]).and_then(|b| run_path(p, &b, Purpose::Enrol).vector),
        source: read(&rels[0]).and_then(|b| source(p, &b)),
    })?;
    let gallery: Vec<(usize, &[f32])> = people
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.enrolled.as_deref().map(|v| (i, v)))
        .collect();
    // Contributor pairs: each enrolled person A with a usable photo and the other person
    // whose photo looks most like it (lookalikes make the morphs that match both).
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
        if pairs.len() == args.pairs {
            break;
        }
    }
    let t = cfg.collision.threshold;
    // The best gallery score of a template, leaving out the attacker's own enrolment.
    let collides = |v: &[f32], attacker: Option<usize>| {
        gallery
            .iter()
            .filter(|(i, _)| Some(*i) != attacker)
            .map(|(_, g)| cosine(v, g))
            .fold(f32::NEG_INFINITY, f32::max)
            >= t
    };
    let jobs: Vec<(usize, usize, f32)> = pairs.iter().flat_map(|&(a, b)| WEIGHTS.map(|w| (a, b, w))).collect();
    let outcomes = parallel(&cfg.pipeline, &jobs, workers, "morphs", |p, &(a, b, w)| {
        let (Some(sa), Some(sb)) = (&people[a].source, &people[b].source) else {
            return None;
        };
        let png = morph(sa, sb, w)?;
        let o = run_path(p, &png, Purpose::Enrol);
        let score = |i: usize, v: &[f32]| people[i].enrolled.as_deref().map_or(f32::NEG_INFINITY, |e| cosine(v, e));
        Some((o.refused, o.vector.map(|v| (score(a, &v), collides(&v, Some(b)), score(b, &v)))))
    })?;
    println!(
        "Morph defence on {} contributor pairs ({} people with two photos, {} enrolled; B is A's closest lookalike), morphs blended whole after a 5-landmark similarity, at collision.threshold {t:.3} (policy {:?}) and MAD threshold {}",
        pairs.len(),
        people.len(),
        gallery.len(),
        cfg.collision.policy,
        facegate_models::mad::threshold_of(&cfg.pipeline)?.map_or("none (no MAD model)".into(), |t| t.to_string())
    );
    println!("  w = B's share; stopped by MAD / by another gate / by the collision check (of those that got a template) / by either; the morph's score against A's enrolled photo");
    // A potent morph matches both contributors' enrolment photos at the verify threshold:
    // both could use it. Among those, the share stopped is the defence's rate.
    let vt = cfg.pipeline.recognizer.verify_threshold;
    let mut total = (0usize, 0usize, 0usize, 0usize);
    for w in WEIGHTS {
        let rows: Vec<_> = jobs
            .iter()
            .zip(&outcomes)
            .filter(|(j, _)| j.2 == w)
            .filter_map(|(_, o)| o.as_ref())
            .collect();
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
        total = (total.0 + stopped, total.1 + n, total.2 + potent_passed, total.3 + potent_missed);
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
    }
    println!(
        "  all weights: stopped {:.1} % ({} of {}); let through and potent (matching both contributors): {} ({:.1} % of all morphs)",
        100.0 * total.0 as f64 / total.1.max(1) as f64,
        total.0,
        total.1,
        total.3,
        100.0 * total.3 as f64 / total.1.max(1) as f64
    );
    // Genuine new people: one-photo people, never enrolled, through the same path.
    let bona = parallel(&cfg.pipeline, &single, workers, "new people", |p, (_, rels)| {
        read(&rels[0]).map(|b| {
            let o = run_path(p, &b, Purpose::Enrol);
            (o.refused, o.vector.is_some_and(|v| collides(&v, None)))
        })
    })?;
    let bona: Vec<_> = bona.into_iter().flatten().collect();
    let n = bona.len();
    let mad = bona.iter().filter(|(r, _)| *r == Some(Refusal::Mad)).count();
    let other = bona.iter().filter(|(r, _)| r.is_some() && *r != Some(Refusal::Mad)).count();
    let collided = bona.iter().filter(|(_, c)| *c).count();
    println!(
        "  {n} genuine new people against the {}-person gallery: BPCER of the defence (MAD or collision) {:.2} % (MAD {mad}, collision {collided}); other gates refused {other}",
        gallery.len(),
        100.0 * (mad + collided) as f64 / n.max(1) as f64
    );
    Ok(())
}
