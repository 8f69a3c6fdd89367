//! The model manifest (models/manifest.toml, compiled in): where each file comes from, its
//! sha256 and licence. Start-up checks every configured file against it.

use std::io::Read;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::ModelError;

const MANIFEST: &str = include_str!("../manifest.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub runtime: RuntimeEntry,
    pub model: Vec<ModelEntry>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RuntimeEntry {
    pub name: String,
    pub version: String,
    pub licence: String,
    pub requirement: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ModelEntry {
    pub file: String,
    pub role: String,
    pub model_id: String,
    pub licence: String,
    pub requirement: String,
    pub sha256: String,
    /// A recognizer's calibration table (relative to models/): cosine score -> FMR and
    /// FNMR, written by `facegate-tools eval lfw --calibration`.
    #[serde(default)]
    pub calibration: Option<String>,
}

impl Manifest {
    pub fn load() -> Self {
        // The manifest is part of the source tree: a parse failure is a build defect that
        // the unit test below catches, never a runtime condition.
        toml::from_str(MANIFEST).unwrap_or_else(|e| panic!("models/manifest.toml is invalid: {e}"))
    }

    pub fn entry(&self, file_name: &str) -> Option<&ModelEntry> {
        self.model.iter().find(|m| m.file == file_name)
    }
}

/// Hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let err = |e: std::io::Error| ModelError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut file = std::fs::File::open(path).map_err(err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// What start-up learnt about one model file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifiedFile {
    pub role: String,
    pub file: String,
    pub sha256: String,
    pub licence: String,
    pub source: String,
}

/// The sha256 `verify` holds `path` to: the manifest's, else `pinned`; None when neither.
pub fn pinned_sha256<'a>(manifest: &'a Manifest, path: &Path, pinned: &'a str) -> Option<&'a str> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let want = manifest
        .entry(name)
        .map(|e| e.sha256.as_str())
        .filter(|s| !s.is_empty())
        .unwrap_or(pinned);
    (!want.is_empty()).then_some(want)
}

/// Check `path` against the manifest (or against `pinned` for a user's own file). A
/// mismatch names the file and what to run.
pub fn verify(manifest: &Manifest, role: &str, path: &Path, pinned: &str) -> Result<VerifiedFile, ModelError> {
    if !path.is_file() {
        return Err(ModelError::File {
            path: path.to_path_buf(),
            reason: "not found; run `python3 models/fetch.py`".into(),
        });
    }
    let got = sha256_file(path)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let entry = manifest.entry(name);
    if let Some(want) = pinned_sha256(manifest, path, pinned).filter(|w| !w.eq_ignore_ascii_case(&got)) {
        return Err(ModelError::File {
            path: path.to_path_buf(),
            reason: format!("sha256 {got} differs from the pinned {want}; delete it and run `python3 models/fetch.py`"),
        });
    }
    Ok(VerifiedFile {
        role: role.into(),
        file: name.into(),
        sha256: got,
        licence: entry
            .map(|e| e.licence.clone())
            .unwrap_or_else(|| "not in the manifest (user-supplied file)".into()),
        source: entry.map(|e| e.requirement.clone()).unwrap_or_else(|| "user-supplied".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_parses_and_pins_every_model() {
        let m = Manifest::load();
        assert!(m.model.len() >= 4);
        for e in &m.model {
            assert_eq!(e.sha256.len(), 64, "{} has no sha256", e.file);
        }
    }

    /// The shipped default verify_threshold gives at most the FMR the README states
    /// (1e-4), by the recognizer's own calibration table.
    #[test]
    fn the_default_verify_threshold_holds_its_stated_fmr() {
        let cfg = crate::config::RecognizerConfig::default();
        let m = Manifest::load();
        let entry = m
            .model
            .iter()
            .find(|e| e.model_id == cfg.model_id)
            .unwrap_or_else(|| panic!("no manifest entry"));
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join(entry.calibration.as_deref().unwrap_or_else(|| panic!("no calibration table")));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let rows: Vec<(f32, f64)> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("score"))
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (f[0].parse().unwrap_or(f32::NAN), f[1].parse().unwrap_or(f64::NAN))
            })
            .collect();
        assert!(
            rows.len() > 20 && rows.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 >= w[1].1),
            "{rows:?}"
        );
        // FMR falls as the score rises: the last row at or below the threshold bounds it.
        let at = rows
            .iter()
            .rev()
            .find(|r| r.0 <= cfg.verify_threshold)
            .unwrap_or_else(|| panic!("threshold below the table"));
        assert!(
            at.1 <= 1e-4,
            "verify_threshold {} has FMR {} by the table",
            cfg.verify_threshold,
            at.1
        );
    }

    #[test]
    fn a_tampered_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("facegate-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_default();
        let path = dir.join("w600k_mbf.onnx");
        std::fs::write(&path, b"not the model").unwrap_or_default();
        let err = verify(&Manifest::load(), "recognize", &path, "").unwrap_err().to_string();
        assert!(err.contains("w600k_mbf.onnx") && err.contains("fetch.py"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
