use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use facegate_actors::PartitionStatus;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::openapi::WrongMethod;
use crate::{app::AppState, auth::Optional, config::Right};

/// What every caller gets: the seed's body.
#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(value_type = String, pattern = "^(healthy|unhealthy)$")]
    status: &'static str,
    /// Each component from a real probe; `onnx_mad` is false while no MAD model is
    /// configured, and is not required for `healthy`.
    components: Components,
    /// Only for a key with the admin right (or any caller when no keys are configured).
    #[serde(flatten)]
    detail: Option<Detail>,
}

#[derive(Serialize, ToSchema)]
pub struct Components {
    faiss_index: bool,
    onnx_detection: bool,
    onnx_recognition: bool,
    onnx_quality: bool,
    onnx_pad: bool,
    onnx_mad: bool,
    storage: bool,
}

#[derive(Serialize, ToSchema)]
pub struct Detail {
    model_id: String,
    runtime: Runtime,
    /// The MAD model's version and the threshold it runs at; null without one.
    mad: Option<Mad>,
    /// The partitions the key may see, with their status (ready, loading, degraded).
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    partitions: BTreeMap<String, PartitionStatus>,
    /// Why a partition the key may see cannot be served, when one cannot.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    degraded: BTreeMap<String, String>,
    /// Whether templates and index snapshots are encrypted at rest: mode, cipher and the
    /// master key's fingerprint, or mode off with a warning.
    #[schema(value_type = Object)]
    encryption: serde_json::Value,
}

#[derive(Serialize, ToSchema)]
pub struct Runtime {
    onnxruntime: String,
    execution_provider: String,
    requested_provider: String,
}

#[derive(Serialize, ToSchema)]
pub struct Mad {
    version: String,
    threshold: f32,
}

/// Health of every component from real probes
///
/// Each component from a real probe (a forward pass of every model, a FAISS search, a
/// write to the data directory); 503 if any required one fails. Anyone (load balancers,
/// probes) gets status and components, nothing about tenants. A key with the admin right
/// (or any caller when no keys are configured) also gets model_id, runtime, mad (the MAD
/// model's version and threshold), partitions (those the key may see, with their status),
/// degraded (why one of them cannot be served) and encryption (whether templates are
/// encrypted at rest).
#[utoipa::path(
    get,
    path = "/api/v1/health",
    responses(
        (status = 200, description = "healthy", body = Health),
        (status = 405, response = WrongMethod),
        (status = 503, description = "unhealthy", body = Health),
    )
)]
pub async fn handle(Optional(caller): Optional, state: web::Data<AppState>) -> HttpResponse {
    let models = state.pool.health().await;
    let gallery = state.gallery.clone();
    let data_dir = state.cfg.gallery.data_dir.clone();
    let (faiss, storage) = web::block(move || (gallery.probe(), storage_writable(&data_dir) && gallery.storage_online()))
        .await
        .unwrap_or((false, false));
    let healthy = faiss && storage && models.detection && models.recognition && models.quality && models.pad;
    let detail = caller.filter(|c| c.has(Right::Admin)).map(|caller| {
        let info = state.pool.info();
        let runtime = facegate_models::runtime::info().unwrap_or_else(|| info.runtime.clone());
        // One reading of the partitions for both their statuses and their reasons.
        let visible: Vec<_> = state.gallery.info().into_iter().filter(|p| caller.may_see(&p.name)).collect();
        Detail {
            model_id: info.model_id.clone(),
            runtime: Runtime {
                onnxruntime: runtime.version,
                execution_provider: runtime.provider,
                requested_provider: runtime.requested,
            },
            mad: info.mad.as_ref().map(|m| Mad {
                version: m.version.clone(),
                threshold: m.threshold,
            }),
            partitions: visible.iter().map(|p| (p.name.clone(), p.status)).collect(),
            degraded: visible.iter().filter_map(|p| Some((p.name.clone(), p.reason.clone()?))).collect(),
            encryption: match state.gallery.master_key() {
                Some(m) => json!({ "mode": "on", "cipher": "xchacha20poly1305", "master_key": m.id() }),
                None => json!({ "mode": "off", "warning": "templates and index snapshots are stored in plaintext" }),
            },
        }
    });
    let body = Health {
        status: if healthy { "healthy" } else { "unhealthy" },
        components: Components {
            faiss_index: faiss,
            onnx_detection: models.detection,
            onnx_recognition: models.recognition,
            onnx_quality: models.quality,
            onnx_pad: models.pad,
            onnx_mad: models.mad,
            storage,
        },
        detail,
    };
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
