//! Morphing-attack detection (MAD), run at enrol only: is this face a blend of two people?
//!
//! No trained MAD model exists in any package registry: facegate ships its own
//! (`models/mad/`, trained by `tools/mad/`). With none configured the gate is
//! `MadGate::NotConfigured`: it passes every image, reports no score, and health says
//! `onnx_mad: false`. It never invents a score.
//!
//! The detector sees its own crop, wider than the recognizer's: a landmark morph is
//! pasted back into one source's photo, and the contrast between the blended face and the
//! untouched hair, ears and background around it is one of its tell-tale traces. A model
//! may also read the recognizer's embedding of the face (a second input, `embedding`): a
//! blend of two identities lands where bona fide embeddings rarely do. It may also read
//! the recognizer's inner feature maps: the activations of node NODE when the recognizer
//! (its own input size and normalisation) runs on the centre of the MAD crop (inputs named
//! `recognizer:NODE`) or on the face aligned as for the embedding (`recognizer_aligned:NODE`):
//! two scales of the face, whose errors differ. The service exposes those nodes on the
//! recognizer file it already has (onnx_edit.rs); facegate's model files never contain
//! its weights. A model that fine-tunes a copy of the recognizer's last layers ships only the
//! difference and names the weights it starts from as inputs (`recognizer_weight:NAME`),
//! filled from that same file at load. A
//! model that reads either names the recognizer it was trained with (its sha256, in the
//! ONNX metadata), and is refused next to any other: another recognizer's embeddings and
//! feature maps mean nothing to it.

use std::path::Path;

use image::RgbImage;
use ort::{session::Session, value::TensorRef};

use crate::{
    align,
    config::{MadConfig, RecognizerConfig},
    detect::Face,
    onnx_edit, recognize, runtime, ModelError,
};

pub trait MorphDetector: Send {
    /// The length of the recognizer's embedding `morph_score` needs; None when it reads
    /// the image only.
    fn embedding_dim(&self) -> Option<usize>;
    /// Probability that the face is a morph, in [0, 1]. `aligned`: the face aligned for the
    /// recognizer; `embedding`: the recognizer's embedding of it, required when
    /// `embedding_dim` is Some.
    fn morph_score(&mut self, image: &RgbImage, face: &Face, aligned: &RgbImage, embedding: Option<&[f32]>) -> Result<f32, ModelError>;
}

/// The ONNX metadata key naming the recognizer whose embeddings or feature maps a MAD
/// model reads.
pub const EMBEDDING_SHA256_KEY: &str = "facegate.embedding_sha256";

/// The detector's input: the face aligned by its 5 landmarks to the recognizer's
/// template, shrunk by `context` about the crop centre so that `context` times the
/// recognizer's field of view fits in `size`x`size`. Training (`facegate faces`) and
/// inference both call this, so the model never sees a crop it was not trained on.
///
/// A face much larger than the crop is first scaled down with an area filter around the
/// face, half-way (geometrically) to the crop's scale; bilinear sampling does the rest.
/// The model learnt from photos near the crop's own scale and judges how much fine
/// texture a face keeps, which depends on resolution: sampled straight from a large photo,
/// morphs looked as textured as bona fide photos and passed; scaled down all the way,
/// clean high-quality bona fide photos looked as smooth as morphs (45 % of one set
/// refused). Half-way kept bona fide refusals at or below 3 % on every set measured
/// (BENCHMARKS.md); it does not make the model reliable on high-resolution morphs.
#[derive(Debug, Clone)]
pub struct MadCrop {
    /// The recognizer's template shrunk into the crop: computed once, not per image.
    wide: [[f32; 2]; 5],
    size: u32,
}

impl MadCrop {
    pub fn new(template: &[[f32; 2]; 5], template_size: u32, cfg: &MadConfig) -> Self {
        let centre = template_size as f32 / 2.0;
        let scale = cfg.input_size as f32 / template_size as f32 / cfg.context;
        let half = cfg.input_size as f32 / 2.0;
        Self {
            wide: template.map(|[x, y]| [(x - centre) * scale + half, (y - centre) * scale + half]),
            size: cfg.input_size,
        }
    }

    /// The crop of `face`; None when its landmarks are degenerate.
    pub fn apply(&self, image: &RgbImage, face: &Face) -> Option<RgbImage> {
        let (wide, size) = (&self.wide, self.size);
        let to_crop = align::Similarity::estimate(&face.landmarks, wide)?;
        let s = to_crop.scale();
        if s >= MIN_SCALE_WITHOUT_PREFILTER {
            return align::align(image, &face.landmarks, wide, size).map(|a| a.image);
        }
        // The part of the image the crop shows (with a margin), scaled down by `s`.
        let back = to_crop.inverse();
        let corners = [[0.0, 0.0], [size as f32, 0.0], [0.0, size as f32], [size as f32; 2]].map(|p| back.apply(p));
        let (lo, hi) = corners.iter().fold(([f32::MAX; 2], [f32::MIN; 2]), |(lo, hi), p| {
            ([lo[0].min(p[0]), lo[1].min(p[1])], [hi[0].max(p[0]), hi[1].max(p[1])])
        });
        let (w, h) = (image.width() as f32, image.height() as f32);
        let (x0, y0) = ((lo[0] - 4.0).clamp(0.0, w - 1.0).floor(), (lo[1] - 4.0).clamp(0.0, h - 1.0).floor());
        let (x1, y1) = ((hi[0] + 4.0).clamp(x0 + 1.0, w).ceil(), (hi[1] + 4.0).clamp(y0 + 1.0, h).ceil());
        let region = image::imageops::crop_imm(image, x0 as u32, y0 as u32, (x1 - x0) as u32, (y1 - y0) as u32).to_image();
        let f = s.powf(PREFILTER_EXPONENT);
        let (rw, rh) = (
            (region.width() as f32 * f).round().max(1.0),
            (region.height() as f32 * f).round().max(1.0),
        );
        let small = image::imageops::resize(&region, rw as u32, rh as u32, image::imageops::FilterType::Triangle);
        let (kx, ky) = (rw / region.width() as f32, rh / region.height() as f32);
        let landmarks = face.landmarks.map(|[x, y]| [(x - x0) * kx, (y - y0) * ky]);
        align::align(&small, &landmarks, wide, size).map(|a| a.image)
    }
}

/// How far towards the crop's scale a large face is scaled down before the warp (0 = not
/// at all, 1 = all the way).
const PREFILTER_EXPONENT: f32 = 0.5;

/// Below this crop-to-image scale the image is scaled down before the warp. Training
/// photos (LFW at 150x150 and their resized copies) sit above it, so their crops are
/// unaffected.
const MIN_SCALE_WITHOUT_PREFILTER: f32 = 0.75;

/// A single-image MAD network on the MAD crop, RGB scaled to 0..1 (its first input),
/// optionally with the recognizer's embedding (an input named `embedding`, [N, dim]),
/// whose output is either one morph probability or two softmax/logit values (bona fide,
/// morph).
pub struct OnnxMad {
    session: Session,
    crop: MadCrop,
    /// The image input's name, resolved once at load.
    image_input: String,
    /// The length of the `embedding` input, when the model has one.
    embedding_dim: Option<usize>,
    /// The recognizer with the nodes the model reads exposed, when it reads any.
    taps: Option<RecognizerTaps>,
}

/// The face a MAD input of the recognizer's feature maps is taken on, named by the input's
/// prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    /// The centre of the MAD crop, the recognizer's input size: the face smaller than the
    /// recognizer sees it, with some of its surroundings.
    CropCentre,
    /// The face aligned for the recognizer, as for the embedding.
    Aligned,
}

impl View {
    const ALL: [View; 2] = [View::CropCentre, View::Aligned];

    /// The prefix of a MAD model input filled with a recognizer node's activations on this view.
    const fn prefix(self) -> &'static str {
        match self {
            View::CropCentre => "recognizer:",
            View::Aligned => "recognizer_aligned:",
        }
    }

    /// The view and node a MAD model input names, if it is one of the recognizer's.
    fn of(input: &str) -> Option<(View, &str)> {
        View::ALL
            .into_iter()
            .find_map(|v| input.strip_prefix(v.prefix()).map(|node| (v, node)))
    }
}

/// A MAD model input filled from the recognizer: its name, the recognizer session's output
/// holding its node, and its view's place in the batch.
struct Tap {
    input: String,
    output: usize,
    at: usize,
}

/// The recognizer run on one or both views of the face (a batch) for its inner feature maps.
struct RecognizerTaps {
    session: Session,
    /// The views in batch order.
    views: Vec<View>,
    /// The recognizer's input, one image per view: allocated once, refilled per enrolment.
    batch: ndarray::Array4<f32>,
    /// The MAD model's recognizer inputs.
    inputs: Vec<Tap>,
    /// The recognizer's input size and normalisation.
    config: RecognizerConfig,
}

/// The recognizer a MAD model may read embeddings or feature maps of: the sha256 its file
/// was verified against (None when not pinned), its embedding length, its file and its
/// configuration (input size and normalisation).
#[derive(Debug, Clone, Copy)]
pub struct RecognizerSource<'a> {
    pub sha256: Option<&'a str>,
    pub dim: usize,
    pub path: &'a Path,
    pub config: &'a RecognizerConfig,
}

impl OnnxMad {
    /// `recognizer`: the configured recognizer; a model that reads its embeddings or
    /// feature maps must name that one and take its embedding length.
    pub fn load(
        path: &Path,
        cfg: &MadConfig,
        template: [[f32; 2]; 5],
        template_size: u32,
        recognizer: RecognizerSource,
        intra_threads: usize,
    ) -> Result<Self, ModelError> {
        let file_err = |reason: String| ModelError::File {
            path: path.to_path_buf(),
            reason,
        };
        let not_onnx = |e: String| file_err(format!("not an ONNX model: {e}"));
        // Read and edited before ONNX Runtime sees it, so that one session is built of it.
        let model = runtime::read_model(path)?;
        let declared = onnx_edit::input_names(&model).map_err(not_onnx)?;
        let weights = weight_reads(&declared);
        let reads_maps = declared.iter().any(|n| View::of(n).is_some());
        let reads_recognizer = reads_maps || !weights.is_empty() || declared.iter().any(|n| n == "embedding");
        if reads_recognizer {
            let named = onnx_edit::metadata(&model, EMBEDDING_SHA256_KEY).map_err(not_onnx)?;
            check_recognizer(named.as_deref(), recognizer).map_err(file_err)?;
        }
        // Read once: a model may both start from its weights and read its feature maps.
        let recognizer_file = if reads_maps || !weights.is_empty() {
            std::fs::read(recognizer.path).map_err(|e| ModelError::File {
                path: recognizer.path.to_path_buf(),
                reason: e.to_string(),
            })?
        } else {
            Vec::new()
        };
        let session = if weights.is_empty() {
            runtime::session_from_memory(path, &model, intra_threads)?
        } else {
            let filled = onnx_edit::with_weights(&model, &recognizer_file, &weights).map_err(|e| {
                file_err(format!(
                    "it starts from recognizer weights the configured recognizer does not have: {e}"
                ))
            })?;
            runtime::session_from_memory(path, &filled, intra_threads)?
        };
        drop(model);
        let side = i64::from(cfg.input_size);
        runtime::expect_input(&session, "mad", &[-1, 3, side, side])?;
        let (embedding_dim, taps) = recognizer_inputs(&session, recognizer)?;
        let taps = if taps.is_empty() {
            None
        } else if recognizer.config.input_size > cfg.input_size && taps.iter().any(|(v, _)| *v == View::CropCentre) {
            return Err(ModelError::Config(format!(
                "mad: the model reads the recognizer's feature maps of the crop's centre {0}x{0}, larger than the crop ({1})",
                recognizer.config.input_size, cfg.input_size
            )));
        } else {
            // Each node is exposed once, whichever views read it.
            let mut nodes: Vec<&str> = taps.iter().map(|(_, node)| node.as_str()).collect();
            nodes.sort_unstable();
            nodes.dedup();
            let views: Vec<View> = View::ALL.into_iter().filter(|v| taps.iter().any(|(t, _)| t == v)).collect();
            let exposed = onnx_edit::with_outputs(&recognizer_file, &nodes).map_err(|reason| ModelError::File {
                path: recognizer.path.to_path_buf(),
                reason: format!("cannot expose the nodes {nodes:?} the MAD model reads: {reason}"),
            })?;
            // A node the recognizer lacks fails here: say so from the MAD model's side.
            let session = runtime::session_from_memory(recognizer.path, &exposed, intra_threads).map_err(|e| ModelError::File {
                path: path.to_path_buf(),
                reason: format!("it reads the recognizer's nodes {nodes:?}, which the configured recognizer cannot expose: {e}"),
            })?;
            // Output 0 is the recognizer's embedding; the exposed nodes follow in order.
            let inputs = taps
                .iter()
                .map(|(view, node)| {
                    let output = 1 + nodes.iter().position(|n| n == node).unwrap_or_default();
                    let at = views.iter().position(|v| v == view).unwrap_or_default();
                    Tap {
                        input: format!("{}{node}", view.prefix()),
                        output,
                        at,
                    }
                })
                .collect();
            let side = recognizer.config.input_size as usize;
            Some(RecognizerTaps {
                session,
                batch: ndarray::Array4::zeros((views.len(), 3, side, side)),
                views,
                inputs,
                config: recognizer.config.clone(),
            })
        };
        Ok(Self {
            image_input: session.inputs()[0].name().to_string(),
            session,
            crop: MadCrop::new(&template, template_size, cfg),
            embedding_dim,
            taps,
        })
    }
}

/// The prefix of a MAD model input that is one of the recognizer's weights (by its
/// initializer name), filled from the recognizer file at load: a fine-tuned copy of the
/// recognizer's layers is shipped as the difference to them (tools/mad/ensemble.py).
const WEIGHT_PREFIX: &str = "recognizer_weight:";

/// The recognizer nodes a MAD model reads, each with the view it is taken on.
type NodeReads = Vec<(View, String)>;

/// The recognizer weights a MAD model starts from: (its input, the recognizer's initializer).
type WeightReads = Vec<(String, String)>;

/// The weights among a model's declared inputs (`WEIGHT_PREFIX`NAME).
fn weight_reads(declared: &[String]) -> WeightReads {
    declared
        .iter()
        .filter_map(|input| {
            let weight = input.strip_prefix(WEIGHT_PREFIX).filter(|w| !w.is_empty())?;
            Some((input.clone(), weight.to_string()))
        })
        .collect()
}

/// The inputs after the image, once the recognizer's weights are filled in: the
/// embedding's length, if the model has an `embedding` input, and the recognizer nodes it
/// reads; anything else is refused.
fn recognizer_inputs(session: &Session, recognizer: RecognizerSource) -> Result<(Option<usize>, NodeReads), ModelError> {
    let (mut dim, mut taps) = (None, Vec::new());
    for (i, input) in session.inputs().iter().enumerate().skip(1) {
        let shape = runtime::input_shape(session, i);
        match (input.name(), &shape[..], View::of(input.name())) {
            ("embedding", [_, d], _) if *d as usize == recognizer.dim => dim = Some(recognizer.dim),
            (_, [_, _, _, _], Some((view, node))) => taps.push((view, node.to_string())),
            (name, _, _) => {
                return Err(ModelError::Shape {
                    model: "mad".into(),
                    reason: format!(
                        "input {name:?} {shape:?}: expected \"embedding\" [N, {}], the recognizer's length, \
                         \"{}NODE\" / \"{}NODE\" [N, C, H, W], a recognizer node's feature maps, \
                         or \"{WEIGHT_PREFIX}NAME\", one of its weights",
                        recognizer.dim,
                        View::CropCentre.prefix(),
                        View::Aligned.prefix(),
                    ),
                })
            }
        }
    }
    Ok((dim, taps))
}

/// Refuse a model that reads the recognizer unless it names it (`named`: the sha256 in its
/// metadata) and that is the configured one; the reason why.
fn check_recognizer(named: Option<&str>, recognizer: RecognizerSource) -> Result<(), String> {
    Err(match (named, recognizer.sha256) {
        (Some(want), Some(have)) if want.eq_ignore_ascii_case(have) => return Ok(()),
        (Some(want), Some(have)) => format!(
            "it reads the recognizer with sha256 {want}, not the configured one ({have}); \
             with another recognizer use an image-only MAD model (facegate-mad-v2.onnx)"
        ),
        (Some(_), None) => "it reads the recognizer, and the configured recognizer is not pinned \
                            (pipeline.recognizer.sha256)"
            .into(),
        (None, _) => format!("it reads the recognizer but does not name it ({EMBEDDING_SHA256_KEY})"),
    })
}

impl MorphDetector for OnnxMad {
    fn embedding_dim(&self) -> Option<usize> {
        self.embedding_dim
    }

    fn morph_score(&mut self, image: &RgbImage, face: &Face, aligned: &RgbImage, embedding: Option<&[f32]>) -> Result<f32, ModelError> {
        let Some(crop) = self.crop.apply(image, face) else {
            return Err(ModelError::Shape {
                model: "mad".into(),
                reason: "degenerate landmarks".into(),
            });
        };
        let t = runtime::rgb_tensor(&crop, |v| f32::from(v) / 255.0);
        let mut inputs = ort::inputs![self.image_input.as_str() => TensorRef::from_array_view(&t)?];
        if let Some(dim) = self.embedding_dim {
            let e = embedding.filter(|e| e.len() == dim).ok_or_else(|| ModelError::Shape {
                model: "mad".into(),
                reason: format!(
                    "needs the recognizer's embedding of {dim} values, got {:?}",
                    embedding.map(<[f32]>::len)
                ),
            })?;
            let view = ndarray::ArrayView2::from_shape((1, dim), e).map_err(|e| ModelError::Runtime(e.to_string()))?;
            inputs.push(("embedding".into(), TensorRef::from_array_view(view)?.into()));
        }
        let tapped = match &mut self.taps {
            Some(taps) => Some(taps.run(&crop, aligned)?),
            None => None,
        };
        if let Some((taps, maps)) = &tapped {
            for tap in taps.iter() {
                let view = maps[tap.output]
                    .try_extract_array::<f32>()?
                    .slice_axis_move(ndarray::Axis(0), (tap.at..tap.at + 1).into());
                inputs.push((tap.input.as_str().into(), TensorRef::from_array_view(view)?.into()));
            }
        }
        let outputs = self.session.run(inputs)?;
        let (_, out) = outputs[0].try_extract_tensor::<f32>()?;
        let score = match out {
            [p] => *p,
            [a, b] if (a + b - 1.0).abs() < 1e-3 && *a >= 0.0 && *b >= 0.0 => *b,
            [a, b] => crate::pad::softmax(&[*a, *b])[1],
            other => {
                return Err(ModelError::Shape {
                    model: "mad".into(),
                    reason: format!("{} outputs, 1 or 2 expected", other.len()),
                })
            }
        };
        if score.is_finite() {
            Ok(score.clamp(0.0, 1.0))
        } else {
            Err(ModelError::Shape {
                model: "mad".into(),
                reason: "non-finite score".into(),
            })
        }
    }
}

impl RecognizerTaps {
    /// The recognizer's outputs for the views of the face (one batch), with the MAD inputs
    /// they fill: read in place, not copied.
    fn run(&mut self, crop: &RgbImage, aligned: &RgbImage) -> Result<(&[Tap], ort::session::SessionOutputs<'_>), ModelError> {
        // With a CropCentre view the crop is at least the recognizer's size (checked at load).
        let margin = crop.width().saturating_sub(self.config.input_size) / 2;
        for (view, slot) in self.views.iter().zip(self.batch.outer_iter_mut()) {
            match view {
                View::CropCentre => recognize::write_input(crop, (margin, margin), slot, &self.config),
                View::Aligned => recognize::write_input(aligned, (0, 0), slot, &self.config),
            }
        }
        let outputs = self.session.run(ort::inputs![TensorRef::from_array_view(&self.batch)?])?;
        Ok((&self.inputs, outputs))
    }
}

/// The enrol-time gate: a loaded detector, or an explicit "none configured".
pub enum MadGate {
    Model(Box<dyn MorphDetector>),
    NotConfigured,
}

impl MadGate {
    pub fn is_configured(&self) -> bool {
        matches!(self, MadGate::Model(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ARCFACE_TEMPLATE;

    #[test]
    fn a_recognizer_input_names_its_view_and_node() {
        assert_eq!(View::of("recognizer:397"), Some((View::CropCentre, "397")));
        assert_eq!(View::of("recognizer_aligned:505"), Some((View::Aligned, "505")));
        assert_eq!(View::of("embedding"), None);
        assert_eq!(View::of("recognizer_mirror:505"), None);
    }

    #[test]
    fn the_crop_shows_context_times_the_recognizers_field_of_view() {
        // A face whose landmarks sit exactly on the ArcFace template in a 112x112 image:
        // the MAD crop must show them shrunk by `context` about the centre.
        let image = RgbImage::from_fn(112, 112, |x, _| image::Rgb(if x < 56 { [0, 255, 0] } else { [255, 0, 0] }));
        let face = Face {
            bbox: [20.0, 20.0, 92.0, 100.0],
            score: 1.0,
            landmarks: ARCFACE_TEMPLATE,
        };
        let cfg = MadConfig {
            input_size: 128,
            context: 2.0,
            ..MadConfig::default()
        };
        let c = MadCrop::new(&ARCFACE_TEMPLATE, 112, &cfg)
            .apply(&image, &face)
            .unwrap_or_else(|| panic!("degenerate"));
        assert_eq!(c.dimensions(), (128, 128));
        // The image spans 112 * 128 / 112 / 2 = 64 crop pixels about the centre: black
        // (out of the image) at the edges, the image's two halves either side of x = 64.
        assert_eq!(c.get_pixel(10, 64), &image::Rgb([0, 0, 0]));
        assert_eq!(c.get_pixel(50, 64), &image::Rgb([0, 255, 0]));
        assert_eq!(c.get_pixel(78, 64), &image::Rgb([255, 0, 0]));
        assert_eq!(c.get_pixel(100, 64), &image::Rgb([0, 0, 0]));
    }
}
