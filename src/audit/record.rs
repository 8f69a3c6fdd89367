//! One audit record and its canonical bytes: the JSON text stored in the `body` column,
//! fields in declaration order, no whitespace. The chain hashes those exact bytes, so a
//! record is verified as it was written, never as it would be re-serialised.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The biometric operations that leave a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Search,
    Verify,
    Enrol,
    Delete,
    /// The identity-collision search of an enrolment that found a match, recorded in the
    /// partition whose subject was matched.
    Collision,
    /// 1:N across partitions (the identify endpoint).
    Identify,
}

/// A subject an operation involved: a candidate returned, the subject verified, enrolled
/// or deleted, the subject a collision matched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AuditSubject)]
pub struct Subject {
    pub id: String,
    /// The cosine score when the operation compared a face with it.
    pub score: Option<f32>,
}

/// A gate's measured score when the gate refused the photo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AuditGate)]
pub struct Gate {
    /// `quality_score`, `pad_score` or `mad_score`.
    pub name: String,
    pub score: f32,
}

/// What a handler knows of an operation; the writer adds the place in the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    pub request_id: String,
    pub key: Option<String>,
    pub operation: Operation,
    pub partition: String,
    pub decision: String,
    pub status: u16,
    pub subjects: Vec<Subject>,
    pub quality: Option<f32>,
    pub gate: Option<Gate>,
    pub model_id: Option<String>,
}

/// A record as stored and as `GET /api/v1/audit` returns it. Never an image or a template:
/// the draft has no field that could hold one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AuditRecord)]
pub struct Record {
    /// 1, 2, 3, ... without gaps: a removed record leaves a gap.
    pub seq: u64,
    /// When the record was committed, RFC 3339 UTC with milliseconds.
    pub time: String,
    pub request_id: String,
    /// The API key's configured name (never the key); null when no keys are configured.
    pub key: Option<String>,
    pub operation: Operation,
    pub partition: String,
    /// `OK`, `MATCH` / `NO_MATCH` (verify), `FLAGGED` (an enrolment stored with a collision),
    /// or the error code of the answer (`NO_FACE`, `SPOOF_DETECTED`, ...).
    pub decision: String,
    /// The HTTP status answered.
    pub status: u16,
    pub subjects: Vec<Subject>,
    pub quality: Option<f32>,
    pub gate: Option<Gate>,
    pub model_id: Option<String>,
    /// SHA-256 (hex) of the previous record's canonical bytes; for the first record, of
    /// nothing (64 zeros) or, after pruning, the anchor: the last pruned record's hash.
    pub prev: String,
}

pub type Hash = [u8; 32];

/// The `prev` of the very first record.
pub const GENESIS: Hash = [0; 32];

impl Record {
    pub fn new(draft: Draft, seq: u64, time_ms: i64, prev: &Hash) -> Self {
        Record {
            seq,
            time: format_time(time_ms),
            request_id: draft.request_id,
            key: draft.key,
            operation: draft.operation,
            partition: draft.partition,
            decision: draft.decision,
            status: draft.status,
            subjects: draft.subjects,
            quality: draft.quality,
            gate: draft.gate,
            model_id: draft.model_id,
            prev: hex(prev),
        }
    }

    /// The bytes that are stored and hashed.
    pub fn canonical(&self) -> Vec<u8> {
        // A struct of strings, numbers and options always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

pub fn hash(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}

pub fn hex(h: &Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// Scores as the API shows them: three decimals.
pub fn round3(x: f32) -> f32 {
    (x * 1000.0).round() / 1000.0
}

/// Milliseconds since 1970 as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_time(ms: i64) -> String {
    let (secs, milli) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// `2026-12-07T22:47:18Z`, with optional fractional seconds, or a number of seconds
/// since 1970, as milliseconds since 1970. Only UTC (`Z`) is taken: an offset would make
/// the same instant look like several.
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(secs) = s.parse::<i64>() {
        return secs.checked_mul(1000).ok_or_else(|| format!("{s:?} is out of range"));
    }
    let bad = || format!("{s:?} is neither RFC 3339 UTC (2026-12-07T22:47:18Z) nor seconds since 1970");
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') || b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| {
        s.get(r)
            .filter(|t| t.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|t| t.parse::<i64>().ok())
    };
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(sec)) =
        (num(0..4), num(5..7), num(8..10), num(11..13), num(14..16), num(17..19))
    else {
        return Err(bad());
    };
    let rest = &s[19..];
    let Some(frac) = rest.strip_suffix(['Z', 'z']) else {
        return Err(format!("{s:?}: give the time in UTC, ending in Z"));
    };
    let milli = match frac.strip_prefix('.') {
        None if frac.is_empty() => 0,
        Some(f) if !f.is_empty() && f.bytes().all(|c| c.is_ascii_digit()) => {
            let digits: String = f.chars().chain("000".chars()).take(3).collect();
            digits.parse::<i64>().map_err(|_| bad())?
        }
        _ => return Err(bad()),
    };
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 59 {
        return Err(format!("{s:?} is not a valid date and time"));
    }
    Ok(((days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec) * 1000) + milli)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_and_bad_ones_say_why() {
        for ms in [0, 951_782_400_123, 1_796_683_638_000, 4_102_444_799_999] {
            assert_eq!(parse_time(&format_time(ms)), Ok(ms), "{}", format_time(ms));
        }
        assert_eq!(format_time(1_796_683_638_000), "2026-12-07T22:47:18.000Z");
        assert_eq!(parse_time("2000-02-29T00:00:00Z"), Ok(951_782_400_000));
        assert_eq!(parse_time("1796683638"), Ok(1_796_683_638_000));
        assert_eq!(parse_time("2026-12-07T22:47:18.5Z"), Ok(1_796_683_638_500));
        assert!(parse_time("2026-12-07T22:47:18+01:00").unwrap_err().contains("UTC"));
        assert!(parse_time("2025-02-29T00:00:00Z").unwrap_err().contains("not a valid date"));
        assert!(parse_time("yesterday").unwrap_err().contains("RFC 3339"));
        assert!(parse_time("2026-12-07T22:47:1xZ").is_err());
    }

    #[test]
    fn the_canonical_bytes_are_the_stored_json_and_parse_back() {
        let draft = Draft {
            request_id: "r-1".into(),
            key: Some("gate".into()),
            operation: Operation::Search,
            partition: "p".into(),
            decision: "OK".into(),
            status: 200,
            subjects: vec![Subject {
                id: "s1".into(),
                score: Some(round3(0.823_456)),
            }],
            quality: Some(0.87),
            gate: None,
            model_id: Some("m".into()),
        };
        let r = Record::new(draft, 1, 0, &GENESIS);
        let bytes = r.canonical();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with(r#"{"seq":1,"time":"1970-01-01T00:00:00.000Z","#), "{text}");
        assert!(text.contains(r#""score":0.823"#), "{text}");
        let back: Record = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, r);
        assert_eq!(back.canonical(), bytes, "re-serialising gives the same bytes");
        assert_eq!(hex(&hash(b"")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
