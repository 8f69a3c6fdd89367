use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::app::AppState;

/// GET /api/v1/health: each component from a real probe (a forward pass of every model,
/// a FAISS search, a write to the data directory). 503 if any required one fails. MAD is
/// reported but not required: `onnx_mad` is false while no MAD model is configured.
pub async fn handle(state: web::Data<AppState>) -> HttpResponse {
    let models = state.pool.health().await;
    let gallery = state.gallery.clone();
    let data_dir = state.cfg.gallery.data_dir.clone();
    let (faiss, storage) = web::block(move || (gallery.probe(), storage_writable(&data_dir)))
        .await
        .unwrap_or((false, false));
    let healthy = faiss && storage && models.detection && models.recognition && models.quality && models.pad;
    let partitions: serde_json::Map<String, serde_json::Value> =
        state.gallery.info().into_iter().map(|p| (p.name, json!(p.status))).collect();
    let info = state.pool.info();
    let runtime = facegate_models::runtime::info().unwrap_or_else(|| info.runtime.clone());
    let body = json!({
        "status": if healthy { "healthy" } else { "unhealthy" },
        "components": {
            "faiss_index": faiss,
            "onnx_detection": models.detection,
            "onnx_recognition": models.recognition,
            "onnx_quality": models.quality,
            "onnx_pad": models.pad,
            "onnx_mad": models.mad,
            "storage": storage,
        },
        "model_id": info.model_id,
        "runtime": { "onnxruntime": runtime.version, "execution_provider": runtime.provider, "requested_provider": runtime.requested },
        "partitions": partitions,
    });
    if healthy {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

fn storage_writable(dir: &std::path::Path) -> bool {
    let probe = dir.join(".health-probe");
    let ok = std::fs::write(&probe, b"ok").is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}
