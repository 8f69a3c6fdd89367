//! facegate: the server. Evaluation, benchmarks and folder enrolment are `facegate-tools`.

use std::path::PathBuf;
use std::process::ExitCode;

use actix_web::{middleware, web, App, HttpServer};
use clap::{Parser, Subcommand};
use facegate::app::{self, AppState};
use facegate::config::Config;

#[derive(Parser)]
#[command(
    name = "facegate",
    version,
    about = "Face-biometric REST service: search, verify, enrol, delete behind quality, PAD and MAD gates"
)]
struct Cli {
    /// Configuration file (layered over config/default.toml; FACEGATE__SECTION__KEY overrides both).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the HTTP service.
    Serve,
    /// Check the configuration and every model file, run each model once, and exit.
    Check,
    /// The master key and the partitions' data keys (run while the service is stopped).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Whole partitions (run while the service is stopped).
    Partitions {
        #[command(subcommand)]
        command: PartitionsCommand,
    },
    /// The audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Gallery maintenance.
    Gallery {
        #[command(subcommand)]
        command: GalleryCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Write a new random master key (64 hex digits) to a new file, readable by its owner only.
    New {
        #[arg(long)]
        out: PathBuf,
    },
    /// Wrap every partition's data key under a new master key; the templates are not
    /// re-encrypted. Then point gallery.encryption.master_key_file (or FACEGATE_MASTER_KEY) at it.
    Rewrap {
        #[arg(long)]
        new_master_key_file: PathBuf,
    },
    /// Re-encrypt one partition's templates under a fresh data key.
    Rekey {
        #[arg(long)]
        partition: String,
    },
}

#[derive(Subcommand)]
enum PartitionsCommand {
    /// Delete a partition: its data key and rows are erased first (crypto-shredding), then its files.
    Drop {
        name: String,
        /// Confirm: this cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain of the audit file: exit 0 when every record is intact, else
    /// name the first broken record and exit 1.
    Verify {
        /// The data directory holding audit.sqlite (default: gallery.data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum GalleryCommand {
    /// Copy partitions between the embedded store (gallery.data_dir) and PostgreSQL
    /// (gallery.postgres.url): resumable, verified by counts and a checksum of the templates.
    /// Stop the nodes writing to the source first.
    Migrate {
        #[arg(long, value_parser = parse_backend)]
        from: facegate_actors::GalleryBackend,
        #[arg(long, value_parser = parse_backend)]
        to: facegate_actors::GalleryBackend,
        /// One partition (default: every partition of the source).
        #[arg(long)]
        partition: Option<String>,
    },
}

fn parse_backend(s: &str) -> Result<facegate_actors::GalleryBackend, String> {
    match s {
        "embedded" => Ok(facegate_actors::GalleryBackend::Embedded),
        "postgres" => Ok(facegate_actors::GalleryBackend::Postgres),
        _ => Err("embedded or postgres".into()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("facegate: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(cfg.server.json_logs);
    let result = match cli.command {
        Command::Serve => serve(cfg),
        Command::Check => check(cfg),
        Command::Audit(AuditCommand::Verify { data_dir }) => return audit_verify(&data_dir.unwrap_or(cfg.gallery.data_dir)),
        Command::Keys { command } => keys(cfg, command),
        Command::Partitions { command } => partitions(cfg, command),
        Command::Gallery {
            command: GalleryCommand::Migrate { from, to, partition },
        } => migrate(&cfg, from, to, partition.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("facegate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `facegate audit verify`: the verdict on stdout, 0 only for an intact chain.
fn audit_verify(data_dir: &std::path::Path) -> ExitCode {
    let path = facegate::audit::file(data_dir);
    match facegate::audit::chain::verify_file(&path) {
        Ok(v) => {
            let from = if v.anchor_seq > 0 {
                format!(" (records up to {} were pruned; verified from their anchor)", v.anchor_seq)
            } else {
                String::new()
            };
            println!(
                "{}: {} records intact{from}; head: record {} sha256 {}",
                path.display(),
                v.records,
                v.head_seq,
                v.head_hash
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{}: BROKEN: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,ort=warn".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

type AnyError = Box<dyn std::error::Error>;

fn start(cfg: Config) -> Result<std::sync::Arc<AppState>, AnyError> {
    let state = AppState::start(cfg)?;
    let info = state.pool.info();
    tracing::info!(version = %info.runtime.version, provider = %info.runtime.provider, library = %info.runtime.library, "ONNX Runtime loaded");
    for f in &info.files {
        tracing::info!(role = %f.role, file = %f.file, source = %f.source, licence = %f.licence, "model loaded");
    }
    tracing::info!(model_id = %info.model_id, dim = info.dim, workers = info.workers, "pipeline ready");
    let pc = &state.cfg.pipeline;
    for (gate, t) in [("quality", pc.quality.threshold), ("pad", pc.pad.threshold)] {
        tracing::info!(gate, enrol = %format!("{:.3}", t.enrol), verify = %format!("{:.3}", t.verify), search = %format!("{:.3}", t.search), "gate thresholds");
        if t.enrol == 0.0 && t.verify == 0.0 && t.search == 0.0 {
            tracing::info!(
                gate,
                "this gate's thresholds are 0: it measures and reports its score but refuses nothing"
            );
        }
    }
    tracing::info!(policy = ?state.cfg.collision.policy, threshold = %format!("{:.3}", state.cfg.collision.threshold), also_search = ?state.cfg.collision.also_search, "identity-collision check at enrolment");
    match state.gallery.master_key() {
        Some(m) => {
            tracing::info!(master_key = %m.id(), source = %m.source(), cipher = "XChaCha20-Poly1305", "templates and index snapshots are encrypted at rest under per-partition data keys")
        }
        None => tracing::warn!(
            "encryption at rest is OFF (gallery.encryption.mode = \"off\"): templates and index snapshots are stored in plaintext"
        ),
    }
    match &info.mad {
        Some(m) => tracing::info!(model = %m.version, threshold = %format!("{:.4}", m.threshold), "MAD gate at enrolment"),
        None => tracing::warn!("no MAD model configured: the morphing-attack gate passes every enrolment (health: onnx_mad false)"),
    }
    Ok(state)
}

fn check(cfg: Config) -> Result<(), AnyError> {
    actix_web::rt::System::new().block_on(async move {
        let state = start(cfg)?;
        let h = state.pool.health().await;
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "models": h, "pool": state.pool.info() }))?
        );
        Ok(())
    })
}

fn keys(cfg: Config, command: KeysCommand) -> Result<(), AnyError> {
    use facegate_actors::seal::{admin, MasterKey};
    match command {
        KeysCommand::New { out } => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::File::options()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&out)
                .map_err(|e| format!("{}: {e}", out.display()))?;
            let key = MasterKey::generate_hex();
            f.write_all(key.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            let id = MasterKey::parse(key.as_bytes(), facegate_actors::seal::MasterKeySource::File(out.clone()))?;
            println!(
                "master key {} written to {} (keep a copy: without it the gallery cannot be read)",
                id.id(),
                out.display()
            );
        }
        KeysCommand::Rewrap { new_master_key_file } => {
            let _lock = admin::lock_data_dir(&cfg.gallery.data_dir)?;
            let new = MasterKey::from_file(&new_master_key_file)?;
            for line in admin::rewrap(&cfg.gallery, &new)? {
                println!("{line}");
            }
            println!(
                "done: set gallery.encryption.master_key_file = {:?} (or FACEGATE_MASTER_KEY) before the next start",
                new_master_key_file
            );
        }
        KeysCommand::Rekey { partition } => {
            let _lock = admin::lock_data_dir(&cfg.gallery.data_dir)?;
            let n = admin::rekey(&cfg.gallery, &partition)?;
            println!("{partition}: {n} templates re-encrypted under a fresh data key");
        }
    }
    Ok(())
}

fn partitions(cfg: Config, command: PartitionsCommand) -> Result<(), AnyError> {
    use facegate_actors::seal::admin;
    match command {
        PartitionsCommand::Drop { name, yes } => {
            if !yes {
                return Err(format!("dropping partition {name:?} destroys its key and every template: add --yes").into());
            }
            let _lock = admin::lock_data_dir(&cfg.gallery.data_dir)?;
            admin::drop_partition(&cfg.gallery, &name)?;
            println!("{name}: data key and templates erased, files removed");
        }
    }
    Ok(())
}

fn migrate(
    cfg: &Config,
    from: facegate_actors::GalleryBackend,
    to: facegate_actors::GalleryBackend,
    partition: Option<&str>,
) -> Result<(), AnyError> {
    use facegate_actors::gallery::postgres::migrate::{self, Progress};
    let style = indicatif::ProgressStyle::with_template("{prefix:>12} [{bar:40}] {pos}/{len} templates, {per_sec}, eta {eta}")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    let mut bar: Option<(String, indicatif::ProgressBar)> = None;
    migrate::run(&cfg.gallery, from, to, partition, &mut |p| match p {
        Progress::Copying { partition, done, total } => {
            if bar.as_ref().is_none_or(|(name, _)| *name != partition) {
                let b = indicatif::ProgressBar::new(total)
                    .with_style(style.clone())
                    .with_prefix(partition.clone());
                bar = Some((partition, b));
            }
            if let Some((_, b)) = &bar {
                b.set_position(done);
            }
        }
        Progress::Verified {
            partition,
            templates,
            checksum,
        } => {
            if let Some((_, b)) = bar.take() {
                b.finish();
            }
            println!("{partition}: {templates} templates copied and verified (sha256 {checksum})");
        }
    })?;
    Ok(())
}

fn serve(cfg: Config) -> Result<(), AnyError> {
    // One server per data directory; the key and partition commands wait for it to stop.
    let _lock = facegate_actors::seal::admin::lock_data_dir(&cfg.gallery.data_dir)?;
    actix_web::rt::System::new().block_on(async move {
        let mut host = cfg.server.host.clone();
        let loopback = host.parse::<std::net::IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(host == "localhost");
        if cfg.auth.keys.is_empty() {
            if !loopback && !cfg.server.allow_remote_without_keys {
                tracing::warn!(requested = %host, "no API keys configured: binding to 127.0.0.1 only (configure auth.keys, or set server.allow_remote_without_keys)");
                host = "127.0.0.1".into();
            } else {
                tracing::warn!("no API keys configured: every request is allowed");
            }
        }
        let (port, workers) = (cfg.server.port, cfg.server.http_workers);
        let state = web::Data::from(start(cfg)?);
        let gallery = state.gallery.clone();
        let mut server = HttpServer::new(move || {
            App::new().app_data(state.clone()).wrap(middleware::from_fn(app::observe)).configure(app::routes)
        })
        // In-flight requests (and so in-flight enrolments) finish before shutdown.
        .shutdown_timeout(30);
        if workers > 0 {
            server = server.workers(workers);
        }
        let server = server.bind((host.as_str(), port))?;
        tracing::info!(%host, port, "facegate listening");
        server.run().await?;
        // In-flight requests are done: commit what is queued and leave snapshots behind.
        gallery.close().await;
        tracing::info!("facegate stopped");
        Ok(())
    })
}
