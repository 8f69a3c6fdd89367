//! Quality: one `quality_score` in [0, 1] from a learned face-quality network and cheap
//! measures in the spirit of ISO/IEC 29794-5 (OFIQ) computed from what the pipeline
//! already holds.
//!
//! quality_score = net x f_resolution x f_roll x f_yaw x f_sharpness x f_exposure
//!
//! * net: qualityface 1.0.3 (MobileNetV2) on the face box resized to 128x128, clamped to
//!   [0, 1]; about 0.9 on clean faces, about 0.5 blurred or low resolution.
//! * f_resolution = ramp(inter-eye distance in pixels, 8, 24): ISO/IEC 19794-5 asks 60 px
//!   for passports; recognition still works well at 24 px (LFW faces have ~40), not below 8.
//! * f_roll = 1 - ramp(|roll degrees|, 25, 50): alignment undoes roll, but a strong one
//!   means a tilted head or a wrong landmark.
//! * f_yaw = 1 - ramp(|nose offset from the eye midpoint| / eye distance, 0.35, 0.7),
//!   measured in the aligned crop: ~0 frontal, ~0.5 at 45 degrees, beyond near profile.
//! * f_sharpness = ramp(variance of the Laplacian of the aligned grey face, 4, 25).
//! * f_exposure = ramp(mean luminance, 25, 60) x (1 - ramp(mean, 205, 245))
//!   x ramp(luminance standard deviation, 6, 18), over the aligned face's centre.
//!
//! ramp(x, lo, hi) is 0 below lo, 1 above hi, linear between. Each factor is 1 for a good
//! capture, so a good image scores what the network says; any single defect pulls it down.

use image::{imageops, RgbImage};
use ort::{session::Session, value::TensorRef};

use crate::{align::AlignedFace, detect::Face, runtime, ModelError};

/// Every number behind a quality score, for the evaluation command and for logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct QualityReport {
    pub score: f32,
    pub net: f32,
    pub inter_eye_px: f32,
    pub roll_deg: f32,
    pub yaw_ratio: f32,
    pub sharpness: f32,
    pub luminance_mean: f32,
    pub luminance_std: f32,
}

pub trait QualityAssessor: Send {
    fn assess(&mut self, image: &RgbImage, face: &Face, aligned: &AlignedFace) -> Result<QualityReport, ModelError>;
}

pub struct OnnxQuality {
    session: Session,
}

/// The side of the face-box crop the net reads.
pub const NET_SIZE: u32 = 128;

impl OnnxQuality {
    pub fn load(path: &std::path::Path, intra_threads: usize) -> Result<Self, ModelError> {
        let session = runtime::session(path, intra_threads)?;
        let s = i64::from(NET_SIZE);
        runtime::expect_input(&session, "quality", &[1, 3, s, s])?;
        Ok(Self { session })
    }

    fn net(&mut self, image: &RgbImage, face: &Face) -> Result<f32, ModelError> {
        let (w, h) = image.dimensions();
        let x1 = face.bbox[0].clamp(0.0, w as f32 - 1.0) as u32;
        let y1 = face.bbox[1].clamp(0.0, h as f32 - 1.0) as u32;
        let x2 = (face.bbox[2].clamp(0.0, w as f32) as u32).max(x1 + 1);
        let y2 = (face.bbox[3].clamp(0.0, h as f32) as u32).max(y1 + 1);
        let crop = imageops::crop_imm(image, x1, y1, x2 - x1, y2 - y1).to_image();
        let crop = crate::resize::triangle(&crop, NET_SIZE, NET_SIZE);
        let tensor = runtime::rgb_tensor(&crop, |v| (f32::from(v) / 255.0 - 0.5) / 0.5);
        let outputs = self.session.run(ort::inputs![TensorRef::from_array_view(&tensor)?])?;
        let (_, out) = outputs[0].try_extract_tensor::<f32>()?;
        let v = out.first().copied().unwrap_or(f32::NAN);
        if v.is_finite() {
            Ok(v.clamp(0.0, 1.0))
        } else {
            Err(ModelError::Shape {
                model: "quality".into(),
                reason: "no finite output".into(),
            })
        }
    }
}

impl QualityAssessor for OnnxQuality {
    fn assess(&mut self, image: &RgbImage, face: &Face, aligned: &AlignedFace) -> Result<QualityReport, ModelError> {
        let mut report = measures(face, aligned);
        report.net = self.net(image, face)?;
        report.score = combine(&report);
        Ok(report)
    }
}

pub fn ramp(x: f32, lo: f32, hi: f32) -> f32 {
    ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
}

/// The formula of the module documentation.
pub fn combine(r: &QualityReport) -> f32 {
    let f_res = ramp(r.inter_eye_px, 8.0, 24.0);
    let f_roll = 1.0 - ramp(r.roll_deg.abs(), 25.0, 50.0);
    let f_yaw = 1.0 - ramp(r.yaw_ratio.abs(), 0.35, 0.7);
    let f_sharp = ramp(r.sharpness, 4.0, 25.0);
    let f_exp = ramp(r.luminance_mean, 25.0, 60.0) * (1.0 - ramp(r.luminance_mean, 205.0, 245.0)) * ramp(r.luminance_std, 6.0, 18.0);
    (r.net * f_res * f_roll * f_yaw * f_sharp * f_exp).clamp(0.0, 1.0)
}

/// The geometric and photometric measures (everything but the network).
pub fn measures(face: &Face, aligned: &AlignedFace) -> QualityReport {
    let [le, re, ..] = face.landmarks;
    let inter_eye_px = (re[0] - le[0]).hypot(re[1] - le[1]);
    let roll_deg = (re[1] - le[1]).atan2(re[0] - le[0]).to_degrees();
    let [ale, are, anose, ..] = aligned.landmarks;
    let eye_dist = (are[0] - ale[0]).hypot(are[1] - ale[1]).max(1e-3);
    let yaw_ratio = (anose[0] - (ale[0] + are[0]) / 2.0) / eye_dist;

    // Photometry over the central part of the aligned crop (the face, not the background).
    let img = &aligned.image;
    let (w, h) = img.dimensions();
    let (x0, x1, y0, y1) = (w / 4, w * 3 / 4, h / 4, h * 7 / 8);
    let grey = |x: u32, y: u32| {
        let p = img.get_pixel(x, y);
        0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2])
    };
    let (mut sum, mut sum2, mut n) = (0.0f64, 0.0f64, 0.0f64);
    let (mut lsum, mut lsum2, mut ln) = (0.0f64, 0.0f64, 0.0f64);
    for y in y0..y1 {
        for x in x0..x1 {
            let g = f64::from(grey(x, y));
            sum += g;
            sum2 += g * g;
            n += 1.0;
            if x > 0 && y > 0 && x + 1 < w && y + 1 < h {
                let lap = f64::from(grey(x - 1, y) + grey(x + 1, y) + grey(x, y - 1) + grey(x, y + 1) - 4.0 * grey(x, y));
                lsum += lap;
                lsum2 += lap * lap;
                ln += 1.0;
            }
        }
    }
    let var = |s: f64, s2: f64, n: f64| {
        if n > 0.0 {
            (s2 / n - (s / n).powi(2)).max(0.0)
        } else {
            0.0
        }
    };
    QualityReport {
        score: 0.0,
        net: 0.0,
        inter_eye_px,
        roll_deg,
        yaw_ratio,
        sharpness: var(lsum, lsum2, ln) as f32,
        luminance_mean: if n > 0.0 { (sum / n) as f32 } else { 0.0 },
        luminance_std: var(sum, sum2, n).sqrt() as f32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> QualityReport {
        QualityReport {
            score: 0.0,
            net: 0.9,
            inter_eye_px: 40.0,
            roll_deg: 3.0,
            yaw_ratio: 0.05,
            sharpness: 60.0,
            luminance_mean: 120.0,
            luminance_std: 40.0,
        }
    }

    #[test]
    fn a_good_capture_scores_what_the_network_says() {
        assert!((combine(&good()) - 0.9).abs() < 1e-6);
    }

    #[test]
    fn each_defect_lowers_the_score() {
        let defects = [
            QualityReport {
                inter_eye_px: 10.0,
                ..good()
            },
            QualityReport { roll_deg: -40.0, ..good() },
            QualityReport { yaw_ratio: 0.6, ..good() },
            QualityReport { sharpness: 6.0, ..good() },
            QualityReport {
                luminance_mean: 15.0,
                ..good()
            },
            QualityReport {
                luminance_mean: 250.0,
                ..good()
            },
            QualityReport {
                luminance_std: 3.0,
                ..good()
            },
        ];
        for d in defects {
            assert!(combine(&d) < 0.5, "{d:?} scored {}", combine(&d));
        }
    }
}
