//! Configuration of the face pipeline: which file plays each role and the gates'
//! thresholds. Defaults are the default pack of models/manifest.toml; every field is
//! documented in config/default.toml.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::ModelError;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Directory the model files below are relative to.
    pub models_dir: PathBuf,
    /// ONNX Runtime intra-op threads per session.
    pub intra_threads: usize,
    pub limits: ImageLimits,
    pub detector: DetectorConfig,
    pub recognizer: RecognizerConfig,
    pub quality: QualityConfig,
    pub pad: PadConfig,
    pub mad: MadConfig,
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
    /// At enrol, a second face at least this fraction of the largest face's size makes the
    /// image ambiguous (refused). Size is the box's side, sqrt(w*h).
    pub ambiguous_ratio: f32,
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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QualityConfig {
    pub file: PathBuf,
    /// quality_score below this is rejected (422).
    pub threshold: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PadConfig {
    pub file: PathBuf,
    /// Bona fide (live) probability below this is a presentation attack (451).
    pub threshold: f32,
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
    /// Morph probability at or above this is refused at enrol (422).
    pub threshold: f32,
    /// Side of the detector's square input crop, in pixels.
    pub input_size: u32,
    /// How much more than the recognizer's aligned crop the detector's crop shows.
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
            limits: ImageLimits::default(),
            detector: DetectorConfig::default(),
            recognizer: RecognizerConfig::default(),
            quality: QualityConfig::default(),
            pad: PadConfig::default(),
            mad: MadConfig::default(),
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
            ambiguous_ratio: 0.5,
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
            verify_threshold: 0.30,
        }
    }
}

impl Default for QualityConfig {
    fn default() -> Self {
        Self {
            file: "qualityface-mnv2.onnx".into(),
            threshold: 0.22,
        }
    }
}

impl Default for PadConfig {
    fn default() -> Self {
        Self {
            file: "fr_liveness.onnx".into(),
            threshold: 0.075,
            crop_scale: 2.7,
            live_class: 0,
        }
    }
}

impl Default for MadConfig {
    fn default() -> Self {
        Self {
            file: PathBuf::from("facegate-mad-v8.onnx"),
            threshold: 0.9046,
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
        unit("pipeline.detector.ambiguous_ratio", self.detector.ambiguous_ratio)?;
        unit("pipeline.quality.threshold", self.quality.threshold)?;
        unit("pipeline.pad.threshold", self.pad.threshold)?;
        unit("pipeline.mad.threshold", self.mad.threshold)?;
        if !(-1.0..=1.0).contains(&self.recognizer.verify_threshold) {
            return Err(ModelError::Config(
                "pipeline.recognizer.verify_threshold must be within -1..1".into(),
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
