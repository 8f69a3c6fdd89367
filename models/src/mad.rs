//! Morphing-attack detection (MAD), run at enrol only: is this face a blend of two people?
//!
//! No trained MAD model exists in any package registry yet. Until one is configured the
//! gate is `MadGate::NotConfigured`: it passes every image, reports no score, and health
//! says `onnx_mad: false`. It never invents a score.

use ndarray::Array4;
use ort::{session::Session, value::TensorRef};

use crate::{align::AlignedFace, runtime, ModelError};

pub trait MorphDetector: Send {
    /// Probability that the aligned face is a morph, in [0, 1].
    fn morph_score(&mut self, face: &AlignedFace) -> Result<f32, ModelError>;
}

/// A single-image MAD network on the aligned 112x112 face, RGB scaled to 0..1, whose
/// output is either one morph probability or two softmax/logit values (bona fide, morph).
pub struct OnnxMad {
    session: Session,
}

impl OnnxMad {
    pub fn load(path: &std::path::Path, intra_threads: usize) -> Result<Self, ModelError> {
        let session = runtime::session(path, intra_threads)?;
        runtime::expect_input(&session, "mad", &[-1, 3, 112, 112])?;
        Ok(Self { session })
    }
}

impl MorphDetector for OnnxMad {
    fn morph_score(&mut self, face: &AlignedFace) -> Result<f32, ModelError> {
        let (w, h) = face.image.dimensions();
        let mut t = Array4::<f32>::zeros((1, 3, h as usize, w as usize));
        for (x, y, p) in face.image.enumerate_pixels() {
            for c in 0..3 {
                t[[0, c, y as usize, x as usize]] = f32::from(p[c]) / 255.0;
            }
        }
        let outputs = self.session.run(ort::inputs![TensorRef::from_array_view(&t)?])?;
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
