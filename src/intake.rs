//! Reading request bodies under load: a global budget of body bytes held in memory, a
//! deadline for the whole body, and the size limit checked from `Content-Length` before a
//! byte is read. Everything here runs before any JSON is parsed.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest};
use futures_util::StreamExt;
use parking_lot::Mutex;

use crate::error::ApiError;

/// Bodies up to this size are "small": they may use the whole budget; larger ones share at
/// most `LARGE_SHARE` of it, so that slow multi-megabyte uploads piling up never lock out
/// the ordinary camera photo.
pub const SMALL_BODY: usize = 1 << 20;

/// The share of the budget (numerator over 4) that bodies over `SMALL_BODY` may hold.
const LARGE_SHARE_QUARTERS: usize = 3;

/// The bytes of request bodies held in memory across every connection.
pub struct BodyBudget {
    limit: usize,
    large_limit: usize,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    all: usize,
    large: usize,
}

impl BodyBudget {
    /// `configured` bytes, or with 0 a sixteenth of the RAM, at most 512 MiB (at least
    /// `floor`, the largest single body).
    pub fn new(configured: usize, floor: usize) -> Self {
        let limit = if configured > 0 {
            configured
        } else {
            (ram_bytes() / 16).clamp(floor, 512 << 20)
        };
        Self {
            limit,
            large_limit: limit / 4 * LARGE_SHARE_QUARTERS,
            held: Mutex::new(Held::default()),
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held now, for the metrics.
    pub fn held(&self) -> usize {
        self.held.lock().all
    }

    fn reservation(&self) -> Reservation<'_> {
        Reservation {
            budget: self,
            bytes: 0,
            large: false,
        }
    }
}

/// The machine's RAM; 8 GiB when it cannot be read.
fn ram_bytes() -> usize {
    crate::procfs::bytes("/proc/meminfo", "MemTotal").map_or(8 << 30, |b| usize::try_from(b).unwrap_or(usize::MAX))
}

/// One body's share of the budget, given back when it is dropped (when the request ends,
/// since the parsed JSON and the decoded image outlive the raw bytes).
pub struct Reservation<'a> {
    budget: &'a BodyBudget,
    bytes: usize,
    large: bool,
}

impl Reservation<'_> {
    /// Hold `total` bytes; false (nothing changed) when the budget cannot give them.
    fn grow_to(&mut self, total: usize) -> bool {
        if total <= self.bytes {
            return true;
        }
        let large = self.large || total > SMALL_BODY;
        let add = total - self.bytes;
        // A body turning large moves what it already held into the large share.
        let add_large = match (self.large, large) {
            (true, _) => add,
            (false, true) => total,
            (false, false) => 0,
        };
        let mut held = self.budget.held.lock();
        if held.all + add > self.budget.limit || (add_large > 0 && held.large + add_large > self.budget.large_limit) {
            return false;
        }
        held.all += add;
        held.large += add_large;
        self.bytes = total;
        self.large = large;
        true
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut held = self.budget.held.lock();
        held.all -= self.bytes;
        if self.large {
            held.large -= self.bytes;
        }
    }
}

/// A body read whole, with the budget it holds.
pub struct Body<'a> {
    pub bytes: web::Bytes,
    pub held: Reservation<'a>,
}

/// Read the body: 413 at once when `Content-Length` is over `limit`, 503 before reading
/// when the budget cannot hold it, 408 when it has not arrived within `timeout`.
pub async fn read<'a>(
    req: &HttpRequest,
    mut payload: web::Payload,
    budget: &'a BodyBudget,
    limit: usize,
    timeout: Duration,
) -> Result<Body<'a>, ApiError> {
    let too_large = || ApiError::PayloadTooLarge(format!("the request body is over the limit of {limit} bytes"));
    let over_budget = || {
        ApiError::Overloaded(format!(
            "request bodies in memory are at the server's budget ({} bytes); retry after Retry-After",
            budget.limit()
        ))
    };
    let declared = match req.headers().get(header::CONTENT_LENGTH) {
        None => 0,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .ok_or_else(|| ApiError::InvalidRequest("Content-Length is not a number".into()))?,
    };
    if declared > limit {
        return Err(too_large());
    }
    let mut held = budget.reservation();
    if !held.grow_to(declared) {
        return Err(over_budget());
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = web::BytesMut::with_capacity(declared);
    loop {
        let next = tokio::time::timeout_at(deadline, payload.next())
            .await
            .map_err(|_| ApiError::RequestTimeout(format!("the request body did not arrive within {} s", timeout.as_secs())))?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| ApiError::InvalidRequest(format!("could not read the request body: {e}")))?;
        let total = buf.len() + chunk.len();
        if total > limit {
            return Err(too_large());
        }
        if !held.grow_to(total) {
            return Err(over_budget());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Body { bytes: buf.freeze(), held })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_refuses_past_its_limit_and_frees_on_drop() {
        let budget = BodyBudget::new(8 << 20, 1);
        let mut a = budget.reservation();
        assert!(a.grow_to(1 << 20));
        let mut b = budget.reservation();
        assert!(b.grow_to(6 << 20), "large bodies may take up to three quarters");
        assert!(!b.grow_to((6 << 20) + 1));
        let mut c = budget.reservation();
        assert!(!c.grow_to(SMALL_BODY + 1), "large bodies together stop at three quarters");
        assert!(c.grow_to(SMALL_BODY - 1), "... and a small body may still use what is left");
        assert_eq!(budget.held(), (8 << 20) - 1);
        drop(b);
        assert_eq!(budget.held(), (2 << 20) - 1);
        assert!(c.grow_to(2 << 20), "a body turning large moves into the large share");
        assert_eq!(budget.held(), 3 << 20);
        drop((a, c));
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn zero_sizes_the_budget_from_the_machine() {
        let b = BodyBudget::new(0, 16 << 20);
        assert!(b.limit() >= 16 << 20 && b.limit() <= 512 << 20, "{}", b.limit());
    }
}
