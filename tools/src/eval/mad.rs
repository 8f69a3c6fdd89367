//! `facegate-tools eval mad`: the enrol gate's morphing-attack detector on bona fide photos and
//! morphs, in ISO/IEC 30107-3 terms. A morph is an attack presentation: APCER is the share
//! of morphs the gate lets through, BPCER the share of bona fide photos it refuses.

use std::path::{Path, PathBuf};

use facegate_models::{decode, Pipeline};

use super::rates::{d_eer, share_at_or_above, threshold_at_apcer, threshold_at_bpcer};
use super::{parallel, percentile, workers_or_cores, AnyError};
use crate::config::Config;
use crate::enrol_dir::some_images;

#[derive(clap::Args)]
pub struct MadArgs {
    /// A folder with `bona_fide/` and `morph/`; each sub-folder of those is one source.
    #[arg(long)]
    data: Vec<PathBuf>,
    /// A folder of bona fide images (recursive), one source named after the folder.
    #[arg(long)]
    bona_fide: Vec<PathBuf>,
    /// A folder of morphs (recursive), one source named after the folder.
    #[arg(long)]
    morphs: Vec<PathBuf>,
    /// Write every score as CSV (kind,source,path,score).
    #[arg(long)]
    scores: Option<PathBuf>,
    /// Worker threads (each with its own sessions); 0 = one per core.
    #[arg(long, default_value_t = 0)]
    workers: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    BonaFide,
    Morph,
}

struct Item {
    kind: Kind,
    source: String,
    path: PathBuf,
}

enum Scored {
    Score(f32),
    NoFace,
    Failed(String),
}

fn name_of(dir: &Path) -> String {
    dir.file_name()
        .map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// Every image with its kind and source.
fn collect(args: &MadArgs) -> Result<Vec<Item>, AnyError> {
    let mut folders: Vec<(Kind, String, PathBuf)> = Vec::new();
    for d in &args.data {
        for (kind, sub) in [(Kind::BonaFide, "bona_fide"), (Kind::Morph, "morph")] {
            let root = d.join(sub);
            let rd = std::fs::read_dir(&root).map_err(|e| format!("{}: {e}", root.display()))?;
            let mut subs: Vec<PathBuf> = rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
            subs.sort();
            if subs.is_empty() {
                subs.push(root);
            }
            folders.extend(subs.into_iter().map(|s| (kind, name_of(&s), s)));
        }
    }
    folders.extend(args.bona_fide.iter().map(|d| (Kind::BonaFide, name_of(d), d.clone())));
    folders.extend(args.morphs.iter().map(|d| (Kind::Morph, name_of(d), d.clone())));
    let mut items = Vec::new();
    for (kind, source, dir) in folders {
        let found = some_images(&dir)?;
        items.extend(found.into_iter().map(|path| Item {
            kind,
            source: source.clone(),
            path,
        }));
    }
    if !items.iter().any(|i| i.kind == Kind::BonaFide) || !items.iter().any(|i| i.kind == Kind::Morph) {
        return Err("eval mad needs bona fide images and morphs (--data, or --bona-fide and --morphs)".into());
    }
    Ok(items)
}

pub fn run(cfg: &Config, args: MadArgs) -> Result<(), AnyError> {
    if cfg.pipeline.mad.file.as_os_str().is_empty() {
        return Err("no MAD model is configured (pipeline.mad.file)".into());
    }
    let items = collect(&args)?;
    let pcfg = &cfg.pipeline;
    let scored = parallel(pcfg, &items, workers_or_cores(args.workers), "mad", |p: &mut Pipeline, item| {
        let image = match std::fs::read(&item.path)
            .map_err(|e| e.to_string())
            .and_then(|b| decode::decode(&b, &pcfg.limits).map_err(|e| e.to_string()))
        {
            Ok(i) => i,
            Err(e) => return Scored::Failed(e),
        };
        match p
            .subject_face(&image)
            .and_then(|f| f.map(|f| p.morph_score(&image, &f)).transpose())
        {
            Ok(Some(Some(s))) => Scored::Score(s),
            Ok(Some(None)) => Scored::Failed("no MAD model".into()),
            Ok(None) => Scored::NoFace,
            Err(e) => Scored::Failed(e.to_string()),
        }
    })?;
    if let Some(path) = &args.scores {
        write_scores(path, &items, &scored)?;
    }
    let threshold = facegate_models::mad::threshold_of(&cfg.pipeline)?.ok_or("no MAD model is configured (pipeline.mad.file)")?;
    report(&items, &scored, threshold);
    Ok(())
}

fn write_scores(path: &Path, items: &[Item], scored: &[Scored]) -> Result<(), AnyError> {
    let mut out = String::from("kind,source,path,score\n");
    for (i, s) in items.iter().zip(scored) {
        let kind = if i.kind == Kind::BonaFide { "bona_fide" } else { "morph" };
        let score = match s {
            // Every digit the f32 has (shortest round-trip form): a model whose scores crowd
            // near 1 needs them to place its threshold.
            Scored::Score(v) => format!("{v}"),
            Scored::NoFace => "no_face".into(),
            Scored::Failed(_) => "failed".into(),
        };
        out.push_str(&format!("{kind},{},{},{score}\n", i.source, i.path.display()));
    }
    std::fs::write(path, out).map_err(|e| format!("{}: {e}", path.display()).into())
}

/// The scores of the items `pick` chooses that had a face.
fn scores_of(items: &[Item], scored: &[Scored], pick: &dyn Fn(&Item) -> bool) -> Vec<f32> {
    items
        .iter()
        .zip(scored)
        .filter(|(i, _)| pick(i))
        .filter_map(|(_, s)| if let Scored::Score(v) = s { Some(*v) } else { None })
        .collect()
}

/// The share of morphs let through at `t`, in per cent.
fn apcer(v: &[f32], t: f32) -> f64 {
    100.0 * (1.0 - share_at_or_above(v, t))
}

fn report(items: &[Item], scored: &[Scored], threshold: f32) {
    let mut sources: Vec<(Kind, &str)> = items.iter().map(|i| (i.kind, i.source.as_str())).collect();
    sources.dedup();
    let bona = scores_of(items, scored, &|i| i.kind == Kind::BonaFide);
    let morphs = scores_of(items, scored, &|i| i.kind == Kind::Morph);
    let t1 = pooled_rates(&bona, &morphs, threshold);
    println!("  per source (APCER at the configured threshold and at BPCER 1 %; D-EER against all bona fide):");
    for (kind, source) in sources {
        report_source(items, scored, (kind, source), &bona, (threshold, t1));
    }
}

/// Prints the rates over all bona fide photos and all morphs; returns the threshold of
/// BPCER 1 %.
fn pooled_rates(bona: &[f32], morphs: &[f32], threshold: f32) -> f32 {
    let (eer, eer_t) = d_eer(bona, morphs);
    let t1 = threshold_at_bpcer(bona, 0.01);
    let t5 = threshold_at_bpcer(bona, 0.05);
    let t10 = threshold_at_apcer(morphs, 0.10);
    println!(
        "MAD on {} bona fide and {} morph images with a detected face:",
        bona.len(),
        morphs.len()
    );
    println!("  D-EER: {:.2} % at score {eer_t:.4}", eer * 100.0);
    println!("  APCER at BPCER 1 %: {:.2} % (threshold {t1:.5})", apcer(morphs, t1));
    println!("  APCER at BPCER 5 %: {:.2} % (threshold {t5:.5})", apcer(morphs, t5));
    println!(
        "  BPCER at APCER 10 %: {:.2} % (threshold {t10:.5})",
        100.0 * share_at_or_above(bona, t10)
    );
    println!(
        "  at the configured threshold {threshold}: BPCER {:.2} %, APCER {:.2} %",
        100.0 * share_at_or_above(bona, threshold),
        apcer(morphs, threshold)
    );
    t1
}

/// One source's line, at the configured threshold and at that of BPCER 1 % (`t1`), and
/// its first failures on stderr.
fn report_source(items: &[Item], scored: &[Scored], (kind, source): (Kind, &str), bona: &[f32], (threshold, t1): (f32, f32)) {
    let mine: Vec<(&Item, &Scored)> = items
        .iter()
        .zip(scored)
        .filter(|(i, _)| i.kind == kind && i.source == source)
        .collect();
    let no_face = mine.iter().filter(|(_, s)| matches!(s, Scored::NoFace)).count();
    let failed: Vec<&String> = mine
        .iter()
        .filter_map(|(_, s)| if let Scored::Failed(e) = s { Some(e) } else { None })
        .collect();
    let v = scores_of(items, scored, &|i| i.kind == kind && i.source == source);
    let tail = format!(
        "{} images, {no_face} without a face, {} failed; median score {:.3}",
        mine.len(),
        failed.len(),
        percentile(&v, 50.0)
    );
    match kind {
        Kind::BonaFide => println!(
            "    bona fide {source:<24} BPCER {:>6.2} %                                 {tail}",
            100.0 * share_at_or_above(&v, threshold)
        ),
        Kind::Morph => println!(
            "    morph     {source:<24} APCER {:>6.2} %, at BPCER 1 % {:>6.2} %, D-EER {:>5.2} %  {tail}",
            apcer(&v, threshold),
            apcer(&v, t1),
            100.0 * d_eer(bona, &v).0
        ),
    }
    for e in failed.iter().take(3) {
        eprintln!("      failed: {e}");
    }
}
