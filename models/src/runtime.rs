//! ONNX Runtime: loading the shared library (never downloaded: it comes from the PyPI
//! `onnxruntime` wheel, see models/manifest.toml) and building sessions the same way for
//! every model.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use ort::ep::ExecutionProvider;

use ort::session::{builder::GraphOptimizationLevel, Session};

use crate::ModelError;

/// What is live, for the start-up log and health.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuntimeInfo {
    /// Version reported by the loaded library itself, e.g. "1.31.1".
    pub version: String,
    /// The execution provider sessions run on.
    pub provider: String,
    /// What the configuration asked for ("cpu" or "cuda").
    pub requested: String,
    pub library: String,
}

/// Which execution provider to ask for, and whether its absence stops start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Cpu,
    Cuda { required: bool },
}

impl Provider {
    pub fn parse(name: &str, required: bool) -> Result<Self, ModelError> {
        match name {
            "cpu" => Ok(Provider::Cpu),
            "cuda" => Ok(Provider::Cuda { required }),
            other => Err(ModelError::Config(format!(
                "runtime.provider = {other:?}: expected \"cpu\" or \"cuda\""
            ))),
        }
    }
}

/// Sessions get the CUDA provider while this is set; cleared (with a warning) when CUDA
/// turns out unusable and was not required, so health reports what really runs.
static CUDA_ACTIVE: AtomicBool = AtomicBool::new(false);
static CUDA_REQUIRED: AtomicBool = AtomicBool::new(false);

/// The environment must outlive every session: ort keeps only a weak reference to it.
static RUNTIME: OnceLock<(RuntimeInfo, ort::environment::Environment)> = OnceLock::new();

/// Load `libonnxruntime` from `library` once per process. ort panics on first use when the
/// library is missing, so this must run (and succeed) before any session is built.
pub fn init(library: &Path, provider: Provider) -> Result<RuntimeInfo, ModelError> {
    // Serialise first initialisations: ORT allows one environment per process.
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _once = INIT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((info, _)) = RUNTIME.get() {
        return Ok(info.clone());
    }
    if !library.is_file() {
        return Err(ModelError::File {
            path: library.to_path_buf(),
            reason: "ONNX Runtime library not found; run `python3 models/fetch.py`".into(),
        });
    }
    let builder = ort::init_from(library).map_err(|e| ModelError::File {
        path: library.to_path_buf(),
        reason: format!("cannot load ONNX Runtime: {e}"),
    })?;
    let env = builder.with_name("facegate").build()?;
    let version = library_version(library).unwrap_or_else(|| build_version(ort::info()));
    let requested = match provider {
        Provider::Cpu => "cpu",
        Provider::Cuda { .. } => "cuda",
    };
    if let Provider::Cuda { required } = provider {
        CUDA_REQUIRED.store(required, Ordering::Release);
        if ort::ep::CUDA::is_available().unwrap_or(false) {
            CUDA_ACTIVE.store(true, Ordering::Release);
        } else if required {
            return Err(ModelError::Config(format!(
                "runtime.provider = \"cuda\" is required, but the loaded ONNX Runtime {version} ({}) has no CUDA provider; use the library of the PyPI onnxruntime-gpu wheel",
                library.display()
            )));
        } else {
            tracing::warn!(%version, "CUDA was asked for, but the loaded ONNX Runtime has no CUDA provider: running on the CPU");
        }
    }
    let info = RuntimeInfo {
        version,
        provider: String::new(),
        requested: requested.into(),
        library: library.display().to_string(),
    };
    RUNTIME.get_or_init(|| (info, env));
    self::info().ok_or_else(|| ModelError::Runtime("ONNX Runtime environment missing".into()))
}

/// The version the library itself reports (`OrtGetApiBase()->GetVersionString()`).
fn library_version(library: &Path) -> Option<String> {
    // SAFETY: the library was just loaded successfully by ort from the same path; these
    // are the C API's documented entry points, called with no arguments.
    unsafe {
        let lib = libloading::Library::new(library).ok()?;
        let get_base: libloading::Symbol<unsafe extern "C" fn() -> *const ort::sys::OrtApiBase> = lib.get(b"OrtGetApiBase").ok()?;
        let base = get_base();
        if base.is_null() {
            return None;
        }
        let v = ((*base).GetVersionString)();
        if v.is_null() {
            return None;
        }
        Some(std::ffi::CStr::from_ptr(v).to_string_lossy().into_owned())
    }
}

/// The version from ORT's build info string ("... git-branch=rel-1.31.1, ...").
fn build_version(info: &str) -> String {
    info.split([',', ' '])
        .find_map(|part| part.strip_prefix("git-branch=rel-"))
        .unwrap_or(info)
        .to_string()
}

/// The live runtime, once `init` has succeeded.
pub fn info() -> Option<RuntimeInfo> {
    RUNTIME.get().map(|(info, _)| RuntimeInfo {
        provider: if CUDA_ACTIVE.load(Ordering::Acquire) {
            "CUDAExecutionProvider"
        } else {
            "CPUExecutionProvider"
        }
        .into(),
        ..info.clone()
    })
}

/// One session on the CPU provider. Intra-op spinning is off: with it, two threads under
/// contention ran slower than one (measured 391 vs 222 ms, see MODELS.md).
pub fn session(path: &Path, intra_threads: usize) -> Result<Session, ModelError> {
    session_of(path, None, intra_threads)
}

/// A session of `path` as edited in memory (`model`: its bytes after the edit), e.g. with
/// inner activations exposed as outputs (onnx_edit.rs); errors name `path`.
pub fn session_from_memory(path: &Path, model: &[u8], intra_threads: usize) -> Result<Session, ModelError> {
    session_of(path, Some(model), intra_threads)
}

/// A model file's bytes, for editing before a session is built of them (onnx_edit.rs).
pub fn read_model(path: &Path) -> Result<Vec<u8>, ModelError> {
    if !path.is_file() {
        return Err(not_found(path));
    }
    std::fs::read(path).map_err(|e| ModelError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn not_found(path: &Path) -> ModelError {
    ModelError::File {
        path: path.to_path_buf(),
        reason: "not found; run `python3 models/fetch.py`".into(),
    }
}

fn session_of(path: &Path, model: Option<&[u8]>, intra_threads: usize) -> Result<Session, ModelError> {
    if model.is_none() && !path.is_file() {
        return Err(not_found(path));
    }
    let Some((_, env)) = RUNTIME.get() else {
        return Err(ModelError::Runtime("ONNX Runtime is not initialised (runtime::init)".into()));
    };
    if CUDA_ACTIVE.load(Ordering::Acquire) {
        match build(env, path, model, intra_threads, true) {
            Ok(s) => return Ok(s),
            Err(e) if CUDA_REQUIRED.load(Ordering::Acquire) => return Err(e),
            Err(e) => {
                // Never a silent fallback: said once, loudly, and health shows the CPU.
                CUDA_ACTIVE.store(false, Ordering::Release);
                tracing::warn!(error = %e, "the CUDA provider could not start: running on the CPU");
            }
        }
    }
    build(env, path, model, intra_threads, false)
}

fn build(
    env: &ort::environment::Environment,
    path: &Path,
    model: Option<&[u8]>,
    intra_threads: usize,
    cuda: bool,
) -> Result<Session, ModelError> {
    let file_err = |e: ort::Error| ModelError::File {
        path: path.to_path_buf(),
        reason: format!("ONNX Runtime cannot load it: {e}"),
    };
    let mut builder = Session::builder(env)
        .map_err(ModelError::from)?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| ModelError::Runtime(e.to_string()))?
        .with_intra_threads(intra_threads.max(1))
        .map_err(|e| ModelError::Runtime(e.to_string()))?
        .with_intra_op_spinning(false)
        .map_err(|e| ModelError::Runtime(e.to_string()))?;
    if cuda {
        ort::ep::CUDA::default()
            .register(&mut builder)
            .map_err(|e| ModelError::Runtime(format!("CUDA provider: {e}")))?;
    }
    match model {
        Some(bytes) => builder.commit_from_memory(bytes).map_err(file_err),
        None => builder.commit_from_file(path).map_err(file_err),
    }
}

/// The declared shape of a session's `index`th input (-1 for a free dimension); empty
/// when there is no such input.
pub fn input_shape(session: &Session, index: usize) -> Vec<i64> {
    session
        .inputs()
        .get(index)
        .and_then(|i| i.dtype().tensor_shape())
        .map(|s| s.iter().copied().collect())
        .unwrap_or_default()
}

/// Refuse a model whose fixed input dimensions differ from what its role feeds it.
pub fn expect_input(session: &Session, model: &str, want: &[i64]) -> Result<(), ModelError> {
    let got = input_shape(session, 0);
    let fits = got.len() == want.len() && got.iter().zip(want).all(|(g, w)| *g < 0 || *w < 0 || g == w);
    if fits {
        Ok(())
    } else {
        Err(ModelError::Shape {
            model: model.into(),
            reason: format!("input shape {got:?} does not fit the expected {want:?}"),
        })
    }
}

/// An RGB image as a [1, 3, h, w] tensor in RGB plane order, each channel value mapped by
/// `f` (the model's own normalisation).
pub fn rgb_tensor(image: &image::RgbImage, f: impl Fn(u8) -> f32) -> ndarray::Array4<f32> {
    let (w, h) = image.dimensions();
    let mut t = ndarray::Array4::<f32>::zeros((1, 3, h as usize, w as usize));
    write_rgb(image, (0, 0), t.index_axis_mut(ndarray::Axis(0), 0), f);
    t
}

/// Write the window of `image` at `origin` the size of `out` ([3, H, W]) into `out`, each
/// channel value through `f`: one image of a batch tensor, from part of a larger image,
/// without copying either.
pub fn write_rgb(image: &image::RgbImage, origin: (u32, u32), mut out: ndarray::ArrayViewMut3<f32>, f: impl Fn(u8) -> f32) {
    let (_, h, w) = out.dim();
    for y in 0..h {
        for x in 0..w {
            let p = image.get_pixel(origin.0 + x as u32, origin.1 + y as u32);
            for c in 0..3 {
                out[[c, y, x]] = f(p[c]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_is_read_from_build_info() {
        let info = "ORT Build Info: git-branch=rel-1.31.1, git-commit-id=abc, build type=Release";
        assert_eq!(super::build_version(info), "1.31.1");
    }
}
