//! Every face of a frame (identify): one detector pass over the whole frame, then each face
//! on its own through align -> PAD -> quality -> embed, so that a pool can spread the faces
//! of one frame over its workers. No face is "the subject" here; each is reported with
//! what its gates measured and either its template or the reason it was not searched.

use image::RgbImage;

use super::{Pipeline, Purpose, Stage, StageTimings};
use crate::{align, decode, detect::Face, ModelError};

/// The decoded frame and its faces, largest first, in the frame's pixels.
#[derive(Debug, Clone)]
pub struct Frame {
    pub image: RgbImage,
    pub faces: Vec<Face>,
    pub timings: StageTimings,
}

/// Why a face of a frame was not searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotSearched {
    /// Smaller than `pipeline.identify.min_face_px`, or its landmarks cannot be aligned.
    TooSmall,
    /// Quality below the search threshold.
    Quality,
    /// PAD bona fide score below the search threshold.
    Spoof,
}

impl NotSearched {
    pub fn name(self) -> &'static str {
        match self {
            NotSearched::TooSmall => "too_small",
            NotSearched::Quality => "quality",
            NotSearched::Spoof => "spoof",
        }
    }
}

/// One face of a frame through the gates.
#[derive(Debug, Clone)]
pub struct FaceReport {
    pub face: Face,
    /// Bona fide probability; None when the face was too small to measure.
    pub pad: Option<f32>,
    /// Whether `pad` passed the search threshold.
    pub live: Option<bool>,
    pub quality: Option<f32>,
    /// The L2-normalised template, or why there is none.
    pub outcome: Result<Vec<f32>, NotSearched>,
    pub timings: StageTimings,
}

impl Pipeline {
    /// Decode the frame at full size (each face's crops are then cut at the resolution the
    /// camera gave) and detect every face in one pass. The detector downsizes its own input.
    pub fn detect_frame(&mut self, bytes: &[u8]) -> Result<Result<Frame, decode::DecodeError>, ModelError> {
        let mut timings = StageTimings::default();
        let decoded = timings.time(Stage::Decode, || {
            decode::decode_scaled(bytes, &self.cfg.limits, decode::Scale::Full)
        });
        let image = match decoded {
            Ok((image, _)) => image,
            Err(e) => return Ok(Err(e)),
        };
        let mut faces = timings.time(Stage::Detect, || self.detector.detect(&image))?;
        faces.sort_by(|a, b| b.size().total_cmp(&a.size()));
        Ok(Ok(Frame { image, faces, timings }))
    }

    /// One face of a frame: size check, align, PAD, quality, embed. PAD and quality are both
    /// measured whenever the face can be aligned, so that an operator sees both scores even
    /// for a face refused by the first gate.
    pub fn analyze_face(&mut self, image: &RgbImage, face: &Face, purpose: Purpose) -> Result<FaceReport, ModelError> {
        let mut t = StageTimings::default();
        let mut report = FaceReport {
            face: face.clone(),
            pad: None,
            live: None,
            quality: None,
            outcome: Err(NotSearched::TooSmall),
            timings: StageTimings::default(),
        };
        if face.width().min(face.height()) < self.cfg.identify.min_face_px as f32 {
            return Ok(report);
        }
        let rc = &self.cfg.recognizer;
        let Some(aligned) = t.time(Stage::Align, || align::align(image, &face.landmarks, &rc.template, rc.input_size)) else {
            report.timings = t;
            return Ok(report);
        };
        let live = t.time(Stage::Pad, || self.pad.live_score(image, face))?;
        let live_ok = live >= self.cfg.pad.threshold.get(purpose);
        report.pad = Some(live);
        report.live = Some(live_ok);
        let quality = t.time(Stage::Quality, || self.quality.assess(image, face, &aligned))?.score;
        report.quality = Some(quality);
        report.outcome = if !live_ok {
            Err(NotSearched::Spoof)
        } else if quality < self.cfg.quality.threshold.get(purpose) {
            Err(NotSearched::Quality)
        } else {
            let vector = t.time(Stage::Embed, || self.recognizer.embed(&aligned))?;
            let vector = if self.cfg.recognizer.flip {
                t.time(Stage::Embed, || self.mirrored_mean(&aligned, &vector))?
            } else {
                vector
            };
            Ok(vector)
        };
        report.timings = t;
        Ok(report)
    }
}
