//! The photo the gates work on: decoded once at the smallest size that still feeds the
//! detector its full input, and decoded again finer only when the subject's face is too
//! small at that size for the crops the models take (a 1.3 MP selfie is decoded at half
//! size and never again; a group photo's small face gets the finer decode it needs).

use std::borrow::Cow;

use image::RgbImage;

use crate::config::ImageLimits;
use crate::decode::{self, DecodeError, Scale};
use crate::detect::Face;

/// The smallest face, in pixels of the decoded image, whose crops every model takes at
/// full resolution: the eye distance of the recognizer's template and the side of the
/// quality net's box crop (the largest of the crops the gates cut from the box).
#[derive(Debug, Clone, Copy)]
pub struct FaceNeeds {
    pub eye_distance: f32,
    pub box_side: f32,
}

pub struct Photo<'a> {
    /// The encoded file, to decode finer; None for pixels given as they are.
    bytes: Option<&'a [u8]>,
    image: Cow<'a, RgbImage>,
    /// The image is 1/`divisor` of the file's size.
    divisor: u32,
}

impl<'a> Photo<'a> {
    /// Decoded at the smallest size whose longer side is at least `min_side`.
    pub fn decode(bytes: &'a [u8], limits: &ImageLimits, min_side: Option<u32>) -> Result<Self, DecodeError> {
        let scale = min_side.map_or(Scale::Full, Scale::Fit);
        let (image, divisor) = decode::decode_scaled(bytes, limits, scale)?;
        Ok(Self {
            bytes: Some(bytes),
            image: Cow::Owned(image),
            divisor,
        })
    }

    /// Pixels already decoded, at their full size.
    pub fn pixels(image: &'a RgbImage) -> Self {
        Self {
            bytes: None,
            image: Cow::Borrowed(image),
            divisor: 1,
        }
    }

    pub fn image(&self) -> &RgbImage {
        &self.image
    }

    /// How many times smaller than the file the image is.
    pub fn divisor(&self) -> u32 {
        self.divisor
    }

    /// The divisor of a decode fine enough for `face`'s crops (`face` in this image's
    /// pixels): the largest that gives it `needs`; None when this image already does or
    /// is the file's full size.
    pub fn finer_for(&self, face: &Face, needs: FaceNeeds) -> Option<u32> {
        let [l, r] = [face.landmarks[0], face.landmarks[1]];
        let eyes = ((l[0] - r[0]).powi(2) + (l[1] - r[1]).powi(2)).sqrt();
        let short = face.width().min(face.height());
        let grow = (needs.eye_distance / eyes.max(1e-3)).max(needs.box_side / short.max(1e-3));
        if grow <= 1.0 || self.divisor == 1 || self.bytes.is_none() {
            return None;
        }
        let mut finer = self.divisor;
        while finer > 1 && (self.divisor as f32 / finer as f32) < grow {
            finer /= 2;
        }
        Some(finer)
    }

    /// The file decoded again at `divisor`, and `face` in its pixels.
    pub fn decode_finer(&mut self, divisor: u32, face: &Face, limits: &ImageLimits) -> Result<Face, DecodeError> {
        let Some(bytes) = self.bytes else {
            return Ok(face.clone());
        };
        let (image, divisor) = decode::decode_scaled(bytes, limits, Scale::Divide(divisor))?;
        let factor = self.divisor as f32 / divisor as f32;
        self.image = Cow::Owned(image);
        self.divisor = divisor;
        Ok(face.scaled(factor))
    }
}
