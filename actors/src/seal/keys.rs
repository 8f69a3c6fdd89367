//! The master key: where it comes from (a key file or the environment, never the
//! configuration file), how it is parsed, and how it wraps the partitions' data keys.

use std::path::{Path, PathBuf};

use base64::Engine;
use chacha20poly1305::aead::{KeyInit, OsRng};
use chacha20poly1305::XChaCha20Poly1305;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{open_with, seal_with, DataKey, SealError};

/// The environment variable that may hold the master key (64 hex digits or base64 of 32
/// bytes), for deployments that inject secrets as variables.
pub const MASTER_KEY_ENV: &str = "FACEGATE_MASTER_KEY";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncryptionMode {
    On,
    Off,
}

/// `[gallery.encryption]`: templates and index snapshots sealed at rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncryptionConfig {
    /// "on" (the default): start-up needs the master key. "off" stores templates in plaintext
    /// and says so in the start-up log and the admin health detail.
    pub mode: EncryptionMode,
    /// A file holding the master key: 32 raw bytes, 64 hex digits or base64. Unset: the key
    /// comes from the environment variable FACEGATE_MASTER_KEY.
    pub master_key_file: Option<PathBuf>,
}

impl Default for EncryptionConfig {
    fn default() -> Self {
        Self {
            mode: EncryptionMode::On,
            master_key_file: None,
        }
    }
}

/// Where the master key was read from (for the log; never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeySource {
    File(PathBuf),
    Env,
}

impl std::fmt::Display for MasterKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(p) => write!(f, "file {}", p.display()),
            Self::Env => write!(f, "environment variable {MASTER_KEY_ENV}"),
        }
    }
}

/// The key that wraps every partition's data key. Its bytes are zeroized when dropped and
/// never printed: `Debug` shows its id, a fingerprint that names it in messages.
pub struct MasterKey {
    cipher: XChaCha20Poly1305,
    id: String,
    source: MasterKeySource,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey(id {}, from {})", self.id, self.source)
    }
}

impl MasterKey {
    /// The configured master key: None with encryption off; an error naming what is
    /// missing or wrong with it on.
    pub fn load(cfg: &EncryptionConfig) -> Result<Option<Self>, SealError> {
        if cfg.mode == EncryptionMode::Off {
            return Ok(None);
        }
        let env = std::env::var(MASTER_KEY_ENV)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(Zeroizing::new);
        match (&cfg.master_key_file, env) {
            (Some(_), Some(_)) => Err(SealError::Key(format!(
                "both gallery.encryption.master_key_file and {MASTER_KEY_ENV} are set: set one"
            ))),
            (Some(path), None) => Self::from_file(path).map(Some),
            (None, Some(text)) => Self::parse(text.as_bytes(), MasterKeySource::Env).map(Some),
            (None, None) => Err(SealError::Key(format!(
                "gallery.encryption.mode is \"on\" but no master key is configured: set gallery.encryption.master_key_file \
                 to a file holding 32 random bytes (make one with `facegate keys new --out FILE`) or the environment \
                 variable {MASTER_KEY_ENV} (64 hex digits or base64), or set gallery.encryption.mode = \"off\" to store \
                 templates in plaintext"
            ))),
        }
    }

    pub fn from_file(path: &Path) -> Result<Self, SealError> {
        let bytes = Zeroizing::new(
            std::fs::read(path).map_err(|e| SealError::Key(format!("gallery.encryption.master_key_file {}: {e}", path.display())))?,
        );
        warn_if_readable_by_others(path);
        Self::parse(&bytes, MasterKeySource::File(path.to_path_buf()))
    }

    /// 64 hex digits, base64 of 32 bytes, or 32 raw bytes (surrounding whitespace ignored
    /// for the text forms).
    pub fn parse(bytes: &[u8], source: MasterKeySource) -> Result<Self, SealError> {
        let text = bytes.trim_ascii();
        let mut raw = Zeroizing::new([0u8; 32]);
        let decoded: Option<Zeroizing<Vec<u8>>> = if text.len() == 64 && text.iter().all(u8::is_ascii_hexdigit) {
            hex::decode(text).ok().map(Zeroizing::new)
        } else if let Ok(b) = base64::engine::general_purpose::STANDARD.decode(text) {
            Some(Zeroizing::new(b))
        } else if bytes.len() == 32 {
            Some(Zeroizing::new(bytes.to_vec()))
        } else {
            None
        };
        match decoded {
            Some(d) if d.len() == 32 => raw.copy_from_slice(&d),
            _ => {
                return Err(SealError::Key(format!(
                    "the master key from {source} must be 32 bytes: raw, 64 hex digits or base64"
                )))
            }
        }
        Ok(Self::from_raw(raw, source))
    }

    fn from_raw(raw: Zeroizing<[u8; 32]>, source: MasterKeySource) -> Self {
        let mut h = Sha256::new();
        h.update(b"facegate/master-key-id/v1\0");
        h.update(&raw[..]);
        let id = hex::encode(&h.finalize()[..8]);
        Self {
            cipher: XChaCha20Poly1305::new((&*raw).into()),
            id,
            source,
        }
    }

    /// A fresh master key as 64 hex digits (`facegate keys new`).
    pub fn generate_hex() -> Zeroizing<String> {
        let key = XChaCha20Poly1305::generate_key(&mut OsRng);
        Zeroizing::new(hex::encode(key))
    }

    /// A fingerprint naming this key in messages and beside each wrapped data key; it
    /// reveals nothing of the key.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn source(&self) -> &MasterKeySource {
        &self.source
    }

    /// `dk` sealed under this key, bound to its partition.
    pub fn wrap(&self, dk: &DataKey, partition: &str) -> Vec<u8> {
        seal_with(&self.cipher, dk.raw(), &wrap_aad(partition))
    }

    pub fn unwrap(&self, wrapped: &[u8], partition: &str) -> Result<DataKey, SealError> {
        let plain = open_with(&self.cipher, wrapped, &wrap_aad(partition), "data key")?;
        let mut raw = Zeroizing::new([0u8; 32]);
        if plain.len() != 32 {
            return Err(SealError::Malformed("data key"));
        }
        raw.copy_from_slice(&plain);
        Ok(DataKey::from_raw(raw))
    }
}

fn wrap_aad(partition: &str) -> Vec<u8> {
    [b"facegate/data-key/v1\0".as_slice(), partition.as_bytes()].concat()
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %path.display(), "the master key file is readable by other users; chmod 600 it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_master_key_parses_hex_base64_and_raw_and_wraps_per_partition() {
        let hex_key = MasterKey::generate_hex();
        let a = MasterKey::parse(format!("{}\n", &*hex_key).as_bytes(), MasterKeySource::Env).unwrap_or_else(|e| panic!("{e}"));
        let raw = hex::decode(&*hex_key).unwrap_or_default();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
        let b = MasterKey::parse(b64.as_bytes(), MasterKeySource::Env).unwrap_or_else(|e| panic!("{e}"));
        let c = MasterKey::parse(&raw, MasterKeySource::Env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((a.id(), b.id()), (c.id(), c.id()));
        assert!(!format!("{a:?}").contains(&hex_key[..16]), "Debug never shows the key");
        let err = MasterKey::parse(b"short", MasterKeySource::Env).unwrap_err().to_string();
        assert!(err.contains("32 bytes") && err.contains(MASTER_KEY_ENV), "{err}");

        let dk = DataKey::generate();
        let wrapped = a.wrap(&dk, "staff");
        let back = b.unwrap(&wrapped, "staff").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.raw(), dk.raw());
        assert!(a.unwrap(&wrapped, "guests").is_err(), "a wrapped key is bound to its partition");
        let other = MasterKey::parse(MasterKey::generate_hex().as_bytes(), MasterKeySource::Env).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(other.id(), a.id());
        assert!(other.unwrap(&wrapped, "staff").is_err());
    }

    #[test]
    fn encryption_on_without_a_key_names_what_is_missing() {
        let cfg = EncryptionConfig {
            mode: EncryptionMode::On,
            master_key_file: Some(PathBuf::from("/nonexistent/facegate.key")),
        };
        let err = MasterKey::load(&cfg).unwrap_err().to_string();
        assert!(
            err.contains("master_key_file") && err.contains("/nonexistent/facegate.key"),
            "{err}"
        );
        let off = EncryptionConfig {
            mode: EncryptionMode::Off,
            ..cfg
        };
        assert!(matches!(MasterKey::load(&off), Ok(None)));
    }
}
