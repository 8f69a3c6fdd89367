//! Configuration: compiled-in defaults <- config/default.toml <- the file given by
//! `--config` <- environment (`FACEGATE__SECTION__KEY`). A bad value stops start-up with a
//! message naming the option.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use facegate_actors::{GalleryConfig, PoolConfig};
use facegate_models::PipelineConfig;

pub use crate::audit::{AuditConfig, OnFailure as AuditOnFailure};
pub use crate::collision::{CollisionConfig, Policy as CollisionPolicy};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub runtime: RuntimeConfig,
    pub pool: PoolConfig,
    pub pipeline: PipelineConfig,
    pub gallery: GalleryConfig,
    pub collision: CollisionConfig,
    pub audit: AuditConfig,
    pub auth: AuthConfig,
    pub webhooks: WebhookConfig,
}

/// Webhook subscriptions and the delivery of their events (`src/events`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// The outbox (subscriptions and queued deliveries), relative to gallery.data_dir.
    pub outbox_file: PathBuf,
    /// Deliveries in flight at once (one thread each).
    pub senders: usize,
    /// A receiver must answer within this; otherwise the attempt failed.
    pub timeout_ms: u64,
    /// The pause after the first failed attempt, doubled after each further one, capped.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// An event still undelivered this long after it happened is dropped.
    pub max_age_secs: u64,
    /// Networks a webhook URL may not resolve into, checked at subscription and at each
    /// delivery ("169.254.0.0/16", "10.0.0.0/8", "::1", ...).
    pub deny_networks: Vec<String>,
    pub max_subscriptions_per_partition: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            outbox_file: PathBuf::from("events.sqlite"),
            senders: 4,
            timeout_ms: 5_000,
            retry_base_ms: 500,
            retry_max_ms: 300_000,
            max_age_secs: 86_400,
            deny_networks: vec!["169.254.0.0/16".into(), "fe80::/10".into(), "0.0.0.0/8".into()],
            max_subscriptions_per_partition: 16,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// Without API keys the server binds to loopback only, unless this is true.
    pub allow_remote_without_keys: bool,
    /// HTTP worker threads; 0 = one per core.
    pub http_workers: usize,
    /// Largest request body accepted (base64 makes an image 4/3 larger).
    pub max_body_bytes: usize,
    /// A biometric request still unanswered after this many seconds gets 503.
    pub request_timeout_secs: u64,
    /// Request bytes held in memory at once across every connection; past it, new bodies
    /// are refused (503 + Retry-After) before they are read. 0 = a sixteenth of the RAM,
    /// at most 512 MiB.
    pub body_budget_bytes: usize,
    /// A body must have arrived whole this many seconds after the handler starts reading
    /// it; a stalled upload is answered 408 and its connection closed.
    pub body_timeout_secs: u64,
    /// A request refused because the pipeline is full or the body budget is spent is
    /// answered (503 + Retry-After) after this pause, so that clients retrying at once do
    /// not take the CPU from the requests being served.
    pub overload_delay_ms: u64,
    pub default_top_k: usize,
    pub max_top_k: usize,
    /// Log lines as JSON objects instead of text.
    pub json_logs: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// The ONNX Runtime shared library (from the PyPI onnxruntime wheel; models/fetch.py).
    pub onnxruntime: PathBuf,
    /// Execution provider: "cpu" or "cuda".
    pub provider: String,
    /// With "cuda": refuse to start when CUDA cannot be used, instead of a warning and the CPU.
    pub provider_required: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// No keys: every request is allowed (and the server stays on loopback).
    pub keys: Vec<ApiKey>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// A name for logs; the key itself is never logged.
    pub name: String,
    pub key: String,
    /// Partitions this key may use; "*" = all.
    pub partitions: Vec<String>,
    /// "search" (search, verify), "enrol" (enrol, delete), "admin" (stats, metrics).
    pub rights: BTreeSet<Right>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Right {
    Search,
    Enrol,
    Admin,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            allow_remote_without_keys: false,
            http_workers: 0,
            max_body_bytes: 16 << 20,
            request_timeout_secs: 30,
            body_budget_bytes: 0,
            body_timeout_secs: 20,
            overload_delay_ms: 250,
            default_top_k: 5,
            max_top_k: 100,
            json_logs: false,
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            onnxruntime: PathBuf::from("models/runtime/libonnxruntime.so.1.31.1"),
            provider: "cpu".into(),
            provider_required: false,
        }
    }
}

/// Where facegate's own files are when the working directory is elsewhere.
const SOURCE_ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A relative path as given if it exists from the working directory, else from the
/// source tree (so `cargo run` from anywhere finds models/ without exports).
pub fn resolve(path: &Path) -> PathBuf {
    if path.is_absolute() || path.exists() {
        return path.to_path_buf();
    }
    let from_source = Path::new(SOURCE_ROOT).join(path);
    if from_source.exists() {
        from_source
    } else {
        path.to_path_buf()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// The layers every facegate command reads, highest last: compiled-in defaults,
/// config/default.toml, the `--config` file, then `FACEGATE__SECTION__KEY` variables.
/// A tool extracts only the sections it needs (`T` without `deny_unknown_fields` ignores
/// the rest); a bad value names its option.
pub fn extract<T: serde::de::DeserializeOwned>(file: Option<&Path>) -> Result<T, ConfigError> {
    let mut fig = Figment::from(Serialized::defaults(Config::default()));
    let default_file = resolve(Path::new("config/default.toml"));
    if default_file.is_file() {
        fig = fig.merge(Toml::file(default_file));
    }
    if let Some(f) = file {
        if !f.is_file() {
            return Err(ConfigError(format!("--config {}: no such file", f.display())));
        }
        fig = fig.merge(Toml::file(f));
    }
    fig.merge(Env::prefixed("FACEGATE__").split("__"))
        .extract()
        .map_err(|e| ConfigError(describe(e)))
}

impl Config {
    /// The server's whole configuration, layered, its paths resolved and validated.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut cfg: Config = extract(file)?;
        cfg.resolve_paths();
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn resolve_paths(&mut self) {
        self.runtime.onnxruntime = resolve(&self.runtime.onnxruntime);
        self.pipeline.models_dir = resolve(&self.pipeline.models_dir);
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        let fail = |m: &str| Err(ConfigError(m.to_string()));
        if s.max_top_k == 0 || s.default_top_k == 0 || s.default_top_k > s.max_top_k {
            return fail("server.default_top_k must be within 1..=server.max_top_k");
        }
        if s.max_body_bytes < 1024 {
            return fail("server.max_body_bytes must be at least 1024");
        }
        if s.body_timeout_secs == 0 {
            return fail("server.body_timeout_secs must be positive");
        }
        if s.body_budget_bytes != 0 && s.body_budget_bytes < s.max_body_bytes {
            return fail("server.body_budget_bytes must be 0 (sized for the machine) or at least server.max_body_bytes");
        }
        if s.request_timeout_secs == 0 {
            return fail("server.request_timeout_secs must be positive");
        }
        if !matches!(self.runtime.provider.as_str(), "cpu" | "cuda") {
            return fail("runtime.provider must be \"cpu\" or \"cuda\"");
        }
        let w = &self.webhooks;
        if w.senders == 0 || w.senders > 64 {
            return fail("webhooks.senders must be within 1..=64");
        }
        if w.timeout_ms == 0 || w.retry_base_ms == 0 || w.retry_max_ms < w.retry_base_ms || w.max_age_secs == 0 {
            return fail("webhooks: timeout_ms, retry_base_ms and max_age_secs must be positive, retry_max_ms >= retry_base_ms");
        }
        for n in &w.deny_networks {
            crate::events::guard::Net::parse(n).map_err(|e| ConfigError(format!("webhooks.deny_networks: {e}")))?;
        }
        if self.pool.max_inflight == 0 {
            return fail("pool.max_inflight must be positive");
        }
        if self.gallery.max_templates_per_subject == 0 || self.gallery.max_templates_per_subject > 100 {
            return fail("gallery.max_templates_per_subject must be within 1..=100");
        }
        if self.gallery.backend == facegate_actors::GalleryBackend::Postgres {
            let pg = &self.gallery.postgres;
            if pg.url.is_empty() {
                return fail("gallery.backend = \"postgres\" needs gallery.postgres.url");
            }
            pg.connect_config().map_err(ConfigError)?;
            if pg.timeout_ms == 0 || pg.timeout_ms >= s.request_timeout_secs * 1000 {
                return fail("gallery.postgres.timeout_ms must be positive and below server.request_timeout_secs");
            }
        }
        if !(-1.0..=1.0).contains(&self.collision.threshold) {
            return fail("collision.threshold must be within -1..1 (a cosine)");
        }
        for p in &self.collision.also_search {
            if facegate_actors::names::validate_partition(p).is_err() {
                return Err(ConfigError(format!("collision.also_search: {p:?} is not a valid partition name")));
            }
        }
        let mut seen = BTreeSet::new();
        for k in &self.auth.keys {
            if k.key.len() < 16 {
                return Err(ConfigError(format!("auth.keys[{}].key must be at least 16 characters", k.name)));
            }
            if !seen.insert(k.key.clone()) {
                return Err(ConfigError(format!("auth.keys[{}].key is used twice", k.name)));
            }
            for p in &k.partitions {
                if p != "*" && facegate_actors::names::validate_partition(p).is_err() {
                    return Err(ConfigError(format!(
                        "auth.keys[{}].partitions: invalid partition name {p:?}",
                        k.name
                    )));
                }
            }
        }
        self.pipeline
            .validate()
            .map_err(|e| ConfigError(e.to_string().replace("configuration: ", "")))
    }
}

/// figment's message with the option's full path.
fn describe(e: figment::Error) -> String {
    e.into_iter()
        .map(|e| {
            let path = e.path.join(".");
            if path.is_empty() {
                e.to_string()
            } else {
                format!("{path}: {}", e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn a_bad_value_names_its_option() {
        let fig = Figment::from(Serialized::defaults(Config::default())).merge(Toml::string("[server]\nport = \"eighty\""));
        let err = describe(fig.extract::<Config>().unwrap_err());
        assert!(err.contains("server.port"), "{err}");
        let mut cfg = Config::default();
        cfg.pipeline.quality.threshold.verify = 3.0;
        assert!(cfg.validate().unwrap_err().0.contains("pipeline.quality.threshold.verify"));
        let fig = Figment::from(Serialized::defaults(Config::default())).merge(Toml::string("[server]\nprot = 1"));
        assert!(describe(fig.extract::<Config>().unwrap_err()).contains("prot"));
    }

    #[test]
    fn a_gate_threshold_is_one_number_or_one_per_purpose() {
        let extract = |toml: &str| {
            Figment::from(Serialized::defaults(Config::default()))
                .merge(Toml::string(toml))
                .extract::<Config>()
                .map_err(describe)
        };
        let one = extract("[pipeline.pad]\nthreshold = 0.3").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(one.pipeline.pad.threshold, facegate_models::config::PerPurpose::all(0.3));
        let each = extract("[pipeline.pad.threshold]\nenrol = 0.5").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(each.pipeline.pad.threshold.enrol, 0.5);
        assert_eq!(each.pipeline.pad.threshold.search, Config::default().pipeline.pad.threshold.search);
        let bad = extract("[pipeline.pad.threshold]\nenrl = 0.5").unwrap_err();
        assert!(bad.contains("pipeline.pad.threshold"), "{bad}");
    }
}

#[cfg(test)]
mod default_file {
    use super::*;

    /// config/default.toml documents every option with its compiled-in default.
    #[test]
    fn default_toml_matches_the_compiled_in_defaults() {
        let text = std::fs::read_to_string(Path::new(SOURCE_ROOT).join("config/default.toml")).unwrap_or_else(|e| panic!("{e}"));
        let from_file: Config = Figment::new()
            .merge(Toml::string(&text))
            .extract()
            .unwrap_or_else(|e| panic!("{e}"));
        let a = serde_json::to_value(&from_file).unwrap_or_default();
        let b = serde_json::to_value(Config::default()).unwrap_or_default();
        assert_eq!(a, b);
    }
}
