//! `facegate-tools faces DIR --out FILE [--crops DIR] [--aligned DIR]`: what the pipeline sees in
//! every image of a folder, as JSON lines (face box, 5 landmarks, embedding, gate scores),
//! and the exact crops the MAD model is given, as PNG: its own wider crop and the face
//! aligned for the recognizer (whose feature maps it may read). The MAD training tools (`tools/mad/`) build on
//! this, so the generator pairs people by the service's own recognizer and the classifier
//! trains on pixels the service will feed it, not on a re-implementation of them.

use std::io::Write;
use std::path::{Path, PathBuf};

use facegate_models::pipeline::Measurement;
use facegate_models::{align, decode, mad, Pipeline};

use crate::config::Config;
use crate::enrol_dir::some_images;
use crate::eval::{init_models, parallel, workers_or_cores, AnyError};

#[derive(clap::Args)]
pub struct Faces {
    /// Folder of images (searched recursively).
    pub dir: PathBuf,
    /// JSON-lines output, one line per image.
    #[arg(long)]
    pub out: PathBuf,
    /// Write each image's MAD crop here as PNG, at the image's path relative to DIR.
    #[arg(long)]
    pub crops: Option<PathBuf>,
    /// Write each image's face aligned for the recognizer here as PNG, at the image's path
    /// relative to DIR.
    #[arg(long)]
    pub aligned: Option<PathBuf>,
    /// Worker threads (each with its own sessions); 0 = one per core.
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
}

pub fn run(cfg: &Config, args: Faces) -> Result<(), AnyError> {
    init_models(cfg)?;
    let (files, links) = read_once(some_images(&args.dir)?, &args.dir);
    if links > 0 {
        println!(
            "{links} links to images inside {} left out: each is read at its own path",
            args.dir.display()
        );
    }
    let pcfg = &cfg.pipeline;
    let crop = args.crops.as_deref().map(|dir| {
        (
            dir,
            mad::MadCrop::new(
                &pcfg.recognizer.template,
                pcfg.recognizer.input_size,
                pcfg.mad.input_size,
                pcfg.mad.context,
            ),
        )
    });
    let lines = parallel(pcfg, &files, workers_or_cores(args.workers), "faces", |p, path| {
        describe(p, pcfg, &args.dir, path, crop.as_ref(), args.aligned.as_deref())
    })?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?);
    let mut found = 0;
    for line in &lines {
        found += usize::from(line["face"].is_object());
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    println!("{} images, {found} with a face -> {}", lines.len(), args.out.display());
    Ok(())
}

/// `files` without those reached through a symbolic link (to the file or to a folder on
/// its path) whose target is also under `dir`, and how many those were. morph.py's set
/// links its validation split again under `eval/` for `facegate-tools eval mad`: read through both
/// paths, every validation image was processed twice and its crops written twice. A link
/// to an image outside `dir` is kept: it is the only way to it.
fn read_once(files: Vec<PathBuf>, dir: &Path) -> (Vec<PathBuf>, usize) {
    let Ok(root) = dir.canonicalize() else { return (files, 0) };
    let through_a_link = |f: &PathBuf| {
        let (Ok(target), Ok(rel)) = (f.canonicalize(), f.strip_prefix(dir)) else {
            return false;
        };
        target.starts_with(&root) && target != root.join(rel)
    };
    let before = files.len();
    let kept: Vec<PathBuf> = files.into_iter().filter(|f| !through_a_link(f)).collect();
    let left_out = before - kept.len();
    (kept, left_out)
}

fn describe(
    p: &mut Pipeline,
    pcfg: &facegate_models::PipelineConfig,
    root: &Path,
    path: &Path,
    crops: Option<&(&Path, mad::MadCrop)>,
    aligned_dir: Option<&Path>,
) -> serde_json::Value {
    let rel = path.strip_prefix(root).unwrap_or(path).to_string_lossy().into_owned();
    let fail = |e: String| serde_json::json!({ "path": rel, "error": e });
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return fail(e.to_string()),
    };
    let image = match decode::decode(&bytes, &pcfg.limits) {
        Ok(i) => i,
        Err(e) => return fail(e.to_string()),
    };
    let m = match p.measure(&image) {
        Ok(Some(m)) => m,
        Ok(None) => return serde_json::json!({ "path": rel, "face": null }),
        Err(e) => return fail(e.to_string()),
    };
    let (crop_path, aligned_path) = match write_crops(pcfg, &image, &m, &rel, crops, aligned_dir) {
        Ok(paths) => paths,
        Err(e) => return fail(e),
    };
    serde_json::json!({
        "path": rel,
        "width": image.width(),
        "height": image.height(),
        "face": {
            "bbox": m.face.bbox,
            "score": m.face.score,
            "landmarks": m.face.landmarks,
        },
        "embedding": m.vector,
        "pad": m.pad,
        "quality": m.quality,
        "mad": m.mad,
        "crop": crop_path,
        "aligned": aligned_path,
    })
}

/// Writes `img` as `dir/rel` with a .png extension; returns that path relative to `dir`.
fn save(dir: &Path, rel: &str, img: &image::RgbImage) -> Result<String, String> {
    let dest = dir.join(rel).with_extension("png");
    dest.parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .map_err(|e| e.to_string())
        .and_then(|()| img.save(&dest).map_err(|e| e.to_string()))
        .map_err(|e| format!("{}: {e}", dest.display()))?;
    Ok(dest.strip_prefix(dir).unwrap_or(&dest).to_string_lossy().into_owned())
}

/// Writes the image's MAD crop and its face aligned for the recognizer where asked; returns
/// their paths (None: not asked for, or the face could not be cropped).
fn write_crops(
    pcfg: &facegate_models::PipelineConfig,
    image: &image::RgbImage,
    m: &Measurement,
    rel: &str,
    crops: Option<&(&Path, mad::MadCrop)>,
    aligned_dir: Option<&Path>,
) -> Result<(Option<String>, Option<String>), String> {
    let mut crop_path = None;
    if let Some((dir, mad_crop)) = crops {
        if let Some(c) = mad_crop.apply(image, &m.face) {
            crop_path = Some(save(dir, rel, &c)?);
        }
    }
    let mut aligned_path = None;
    if let Some(dir) = aligned_dir {
        // The same call the pipeline makes before the recognizer and the MAD stage.
        let rc = &pcfg.recognizer;
        if let Some(a) = align::align(image, &m.face.landmarks, &rc.template, rc.input_size) {
            aligned_path = Some(save(dir, rel, &a.image)?);
        }
    }
    Ok((crop_path, aligned_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_linked_again_inside_the_folder_is_read_once() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let d = dir.path();
        for sub in ["val", "eval", "linked"] {
            std::fs::create_dir(d.join(sub)).unwrap_or_else(|e| panic!("{e}"));
        }
        std::fs::write(d.join("val/a.jpg"), b"x").unwrap_or_else(|e| panic!("{e}"));
        let outside = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(outside.path().join("b.jpg"), b"x").unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink(d.join("val/a.jpg"), d.join("eval/a.jpg")).unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink(d.join("val"), d.join("linked/val")).unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink(outside.path().join("b.jpg"), d.join("eval/b.jpg")).unwrap_or_else(|e| panic!("{e}"));
        let (kept, left_out) = read_once(some_images(d).unwrap_or_else(|e| panic!("{e}")), d);
        assert_eq!(
            kept,
            [d.join("eval/b.jpg"), d.join("val/a.jpg")],
            "the file itself and the only way to b.jpg"
        );
        assert_eq!(left_out, 2, "the link to a.jpg and a.jpg through the linked folder");
    }
}
