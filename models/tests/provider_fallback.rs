//! Asking for CUDA (not required) where it cannot run: a warning and the CPU, and the
//! runtime reports the CPU provider actually in use, never a silent claim of CUDA.

use std::path::PathBuf;

use facegate_models::runtime::{self, Provider};

#[test]
fn optional_cuda_falls_back_to_the_cpu_and_says_so() {
    let lib = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("runtime/libonnxruntime.so.1.31.1");
    let info = runtime::init(&lib, Provider::Cuda { required: false }).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(info.requested, "cuda");
    assert_eq!(info.provider, "CPUExecutionProvider");
}
