//! Configuration of the face pipeline: which file plays each role and the gates'
//! thresholds. Defaults are the default pack of models/manifest.toml; every field is
//! documented in config/default.toml.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{pipeline::Purpose, ModelError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Directory the model files below are relative to.
    pub models_dir: PathBuf,
    /// ONNX Runtime intra-op threads per session.
    pub intra_threads: usize,
    /// Decode a large JPEG at 1/2, 1/4 or 1/8 of its size (in the DCT domain) when the
    /// detector's input and the subject's face crops keep their full resolution; the face
    /// is cut from a finer decode when it needs one. false: always the full size.
    pub scaled_jpeg: bool,
    pub limits: ImageLimits,
    pub detector: DetectorConfig,
    pub subject: SubjectConfig,
    pub recognizer: RecognizerConfig,
    pub quality: QualityConfig,
    pub pad: PadConfig,
    pub mad: MadConfig,
    pub identify: IdentifyConfig,
}

/// Every face of a frame (`POST /api/v1/identify`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentifyConfig {
    /// Faces analysed when the request names no `max_faces`.
    pub default_max_faces: usize,
    /// The largest `max_faces` a request may ask for: each face costs a PAD, quality and
    /// recognizer run, so this bounds the work one frame can demand.
    pub max_faces_ceiling: usize,
    /// A face whose box is narrower or shorter than this, in the frame's pixels, is
    /// reported `too_small` and not searched: the recognizer's 112 px crop would be an
    /// upscaled blur of it.
    pub min_face_px: u32,
}

impl Default for IdentifyConfig {
    fn default() -> Self {
        Self {
            default_max_faces: 10,
            max_faces_ceiling: 20,
            min_face_px: 24,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageLimits {
    /// Largest encoded image accepted, in bytes.
    pub max_image_bytes: usize,
    /// Largest decoded image accepted, in pixels (width x height), checked from the header
    /// before any pixel buffer is allocated.
    pub max_pixels: u64,
    /// Largest width or height accepted.
    pub max_side: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorConfig {
    pub file: PathBuf,
    pub model_id: String,
    /// Minimum face probability.
    pub score_threshold: f32,
    /// Boxes overlapping more than this (IoU) with a better one are dropped.
    pub nms_iou: f32,
    /// Images whose longer side exceeds this are downscaled before detection.
    pub max_side: u32,
}

/// Which face is the subject's (`subject.rs`): the most prominent, prominence being the
/// box's side sqrt(w*h) times (1 - centre_weight x offset), offset the distance of its
/// centre from the image centre over the half diagonal (0 in the middle, 1 in a corner).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubjectConfig {
    pub centre_weight: f32,
    /// At enrol, another face at least this fraction of the subject's prominence competes
    /// with it: the photo is ambiguous (400). Search and verify take the most prominent.
    pub compete_ratio: f32,
}

/// A gate threshold for each purpose: a reference photo deserves a stricter gate than a
/// probe (a bad reference hurts every later comparison, a refused probe is a door that
/// does not open). In TOML either one number for all three or `{ enrol, verify, search }`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PerPurpose {
    pub enrol: f32,
    pub verify: f32,
    pub search: f32,
}

impl PerPurpose {
    pub const fn all(v: f32) -> Self {
        Self {
            enrol: v,
            verify: v,
            search: v,
        }
    }

    pub fn get(&self, purpose: Purpose) -> f32 {
        match purpose {
            Purpose::Enrol => self.enrol,
            Purpose::Verify => self.verify,
            Purpose::Search => self.search,
        }
    }

    fn validate(&self, name: &str) -> Result<(), ModelError> {
        for (purpose, v) in [("enrol", self.enrol), ("verify", self.verify), ("search", self.search)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(ModelError::Config(format!("{name}.{purpose} = {v} must be within 0..1")));
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for PerPurpose {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Each {
            enrol: f32,
            verify: f32,
            search: f32,
        }
        #[derive(Deserialize)]
        #[serde(untagged, expecting = "a number, or a table with enrol, verify and search")]
        enum Form {
            One(f32),
            Each(Each),
        }
        Ok(match Form::deserialize(d)? {
            Form::One(v) => Self::all(v),
            Form::Each(e) => Self {
                enrol: e.enrol,
                verify: e.verify,
                search: e.search,
            },
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecognizerConfig {
    pub file: PathBuf,
    /// Names the loaded model in every answer and in each partition's store.
    pub model_id: String,
    /// Pinned sha256 of `file`; empty to trust a file that is not in the manifest.
    pub sha256: String,
    /// Side of the aligned crop the model takes.
    pub input_size: u32,
    /// Where the 5 landmarks (left eye, right eye, nose, left and right mouth corners)
    /// land in the aligned crop.
    pub template: [[f32; 2]; 5],
    /// Pixel normalisation: (x - mean) / std, RGB order.
    pub mean: f32,
    pub std: f32,
    /// `match` in verify is score >= this (cosine, per model).
    pub verify_threshold: f32,
    /// The template is the mean of the embeddings of the face and its mirror image (one more
    /// recognizer run per photo).
    pub flip: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QualityConfig {
    pub file: PathBuf,
    /// quality_score below this is rejected (422).
    pub threshold: PerPurpose,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PadConfig {
    pub file: PathBuf,
    /// Bona fide (live) probability below this is a presentation attack (451).
    pub threshold: PerPurpose,
    /// Crop side relative to the face box.
    pub crop_scale: f32,
    /// Index of the bona fide class in the model's softmax.
    pub live_class: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MadConfig {
    /// Morphing-attack detector; empty = none configured (the gate passes every image and
    /// health reports onnx_mad false).
    pub file: PathBuf,
    /// Morph probability at or above this is refused at enrol (422); unset: the model's
    /// own (`facegate.threshold` in its metadata).
    pub threshold: Option<f32>,
    /// Side of the detector's square input crop, in pixels, and how much more than the
    /// recognizer's aligned crop it shows: for a model that does not declare its own
    /// (`facegate.input_size`, `facegate.context`), and the crop `facegate-tools faces` cuts.
    pub input_size: u32,
    pub context: f32,
}

/// The standard ArcFace 112x112 landmark template (InsightFace).
pub const ARCFACE_TEMPLATE: [[f32; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            models_dir: PathBuf::from("models/files"),
            intra_threads: 1,
            scaled_jpeg: true,
            limits: ImageLimits::default(),
            detector: DetectorConfig::default(),
            subject: SubjectConfig::default(),
            recognizer: RecognizerConfig::default(),
            quality: QualityConfig::default(),
            pad: PadConfig::default(),
            mad: MadConfig::default(),
            identify: IdentifyConfig::default(),
        }
    }
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self {
            max_image_bytes: 10 << 20,
            max_pixels: 40_000_000,
            max_side: 12_000,
        }
    }
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            file: "retinaface-mnet025.onnx".into(),
            model_id: "retinaface-mnet025".into(),
            score_threshold: 0.8,
            nms_iou: 0.4,
            max_side: 640,
        }
    }
}

impl Default for SubjectConfig {
    fn default() -> Self {
        Self {
            centre_weight: 0.75,
            compete_ratio: 0.7,
        }
    }
}

impl Default for RecognizerConfig {
    fn default() -> Self {
        Self {
            file: "w600k_mbf.onnx".into(),
            model_id: "arcface-w600k-mbf".into(),
            sha256: String::new(),
            input_size: 112,
            template: ARCFACE_TEMPLATE,
            mean: 127.5,
            std: 127.5,
            verify_threshold: 0.282,
            flip: false,
        }
    }
}

impl Default for QualityConfig {
    fn default() -> Self {
        Self {
            file: "qualityface-mnv2.onnx".into(),
            threshold: PerPurpose::all(0.0),
        }
    }
}

impl Default for PadConfig {
    fn default() -> Self {
        Self {
            file: "fr_liveness.onnx".into(),
            threshold: PerPurpose {
                enrol: 0.05,
                verify: 0.02,
                search: 0.02,
            },
            crop_scale: 2.7,
            live_class: 0,
        }
    }
}

impl Default for MadConfig {
    fn default() -> Self {
        Self {
            file: PathBuf::from("facegate-mad-v9.onnx"),
            threshold: None,
            input_size: 128,
            context: 1.5,
        }
    }
}

impl PipelineConfig {
    /// A configured file, resolved against `models_dir`.
    pub fn path(&self, file: &std::path::Path) -> PathBuf {
        self.models_dir.join(file)
    }

    /// Refuse values that cannot work, naming the option.
    pub fn validate(&self) -> Result<(), ModelError> {
        let unit = |name: &str, v: f32| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(ModelError::Config(format!("{name} = {v} must be within 0..1")))
            }
        };
        unit("pipeline.detector.score_threshold", self.detector.score_threshold)?;
        unit("pipeline.detector.nms_iou", self.detector.nms_iou)?;
        unit("pipeline.subject.centre_weight", self.subject.centre_weight)?;
        unit("pipeline.subject.compete_ratio", self.subject.compete_ratio)?;
        self.quality.threshold.validate("pipeline.quality.threshold")?;
        self.pad.threshold.validate("pipeline.pad.threshold")?;
        if let Some(t) = self.mad.threshold {
            unit("pipeline.mad.threshold", t)?;
        }
        if !(-1.0..=1.0).contains(&self.recognizer.verify_threshold) {
            return Err(ModelError::Config(
                "pipeline.recognizer.verify_threshold must be within -1..1".into(),
            ));
        }
        let id = &self.identify;
        if id.max_faces_ceiling == 0 || id.default_max_faces == 0 || id.default_max_faces > id.max_faces_ceiling {
            return Err(ModelError::Config(
                "pipeline.identify.default_max_faces must be within 1..=pipeline.identify.max_faces_ceiling".into(),
            ));
        }
        if self.detector.max_side < 64 {
            return Err(ModelError::Config("pipeline.detector.max_side must be at least 64".into()));
        }
        if self.recognizer.input_size < 32 || self.recognizer.std == 0.0 {
            return Err(ModelError::Config(
                "pipeline.recognizer.input_size >= 32 and std != 0 are required".into(),
            ));
        }
        if self.mad.input_size < 32 || !(1.0..=3.0).contains(&self.mad.context) {
            return Err(ModelError::Config(
                "pipeline.mad.input_size >= 32 and pipeline.mad.context within 1..3 are required".into(),
            ));
        }
        if self.recognizer.model_id.is_empty() {
            return Err(ModelError::Config("pipeline.recognizer.model_id must not be empty".into()));
        }
        if self.limits.max_pixels == 0 || self.limits.max_image_bytes == 0 {
            return Err(ModelError::Config("pipeline.limits must be positive".into()));
        }
        if self.pad.crop_scale < 1.0 {
            return Err(ModelError::Config("pipeline.pad.crop_scale must be at least 1".into()));
        }
        Ok(())
    }
}
