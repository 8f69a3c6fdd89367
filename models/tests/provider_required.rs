//! Asking for CUDA as required where the loaded ONNX Runtime (the CPU wheel's) has no CUDA
//! provider refuses to start, saying why. (Own test binary: ORT allows one environment
//! per process.)

use std::path::PathBuf;

use facegate_models::runtime::{self, Provider};

#[test]
fn required_cuda_without_a_cuda_runtime_refuses_to_start() {
    let lib = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("runtime/libonnxruntime.so.1.31.1");
    let err = runtime::init(&lib, Provider::Cuda { required: true })
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("cuda") && err.contains("no CUDA provider"), "{err}");
}
