//! The pipeline on real models and real photos (fetched from the registries by
//! models/fetch.py, pinned by sha256; see models/manifest.toml [[testdata]]).

use std::path::PathBuf;

use facegate_models::{recognize::cosine, runtime, Pipeline, PipelineConfig, Purpose, Rejection};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn pipeline() -> Pipeline {
    runtime::init(&root().join("runtime/libonnxruntime.so.1.31.1"), runtime::Provider::Cpu).unwrap_or_else(|e| panic!("{e}"));
    let cfg = PipelineConfig {
        models_dir: root().join("files"),
        ..PipelineConfig::default()
    };
    Pipeline::verify_files(&cfg).unwrap_or_else(|e| panic!("{e}"));
    Pipeline::load(&cfg).unwrap_or_else(|e| panic!("{e}"))
}

fn rgb(name: &str) -> image::RgbImage {
    image::load_from_memory(&photo(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .to_rgb8()
}

fn photo(name: &str) -> Vec<u8> {
    std::fs::read(root().join("testdata").join(name)).unwrap_or_else(|e| panic!("{name}: {e}; run python3 models/fetch.py"))
}

fn template(p: &mut Pipeline, name: &str, purpose: Purpose) -> Vec<f32> {
    let analysis = p.analyze(&photo(name), purpose).unwrap_or_else(|e| panic!("{name}: {e}"));
    match analysis.outcome {
        Ok(t) => {
            assert_eq!(t.vector.len(), 512);
            assert_eq!(t.model_id, "arcface-w600k-mbf");
            assert!((0.0..=1.0).contains(&t.quality));
            t.vector
        }
        Err(r) => panic!("{name} rejected: {r} ({:?})", analysis.scores),
    }
}

#[test]
fn same_person_scores_high_and_different_people_low() {
    let mut p = pipeline();
    let obama = template(&mut p, "obama.jpg", Purpose::Enrol);
    let obama2 = template(&mut p, "obama2.jpg", Purpose::Search);
    let obama3 = template(&mut p, "obama3.jpg", Purpose::Search);
    let biden = template(&mut p, "biden.jpg", Purpose::Search);
    let (same, same3, other) = (cosine(&obama, &obama2), cosine(&obama, &obama3), cosine(&obama, &biden));
    eprintln!("obama/obama2 {same:.3} obama/obama3 {same3:.3} obama/biden {other:.3}");
    assert!(same > 0.5 && same3 > 0.5, "same person: {same} {same3}");
    assert!(other < 0.2, "different people: {other}");
}

#[test]
fn a_photo_without_a_face_is_no_face() {
    let mut p = pipeline();
    for name in ["coffee.png", "chelsea.png"] {
        let a = p.analyze(&photo(name), Purpose::Search).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.outcome.err(), Some(Rejection::NoFace), "{name}");
    }
}

#[test]
fn odd_colour_types_and_sizes_are_handled() {
    let mut p = pipeline();
    // 32bit.png is a 16-bit-per-channel RGBA PNG; astronaut.png a 512x512 RGB PNG.
    template(&mut p, "32bit.png", Purpose::Search);
    template(&mut p, "astronaut.png", Purpose::Search);
    // Greyscale JPEG of a real face.
    let grey = image::load_from_memory(&photo("obama.jpg"))
        .unwrap_or_else(|e| panic!("{e}"))
        .to_luma8();
    let mut bytes = Vec::new();
    grey.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Jpeg)
        .unwrap_or_else(|e| panic!("{e}"));
    let a = p.analyze(&bytes, Purpose::Search).unwrap_or_else(|e| panic!("{e}"));
    assert!(a.outcome.is_ok(), "grey: {:?}", a.outcome.err());
}

#[test]
fn truncated_jpeg_is_a_clean_decode_failure() {
    let mut p = pipeline();
    let bytes = photo("obama.jpg");
    let a = p
        .analyze(&bytes[..bytes.len() / 3], Purpose::Search)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(a.outcome, Err(Rejection::DecodeFailed(_))), "{:?}", a.outcome.err());
}

#[test]
fn two_similar_faces_are_ambiguous_for_enrol_only() {
    let mut p = pipeline();
    let a = rgb("obama.jpg");
    let b = rgb("biden.jpg");
    let b = image::imageops::resize(&b, a.width(), a.height(), image::imageops::FilterType::Triangle);
    let mut both = image::RgbImage::new(a.width() * 2, a.height());
    image::imageops::replace(&mut both, &a, 0, 0);
    image::imageops::replace(&mut both, &b, i64::from(a.width()), 0);
    let enrol = p.analyze_image(&both, Purpose::Enrol).unwrap_or_else(|e| panic!("{e}"));
    match &enrol.outcome {
        Err(r @ Rejection::AmbiguousSubject { competitors, .. }) => {
            assert_eq!(competitors.len(), 1, "{r}");
            assert!(r.to_string().starts_with("2 faces compete to be the subject"), "{r}");
        }
        other => panic!("{:?}", other.as_ref().err()),
    }
    let search = p.analyze_image(&both, Purpose::Search).unwrap_or_else(|e| panic!("{e}"));
    assert!(search.outcome.is_ok(), "{:?}", search.outcome.err());
}

/// A smaller face near the edge is the background, as in many LFW photos: the subject's
/// face is the central one and the photo enrols.
#[test]
fn a_background_face_does_not_stop_enrolment() {
    let mut p = pipeline();
    let rgb = |name: &str| rgb(name);
    let (mut scene, other) = (rgb("obama.jpg"), rgb("biden.jpg"));
    let face = |p: &mut Pipeline, img: &image::RgbImage| p.subject_face(img).ok().flatten().unwrap_or_else(|| panic!("no face"));
    let (subject, theirs) = (face(&mut p, &scene), face(&mut p, &other));
    // The other person's head, cut out and scaled to 60 % of the subject's face size, in the
    // top-left corner: a rule by size alone ("largest face, refuse a second one at half its
    // size") would refuse this photo.
    let side = 1.6 * theirs.size();
    let (cx, cy) = ((theirs.bbox[0] + theirs.bbox[2]) / 2.0, (theirs.bbox[1] + theirs.bbox[3]) / 2.0);
    let (x0, y0) = ((cx - side / 2.0).max(0.0) as u32, (cy - side / 2.0).max(0.0) as u32);
    let head = image::imageops::crop_imm(&other, x0, y0, side as u32, side as u32).to_image();
    let k = 0.6 * subject.size() / theirs.size();
    let small = image::imageops::resize(
        &head,
        (head.width() as f32 * k) as u32,
        (head.height() as f32 * k) as u32,
        image::imageops::FilterType::Triangle,
    );
    assert!(
        small.width() < subject.bbox[0] as u32 || small.height() < subject.bbox[1] as u32,
        "the head stays clear of the subject's face"
    );
    image::imageops::replace(&mut scene, &small, 0, 0);
    let alone = template(&mut p, "obama.jpg", Purpose::Enrol);
    let enrol = p.analyze_image(&scene, Purpose::Enrol).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(enrol.scores.faces.len(), 2, "both faces are detected: {:?}", enrol.scores.faces);
    let t = enrol.outcome.unwrap_or_else(|r| panic!("{r}"));
    let same = cosine(&t.vector, &alone);
    assert!(
        same > 0.9,
        "the central face is the subject's: cosine {same} to the photo alone, faces {:?}",
        enrol.scores.faces
    );
}

#[test]
fn health_probe_runs_every_configured_model() {
    let mut p = pipeline();
    let h = p.probe();
    assert!(h.detection && h.recognition && h.quality && h.pad, "{h:?}");
    assert!(h.mad, "the default MAD model ran: {h:?}");
}

/// Hostile bytes never panic a worker and never pass as a face: 300 seeded mutations of a
/// real JPEG and PNG (flipped bytes, cuts, spliced headers) each get a clean answer.
#[test]
fn mutated_images_get_clean_answers() {
    let mut p = pipeline();
    let sources = [photo("obama2.jpg"), photo("astronaut.png")];
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..300 {
        let mut bytes = sources[round % 2].clone();
        match next() % 3 {
            0 => {
                for _ in 0..1 + next() % 16 {
                    let i = (next() as usize) % bytes.len();
                    bytes[i] = next() as u8;
                }
            }
            1 => bytes.truncate(1 + (next() as usize) % bytes.len()),
            _ => {
                let at = (next() as usize) % bytes.len();
                let junk: Vec<u8> = (0..64).map(|_| next() as u8).collect();
                bytes.splice(at..at, junk);
            }
        }
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.analyze(&bytes, Purpose::Enrol)));
        match outcome {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("round {round}: the service failed instead of refusing the image: {e}"),
            Err(_) => panic!("round {round}: panicked"),
        }
    }
}

/// A morph of obama.jpg and biden.jpg made by tools/mad/morph.py (`morph_pair`, variant
/// `full`, weight 0.5, then halved in size), kept as PNG: derived from the MIT-licensed
/// registry test photos, so it may live in the repository.
fn morph_photo() -> image::RgbImage {
    let path = root().join("../tests/data/morph_obama_biden.png");
    image::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8()
}

#[test]
fn the_mad_gate_refuses_a_morph_and_passes_the_people_it_was_made_of() {
    let mut p = pipeline();
    let (threshold, _) = p.mad_model().unwrap_or_else(|| panic!("no MAD model"));
    for name in ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"] {
        let image = rgb(name);
        let face = p.subject_face(&image).ok().flatten().unwrap_or_else(|| panic!("{name}: no face"));
        let score = p.morph_score(&image, &face).unwrap_or_else(|e| panic!("{e}"));
        eprintln!("{name}: morph score {score:?}");
        assert!(
            score.is_some_and(|s| s < threshold),
            "{name} is bona fide: {score:?} vs {threshold}"
        );
    }
    let analysis = p.analyze_image(&morph_photo(), Purpose::Enrol).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("morph: {:?}", analysis.outcome.as_ref().map(|t| t.mad));
    assert!(
        matches!(analysis.outcome, Err(Rejection::MorphDetected { .. })),
        "{:?}",
        analysis.outcome.err()
    );
    // The same photo searches fine: MAD runs at enrolment only.
    let search = p.analyze_image(&morph_photo(), Purpose::Search).unwrap_or_else(|e| panic!("{e}"));
    assert!(search.outcome.is_ok(), "{:?}", search.outcome.err());
}

#[test]
fn a_mad_model_reading_the_recognizer_is_refused_next_to_another_one() {
    let mut p = pipeline();
    // The same files, the recognizer and MAD model under other names, so that the manifest
    // no longer pins the recognizer.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut cfg = p.config().clone();
    for (from, to) in [
        (&cfg.recognizer.file, "other-recognizer.onnx".as_ref()),
        (&cfg.mad.file, "mad.onnx".as_ref()),
        (&cfg.detector.file, cfg.detector.file.as_path()),
        (&cfg.quality.file, cfg.quality.file.as_path()),
        (&cfg.pad.file, cfg.pad.file.as_path()),
    ] {
        std::os::unix::fs::symlink(root().join("files").join(from), dir.path().join(to)).unwrap_or_else(|e| panic!("{e}"));
    }
    cfg.models_dir = dir.path().to_path_buf();
    cfg.recognizer.file = "other-recognizer.onnx".into();
    cfg.mad.file = "mad.onnx".into();
    let refusal = |cfg: &PipelineConfig| match Pipeline::load(cfg) {
        Ok(_) => panic!("loaded: the default MAD model reads the recognizer, so it must refuse one it is not pinned to"),
        Err(e) => e.to_string(),
    };
    let unpinned = refusal(&cfg);
    assert!(unpinned.contains("not pinned"), "{unpinned}");
    cfg.recognizer.sha256 = "0".repeat(64);
    let other = refusal(&cfg);
    assert!(other.contains("facegate-mad-v2.onnx"), "{other}");
    // Pinned to the right sha256 under any name, it loads and scores as before.
    let obama = rgb("obama.jpg");
    let face = p.subject_face(&obama).ok().flatten().unwrap_or_else(|| panic!("no face"));
    let want = p.morph_score(&obama, &face).unwrap_or_else(|e| panic!("{e}"));
    cfg.recognizer.sha256 = "9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f".into();
    let mut renamed = Pipeline::load(&cfg).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(renamed.morph_score(&obama, &face).unwrap_or_else(|e| panic!("{e}")), want);
}

#[test]
fn a_mad_model_with_inputs_the_service_cannot_fill_is_refused_by_name() {
    // Loading the default pipeline first initialises the runtime.
    let cfg = pipeline().config().clone();
    let fixtures = root().join("tests/fixtures");
    for (file, named) in [
        ("mad-unknown-input.onnx", "\"foo\""),
        // The recognizer is the right one (its sha256 is in the model), but it has no such node.
        ("mad-missing-node.onnx", "no_such_node"),
    ] {
        let cfg = PipelineConfig {
            mad: facegate_models::config::MadConfig {
                file: fixtures.join(file),
                threshold: Some(0.5),
                ..cfg.mad.clone()
            },
            ..cfg.clone()
        };
        match Pipeline::load(&cfg) {
            Ok(_) => panic!("{file} loaded: the service cannot fill its extra input"),
            Err(e) => assert!(e.to_string().contains(named), "{file}: {e}"),
        }
    }
}

/// The shipped model declares its contract; a model that declares no threshold needs one
/// configured, and is then run at it.
#[test]
fn a_mad_model_brings_its_own_threshold_and_crop() {
    let p = pipeline();
    assert_eq!(p.mad_model(), Some((0.9010, "facegate-mad-v9")));
    let cfg = p.config().clone();
    let v2 = |threshold| PipelineConfig {
        mad: facegate_models::config::MadConfig {
            file: "facegate-mad-v2.onnx".into(),
            threshold,
            ..cfg.mad.clone()
        },
        ..cfg.clone()
    };
    match Pipeline::load(&v2(None)) {
        Ok(_) => panic!("a model without a declared threshold loaded without a configured one"),
        Err(e) => assert!(e.to_string().contains("facegate.threshold"), "{e}"),
    }
    let p = Pipeline::load(&v2(Some(0.9598))).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.mad_model(), Some((0.9598, "undeclared")));
}

/// At enrolment the template comes from the MAD model's run of the recognizer on the aligned
/// face: the same template a search computes on its own.
#[test]
fn the_enrolment_template_is_the_recognizers_own() {
    let mut p = pipeline();
    let image = rgb("obama.jpg");
    let template = |p: &mut Pipeline, purpose| match p.analyze_image(&image, purpose).map(|a| a.outcome) {
        Ok(Ok(t)) => t.vector,
        other => panic!("{purpose:?}: {other:?}"),
    };
    let (enrol, search) = (template(&mut p, Purpose::Enrol), template(&mut p, Purpose::Search));
    let cosine = cosine(&enrol, &search);
    assert!(cosine > 0.99999, "enrol and search templates differ: cosine {cosine}");
}

/// A large JPEG is decoded at a fraction of its size for the detector, and the subject's
/// face is cut from a finer decode when it is too small at that fraction: the template is
/// the full decode's either way.
#[test]
fn a_large_jpeg_decoded_at_a_fraction_gives_the_full_decodes_template() {
    let mut scaled = pipeline();
    let cfg = PipelineConfig {
        models_dir: root().join("files"),
        scaled_jpeg: false,
        ..PipelineConfig::default()
    };
    let mut full = Pipeline::load(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let photo = rgb("obama.jpg");
    // The same face, large in a frame twice the photo's size (decoded at 1/2), and small
    // in a corner of a 4000x3000 frame (decoded at 1/4 for the detector).
    let resized = |f: u32, d: u32| {
        image::imageops::resize(
            &photo,
            photo.width() * f / d,
            photo.height() * f / d,
            image::imageops::FilterType::Triangle,
        )
    };
    let (portrait, small) = (resized(2, 1), resized(1, 1));
    let mut wide = image::RgbImage::from_pixel(4000, 3000, image::Rgb([90, 110, 100]));
    image::imageops::replace(&mut wide, &small, 200, 150);
    for (name, img) in [("portrait", portrait), ("small face in a wide frame", wide)] {
        let mut jpeg = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
            .unwrap_or_else(|e| panic!("{e}"));
        let a = scaled.analyze(&jpeg, Purpose::Search).unwrap_or_else(|e| panic!("{e}"));
        let b = full.analyze(&jpeg, Purpose::Search).unwrap_or_else(|e| panic!("{e}"));
        let decodes = a.timings.0.iter().filter(|(s, _)| s.name() == "decode").count();
        let (a, b) = match (a.outcome, b.outcome) {
            (Ok(a), Ok(b)) => (a, b),
            (a, b) => panic!("{name}: {a:?} / {b:?}"),
        };
        let size = b.face.size();
        for (x, y) in a.face.bbox.iter().zip(&b.face.bbox) {
            assert!((x - y).abs() < 0.05 * size, "{name}: {:?} against {:?}", a.face.bbox, b.face.bbox);
        }
        let c = cosine(&a.vector, &b.vector);
        assert!(c > 0.95, "{name}: cosine {c} to the full decode's template");
        assert!(
            (a.quality - b.quality).abs() < 0.1,
            "{name}: quality {} against {}",
            a.quality,
            b.quality
        );
        if name == "portrait" {
            assert_eq!(decodes, 1, "a face large at the fraction needs no second decode");
        } else {
            assert_eq!(decodes, 2, "a face small at the fraction is cut from a finer decode");
        }
    }
}
