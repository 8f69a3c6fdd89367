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
//! may also read the recognizer's embedding of the face (a second input, `embedding`) and
//! the recognizer's inner feature maps: the activations of node NODE when the recognizer
//! (its own input size and normalisation) runs on the centre of the MAD crop (inputs named
//! `recognizer:NODE`) or on the face aligned as for the embedding (`recognizer_aligned:NODE`):
//! two scales of the face, whose errors differ. The service exposes those nodes on the
//! recognizer file it already has (onnx_edit.rs); facegate's model files never contain its
//! weights. When a model reads the aligned face's maps, the same run gives the face's
//! embedding, which the pipeline then stores: the recognizer runs once per enrolment.
//!
//! A model declares its own contract in its ONNX metadata (`CONTRACT_KEYS`): its version,
//! its threshold, its crop (input size and context) and the recognizer it reads (sha256):
//! a new release needs no change of code or configuration, and a model that reads the
//! recognizer is refused next to any other, whose embeddings and feature maps mean nothing
//! to it.

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
    /// Whether `morph_score` needs the recognizer's embedding given to it: it reads the
    /// embedding and does not compute it itself.
    fn needs_embedding(&self) -> bool;
    /// Probability that the face is a morph, in [0, 1], and the recognizer's unit embedding
    /// of `aligned` when scoring computed it. `aligned`: the face aligned for the
    /// recognizer; `embedding`: its embedding, when `needs_embedding`.
    fn morph_score(&mut self, image: &RgbImage, face: &Face, aligned: &RgbImage, embedding: Option<&[f32]>) -> Result<Scored, ModelError>;
    /// The score at or above which an enrolment is refused.
    fn threshold(&self) -> f32;
    /// The model's version, as it declares it.
    fn version(&self) -> &str;
}

/// A morph score, with the embedding computed on the way when there was one.
pub struct Scored {
    pub score: f32,
    pub embedding: Option<Vec<f32>>,
}

/// The ONNX metadata key naming the recognizer whose embeddings or feature maps a MAD
/// model reads.
pub const EMBEDDING_SHA256_KEY: &str = "facegate.embedding_sha256";

/// The metadata keys of a model's contract besides `EMBEDDING_SHA256_KEY`.
pub const VERSION_KEY: &str = "facegate.version";
pub const THRESHOLD_KEY: &str = "facegate.threshold";
pub const INPUT_SIZE_KEY: &str = "facegate.input_size";
pub const CONTEXT_KEY: &str = "facegate.context";

/// What a model declares about itself, completed from the configuration.
#[derive(Debug, Clone, PartialEq)]
struct Contract {
    version: String,
    threshold: f32,
    input_size: u32,
    context: f32,
}

/// The detector's input: the face aligned by its 5 landmarks to the recognizer's
/// template, shrunk by `context` about the crop centre so that `context` times the
/// recognizer's field of view fits in `size`x`size`. Training (`facegate-tools faces`) and
/// inference both call this, so the model never sees a crop it was not trained on.
///
/// A face much larger than the crop is first scaled down with an area filter around the
/// face, half-way (geometrically) to the crop's scale; bilinear sampling does the rest.
/// The model learns from photos near the crop's own scale and judges how much fine
/// texture a face keeps, which depends on resolution: sampled straight from a large photo,
/// morphs look as textured as bona fide photos and pass; scaled down all the way, clean
/// high-quality bona fide photos look as smooth as morphs (45 % of one set refused).
/// Half-way keeps bona fide refusals at or below 3 % on every set measured (commit
/// 41582bd has the figures); it does not make the model reliable on high-resolution morphs.
#[derive(Debug, Clone)]
pub struct MadCrop {
    /// The recognizer's template shrunk into the crop: computed once, not per image.
    wide: [[f32; 2]; 5],
    size: u32,
}

impl MadCrop {
    pub fn new(template: &[[f32; 2]; 5], template_size: u32, input_size: u32, context: f32) -> Self {
        let centre = template_size as f32 / 2.0;
        let scale = input_size as f32 / template_size as f32 / context;
        let half = input_size as f32 / 2.0;
        Self {
            wide: template.map(|[x, y]| [(x - centre) * scale + half, (y - centre) * scale + half]),
            size: input_size,
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
        let small = crate::resize::triangle(&region, rw as u32, rh as u32);
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
    threshold: f32,
    version: String,
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
    /// feature maps must name that one and take its embedding length. The crop and the
    /// threshold are the model's own (`CONTRACT_KEYS`); `cfg` gives them for a model that
    /// declares none, and `cfg.threshold` overrides the declared threshold.
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
        let not_onnx = |e: onnx_edit::OnnxError| file_err(e.to_string());
        // Read before ONNX Runtime sees it, so that one session is built of it.
        let model = runtime::read_model(path)?;
        let declared = onnx_edit::input_names(&model).map_err(not_onnx)?;
        let reads_maps = declared.iter().any(|n| View::of(n).is_some());
        if reads_maps || declared.iter().any(|n| n == "embedding") {
            let named = onnx_edit::metadata(&model, EMBEDDING_SHA256_KEY).map_err(not_onnx)?;
            check_recognizer(named.as_deref(), recognizer).map_err(file_err)?;
        }
        let contract = contract(&model, cfg).map_err(file_err)?;
        let session = runtime::session_from_memory(path, &model, intra_threads)?;
        drop(model);
        let side = i64::from(contract.input_size);
        runtime::expect_input(&session, "mad", &[-1, 3, side, side])?;
        let (embedding_dim, taps) = recognizer_inputs(&session, recognizer)?;
        let taps = if taps.is_empty() {
            None
        } else {
            Some(RecognizerTaps::load(path, &taps, recognizer, contract.input_size, intra_threads)?)
        };
        Ok(Self {
            image_input: session.inputs()[0].name().to_string(),
            session,
            crop: MadCrop::new(&template, template_size, contract.input_size, contract.context),
            threshold: contract.threshold,
            version: contract.version,
            embedding_dim,
            taps,
        })
    }
}

/// The threshold the configured MAD model is run at (its declared one unless
/// `pipeline.mad.threshold` overrides it), read from its file without loading it; None
/// when no MAD model is configured.
pub fn threshold_of(cfg: &crate::PipelineConfig) -> Result<Option<f32>, ModelError> {
    if cfg.mad.file.as_os_str().is_empty() {
        return Ok(None);
    }
    let path = cfg.path(&cfg.mad.file);
    let model = runtime::read_model(&path)?;
    contract(&model, &cfg.mad)
        .map(|c| Some(c.threshold))
        .map_err(|reason| ModelError::File { path, reason })
}

/// The contract `model` declares, completed from `cfg` where it declares nothing, the
/// threshold overridden by `cfg.threshold` when set; why not, naming the key.
fn contract(model: &[u8], cfg: &MadConfig) -> Result<Contract, String> {
    let read = |key: &str| onnx_edit::metadata(model, key).map_err(|e| e.to_string());
    let number = |key: &str| -> Result<Option<f32>, String> {
        read(key)?
            .map(|v| {
                v.trim()
                    .parse::<f32>()
                    .map_err(|_| format!("its metadata {key} = {v:?} is not a number"))
            })
            .transpose()
    };
    let threshold = match cfg.threshold {
        Some(t) => t,
        None => number(THRESHOLD_KEY)?.ok_or_else(|| format!("it declares no threshold ({THRESHOLD_KEY}): set pipeline.mad.threshold"))?,
    };
    let c = Contract {
        version: read(VERSION_KEY)?.unwrap_or_else(|| "undeclared".into()),
        threshold,
        input_size: number(INPUT_SIZE_KEY)?.map_or(cfg.input_size, |v| v as u32),
        context: number(CONTEXT_KEY)?.unwrap_or(cfg.context),
    };
    if !(0.0..=1.0).contains(&c.threshold) || c.input_size < 32 || !(1.0..=3.0).contains(&c.context) {
        return Err(format!(
            "threshold {}, input size {} and context {} must be within 0..1, >= 32 and 1..3",
            c.threshold, c.input_size, c.context
        ));
    }
    Ok(c)
}

/// The recognizer nodes a MAD model reads, each with the view it is taken on.
type NodeReads = Vec<(View, String)>;

/// The inputs after the image: the embedding's length, if the model has an `embedding`
/// input, and the recognizer nodes it reads; anything else is refused.
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
                         or \"{}NODE\" / \"{}NODE\" [N, C, H, W], a recognizer node's feature maps",
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
    fn needs_embedding(&self) -> bool {
        self.embedding_dim.is_some() && !self.taps.as_ref().is_some_and(RecognizerTaps::embeds)
    }

    fn threshold(&self) -> f32 {
        self.threshold
    }

    fn version(&self) -> &str {
        &self.version
    }

    fn morph_score(&mut self, image: &RgbImage, face: &Face, aligned: &RgbImage, embedding: Option<&[f32]>) -> Result<Scored, ModelError> {
        let shape = |reason: String| ModelError::Shape {
            model: "mad".into(),
            reason,
        };
        let Some(crop) = self.crop.apply(image, face) else {
            return Err(shape("degenerate landmarks".into()));
        };
        let t = runtime::rgb_tensor(&crop, |v| f32::from(v) / 255.0);
        let mut inputs = ort::inputs![self.image_input.as_str() => TensorRef::from_array_view(&t)?];
        let tapped = match &mut self.taps {
            Some(taps) => Some(taps.run(&crop, aligned)?),
            None => None,
        };
        // The aligned view's row of the recognizer's own output is the face's embedding.
        let computed = match &tapped {
            Some(run) => run.embedding()?,
            None => None,
        };
        if let Some(dim) = self.embedding_dim {
            let e = embedding.or(computed.as_deref()).filter(|e| e.len() == dim).ok_or_else(|| {
                shape(format!(
                    "needs the recognizer's embedding of {dim} values, got {:?}",
                    embedding.map(<[f32]>::len)
                ))
            })?;
            let view = ndarray::ArrayView2::from_shape((1, dim), e).map_err(|e| ModelError::Runtime(e.to_string()))?;
            inputs.push(("embedding".into(), TensorRef::from_array_view(view)?.into()));
        }
        if let Some(run) = &tapped {
            for tap in run.inputs {
                let view = run.outputs[tap.output]
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
            other => return Err(shape(format!("{} outputs, 1 or 2 expected", other.len()))),
        };
        if !score.is_finite() {
            return Err(shape("non-finite score".into()));
        }
        Ok(Scored {
            score: score.clamp(0.0, 1.0),
            embedding: computed,
        })
    }
}

impl RecognizerTaps {
    /// The recognizer with the nodes `taps` names exposed as outputs, one session.
    fn load(mad: &Path, taps: &NodeReads, recognizer: RecognizerSource, crop_size: u32, intra_threads: usize) -> Result<Self, ModelError> {
        if recognizer.config.input_size > crop_size && taps.iter().any(|(v, _)| *v == View::CropCentre) {
            return Err(ModelError::Config(format!(
                "mad: the model reads the recognizer's feature maps of the crop's centre {0}x{0}, larger than the crop ({crop_size})",
                recognizer.config.input_size
            )));
        }
        // Each node is exposed once, whichever views read it.
        let mut nodes: Vec<&str> = taps.iter().map(|(_, node)| node.as_str()).collect();
        nodes.sort_unstable();
        nodes.dedup();
        let views: Vec<View> = View::ALL.into_iter().filter(|v| taps.iter().any(|(t, _)| t == v)).collect();
        let file = std::fs::read(recognizer.path).map_err(|e| ModelError::File {
            path: recognizer.path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let exposed = onnx_edit::with_outputs(&file, &nodes).map_err(|reason| ModelError::File {
            path: recognizer.path.to_path_buf(),
            reason: format!("cannot expose the nodes {nodes:?} the MAD model reads: {reason}"),
        })?;
        // A node the recognizer lacks fails here: say so from the MAD model's side.
        let session = runtime::session_from_memory(recognizer.path, &exposed, intra_threads).map_err(|e| ModelError::File {
            path: mad.to_path_buf(),
            reason: format!("it reads the recognizer's nodes {nodes:?}, which the configured recognizer cannot expose: {e}"),
        })?;
        // Output 0 is the recognizer's embedding; the exposed nodes follow in order.
        let inputs = taps
            .iter()
            .map(|(view, node)| Tap {
                input: format!("{}{node}", view.prefix()),
                output: 1 + nodes.iter().position(|n| n == node).unwrap_or_default(),
                at: views.iter().position(|v| v == view).unwrap_or_default(),
            })
            .collect();
        let side = recognizer.config.input_size as usize;
        Ok(Self {
            session,
            batch: ndarray::Array4::zeros((views.len(), 3, side, side)),
            views,
            inputs,
            config: recognizer.config.clone(),
        })
    }

    /// Whether the batch holds the aligned face, whose embedding it then computes.
    fn embeds(&self) -> bool {
        self.views.contains(&View::Aligned)
    }

    /// The recognizer's outputs for the views of the face (one batch), with the MAD inputs
    /// they fill and the aligned face's place in the batch: read in place, not copied.
    fn run(&mut self, crop: &RgbImage, aligned: &RgbImage) -> Result<TapsRun<'_>, ModelError> {
        // With a CropCentre view the crop is at least the recognizer's size (checked at load).
        let margin = crop.width().saturating_sub(self.config.input_size) / 2;
        for (view, slot) in self.views.iter().zip(self.batch.outer_iter_mut()) {
            match view {
                View::CropCentre => recognize::write_input(crop, (margin, margin), slot, &self.config),
                View::Aligned => recognize::write_input(aligned, (0, 0), slot, &self.config),
            }
        }
        let aligned_at = self.views.iter().position(|v| *v == View::Aligned);
        let outputs = self.session.run(ort::inputs![TensorRef::from_array_view(&self.batch)?])?;
        Ok(TapsRun {
            inputs: &self.inputs,
            aligned_at,
            outputs,
        })
    }
}

/// One run of the recognizer on the views of a face.
struct TapsRun<'a> {
    inputs: &'a [Tap],
    aligned_at: Option<usize>,
    outputs: ort::session::SessionOutputs<'a>,
}

impl TapsRun<'_> {
    /// The unit embedding of the aligned face, when the batch holds it.
    fn embedding(&self) -> Result<Option<Vec<f32>>, ModelError> {
        let Some(at) = self.aligned_at else {
            return Ok(None);
        };
        let all = self.outputs[0].try_extract_array::<f32>()?;
        let row = all.index_axis(ndarray::Axis(0), at);
        let raw: Vec<f32> = row.iter().copied().collect();
        recognize::l2_normalised(&raw).map(Some).ok_or_else(|| ModelError::Shape {
            model: "recognizer".into(),
            reason: "zero or non-finite embedding".into(),
        })
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
        let c = MadCrop::new(&ARCFACE_TEMPLATE, 112, cfg.input_size, cfg.context)
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
