//! Presentation-attack detection (PAD): is this a live face, or a print or a screen?

use image::RgbImage;
use ndarray::Array4;
use ort::{session::Session, value::TensorRef};

use crate::{config::PadConfig, detect::Face, runtime, ModelError};

pub trait PresentationAttackDetector: Send {
    /// Probability that the face is bona fide (live), in [0, 1].
    fn live_score(&mut self, image: &RgbImage, face: &Face) -> Result<f32, ModelError>;
}

/// faceplugin `fr_liveness` (npm faceplugin-face-recognition-js 0.0.1), a MiniFASNet
/// variant at 128x128. The crop follows the package's JavaScript, itself a port of
/// Silent-Face's `CropImage`: the face box squared to its height, scaled by up to
/// `crop_scale` (less when the image is too small) and shifted, not padded, to lie inside
/// the image; bilinear resize to 128x128; raw 0..255 values.
///
/// Channel order is B,G,R. The package's JavaScript feeds R,G,B (opencv.js hands it RGBA),
/// but measured on 6,165 bona fide LFW photos BGR separates far better: 1st percentile of
/// the live probability 0.095 (BGR) against 0.003 (RGB); with RGB the package's bona fide
/// sample scores 0.01 live and is refused. Output: 3 logits -> softmax; class 0 is bona
/// fide (the print and replay samples land in class 1; class 2 never exceeds 0.16).
pub struct OnnxPad {
    session: Session,
    cfg: PadConfig,
}

/// The side of the crop the PAD net reads.
pub const INPUT_SIZE: usize = 128;

impl OnnxPad {
    pub fn load(path: &std::path::Path, cfg: &PadConfig, intra_threads: usize) -> Result<Self, ModelError> {
        let session = runtime::session(path, intra_threads)?;
        runtime::expect_input(&session, "pad", &[1, 3, INPUT_SIZE as i64, INPUT_SIZE as i64])?;
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
            .ok_or_else(|| ModelError::Shape {
                model: "pad".into(),
                reason: format!("{} outputs, live class {}", logits.len(), self.cfg.live_class),
            })
    }
}

/// The crop window (x, y, width, height) in whole pixels, inside the image.
fn crop_window(w: u32, h: u32, face: &Face, scale: f32) -> (u32, u32, u32, u32) {
    let (wf, hf) = (w as f32 - 1.0, h as f32 - 1.0);
    // Square box of side = face height around the box centre, clamped to the image.
    let side = face.height().max(1.0);
    let (cx, cy) = ((face.bbox[0] + face.bbox[2]) / 2.0, (face.bbox[1] + face.bbox[3]) / 2.0);
    let x1 = (cx - side / 2.0).max(0.0).trunc();
    let y1 = (cy - side / 2.0).max(0.0).trunc();
    let x2 = (cx + side / 2.0).min(wf).trunc();
    let y2 = (cy + side / 2.0).min(hf).trunc();
    let (bw, bh) = ((x2 - x1).max(1.0), (y2 - y1).max(1.0));
    // Scale up to `scale`, as far as the image allows, then shift inside it.
    let s = (hf / bh).min(wf / bw).min(scale).max(0.0);
    let (nw, nh) = (bw * s, bh * s);
    let (bcx, bcy) = (x1 + bw / 2.0, y1 + bh / 2.0);
    let (mut lx, mut rx, mut ly, mut ry) = (bcx - nw / 2.0, bcx + nw / 2.0, bcy - nh / 2.0, bcy + nh / 2.0);
    if lx < 0.0 {
        rx -= lx;
        lx = 0.0;
    }
    if ly < 0.0 {
        ry -= ly;
        ly = 0.0;
    }
    if rx > wf {
        lx -= rx - wf;
        rx = wf;
    }
    if ry > hf {
        ly -= ry - hf;
        ry = hf;
    }
    let x0 = lx.trunc().max(0.0) as u32;
    let y0 = ly.trunc().max(0.0) as u32;
    let cw = ((rx - lx).trunc().min(wf) as u32).clamp(1, w - x0);
    let ch = ((ry - ly).trunc().min(hf) as u32).clamp(1, h - y0);
    (x0, y0, cw, ch)
}

/// The crop resized to 128x128 with OpenCV-style bilinear sampling (half-pixel centres,
/// no antialiasing: the threshold was calibrated with it), as a BGR 0..255 tensor.
fn crop_tensor(image: &RgbImage, face: &Face, scale: f32) -> Array4<f32> {
    let (w, h) = image.dimensions();
    let (x0, y0, cw, ch) = crop_window(w, h, face, scale);
    let (sx, sy) = (cw as f32 / INPUT_SIZE as f32, ch as f32 / INPUT_SIZE as f32);
    let mut t = Array4::<f32>::zeros((1, 3, INPUT_SIZE, INPUT_SIZE));
    for j in 0..INPUT_SIZE {
        let y = ((j as f32 + 0.5) * sy - 0.5).clamp(0.0, (ch - 1) as f32) + y0 as f32;
        for i in 0..INPUT_SIZE {
            let x = ((i as f32 + 0.5) * sx - 0.5).clamp(0.0, (cw - 1) as f32) + x0 as f32;
            let p = crate::align::bilinear(image, x, y);
            t[[0, 0, j, i]] = f32::from(p[2]);
            t[[0, 1, j, i]] = f32::from(p[1]);
            t[[0, 2, j, i]] = f32::from(p[0]);
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
    use super::*;

    #[test]
    fn crop_stays_inside_the_image_and_is_square_when_it_fits() {
        let face = Face {
            bbox: [300.0, 200.0, 380.0, 300.0],
            score: 1.0,
            landmarks: [[0.0; 2]; 5],
        };
        let (x, y, w, h) = crop_window(1000, 800, &face, 2.7);
        assert_eq!((w, h), (270, 270));
        assert!(x + w <= 1000 && y + h <= 800);
        // Near a corner: shifted inside, not padded.
        let corner = Face {
            bbox: [0.0, 0.0, 60.0, 80.0],
            score: 1.0,
            landmarks: [[0.0; 2]; 5],
        };
        let (x, y, w, h) = crop_window(150, 150, &corner, 2.7);
        assert_eq!((x, y), (0, 0));
        assert!(w <= 150 && h <= 150);
    }

    #[test]
    fn softmax_sums_to_one() {
        let p = super::softmax(&[1.0, 2.0, 3.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[2] > p[1] && p[1] > p[0]);
    }
}
