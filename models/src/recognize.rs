//! Recognition: aligned face -> L2-normalised template.

use ort::{session::Session, value::TensorRef};

use crate::{align::AlignedFace, config::RecognizerConfig, runtime, ModelError};

pub trait Recognizer: Send {
    fn model_id(&self) -> &str;
    fn dim(&self) -> usize;
    /// The unit-length template of an aligned face.
    fn embed(&mut self, face: &AlignedFace) -> Result<Vec<f32>, ModelError>;
}

/// An ArcFace-style network: RGB crop, (x - mean) / std, NCHW, one embedding out.
/// InsightFace's w600k_mbf and w600k_r50 both fit, so either drops in by configuration.
pub struct OnnxRecognizer {
    session: Session,
    cfg: RecognizerConfig,
    dim: usize,
}

impl OnnxRecognizer {
    pub fn load(path: &std::path::Path, cfg: &RecognizerConfig, intra_threads: usize) -> Result<Self, ModelError> {
        let session = runtime::session(path, intra_threads)?;
        let s = i64::from(cfg.input_size);
        runtime::expect_input(&session, "recognizer", &[-1, 3, s, s])?;
        let dim = session
            .outputs()
            .first()
            .and_then(|o| o.dtype().tensor_shape())
            .and_then(|shape| shape.last().copied())
            .filter(|d| *d > 0)
            .ok_or_else(|| ModelError::Shape {
                model: "recognizer".into(),
                reason: "output has no fixed embedding size".into(),
            })?;
        Ok(Self {
            session,
            cfg: cfg.clone(),
            dim: dim as usize,
        })
    }
}

impl Recognizer for OnnxRecognizer {
    fn model_id(&self) -> &str {
        &self.cfg.model_id
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn embed(&mut self, face: &AlignedFace) -> Result<Vec<f32>, ModelError> {
        let tensor = input_tensor(&face.image, &self.cfg);
        let outputs = self.session.run(ort::inputs![TensorRef::from_array_view(&tensor)?])?;
        let (_, raw) = outputs[0].try_extract_tensor::<f32>()?;
        if raw.len() != self.dim {
            return Err(ModelError::Shape {
                model: "recognizer".into(),
                reason: format!("{} values out, {} expected", raw.len(), self.dim),
            });
        }
        l2_normalised(raw).ok_or_else(|| ModelError::Shape {
            model: "recognizer".into(),
            reason: "zero or non-finite embedding".into(),
        })
    }
}

/// The recognizer's input for an RGB crop of its input size: (x - mean) / std, NCHW. The
/// MAD stage feeds it the same way when a MAD model reads its feature maps.
pub fn input_tensor(image: &image::RgbImage, cfg: &RecognizerConfig) -> ndarray::Array4<f32> {
    let (mean, inv_std) = (cfg.mean, 1.0 / cfg.std);
    runtime::rgb_tensor(image, |v| (f32::from(v) - mean) * inv_std)
}

/// The same into one image of a batch (`out`, [3, size, size]), from the window of `image`
/// at `origin`.
pub fn write_input(image: &image::RgbImage, origin: (u32, u32), out: ndarray::ArrayViewMut3<f32>, cfg: &RecognizerConfig) {
    let (mean, inv_std) = (cfg.mean, 1.0 / cfg.std);
    runtime::write_rgb(image, origin, out, |v| (f32::from(v) - mean) * inv_std);
}

/// `v / |v|`, or `None` for a zero or non-finite vector (never stored).
pub fn l2_normalised(v: &[f32]) -> Option<Vec<f32>> {
    let norm = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt();
    if !(norm.is_finite() && norm > 1e-12) {
        return None;
    }
    Some(v.iter().map(|x| (f64::from(*x) / norm) as f32).collect())
}

/// Cosine similarity of two unit vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn normalises_and_refuses_zero() {
        let v = super::l2_normalised(&[3.0, 4.0]).unwrap_or_default();
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        assert!(super::l2_normalised(&[0.0, 0.0]).is_none());
        assert!(super::l2_normalised(&[f32::NAN, 1.0]).is_none());
    }
}
