//! API keys: which partitions a key may touch and with which rights. Keys are compared in
//! constant time and never logged (only their configured names are).
//!
//! Every route states who may call it in its handler's first argument, one of the access
//! extractors below: [`Authed<R>`] (a valid key holding right `R`), [`Optional`] (a key
//! if one is sent, for answers that add detail for it) or [`Public`]. `app::resource`
//! accepts only handlers whose first argument is one of them, so a route cannot be added
//! without saying which it is.

use std::future::{ready, Ready};
use std::marker::PhantomData;
use std::sync::Arc;

use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::config::{ApiKey, Right};
use crate::error::ApiError;

pub const HEADER: &str = "X-API-Key";

/// Who is calling; the key is shared with the configuration, not copied per request.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No keys are configured: everything is allowed.
    Open,
    Key(Arc<ApiKey>),
}

pub struct Keys(Vec<Arc<ApiKey>>);

impl Keys {
    pub fn new(keys: Vec<ApiKey>) -> Self {
        Self(keys.into_iter().map(Arc::new).collect())
    }

    /// The caller behind the request's key: 401 without a valid one when keys are set.
    pub fn caller(&self, req: &HttpRequest) -> Result<Caller, ApiError> {
        if self.0.is_empty() {
            return Ok(Caller::Open);
        }
        let given = req
            .headers()
            .get(HEADER)
            .and_then(|v| v.to_str().ok())
            .or_else(|| {
                req.headers()
                    .get("Authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
            })
            .ok_or(ApiError::Unauthorized)?;
        // Compare against every key, always, so the time taken does not tell which matched.
        let mut found = None;
        for k in &self.0 {
            if bool::from(k.key.as_bytes().ct_eq(given.as_bytes())) {
                found = Some(k);
            }
        }
        let k = found.ok_or(ApiError::Unauthorized)?;
        tracing::debug!(key = %k.name, "caller");
        Ok(Caller::Key(k.clone()))
    }
}

impl Caller {
    pub fn may_see(&self, partition: &str) -> bool {
        match self {
            Caller::Open => true,
            Caller::Key(k) => k.partitions.iter().any(|p| p == "*" || p == partition),
        }
    }

    pub fn has(&self, right: Right) -> bool {
        match self {
            Caller::Open => true,
            Caller::Key(k) => k.rights.contains(&right),
        }
    }

    /// 403 unless the key covers this partition with this right.
    pub fn require(&self, partition: &str, right: Right) -> Result<(), ApiError> {
        if !self.may_see(partition) {
            return Err(ApiError::Forbidden(format!(
                "this API key is not allowed on partition {partition:?}"
            )));
        }
        if !self.has(right) {
            return Err(ApiError::Forbidden(
                format!("this API key lacks the {right:?} right").to_lowercase(),
            ));
        }
        Ok(())
    }
}

/// A right as a type, so that a handler's signature says which one it needs.
pub trait Needs: 'static {
    /// None: any valid key.
    const RIGHT: Option<Right>;
}

pub struct Search;
pub struct Enrol;
pub struct Admin;
pub struct AnyKey;

impl Needs for Search {
    const RIGHT: Option<Right> = Some(Right::Search);
}
impl Needs for Enrol {
    const RIGHT: Option<Right> = Some(Right::Enrol);
}
impl Needs for Admin {
    const RIGHT: Option<Right> = Some(Right::Admin);
}
impl Needs for AnyKey {
    const RIGHT: Option<Right> = None;
}

/// A caller with a valid key holding right `R` (on some partition: which partitions it
/// may use is checked where the partition is known). Extracted before the body is read,
/// so a refused caller costs no upload.
pub struct Authed<R: Needs> {
    pub caller: Caller,
    right: PhantomData<R>,
}

impl<R: Needs> Authed<R> {
    /// 403 unless the key covers this partition with the route's right.
    pub fn require(&self, partition: &str) -> Result<(), ApiError> {
        match R::RIGHT {
            Some(right) => self.caller.require(partition, right),
            None if self.caller.may_see(partition) => Ok(()),
            None => Err(ApiError::Forbidden(format!(
                "this API key is not allowed on partition {partition:?}"
            ))),
        }
    }
}

fn keys(req: &HttpRequest) -> Result<&Keys, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .map(|s| &s.keys)
        .ok_or_else(|| ApiError::internal(req, "the application state is missing"))
}

impl<R: Needs> FromRequest for Authed<R> {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let authed = keys(req).and_then(|k| k.caller(req)).and_then(|caller| {
            if let Some(right) = R::RIGHT {
                if !caller.has(right) {
                    return Err(ApiError::Forbidden(
                        format!("this API key lacks the {right:?} right").to_lowercase(),
                    ));
                }
            }
            Ok(Authed {
                caller,
                right: PhantomData,
            })
        });
        ready(authed)
    }
}

/// The caller when a valid key was sent, for public answers that add detail for a key
/// (health). A missing or wrong key is not an error here: it gets the public answer.
pub struct Optional(pub Option<Caller>);

impl FromRequest for Optional {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(keys(req).map(|k| Optional(k.caller(req).ok())))
    }
}

/// A route anyone may call: the OpenAPI document, liveness.
pub struct Public;

impl FromRequest for Public {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(_: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(Public))
    }
}

/// The access extractors: what a handler's first argument must be.
pub trait Access {}
impl<R: Needs> Access for Authed<R> {}
impl Access for Optional {}
impl Access for Public {}

/// Handler argument tuples that begin with an access extractor.
pub trait Guarded {}
impl<A: Access> Guarded for (A,) {}
impl<A: Access, B> Guarded for (A, B) {}
impl<A: Access, B, C> Guarded for (A, B, C) {}
impl<A: Access, B, C, D> Guarded for (A, B, C, D) {}
