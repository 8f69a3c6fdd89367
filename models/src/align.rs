//! Alignment: a least-squares similarity transform (rotation, uniform scale, translation;
//! Umeyama without reflection) from the 5 detected landmarks to the recognizer's template,
//! and a bilinear warp into the template's square crop.

use image::{Rgb, RgbImage};

/// x' = a*x - b*y + tx, y' = b*x + a*y + ty.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    pub a: f32,
    pub b: f32,
    pub tx: f32,
    pub ty: f32,
}

impl Similarity {
    /// The transform minimising the squared distance of `src` mapped onto `dst`.
    /// `None` when the source points coincide (no scale can be estimated).
    pub fn estimate(src: &[[f32; 2]; 5], dst: &[[f32; 2]; 5]) -> Option<Self> {
        let n = src.len() as f64;
        let mean = |p: &[[f32; 2]; 5], k: usize| p.iter().map(|q| f64::from(q[k])).sum::<f64>() / n;
        let (sx, sy, dx, dy) = (mean(src, 0), mean(src, 1), mean(dst, 0), mean(dst, 1));
        let (mut num_a, mut num_b, mut den) = (0.0f64, 0.0f64, 0.0f64);
        for (s, d) in src.iter().zip(dst) {
            let (xs, ys) = (f64::from(s[0]) - sx, f64::from(s[1]) - sy);
            let (xd, yd) = (f64::from(d[0]) - dx, f64::from(d[1]) - dy);
            num_a += xs * xd + ys * yd;
            num_b += xs * yd - ys * xd;
            den += xs * xs + ys * ys;
        }
        if den < 1e-9 {
            return None;
        }
        let (a, b) = (num_a / den, num_b / den);
        let tx = dx - (a * sx - b * sy);
        let ty = dy - (b * sx + a * sy);
        Some(Self {
            a: a as f32,
            b: b as f32,
            tx: tx as f32,
            ty: ty as f32,
        })
    }

    pub fn apply(&self, p: [f32; 2]) -> [f32; 2] {
        [self.a * p[0] - self.b * p[1] + self.tx, self.b * p[0] + self.a * p[1] + self.ty]
    }

    pub fn scale(&self) -> f32 {
        self.a.hypot(self.b)
    }

    /// Rotation in degrees.
    pub fn angle_deg(&self) -> f32 {
        self.b.atan2(self.a).to_degrees()
    }

    pub fn inverse(&self) -> Self {
        let d = self.a * self.a + self.b * self.b;
        let (a, b) = (self.a / d, -self.b / d);
        Self {
            a,
            b,
            tx: -(a * self.tx - b * self.ty),
            ty: -(b * self.tx + a * self.ty),
        }
    }
}

/// A face warped into the recognizer's template.
#[derive(Debug, Clone)]
pub struct AlignedFace {
    pub image: RgbImage,
    /// Image -> crop transform.
    pub transform: Similarity,
    /// The landmarks in crop coordinates.
    pub landmarks: [[f32; 2]; 5],
}

/// Warp `image` so that `landmarks` land on `template` in a `size`x`size` crop. Pixels
/// from outside the image are black, as in InsightFace's reference alignment.
pub fn align(image: &RgbImage, landmarks: &[[f32; 2]; 5], template: &[[f32; 2]; 5], size: u32) -> Option<AlignedFace> {
    let transform = Similarity::estimate(landmarks, template)?;
    let inv = transform.inverse();
    let mut out = RgbImage::new(size, size);
    for (u, v, px) in out.enumerate_pixels_mut() {
        let [x, y] = inv.apply([u as f32, v as f32]);
        *px = bilinear(image, x, y);
    }
    let landmarks = landmarks.map(|p| transform.apply(p));
    Some(AlignedFace {
        image: out,
        transform,
        landmarks,
    })
}

/// Bilinear sample at (x, y); zero outside the image.
pub fn bilinear(image: &RgbImage, x: f32, y: f32) -> Rgb<u8> {
    let (w, h) = image.dimensions();
    if !(x > -1.0 && y > -1.0 && x < w as f32 && y < h as f32) {
        return Rgb([0, 0, 0]);
    }
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let (x0, y0) = (x0 as i64, y0 as i64);
    let at = |xi: i64, yi: i64| -> [f32; 3] {
        if xi < 0 || yi < 0 || xi >= i64::from(w) || yi >= i64::from(h) {
            [0.0; 3]
        } else {
            let p = image.get_pixel(xi as u32, yi as u32);
            [f32::from(p[0]), f32::from(p[1]), f32::from(p[2])]
        }
    };
    let (p00, p10, p01, p11) = (at(x0, y0), at(x0 + 1, y0), at(x0, y0 + 1), at(x0 + 1, y0 + 1));
    let mut px = [0u8; 3];
    for c in 0..3 {
        let top = p00[c] * (1.0 - fx) + p10[c] * fx;
        let bottom = p01[c] * (1.0 - fx) + p11[c] * fx;
        px[c] = (top * (1.0 - fy) + bottom * fy).round().clamp(0.0, 255.0) as u8;
    }
    Rgb(px)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ARCFACE_TEMPLATE;

    #[test]
    fn recovers_a_known_similarity() {
        let truth = Similarity {
            a: 0.8,
            b: 0.3,
            tx: 12.0,
            ty: -4.0,
        };
        let src = [[100.0, 120.0], [160.0, 118.0], [130.0, 150.0], [108.0, 180.0], [155.0, 179.0]];
        let dst = src.map(|p| truth.apply(p));
        let est = Similarity::estimate(&src, &dst).unwrap_or_else(|| panic!("degenerate"));
        for (got, want) in [est.a, est.b, est.tx, est.ty].iter().zip([0.8, 0.3, 12.0, -4.0]) {
            assert!((got - want).abs() < 1e-3, "{got} vs {want}");
        }
        let back = est.inverse().apply(est.apply([3.0, 7.0]));
        assert!((back[0] - 3.0).abs() < 1e-3 && (back[1] - 7.0).abs() < 1e-3);
    }

    #[test]
    fn aligned_landmarks_land_on_the_template() {
        let img = RgbImage::from_pixel(300, 300, Rgb([90, 120, 200]));
        let lm = ARCFACE_TEMPLATE.map(|p| [p[0] * 1.7 + 40.0, p[1] * 1.7 + 30.0]);
        let face = align(&img, &lm, &ARCFACE_TEMPLATE, 112).unwrap_or_else(|| panic!("degenerate"));
        for (got, want) in face.landmarks.iter().zip(ARCFACE_TEMPLATE) {
            assert!((got[0] - want[0]).abs() < 1e-2 && (got[1] - want[1]).abs() < 1e-2);
        }
        assert_eq!(face.image.get_pixel(56, 56), &Rgb([90, 120, 200]));
    }

    #[test]
    fn coincident_points_are_degenerate() {
        assert!(Similarity::estimate(&[[5.0, 5.0]; 5], &ARCFACE_TEMPLATE).is_none());
    }
}
