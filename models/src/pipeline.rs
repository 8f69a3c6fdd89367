//! The face pipeline: decode -> detect -> align -> PAD -> MAD (enrol only) -> quality ->
//! embed. Cheap gates run before the expensive ones, so a rejected image costs little; a
//! MAD model that reads the embedding has it computed before it (and reused).

use std::time::{Duration, Instant};

use image::RgbImage;

use crate::{
    align::{self, AlignedFace},
    config::PipelineConfig,
    decode::DecodeError,
    detect::{Face, FaceDetector, RetinaFace},
    mad::{MadGate, OnnxMad, RecognizerSource},
    manifest::{self, Manifest, VerifiedFile},
    pad::{OnnxPad, PresentationAttackDetector},
    photo::{FaceNeeds, Photo},
    quality::{OnnxQuality, QualityAssessor, QualityReport},
    recognize::{OnnxRecognizer, Recognizer},
    subject::{self, Competitor, Ranked},
    ModelError,
};

mod identify;
pub use identify::{FaceReport, Frame, NotSearched};

/// Why a photo is analysed: MAD and the ambiguity check apply to enrolment only, and each
/// purpose has its own quality and PAD thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Search,
    Verify,
    Enrol,
}

/// A face that passed every gate.
#[derive(Debug, Clone)]
pub struct FaceTemplate {
    /// L2-normalised embedding.
    pub vector: Vec<f32>,
    pub model_id: String,
    pub quality: f32,
    /// Bona fide probability from PAD.
    pub pad: f32,
    /// Morph probability, when a MAD model is configured and the purpose is enrolment.
    pub mad: Option<f32>,
    pub face: Face,
}

/// Why an image was refused: the caller's image, never the service's fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    #[error("{0}")]
    DecodeFailed(DecodeError),
    #[error("no face was detected in the image")]
    NoFace,
    #[error("{}", ambiguous_message(.subject, .competitors))]
    AmbiguousSubject { subject: [i32; 4], competitors: Vec<Competitor> },
    #[error("face quality {score:.2} is below the threshold {threshold:.2}")]
    QualityRejected { score: f32, threshold: f32 },
    #[error("presentation attack suspected: bona fide score {score:.3} is below the threshold {threshold:.3}")]
    SpoofDetected { score: f32, threshold: f32 },
    // Five digits and the threshold as configured: a threshold near 1 needs them to be read.
    #[error("morphing attack suspected: morph score {score:.5} is at or above the threshold {threshold}")]
    MorphDetected { score: f32, threshold: f32 },
}

fn ambiguous_message(subject: &[i32; 4], competitors: &[Competitor]) -> String {
    let [x, y, w, h] = subject;
    let others: Vec<String> = competitors.iter().map(ToString::to_string).collect();
    format!(
        "{} faces compete to be the subject: the most prominent, {w}x{h} at ({x}, {y}), and {}; an enrolment photo must show one person clearly",
        competitors.len() + 1,
        others.join(", ")
    )
}

/// Pipeline stages, for per-stage timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    Decode,
    Detect,
    Align,
    Pad,
    Mad,
    Quality,
    Embed,
}

impl Stage {
    pub const ALL: [Stage; 7] = [
        Stage::Decode,
        Stage::Detect,
        Stage::Align,
        Stage::Pad,
        Stage::Mad,
        Stage::Quality,
        Stage::Embed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Detect => "detect",
            Stage::Align => "align",
            Stage::Pad => "pad",
            Stage::Mad => "mad",
            Stage::Quality => "quality",
            Stage::Embed => "embed",
        }
    }
}

/// Time spent in each stage that ran.
#[derive(Debug, Clone, Default)]
pub struct StageTimings(pub Vec<(Stage, Duration)>);

impl StageTimings {
    fn time<T>(&mut self, stage: Stage, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        self.0.push((stage, start.elapsed()));
        out
    }

    pub fn total(&self) -> Duration {
        self.0.iter().map(|(_, d)| *d).sum()
    }
}

/// The result of one analysis: a template or a rejection, with what was measured.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub outcome: Result<FaceTemplate, Rejection>,
    pub timings: StageTimings,
    pub scores: Scores,
}

/// What the gates measured before the outcome was decided (a gate after the refusing one
/// never ran, so its score is None).
#[derive(Debug, Clone, Default)]
pub struct Scores {
    /// Every detected face, the subject's first.
    pub faces: Vec<Ranked>,
    pub pad: Option<f32>,
    pub mad: Option<f32>,
    pub quality: Option<QualityReport>,
}

/// Every score of the subject's face, no gate applied: for evaluation and dataset tools.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub face: Face,
    pub vector: Vec<f32>,
    pub pad: f32,
    pub quality: f32,
    /// None when no MAD model is configured.
    pub mad: Option<f32>,
}

/// Health of each model, from a real forward pass.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ModelHealth {
    pub detection: bool,
    pub recognition: bool,
    pub quality: bool,
    pub pad: bool,
    /// False when no MAD model is configured.
    pub mad: bool,
}

pub struct Pipeline {
    cfg: PipelineConfig,
    detector: Box<dyn FaceDetector>,
    pad: Box<dyn PresentationAttackDetector>,
    mad: MadGate,
    quality: Box<dyn QualityAssessor>,
    recognizer: Box<dyn Recognizer>,
}

impl Pipeline {
    /// Check every configured file against the manifest (once per process, before the
    /// workers load their sessions).
    pub fn verify_files(cfg: &PipelineConfig) -> Result<Vec<VerifiedFile>, ModelError> {
        let manifest = Manifest::load();
        let mut files = vec![
            manifest::verify(&manifest, "detect", &cfg.path(&cfg.detector.file), "")?,
            manifest::verify(&manifest, "recognize", &cfg.path(&cfg.recognizer.file), &cfg.recognizer.sha256)?,
            manifest::verify(&manifest, "quality", &cfg.path(&cfg.quality.file), "")?,
            manifest::verify(&manifest, "pad", &cfg.path(&cfg.pad.file), "")?,
        ];
        if !cfg.mad.file.as_os_str().is_empty() {
            files.push(manifest::verify(&manifest, "mad", &cfg.path(&cfg.mad.file), "")?);
        }
        Ok(files)
    }

    /// Load every session. `runtime::init` must have succeeded first.
    pub fn load(cfg: &PipelineConfig) -> Result<Self, ModelError> {
        cfg.validate()?;
        let t = cfg.intra_threads;
        let recognizer = OnnxRecognizer::load(&cfg.path(&cfg.recognizer.file), &cfg.recognizer, t)?;
        let mad = if cfg.mad.file.as_os_str().is_empty() {
            MadGate::NotConfigured
        } else {
            let rc = &cfg.recognizer;
            // verify_files held the recognizer file to this sha256 before any load.
            let manifest = Manifest::load();
            let recognizer_path = cfg.path(&rc.file);
            let source = RecognizerSource {
                sha256: manifest::pinned_sha256(&manifest, &recognizer_path, &rc.sha256),
                dim: recognizer.dim(),
                path: &recognizer_path,
                config: rc,
            };
            MadGate::Model(Box::new(OnnxMad::load(
                &cfg.path(&cfg.mad.file),
                &cfg.mad,
                rc.template,
                rc.input_size,
                source,
                t,
            )?))
        };
        Ok(Self {
            detector: Box::new(RetinaFace::load(&cfg.path(&cfg.detector.file), &cfg.detector, t)?),
            pad: Box::new(OnnxPad::load(&cfg.path(&cfg.pad.file), &cfg.pad, t)?),
            mad,
            quality: Box::new(OnnxQuality::load(&cfg.path(&cfg.quality.file), t)?),
            recognizer: Box::new(recognizer),
            cfg: cfg.clone(),
        })
    }

    pub fn model_id(&self) -> &str {
        self.recognizer.model_id()
    }

    pub fn dim(&self) -> usize {
        self.recognizer.dim()
    }

    pub fn config(&self) -> &PipelineConfig {
        &self.cfg
    }

    /// Run every model once on a synthetic image: the warm-up at start and the health
    /// probe. A model that fails reports false; nothing is assumed.
    pub fn probe(&mut self) -> ModelHealth {
        let image = RgbImage::from_fn(160, 160, |x, y| image::Rgb([(x + y) as u8, 128, (x * 2) as u8]));
        let face = Face {
            bbox: [40.0, 30.0, 120.0, 130.0],
            score: 1.0,
            landmarks: [[62.0, 70.0], [98.0, 70.0], [80.0, 90.0], [66.0, 110.0], [94.0, 110.0]],
        };
        let aligned = align::align(
            &image,
            &face.landmarks,
            &self.cfg.recognizer.template,
            self.cfg.recognizer.input_size,
        );
        let ok = |r: Result<bool, ModelError>, what: &str| match r {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(model = what, error = %e, "health probe failed");
                false
            }
        };
        let detection = ok(self.detector.detect(&image).map(|_| true), "detection");
        let pad = ok(self.pad.live_score(&image, &face).map(|s| s.is_finite()), "pad");
        let (quality, recognition, mad) = match &aligned {
            Some(a) => (
                ok(self.quality.assess(&image, &face, a).map(|r| r.score.is_finite()), "quality"),
                ok(self.recognizer.embed(a).map(|v| v.len() == self.recognizer.dim()), "recognition"),
                ok(
                    self.morph_score_aligned(&image, &face, a, None)
                        .map(|s| s.is_some_and(f32::is_finite)),
                    "mad",
                ),
            ),
            None => (false, false, false),
        };
        ModelHealth {
            detection,
            recognition,
            quality,
            pad,
            mad,
        }
    }

    pub fn mad_configured(&self) -> bool {
        self.mad.is_configured()
    }

    /// Analyse an encoded image.
    pub fn analyze(&mut self, bytes: &[u8], purpose: Purpose) -> Result<Analysis, ModelError> {
        let mut timings = StageTimings::default();
        let fit = self.cfg.scaled_jpeg.then_some(self.cfg.detector.max_side);
        let decoded = timings.time(Stage::Decode, || Photo::decode(bytes, &self.cfg.limits, fit));
        match decoded {
            Ok(photo) => self.analyze_photo(photo, purpose, timings),
            Err(e) => Ok(Analysis {
                outcome: Err(Rejection::DecodeFailed(e)),
                timings,
                scores: Scores::default(),
            }),
        }
    }

    /// Analyse decoded pixels (the evaluation command decodes once and reuses them).
    pub fn analyze_image(&mut self, image: &RgbImage, purpose: Purpose) -> Result<Analysis, ModelError> {
        self.analyze_photo(Photo::pixels(image), purpose, StageTimings::default())
    }

    fn analyze_photo(&mut self, mut photo: Photo<'_>, purpose: Purpose, mut timings: StageTimings) -> Result<Analysis, ModelError> {
        let mut scores = Scores::default();
        let outcome = self.gates(&mut photo, purpose, &mut timings, &mut scores)?;
        Ok(Analysis { outcome, timings, scores })
    }

    /// How large the subject's face must be, in decoded pixels, for every crop to be cut
    /// at full resolution: the recognizer's template eye distance, the quality net's box.
    fn face_needs(&self) -> FaceNeeds {
        let [l, r] = [self.cfg.recognizer.template[0], self.cfg.recognizer.template[1]];
        FaceNeeds {
            eye_distance: ((l[0] - r[0]).powi(2) + (l[1] - r[1]).powi(2)).sqrt(),
            box_side: crate::quality::NET_SIZE as f32,
        }
    }

    /// The subject's face (the most prominent, `subject.rs`), if any face was detected.
    pub fn subject_face(&mut self, image: &RgbImage) -> Result<Option<Face>, ModelError> {
        let faces = self.detector.detect(image)?;
        Ok(subject::rank(&faces, image.width(), image.height(), &self.cfg.subject)
            .into_iter()
            .next()
            .map(|r| r.face))
    }

    /// The MAD model's morph score for `face`; None when no MAD model is configured.
    pub fn morph_score(&mut self, image: &RgbImage, face: &Face) -> Result<Option<f32>, ModelError> {
        if !self.mad.is_configured() {
            return Ok(None);
        }
        let rc = &self.cfg.recognizer;
        match align::align(image, &face.landmarks, &rc.template, rc.input_size) {
            Some(aligned) => self.morph_score_aligned(image, face, &aligned, None),
            None => Err(ModelError::Shape {
                model: "mad".into(),
                reason: "degenerate landmarks".into(),
            }),
        }
    }

    /// The morph score, given the face aligned for the recognizer and its embedding when
    /// already computed (else computed here if the MAD model needs it given).
    fn morph_score_aligned(
        &mut self,
        image: &RgbImage,
        face: &Face,
        aligned: &AlignedFace,
        embedding: Option<&[f32]>,
    ) -> Result<Option<f32>, ModelError> {
        let MadGate::Model(m) = &mut self.mad else {
            return Ok(None);
        };
        let computed = match embedding {
            None if m.needs_embedding() => Some(self.recognizer.embed(aligned)?),
            _ => None,
        };
        m.morph_score(image, face, &aligned.image, embedding.or(computed.as_deref()))
            .map(|s| Some(s.score))
    }

    /// The MAD model's threshold and version, when one is configured.
    pub fn mad_model(&self) -> Option<(f32, &str)> {
        match &self.mad {
            MadGate::Model(m) => Some((m.threshold(), m.version())),
            MadGate::NotConfigured => None,
        }
    }

    /// The unit mean of `embedding` (of `aligned`) and the embedding of its mirror image.
    fn mirrored_mean(&mut self, aligned: &AlignedFace, embedding: &[f32]) -> Result<Vec<f32>, ModelError> {
        let mirror = AlignedFace {
            image: image::imageops::flip_horizontal(&aligned.image),
            ..aligned.clone()
        };
        let flipped = self.recognizer.embed(&mirror)?;
        let sum: Vec<f32> = embedding.iter().zip(&flipped).map(|(a, b)| a + b).collect();
        crate::recognize::l2_normalised(&sum).ok_or_else(|| ModelError::Shape {
            model: "recognizer".into(),
            reason: "zero mean of a face and its mirror image".into(),
        })
    }

    /// Every model on the subject's face, gates measured but not applied; None without a face.
    pub fn measure(&mut self, image: &RgbImage) -> Result<Option<Measurement>, ModelError> {
        let Some(face) = self.subject_face(image)? else {
            return Ok(None);
        };
        let rc = &self.cfg.recognizer;
        let Some(aligned) = align::align(image, &face.landmarks, &rc.template, rc.input_size) else {
            return Ok(None);
        };
        let pad = self.pad.live_score(image, &face)?;
        let quality = self.quality.assess(image, &face, &aligned)?.score;
        let vector = self.recognizer.embed(&aligned)?;
        let mad = self.morph_score_aligned(image, &face, &aligned, Some(&vector))?;
        Ok(Some(Measurement {
            face,
            vector,
            pad,
            quality,
            mad,
        }))
    }

    /// The gates in order, each measured score written to `seen` as it is known (faces in
    /// the file's pixels, whatever size it was decoded at); the outer error is the
    /// service's, the inner the image's.
    fn gates(
        &mut self,
        photo: &mut Photo<'_>,
        purpose: Purpose,
        t: &mut StageTimings,
        seen: &mut Scores,
    ) -> Result<Result<FaceTemplate, Rejection>, ModelError> {
        let detected = t.time(Stage::Detect, || self.detector.detect(photo.image()))?;
        let (w, h) = photo.image().dimensions();
        let ranked = subject::rank(&detected, w, h, &self.cfg.subject);
        let to_file = photo.divisor() as f32;
        seen.faces = ranked.iter().map(|r| r.scaled(to_file)).collect();
        let Some(face) = ranked.into_iter().next().map(|r| r.face) else {
            return Ok(Err(Rejection::NoFace));
        };
        if purpose == Purpose::Enrol {
            let competitors = subject::competitors(&seen.faces, &self.cfg.subject);
            if !competitors.is_empty() {
                return Ok(Err(Rejection::AmbiguousSubject {
                    subject: subject::pixel_box(&face.scaled(to_file)),
                    competitors,
                }));
            }
        }
        let face = match photo.finer_for(&face, self.face_needs()) {
            None => face,
            Some(divisor) => match t.time(Stage::Decode, || photo.decode_finer(divisor, &face, &self.cfg.limits)) {
                Ok(face) => face,
                Err(e) => return Ok(Err(Rejection::DecodeFailed(e))),
            },
        };
        let to_file = photo.divisor() as f32;
        let image = photo.image();
        let rc = &self.cfg.recognizer;
        let Some(aligned): Option<AlignedFace> = t.time(Stage::Align, || align::align(image, &face.landmarks, &rc.template, rc.input_size))
        else {
            return Ok(Err(Rejection::NoFace));
        };

        let live = t.time(Stage::Pad, || self.pad.live_score(image, &face))?;
        seen.pad = Some(live);
        let threshold = self.cfg.pad.threshold.get(purpose);
        if live < threshold {
            return Ok(Err(Rejection::SpoofDetected { score: live, threshold }));
        }

        // At enrolment the MAD model's run of the recognizer on the aligned face gives the
        // template too, when it reads that view: the recognizer runs once.
        let mut vector = None;
        if purpose == Purpose::Enrol {
            if let MadGate::Model(detector) = &mut self.mad {
                if detector.needs_embedding() {
                    vector = Some(t.time(Stage::Embed, || self.recognizer.embed(&aligned))?);
                }
                let scored = t.time(Stage::Mad, || detector.morph_score(image, &face, &aligned.image, vector.as_deref()))?;
                seen.mad = Some(scored.score);
                let threshold = detector.threshold();
                if scored.score >= threshold {
                    return Ok(Err(Rejection::MorphDetected {
                        score: scored.score,
                        threshold,
                    }));
                }
                vector = vector.or(scored.embedding);
            }
        }

        let report = t.time(Stage::Quality, || self.quality.assess(image, &face, &aligned))?;
        seen.quality = Some(report);
        let threshold = self.cfg.quality.threshold.get(purpose);
        if report.score < threshold {
            return Ok(Err(Rejection::QualityRejected {
                score: report.score,
                threshold,
            }));
        }

        let vector = match vector {
            Some(v) => v,
            None => t.time(Stage::Embed, || self.recognizer.embed(&aligned))?,
        };
        let vector = if self.cfg.recognizer.flip {
            t.time(Stage::Embed, || self.mirrored_mean(&aligned, &vector))?
        } else {
            vector
        };
        Ok(Ok(FaceTemplate {
            vector,
            model_id: self.recognizer.model_id().to_string(),
            quality: report.score,
            pad: live,
            mad: seen.mad,
            face: face.scaled(to_file),
        }))
    }
}
