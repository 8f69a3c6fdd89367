//! The floor: what each model costs in ONNX Runtime alone, at the input size the pipeline
//! feeds it, without decoding, cropping, resizing or post-processing. The benchmarks print
//! it beside the pipeline's stages so that what is not inference shows.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ndarray::{ArrayD, IxDyn};
use ort::value::TensorRef;

use crate::config::PipelineConfig;
use crate::{runtime, ModelError};

/// One model file, fed zeros of the shapes given (free dimensions filled in).
pub struct FloorModel {
    pub role: &'static str,
    pub file: PathBuf,
    pub shape: String,
    pub p50: Duration,
}

/// Each configured model at its input size for a photo whose longer side the detector
/// reduces to `detector_input` (width, height), `runs` timed runs after two warm-up runs
/// each, one intra-op thread as the workers run them. The recognizer runs once per probe
/// (twice with `recognizer.flip`); at enrolment the MAD stage also runs it on two crops.
pub fn measure(cfg: &PipelineConfig, detector_input: (u32, u32), runs: usize) -> Result<Vec<FloorModel>, ModelError> {
    let (w, h) = (i64::from(detector_input.0), i64::from(detector_input.1));
    let r = i64::from(cfg.recognizer.input_size);
    let batch = if cfg.recognizer.flip { 2 } else { 1 };
    let (pad, quality) = (crate::pad::INPUT_SIZE as i64, i64::from(crate::quality::NET_SIZE));
    let mut models = vec![
        ("detect", cfg.detector.file.clone(), vec![1, 3, h, w]),
        ("pad", cfg.pad.file.clone(), vec![1, 3, pad, pad]),
        ("quality", cfg.quality.file.clone(), vec![1, 3, quality, quality]),
        ("embed", cfg.recognizer.file.clone(), vec![batch, 3, r, r]),
    ];
    if !cfg.mad.file.as_os_str().is_empty() {
        models.push(("mad", cfg.mad.file.clone(), Vec::new()));
    }
    models
        .into_iter()
        .map(|(role, file, shape)| {
            let path = cfg.path(&file);
            let mut session = runtime::session(&path, cfg.intra_threads)?;
            // A model with several inputs (MAD) gets each at its declared shape, batch 1.
            let shapes: Vec<Vec<i64>> = if shape.is_empty() {
                (0..session.inputs().len())
                    .map(|i| runtime::input_shape(&session, i).into_iter().map(|d| d.max(1)).collect())
                    .collect()
            } else {
                vec![shape]
            };
            let tensors: Vec<ArrayD<f32>> = shapes
                .iter()
                .map(|s| ArrayD::zeros(IxDyn(&s.iter().map(|d| *d as usize).collect::<Vec<_>>())))
                .collect();
            let names: Vec<String> = session.inputs().iter().map(|i| i.name().to_string()).collect();
            let mut times = Vec::with_capacity(runs);
            for i in 0..runs + 2 {
                let inputs = names
                    .iter()
                    .zip(&tensors)
                    .map(|(n, t)| Ok((n.clone(), TensorRef::from_array_view(t)?.into())))
                    .collect::<Result<Vec<(String, ort::session::SessionInputValue<'_>)>, ort::Error>>()?;
                let start = Instant::now();
                session.run(inputs)?;
                if i >= 2 {
                    times.push(start.elapsed());
                }
            }
            times.sort();
            Ok(FloorModel {
                role,
                file: path,
                shape: shapes.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(" + "),
                p50: times.get(times.len() / 2).copied().unwrap_or_default(),
            })
        })
        .collect()
}
