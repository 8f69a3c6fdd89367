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

use super::openapi::{Conflict, Forbidden, Invalid, NotFound, Timeout, TooLarge, Unauthorized, Unavailable, WrongMethod};

/// `match` when a subscription names no threshold: the cosine at which the collision check
/// takes two faces for one person (README: FMR about 1e-5 per comparison).
const DEFAULT_THRESHOLD: f64 = 0.40;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// http or https, no credentials; its host must not resolve into webhooks.deny_networks (400).
    #[schema(max_length = 2048)]
    url: String,
    #[schema(schema_with = super::openapi::field::partition)]
    partition: Option<String>,
    /// Event types delivered (match, unknown, spoof, enrol, delete); all by default.
    #[schema(nullable = false, min_items = 1)]
    events: Option<Vec<String>>,
    /// match: a candidate scoring at least this (default 0.4); unknown: a searched face with none.
    #[schema(nullable = false, minimum = 0, maximum = 1)]
    threshold: Option<f64>,
    /// HMAC-SHA256 key of the Facegate-Signature header (t=UNIX,v1=hex of HMAC(secret, t + '.'
    /// + body)), 16-256 characters; generated when absent. Shown only in this answer.
    #[schema(nullable = false, min_length = 16, max_length = 256)]
    secret: Option<String>,
}

/// Subscribe a URL to a partition's events (admin right on the partition)
///
/// The answer carries the secret deliveries are signed with; it is never shown again.
#[utoipa::path(
    post,
    path = "/api/v1/webhooks",
    request_body = CreateWebhook,
    params(super::PartitionParam),
    security((), ("apiKey" = [])),
    responses(
        (status = 201, description = "The subscription: id, partition, url, events, threshold, created_ms, and its secret (shown only here)", body = Object),
        (status = 400, response = Invalid),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 405, response = WrongMethod),
        (status = 408, response = Timeout),
        (status = 409, response = Conflict),
        (status = 413, response = TooLarge),
        (status = 503, response = Unavailable),
    )
)]
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

/// The subscriptions of the partitions the key may see (no secrets)
#[utoipa::path(
    get,
    path = "/api/v1/webhooks",
    security((), ("apiKey" = [])),
    responses(
        (status = 200, description = "{\"webhooks\": [...]}", body = Object),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 405, response = WrongMethod),
    )
)]
pub async fn list(Authed { caller, .. }: Authed<Admin>, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let subs: Vec<Subscription> = state
        .events
        .subscriptions()
        .into_iter()
        .filter(|s| caller.may_see(&s.partition))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "webhooks": subs })))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct IdParam {
    /// The subscription's id.
    id: String,
}

/// Remove a subscription and its queued deliveries
///
/// A subscription of another tenant's partition is "not found", as one that never existed.
#[utoipa::path(
    delete,
    path = "/api/v1/webhooks",
    params(IdParam),
    security((), ("apiKey" = [])),
    responses(
        (status = 200, description = "{\"deleted\": id}", body = Object),
        (status = 400, response = Invalid),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 405, response = WrongMethod),
    )
)]
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
