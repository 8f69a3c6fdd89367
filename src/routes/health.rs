use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::{app::AppState, auth::Optional, config::Right};

/// GET /api/v1/health: each component from a real probe (a forward pass of every model,
/// a FAISS search, a write to the data directory). 503 if any required one fails. MAD is
/// reported but not required: `onnx_mad` is false while no MAD model is configured.
///
/// Anyone (load balancers, probes) gets the seed's body: status and components, nothing
/// about tenants. A key with the admin right also gets the detail: the partitions it may
/// see with their status, the runtime and the MAD model.
pub async fn handle(Optional(caller): Optional, state: web::Data<AppState>) -> HttpResponse {
    let models = state.pool.health().await;
    let gallery = state.gallery.clone();
    let data_dir = state.cfg.gallery.data_dir.clone();
    let (faiss, storage) = web::block(move || (gallery.probe(), storage_writable(&data_dir) && gallery.storage_online()))
        .await
        .unwrap_or((false, false));
    let healthy = faiss && storage && models.detection && models.recognition && models.quality && models.pad;
    let admin = caller.filter(|c| c.has(Right::Admin));
    let mut body = json!({
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
    });
    if let Some(caller) = admin {
        let info = state.pool.info();
        let runtime = facegate_models::runtime::info().unwrap_or_else(|| info.runtime.clone());
        let partitions: serde_json::Map<String, serde_json::Value> = state
            .gallery
            .info()
            .into_iter()
            .filter(|p| caller.may_see(&p.name))
            .map(|p| (p.name, json!(p.status)))
            .collect();
        body["model_id"] = json!(info.model_id);
        body["runtime"] =
            json!({ "onnxruntime": runtime.version, "execution_provider": runtime.provider, "requested_provider": runtime.requested });
        body["mad"] = json!(info.mad);
        body["partitions"] = json!(partitions);
    }
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
