//! Reading records back: by time range, partition and subject, only from the partitions
//! the caller's key may use.

use std::path::Path;

use facegate_actors::names;
use rusqlite::{params_from_iter, types::Value, Connection, OpenFlags};
use serde::Deserialize;

use super::record::parse_time;
use crate::auth::{Admin, Authed, Caller};
use crate::error::ApiError;

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

/// `GET /api/v1/audit`'s query string, as sent.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Params {
    /// Records committed at or after this time: RFC 3339 UTC (2026-12-07T22:47:18Z, optional
    /// fraction) or seconds since 1970.
    pub from: Option<String>,
    /// Records committed before this time (same forms as from); from must be before to.
    pub to: Option<String>,
    /// Only this partition (403 unless the key may use it). Without it: every partition the
    /// key may use.
    #[param(schema_with = crate::routes::openapi::field::partition)]
    pub partition: Option<String>,
    /// Only records involving this subject id (a candidate returned, the subject verified,
    /// enrolled, deleted or matched by a collision).
    pub subject: Option<String>,
    /// Records returned at most (1-1000, default 100), oldest first; truncated is true when
    /// more matched.
    pub limit: Option<String>,
}

/// A checked query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// Milliseconds since 1970: from inclusive, to exclusive.
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    /// None: every partition. Some: only these (possibly none).
    pub partitions: Option<Vec<String>>,
    pub subject: Option<String>,
    pub limit: usize,
}

impl Params {
    /// 400 naming what is wrong; 403 for a partition the key may not use (whether or not
    /// it exists, so a key learns nothing of other tenants).
    pub fn check(self, caller: &Authed<Admin>) -> Result<Query, ApiError> {
        let bad = |m: String| ApiError::InvalidRequest(m);
        let time = |name: &str, v: Option<String>| -> Result<Option<i64>, ApiError> {
            v.map(|s| parse_time(&s).map_err(|e| bad(format!("{name}: {e}")))).transpose()
        };
        let from_ms = time("from", self.from)?;
        let to_ms = time("to", self.to)?;
        if let (Some(f), Some(t)) = (from_ms, to_ms) {
            if f >= t {
                return Err(bad("from must be before to (from is inclusive, to exclusive)".into()));
            }
        }
        let limit = match self.limit {
            None => DEFAULT_LIMIT,
            Some(l) => l
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| bad(format!("limit must be a whole number within 1..={MAX_LIMIT}, not {l:?}")))?,
        };
        if let Some(s) = &self.subject {
            names::validate_subject(s).map_err(|e| bad(format!("subject: {e}")))?;
        }
        let partitions = match self.partition {
            Some(p) => {
                names::validate_partition(&p).map_err(|e| bad(format!("partition: {e}")))?;
                caller.require(&p)?;
                Some(vec![p])
            }
            None => match &caller.caller {
                Caller::Open => None,
                Caller::Key(k) if k.partitions.iter().any(|p| p == "*") => None,
                Caller::Key(k) => Some(k.partitions.clone()),
            },
        };
        Ok(Query {
            from_ms,
            to_ms,
            partitions,
            subject: self.subject,
            limit,
        })
    }
}

/// The matching records in chain order, and whether more matched than `limit`.
pub fn run(path: &Path, q: &Query) -> rusqlite::Result<(Vec<serde_json::Value>, bool)> {
    if !path.is_file() || q.partitions.as_ref().is_some_and(Vec::is_empty) {
        return Ok((Vec::new(), false));
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let mut sql = String::from("SELECT body FROM records WHERE 1 = 1");
    let mut args: Vec<Value> = Vec::new();
    if let Some(f) = q.from_ms {
        sql.push_str(" AND time_ms >= ?");
        args.push(Value::Integer(f));
    }
    if let Some(t) = q.to_ms {
        sql.push_str(" AND time_ms < ?");
        args.push(Value::Integer(t));
    }
    if let Some(ps) = &q.partitions {
        sql.push_str(" AND partition IN (");
        sql.push_str(&vec!["?"; ps.len()].join(", "));
        sql.push(')');
        args.extend(ps.iter().map(|p| Value::Text(p.clone())));
    }
    if let Some(s) = &q.subject {
        sql.push_str(" AND seq IN (SELECT seq FROM record_subjects WHERE subject = ?)");
        args.push(Value::Text(s.clone()));
    }
    sql.push_str(" ORDER BY seq LIMIT ?");
    args.push(Value::Integer(q.limit as i64 + 1));
    let mut stmt = conn.prepare(&sql)?;
    let bodies: Vec<String> = stmt.query_map(params_from_iter(args), |r| r.get(0))?.collect::<Result<_, _>>()?;
    let truncated = bodies.len() > q.limit;
    let records = bodies
        .iter()
        .take(q.limit)
        .map(|b| serde_json::from_str(b).unwrap_or_else(|_| serde_json::Value::String(b.clone())))
        .collect();
    Ok((records, truncated))
}
