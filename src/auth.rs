//! API keys: which partitions a key may touch and with which rights. Keys are compared in
//! constant time and never logged (only their configured names are).

use actix_web::HttpRequest;
use subtle::ConstantTimeEq;

use crate::config::{ApiKey, Right};
use crate::error::ApiError;

pub const HEADER: &str = "X-API-Key";

/// Who is calling: borrowed from the configuration, nothing copied per request.
#[derive(Debug, Clone, Copy)]
pub enum Caller<'a> {
    /// No keys are configured: everything is allowed.
    Open,
    Key(&'a ApiKey),
}

pub struct Keys(Vec<ApiKey>);

impl Keys {
    pub fn new(keys: Vec<ApiKey>) -> Self {
        Self(keys)
    }

    /// The caller behind the request's key: 401 without a valid one when keys are set.
    pub fn caller(&self, req: &HttpRequest) -> Result<Caller<'_>, ApiError> {
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
        Ok(Caller::Key(k))
    }
}

impl Caller<'_> {
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
