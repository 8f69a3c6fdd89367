//! `facegate-tools eval pad`: the PAD gate on real presentation attacks and bona fide captures,
//! in ISO/IEC 30107-3 terms. The data folder's `index.csv` has `path,label,source` with
//! `label` `attack` or `bona_fide` (as shared/data/pad).
//!
//! Every photo goes through the verify path (PAD runs on whatever face the pipeline takes
//! as the subject's, so its score is known whenever a face is found) and the enrol path,
//! at the configured thresholds. Reported: APCER per attack source and BPCER per bona fide
//! source at each purpose's threshold and at the thresholds of round BPCERs, the D-EER,
//! and end to end how many attacks each endpoint accepted and how many bona fide captures
//! it refused, by reason. A photo in which no face is found has no PAD score; it is
//! counted apart (an attack there is not accepted, a bona fide capture is refused).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use facegate_models::Purpose;

use super::lfw::{search_shares_verify, PathOutcome, Refusal, Seen};
use super::plot::{self, Curve};
use super::rates::{d_eer, threshold_at_bpcer};
use super::{parallel, workers_or_cores, AnyError};
use crate::config::Config;

#[derive(clap::Args)]
pub struct PadArgs {
    /// Folder with index.csv (path,label,source) and the photos it names.
    #[arg(long)]
    data: PathBuf,
    /// Also score the silentface samples here (image_F*.jpg attacks, image_T*.jpg bona fide).
    #[arg(long)]
    silentface: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Where the DET curve and the score histogram (SVG) go.
    #[arg(long, default_value = "eval-out/pad")]
    out: PathBuf,
}

struct Item {
    path: PathBuf,
    attack: bool,
    source: String,
}

/// What one endpoint did with the photos of one source.
#[derive(Default)]
struct Tally {
    accepted: usize,
    photos: usize,
    refused: BTreeMap<Refusal, usize>,
}

/// A row of the PAD set's index.csv (other columns are ignored).
#[derive(serde::Deserialize)]
struct IndexRow {
    path: String,
    label: String,
    source: String,
}

fn read_index(data: &Path) -> Result<Vec<Item>, AnyError> {
    let path = data.join("index.csv");
    let mut items = Vec::new();
    for row in csv::Reader::from_path(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .deserialize::<IndexRow>()
    {
        let r = row.map_err(|e| format!("{}: {e}", path.display()))?;
        let attack = match r.label.as_str() {
            "attack" => true,
            "bona_fide" => false,
            other => return Err(format!("{}: label {other:?} is neither attack nor bona_fide", path.display()).into()),
        };
        items.push(Item {
            path: data.join(&r.path),
            attack,
            source: r.source,
        });
    }
    Ok(items)
}

fn silentface(dir: &Path) -> Result<Vec<Item>, AnyError> {
    let mut items = Vec::new();
    for name in ["image_F1.jpg", "image_F2.jpg", "image_T1.jpg"] {
        let path = dir.join(name);
        if !path.exists() {
            return Err(format!("{}: missing", path.display()).into());
        }
        items.push(Item {
            attack: name.contains("_F"),
            source: format!("silentface:{name}"),
            path,
        });
    }
    Ok(items)
}

fn pct(n: usize, of: usize) -> String {
    format!("{:.2} % ({n}/{of})", 100.0 * n as f64 / of.max(1) as f64)
}

/// Each source's PAD scores, keyed by (attack, source); None: no face found.
type Sources<'a> = BTreeMap<(bool, &'a str), Vec<Option<f32>>>;

/// How the report names a photo's label.
fn kind(attack: bool) -> &'static str {
    if attack {
        "attack"
    } else {
        "bona fide"
    }
}

pub fn run(cfg: &Config, args: PadArgs) -> Result<(), AnyError> {
    let mut items = read_index(&args.data)?;
    let extra = match &args.silentface {
        Some(d) => silentface(d)?,
        None => Vec::new(),
    };
    let n_main = items.len();
    items.extend(extra);
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let pc = &cfg.pipeline;
    let shares = search_shares_verify(cfg);
    let seen = parallel(pc, &items, workers_or_cores(args.workers), "pad", |p, item| {
        Seen::of(p, &item.path, shares)
    })?;
    let (main, extra) = seen.split_at(n_main);
    let (items_main, items_extra) = items.split_at(n_main);

    let mut sources: Sources = BTreeMap::new();
    for (item, s) in items_main.iter().zip(main) {
        sources.entry((item.attack, item.source.as_str())).or_default().push(s.verify.pad);
    }
    println!(
        "PAD on {}: {} attacks, {} bona fide captures; PAD scores the face the pipeline takes as the subject's",
        args.data.display(),
        items_main.iter().filter(|i| i.attack).count(),
        items_main.iter().filter(|i| !i.attack).count()
    );
    for ((attack, source), v) in &sources {
        let no_face = v.iter().filter(|s| s.is_none()).count();
        println!("  {:<9} {source:<14} {} photos, no face found in {no_face}", kind(*attack), v.len());
    }
    let bona = pooled(&sources, false);
    error_rates(cfg, &sources, &pooled(&sources, true), &bona);
    end_to_end(items_main, main);
    for (item, s) in items_extra.iter().zip(extra) {
        println!(
            "  {}: PAD score {}; verify {}; enrol {}",
            item.source,
            s.verify.pad.map(|p| format!("{p:.4}")).unwrap_or_else(|| "no face".into()),
            s.verify.refused.map(Refusal::name).unwrap_or("accepted"),
            s.enrol.refused.map(Refusal::name).unwrap_or("accepted")
        );
    }
    pictures(cfg, &args.out, &sources, &bona)?;
    write_scores(&args.out.join("scores.csv"), &items, &seen)?;
    println!("  pictures and scores.csv in {}", args.out.display());
    Ok(())
}

/// The PAD scores of every attack source, or of every bona fide source, pooled.
fn pooled(sources: &Sources, attack: bool) -> Vec<f32> {
    sources
        .iter()
        .filter(|((a, _), _)| *a == attack)
        .flat_map(|(_, v)| v.iter().flatten().copied())
        .collect()
}

/// Prints APCER per attack source and BPCER per bona fide source at threshold `t`.
fn rates_at(sources: &Sources, label: &str, t: f32) {
    let mut line = format!("  {label:<34} threshold {t:.4}:");
    for ((attack, source), v) in sources {
        let faces: Vec<f32> = v.iter().flatten().copied().collect();
        let wrong = if *attack {
            faces.iter().filter(|s| **s >= t).count()
        } else {
            faces.iter().filter(|s| **s < t).count()
        };
        line += &format!(" {} {source} {};", if *attack { "APCER" } else { "BPCER" }, pct(wrong, faces.len()));
    }
    println!("{line}");
}

/// The rates at each purpose's configured threshold, at the thresholds of round BPCERs,
/// and the D-EER.
fn error_rates(cfg: &Config, sources: &Sources, attacks: &[f32], bona: &[f32]) {
    for purpose in [Purpose::Enrol, Purpose::Verify, Purpose::Search] {
        rates_at(
            sources,
            &format!("configured, {purpose:?}"),
            cfg.pipeline.pad.threshold.get(purpose),
        );
    }
    // The shared rates take attack scores (higher = attack): the live score negated, which
    // is exact and keeps every order; thresholds come back negated again.
    let attack_score = |v: &[f32]| -> Vec<f32> { v.iter().map(|s| -s).collect() };
    let (attack_scores, bona_scores) = (attack_score(attacks), attack_score(bona));
    for bpcer in [0.01, 0.02, 0.05, 0.10] {
        rates_at(
            sources,
            &format!("BPCER {:.0} % (all bona fide pooled)", bpcer * 100.0),
            -threshold_at_bpcer(&bona_scores, bpcer),
        );
    }
    let (deer, t) = d_eer(&bona_scores, &attack_scores);
    println!("  D-EER (pooled) {:.2} % at threshold {:.4}", deer * 100.0, -t);
}

/// End to end: what each endpoint did with the photos.
fn end_to_end(items: &[Item], seen: &[Seen]) {
    for (name, pick) in [
        ("verify", (|s: &Seen| &s.verify) as fn(&Seen) -> &PathOutcome),
        ("search", |s: &Seen| s.search.as_ref().unwrap_or(&s.verify)),
        ("enrol", |s: &Seen| &s.enrol),
    ] {
        let mut by: BTreeMap<(bool, &str), Tally> = BTreeMap::new();
        for (item, s) in items.iter().zip(seen) {
            let e = by.entry((item.attack, item.source.as_str())).or_default();
            e.photos += 1;
            match pick(s).refused {
                None => e.accepted += 1,
                Some(r) => *e.refused.entry(r).or_default() += 1,
            }
        }
        for ((attack, source), t) in &by {
            let reasons: Vec<String> = t.refused.iter().map(|(r, c)| format!("{} {c}", r.name())).collect();
            println!(
                "  {name} end to end, {} {source}: accepted {}; refused: {}",
                kind(*attack),
                pct(t.accepted, t.photos),
                reasons.join(", ")
            );
        }
    }
}

/// One row per photo: its label, source, PAD score and what verify and enrol did.
fn write_scores(path: &Path, items: &[Item], seen: &[Seen]) -> Result<(), AnyError> {
    let mut out = String::from("path,label,source,pad,verify,enrol\n");
    for (item, s) in items.iter().zip(seen) {
        let outcome = |o: &PathOutcome| o.refused.map(Refusal::code).unwrap_or("ok");
        out += &format!(
            "{},{},{},{},{},{}\n",
            item.path.display(),
            if item.attack { "attack" } else { "bona_fide" },
            item.source,
            s.verify.pad.map(|p| format!("{p:.5}")).unwrap_or_default(),
            outcome(&s.verify),
            outcome(&s.enrol)
        );
    }
    std::fs::write(path, out).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(())
}

fn pictures(cfg: &Config, out: &Path, sources: &Sources, bona: &[f32]) -> Result<(), AnyError> {
    let curves = det_curves(sources, bona);
    let t = cfg.pipeline.pad.threshold;
    let all_attacks = pooled(sources, true);
    let marks: Vec<(String, f64, f64)> = [("enrol", t.enrol), ("verify", t.verify)]
        .into_iter()
        .map(|(label, thr)| {
            let apcer = all_attacks.iter().filter(|s| **s >= thr).count() as f64 / all_attacks.len().max(1) as f64;
            let bpcer = bona.iter().filter(|s| **s < thr).count() as f64 / bona.len().max(1) as f64;
            (format!("{label} threshold {thr:.3} (all attacks)"), bpcer, apcer)
        })
        .collect();
    let curve_refs: Vec<Curve> = curves
        .iter()
        .map(|(label, pts)| Curve {
            label: format!("attacks: {label}"),
            points: pts,
        })
        .collect();
    plot::det(
        &out.join("det.svg"),
        "PAD DET, all bona fide captures",
        ("BPCER", "APCER"),
        &curve_refs,
        &marks,
    )?;
    let series: Vec<(String, Vec<f32>)> = sources
        .iter()
        .map(|((attack, source), v)| (format!("{} {source}", kind(*attack)), v.iter().flatten().copied().collect()))
        .collect();
    let refs: Vec<(String, &[f32])> = series.iter().map(|(l, v)| (l.clone(), v.as_slice())).collect();
    plot::histogram(
        &out.join("scores.svg"),
        "PAD bona fide probability",
        "bona fide probability",
        (0.0, 1.0),
        &refs,
        &[("enrol threshold".into(), t.enrol), ("verify threshold".into(), t.verify)],
    )?;
    Ok(())
}

/// A DET curve per attack source against all bona fide captures: (BPCER, APCER) at every
/// score seen.
fn det_curves(sources: &Sources, bona: &[f32]) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut thresholds: Vec<f32> = sources.values().flatten().flatten().copied().collect();
    thresholds.sort_by(f32::total_cmp);
    thresholds.dedup();
    let mut curves = Vec::new();
    for ((attack, source), v) in sources {
        if !*attack {
            continue;
        }
        let a: Vec<f32> = v.iter().flatten().copied().collect();
        let mut pts: Vec<(f64, f64)> = thresholds
            .iter()
            .map(|&t| {
                let apcer = a.iter().filter(|s| **s >= t).count() as f64 / a.len().max(1) as f64;
                let bpcer = bona.iter().filter(|s| **s < t).count() as f64 / bona.len().max(1) as f64;
                (bpcer, apcer)
            })
            .collect();
        // A rate of 0 sits on the log axis' floor (plot::det clamps it there).
        pts.dedup();
        curves.push((source.to_string(), pts));
    }
    curves
}
