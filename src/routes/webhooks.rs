//! POST / GET / DELETE /api/v1/webhooks: event subscriptions of the key's partitions.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use crate::{
    app::AppState,
    auth::{Admin, Authed},
    error::ApiError,
    events::{self, Subscription, KINDS},
};

/// `match` when a subscription names no threshold: the cosine at which the collision check
/// takes two faces for one person (README: FMR about 1e-5 per comparison).
const DEFAULT_THRESHOLD: f64 = 0.40;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateWebhook {
    url: String,
    partition: Option<String>,
    events: Option<Vec<String>>,
    threshold: Option<f64>,
    secret: Option<String>,
}

/// POST /api/v1/webhooks: subscribe a URL to a partition's events. The answer carries the
/// secret deliveries are signed with; it is never shown again.
pub async fn create(
    caller: Authed<Admin>,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let started = super::start(&state, caller, &req, payload, false).await?;
    let r: CreateWebhook = started.json()?;
    let partition = started.partition(r.partition)?;
    let kinds = r.events.unwrap_or_else(|| KINDS.iter().map(|k| k.to_string()).collect());
    if kinds.is_empty() {
        return Err(ApiError::InvalidRequest("events must name at least one event type".into()));
    }
    if let Some(k) = kinds.iter().find(|k| !KINDS.contains(&k.as_str())) {
        return Err(ApiError::InvalidRequest(format!(
            "unknown event type {k:?}; known: {}",
            KINDS.join(", ")
        )));
    }
    let threshold = r.threshold.unwrap_or(DEFAULT_THRESHOLD);
    if !(0.0..=1.0).contains(&threshold) {
        return Err(ApiError::InvalidRequest(format!(
            "threshold must be between 0 and 1, got {threshold}"
        )));
    }
    let secret = match r.secret {
        Some(s) if (16..=256).contains(&s.len()) && !s.chars().any(char::is_control) => s,
        Some(_) => return Err(ApiError::InvalidRequest("secret must be 16 to 256 characters".into())),
        None => events::random_secret().map_err(|e| ApiError::internal(&req, e))?,
    };
    let existing = state.events.subscriptions().iter().filter(|s| s.partition == partition).count();
    if existing >= state.events.max_per_partition() {
        return Err(ApiError::Conflict(format!(
            "partition {partition:?} already has {existing} webhooks (webhooks.max_subscriptions_per_partition)"
        )));
    }
    let ev = state.events.clone();
    // Resolving the host may wait on DNS: off the HTTP workers.
    let url = web::block(move || ev.check_url(&r.url))
        .await
        .map_err(|e| ApiError::internal(&req, e))?
        .map_err(ApiError::InvalidRequest)?;
    let mut dedup = Vec::new();
    for k in kinds {
        if !dedup.contains(&k) {
            dedup.push(k);
        }
    }
    let sub = Subscription {
        id: format!("wh_{}", uuid::Uuid::new_v4().simple()),
        partition,
        url,
        secret: secret.clone(),
        events: dedup,
        threshold,
        created_ms: events::now_ms(),
    };
    let mut body = serde_json::to_value(&sub).map_err(|e| ApiError::internal(&req, e))?;
    body["secret"] = json!(secret);
    let ev = state.events.clone();
    web::block(move || ev.subscribe(sub))
        .await
        .map_err(|e| ApiError::internal(&req, e))?
        .map_err(|e| ApiError::internal(&req, e))?;
    Ok(HttpResponse::Created().json(body))
}

/// GET /api/v1/webhooks: the subscriptions of the partitions the key may see, secrets left out.
pub async fn list(Authed { caller, .. }: Authed<Admin>, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let subs: Vec<Subscription> = state
        .events
        .subscriptions()
        .into_iter()
        .filter(|s| caller.may_see(&s.partition))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "webhooks": subs })))
}

#[derive(Deserialize)]
struct IdParam {
    id: String,
}

/// DELETE /api/v1/webhooks?id=ID: a subscription of another tenant's partition is "not
/// found", as one that never existed.
pub async fn remove(Authed { caller, .. }: Authed<Admin>, state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let id = web::Query::<IdParam>::from_query(req.query_string())
        .map_err(|_| ApiError::InvalidRequest("DELETE /api/v1/webhooks needs ?id=<webhook id>".into()))?
        .into_inner()
        .id;
    let visible = state
        .events
        .subscriptions()
        .iter()
        .any(|s| s.id == id && caller.may_see(&s.partition));
    if !visible {
        return Err(ApiError::NotFound(format!("webhook {id:?} not found")));
    }
    let ev = state.events.clone();
    let gone_id = id.clone();
    web::block(move || ev.unsubscribe(&gone_id))
        .await
        .map_err(|e| ApiError::internal(&req, e))?
        .map_err(|e| ApiError::internal(&req, e))?;
    Ok(HttpResponse::Ok().json(json!({ "deleted": id })))
}
