//! One module per resource; handlers only translate between HTTP and the engine.

pub mod audit;
pub mod console;
pub mod delete;
pub mod enrol;
pub mod health;
pub mod identify;
pub mod metrics;
pub mod openapi;
pub mod partitions;
pub mod search;
pub mod stats;
pub mod verify;
pub mod webhooks;

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use facegate_actors::names;
use serde::{de::DeserializeOwned, Deserialize};

use crate::{
    app::AppState,
    auth::{Authed, Needs},
    body,
    error::ApiError,
    intake,
};

pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such endpoint; see /api/v1/openapi.json".into()))
}

/// The answer to a known path with a method it does not take: 405 naming the one it does.
pub fn wrong_method(allow: &str) -> impl Fn() -> std::future::Ready<Result<HttpResponse, ApiError>> + Clone {
    let allow = allow.to_string();
    move || {
        std::future::ready(Err(ApiError::MethodNotAllowed {
            message: format!("this endpoint takes {allow} only"),
            allow: allow.clone(),
        }))
    }
}

/// A 200 XML answer.
pub fn xml(body: String) -> HttpResponse {
    HttpResponse::Ok().content_type(crate::xml::CONTENT_TYPE).body(body)
}

pub fn default_partition() -> String {
    "default".into()
}

/// The body of verify and enrol: a photo of one subject in one partition.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubjectPhoto {
    #[schema(schema_with = openapi::field::image)]
    pub image: String,
    #[schema(schema_with = openapi::field::subject_id)]
    pub subject_id: String,
    #[schema(schema_with = openapi::field::partition)]
    pub partition: Option<String>,
}

/// `?partition=` on a biometric route: the partition named before the body, so that a key
/// without rights on it is refused without reading the body.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PartitionParam {
    /// The partition, checked against the key before the body is read; must equal the
    /// body's partition when both are given.
    #[param(schema_with = openapi::field::partition)]
    partition: Option<String>,
}

/// A body-carrying request past the checks that need no body, cheapest first: the key and
/// its right (401, 403: the handler's `Authed` argument), the partition of the query and
/// the key's rights on it (400, 403), room in the pipeline when the route needs it (503),
/// then the body within its budget and deadline (413, 503, 408). Nothing of the body has
/// been parsed yet.
pub struct Started<'a, R: Needs> {
    pub caller: Authed<R>,
    query_partition: Option<String>,
    body: intake::Body<'a>,
}

pub async fn start<'a, R: Needs>(
    state: &'a AppState,
    caller: Authed<R>,
    req: &HttpRequest,
    payload: web::Payload,
    pipeline: bool,
) -> Result<Started<'a, R>, ApiError> {
    let query = web::Query::<PartitionParam>::from_query(req.query_string())
        .map_err(|e| ApiError::InvalidRequest(format!("bad query string: {e}")))?
        .into_inner()
        .partition;
    if let Some(p) = &query {
        names::validate_partition(p)?;
        caller.require(p)?;
    }
    let server = &state.cfg.server;
    let admitted = async {
        if pipeline {
            state.pool.has_room()?;
        }
        intake::read(
            req,
            payload,
            &state.bodies,
            server.max_body_bytes,
            Duration::from_secs(server.body_timeout_secs),
        )
        .await
    };
    let body = match admitted.await {
        Ok(body) => body,
        // Answered after a pause: a client that retries at once without honouring
        // Retry-After then retries a few times a second, not thousands, and leaves the CPU
        // to the requests being served. The pause holds no place and reads nothing.
        Err(e @ ApiError::Overloaded(_)) => {
            tokio::time::sleep(Duration::from_millis(server.overload_delay_ms)).await;
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    Ok(Started {
        caller,
        query_partition: query,
        body,
    })
}

impl<R: Needs> Started<'_, R> {
    /// The partitions of a request that names several (identify): the body's list, or the
    /// query's one partition, or "default"; each name checked and each against the key's
    /// rights before any is looked up. A query partition must be in the body's list.
    pub fn partitions(&self, in_body: Option<Vec<String>>, max: usize) -> Result<Vec<String>, ApiError> {
        let list = match (in_body, &self.query_partition) {
            (Some(list), Some(q)) if !list.contains(q) => {
                return Err(ApiError::InvalidRequest(format!(
                    "partition {q:?} of the query is not in the body's partitions"
                )))
            }
            (Some(list), _) => list,
            (None, Some(q)) => vec![q.clone()],
            (None, None) => vec![default_partition()],
        };
        if list.is_empty() || list.len() > max {
            return Err(ApiError::InvalidRequest(format!("partitions must list 1 to {max} partitions")));
        }
        let mut out: Vec<String> = Vec::with_capacity(list.len());
        for p in list {
            names::validate_partition(&p)?;
            self.caller.require(&p)?;
            if !out.contains(&p) {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// The JSON body, naming what is wrong (missing field, wrong type, where).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        body::json(&self.body.bytes)
    }

    /// The partition from the query and the body (which must agree when both name one),
    /// "default" when neither does, checked against the key's rights.
    pub fn partition(&self, in_body: Option<String>) -> Result<String, ApiError> {
        let p = match (&self.query_partition, in_body) {
            (Some(q), Some(b)) if *q != b => {
                return Err(ApiError::InvalidRequest(format!(
                    "partition {b:?} in the body and {q:?} in the query differ"
                )))
            }
            (Some(q), _) => q.clone(),
            (None, Some(b)) => b,
            (None, None) => default_partition(),
        };
        names::validate_partition(&p)?;
        self.caller.require(&p)?;
        Ok(p)
    }
}

/// Read a `SubjectPhoto` and its image bytes, checking in the order that costs least: the
/// key and its right (401, 403), the query's partition (403), room in the pipeline (503), the body, the
/// JSON and names (400), the key's rights on the partition (403), base64.
pub async fn subject_photo<'a, R: Needs>(
    state: &'a AppState,
    caller: Authed<R>,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<(Started<'a, R>, String, String, Vec<u8>), ApiError> {
    let started = start(state, caller, req, payload, true).await?;
    let r: SubjectPhoto = started.json()?;
    names::validate_subject(&r.subject_id)?;
    let partition = started.partition(r.partition)?;
    let image = body::image(&r.image, state.cfg.pipeline.limits.max_image_bytes)?;
    Ok((started, partition, r.subject_id, image))
}
