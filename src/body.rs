//! Request bodies once read (`intake`): JSON with specific messages, base64 images, ranges.

use base64::Engine;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Parse JSON, naming what is wrong (missing field, wrong type, where).
pub fn json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::InvalidRequest("the request body is empty; send a JSON object".into()));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::InvalidRequest(format!("malformed JSON request: {e}")))
}

/// Standard alphabet, padding optional (some clients strip it).
const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new().with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Decode the `image` field: standard base64 (a `data:image/...;base64,` prefix and line
/// breaks are tolerated). Its decoded size is checked before decoding.
pub fn image(field: &str, max_bytes: usize) -> Result<Vec<u8>, ApiError> {
    let data = match field.split_once(";base64,") {
        Some((prefix, rest)) if prefix.starts_with("data:") => rest,
        _ => field,
    };
    let cleaned: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if cleaned.is_empty() {
        return Err(ApiError::InvalidRequest("image is empty".into()));
    }
    if cleaned.len() / 4 * 3 > max_bytes + 3 {
        return Err(ApiError::PayloadTooLarge(format!(
            "the image is over the limit of {max_bytes} bytes"
        )));
    }
    BASE64
        .decode(cleaned.as_bytes())
        .map_err(|e| ApiError::InvalidRequest(format!("image is not valid base64: {e}")))
}

/// `top_k`: default when absent, 1..=max otherwise.
pub fn top_k(v: Option<i64>, default: usize, max: usize) -> Result<usize, ApiError> {
    match v {
        None => Ok(default),
        Some(k) if k >= 1 && k as u64 <= max as u64 => Ok(k as usize),
        Some(k) => Err(ApiError::InvalidRequest(format!("top_k must be between 1 and {max}, got {k}"))),
    }
}

/// `min_score`: 0..=1 when present.
pub fn min_score(v: Option<f64>) -> Result<f32, ApiError> {
    match v {
        None => Ok(0.0),
        Some(s) if (0.0..=1.0).contains(&s) => Ok(s as f32),
        Some(s) => Err(ApiError::InvalidRequest(format!("min_score must be between 0 and 1, got {s}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_variants() {
        assert_eq!(image("aGVsbG8=", 100).ok(), Some(b"hello".to_vec()));
        assert_eq!(image("aGVsbG8", 100).ok(), Some(b"hello".to_vec()));
        assert_eq!(image("data:image/jpeg;base64,aGVs\nbG8=", 100).ok(), Some(b"hello".to_vec()));
        assert!(matches!(image("not base64!!", 100), Err(ApiError::InvalidRequest(_))));
        assert!(matches!(image("", 100), Err(ApiError::InvalidRequest(_))));
        assert!(matches!(image(&"A".repeat(400), 100), Err(ApiError::PayloadTooLarge(_))));
    }

    #[test]
    fn ranges() {
        assert_eq!(top_k(None, 5, 100).ok(), Some(5));
        assert!(top_k(Some(0), 5, 100).is_err());
        assert!(top_k(Some(-3), 5, 100).is_err());
        assert!(top_k(Some(101), 5, 100).is_err());
        assert!(min_score(Some(1.5)).is_err());
        assert!(min_score(Some(-0.1)).is_err());
        assert_eq!(min_score(Some(0.4)).ok(), Some(0.4));
    }
}
