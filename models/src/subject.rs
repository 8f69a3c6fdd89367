//! Which detected face is the subject's, and whether another face competes with it.
//!
//! A person looking at a photo takes the subject to be the face that is both large and
//! near the middle; a smaller face at the edge is the background. Prominence captures
//! that: the face's size, discounted by how far its centre lies from the image centre.
//! An enrolment photo is ambiguous only when a second face is nearly as prominent as the
//! subject's (a couple, a group); the weights are calibrated in BENCHMARKS.md on LFW
//! photos with background faces (must pass) and couple and group photos (must be refused).

use crate::config::SubjectConfig;
use crate::detect::Face;

/// A face and how prominent it is in its image.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    pub face: Face,
    /// Size (side of the box's square) times (1 - centre_weight x offset).
    pub prominence: f32,
}

/// Another face that competes with the subject's: where it is and how prominent, relative
/// to the subject's face (1.0 = as prominent).
#[derive(Debug, Clone, PartialEq)]
pub struct Competitor {
    /// x, y, width, height in whole pixels.
    pub bbox: [i32; 4],
    pub ratio: f32,
}

impl std::fmt::Display for Competitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [x, y, w, h] = self.bbox;
        write!(f, "{w}x{h} at ({x}, {y}), {:.2} as prominent", self.ratio)
    }
}

impl Ranked {
    /// The same ranking in an image `factor` times as large.
    pub fn scaled(&self, factor: f32) -> Ranked {
        Ranked {
            face: self.face.scaled(factor),
            prominence: self.prominence * factor,
        }
    }
}

/// Whole-pixel x, y, width, height of a face box.
pub fn pixel_box(face: &Face) -> [i32; 4] {
    let [x1, y1, x2, y2] = face.bbox;
    [
        x1.round() as i32,
        y1.round() as i32,
        (x2 - x1).round() as i32,
        (y2 - y1).round() as i32,
    ]
}

/// Distance of the face box's centre from the image centre, over the half diagonal: 0 in
/// the middle, 1 in a corner.
pub fn centre_offset(face: &Face, width: u32, height: u32) -> f32 {
    let (w, h) = (width.max(1) as f32, height.max(1) as f32);
    let cx = (face.bbox[0] + face.bbox[2]) / 2.0 - w / 2.0;
    let cy = (face.bbox[1] + face.bbox[3]) / 2.0 - h / 2.0;
    ((cx * cx + cy * cy).sqrt() / (w * w + h * h).sqrt() * 2.0).min(1.0)
}

/// Faces ranked by prominence, most prominent first.
pub fn rank(faces: &[Face], width: u32, height: u32, cfg: &SubjectConfig) -> Vec<Ranked> {
    let mut ranked: Vec<Ranked> = faces
        .iter()
        .map(|f| Ranked {
            prominence: f.size().max(0.0) * (1.0 - cfg.centre_weight * centre_offset(f, width, height)).max(0.0),
            face: f.clone(),
        })
        .collect();
    ranked.sort_by(|a, b| b.prominence.total_cmp(&a.prominence));
    ranked
}

/// The faces after the first (the subject's) that reach `compete_ratio` of its prominence.
pub fn competitors(ranked: &[Ranked], cfg: &SubjectConfig) -> Vec<Competitor> {
    let Some((subject, rest)) = ranked.split_first() else {
        return Vec::new();
    };
    rest.iter()
        .map(|r| Competitor {
            bbox: pixel_box(&r.face),
            ratio: if subject.prominence > 0.0 {
                r.prominence / subject.prominence
            } else {
                1.0
            },
        })
        .filter(|c| c.ratio >= cfg.compete_ratio)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(x: f32, y: f32, side: f32) -> Face {
        Face {
            bbox: [x, y, x + side, y + side],
            score: 0.99,
            landmarks: [[0.0; 2]; 5],
        }
    }

    fn cfg() -> SubjectConfig {
        SubjectConfig::default()
    }

    #[test]
    fn a_smaller_face_at_the_edge_is_background() {
        // 150x150 like LFW: the subject centred (~80 px), a ~45 px face near the corner.
        let faces = [face(35.0, 35.0, 80.0), face(100.0, 0.0, 45.0)];
        let ranked = rank(&faces, 150, 150, &cfg());
        assert_eq!(ranked[0].face, faces[0]);
        assert!(competitors(&ranked, &cfg()).is_empty());
    }

    #[test]
    fn two_faces_side_by_side_compete() {
        let faces = [face(20.0, 60.0, 100.0), face(180.0, 60.0, 95.0)];
        let ranked = rank(&faces, 300, 220, &cfg());
        let c = competitors(&ranked, &cfg());
        assert_eq!(c.len(), 1);
        assert!(c[0].ratio > 0.9, "{c:?}");
        assert!(c[0].to_string().contains("95x95 at (180, 60)"), "{}", c[0]);
    }

    #[test]
    fn the_central_face_wins_over_a_slightly_larger_one_at_the_edge() {
        let faces = [face(0.0, 0.0, 60.0), face(95.0, 95.0, 55.0)];
        let ranked = rank(&faces, 250, 250, &cfg());
        assert_eq!(ranked[0].face, faces[1]);
    }

    #[test]
    fn offset_is_zero_in_the_middle_and_one_in_a_corner() {
        assert!(centre_offset(&face(40.0, 40.0, 20.0), 100, 100).abs() < 1e-6);
        assert!((centre_offset(&face(-10.0, -10.0, 20.0), 100, 100) - 1.0).abs() < 1e-6);
    }
}
