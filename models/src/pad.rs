//! Presentation-attack detection (PAD): is this a live face, or a print or a screen?

use image::RgbImage;
use ndarray::Array4;
use ort::{session::Session, value::TensorRef};

use crate::{config::PadConfig, detect::Face, runtime, ModelError};

pub trait PresentationAttackDetector: Send {
    /// Probability that the face is bona fide (live), in [0, 1].
    fn live_score(&mut self, image: &RgbImage, face: &Face) -> Result<f32, ModelError>;
}

/// faceplugin `fr_liveness` (npm faceplugin-face-recognition-js 0.0.1), MiniFASNet-like:
/// a square crop of `crop_scale` times the face box around its centre, border pixels
/// replicated where the crop leaves the image, resized to 128x128, raw 0..255 RGB.
/// Output: 3 logits -> softmax; `live_class` is the bona fide one.
pub struct OnnxPad {
    session: Session,
    cfg: PadConfig,
}

const SIZE: usize = 128;

impl OnnxPad {
    pub fn load(path: &std::path::Path, cfg: &PadConfig, intra_threads: usize) -> Result<Self, ModelError> {
        let session = runtime::session(path, intra_threads)?;
        runtime::expect_input(&session, "pad", &[1, 3, SIZE as i64, SIZE as i64])?;
        Ok(Self { session, cfg: cfg.clone() })
    }
}

impl PresentationAttackDetector for OnnxPad {
    fn live_score(&mut self, image: &RgbImage, face: &Face) -> Result<f32, ModelError> {
        let tensor = crop_tensor(image, face, self.cfg.crop_scale);
        let outputs = self.session.run(ort::inputs![TensorRef::from_array_view(&tensor)?])?;
        let (_, logits) = outputs[0].try_extract_tensor::<f32>()?;
        let probs = softmax(logits);
        probs
            .get(self.cfg.live_class)
            .copied()
            .filter(|p| p.is_finite())
            .ok_or_else(|| ModelError::Shape { model: "pad".into(), reason: format!("{} outputs, live class {}", logits.len(), self.cfg.live_class) })
    }
}

/// The square crop around the face box centre, sampled (nearest-area average free: bilinear)
/// straight into the network's input, clamping coordinates to replicate the border.
fn crop_tensor(image: &RgbImage, face: &Face, scale: f32) -> Array4<f32> {
    let (w, h) = image.dimensions();
    let side = face.width().max(face.height()).max(1.0) * scale;
    let cx = (face.bbox[0] + face.bbox[2]) / 2.0;
    let cy = (face.bbox[1] + face.bbox[3]) / 2.0;
    let (x0, y0) = (cx - side / 2.0, cy - side / 2.0);
    let step = side / SIZE as f32;
    let mut t = Array4::<f32>::zeros((1, 3, SIZE, SIZE));
    let clamp = |v: f32, max: u32| v.clamp(0.0, (max - 1) as f32);
    for j in 0..SIZE {
        let sy = clamp(y0 + (j as f32 + 0.5) * step - 0.5, h);
        for i in 0..SIZE {
            let sx = clamp(x0 + (i as f32 + 0.5) * step - 0.5, w);
            let p = crate::align::bilinear(image, sx, sy);
            for c in 0..3 {
                t[[0, c, j, i]] = f32::from(p[c]);
            }
        }
    }
    t
}

pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn softmax_sums_to_one() {
        let p = super::softmax(&[1.0, 2.0, 3.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[2] > p[1] && p[1] > p[0]);
    }
}
