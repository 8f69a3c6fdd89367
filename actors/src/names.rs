//! Validation of caller-chosen names. A partition name becomes a directory under the data
//! directory, so it must never be able to name anything outside it.

use crate::GalleryError;

pub const MAX_PARTITION_LEN: usize = 64;
pub const MAX_SUBJECT_LEN: usize = 128;

/// 1-64 ASCII letters, digits, '_' or '-', starting with a letter or digit: no '/', no
/// '.', nothing a filesystem or a shell could read differently.
pub fn validate_partition(name: &str) -> Result<(), GalleryError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_PARTITION_LEN
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(GalleryError::InvalidName(format!(
            "partition name must be 1-{MAX_PARTITION_LEN} characters of A-Z, a-z, 0-9, '_' or '-', starting with a letter or digit"
        )))
    }
}

/// 1-128 characters (as JSON Schema's maxLength counts them, so the OpenAPI document can
/// state the rule) without control characters and without leading or trailing whitespace.
/// Subject ids are data, never paths, so '<', '&' or '/' are allowed.
pub fn validate_subject(id: &str) -> Result<(), GalleryError> {
    let ok = !id.is_empty() && id.chars().count() <= MAX_SUBJECT_LEN && !id.chars().any(char::is_control) && id.trim() == id;
    if ok {
        Ok(())
    } else {
        Err(GalleryError::InvalidName(format!(
            "subject_id must be 1-{MAX_SUBJECT_LEN} characters without control characters or surrounding spaces"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_cannot_escape_the_data_dir() {
        for good in ["default", "watchlist", "site-7_B"] {
            assert!(validate_partition(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "..",
            ".",
            "../etc",
            "a/b",
            "a\\b",
            "-x",
            "_x",
            "a b",
            "é",
            &"x".repeat(65),
            "a\0",
        ] {
            assert!(validate_partition(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn subject_ids_are_data_not_paths() {
        for good in ["person-001", "<&\"'>", "Ана Мария", "a/b"] {
            assert!(validate_subject(good).is_ok(), "{good}");
        }
        for bad in ["", " x", "x ", "a\nb", "a\u{0}b", &"x".repeat(129)] {
            assert!(validate_subject(bad).is_err(), "{bad:?}");
        }
    }
}
