//! The "postgres" gallery backend: PostgreSQL is the source of truth, shared by every node.
//!
//! Each node keeps, per partition, the same in-memory index as the embedded backend, as a
//! replica of the database: every enrol and delete appends rows to `facegate_changes` under
//! a per-partition sequence, inside the transaction that makes it (see `schema`). A node's
//! partition actor applies the changes after the last sequence it has seen, woken by
//! LISTEN/NOTIFY, by a poll of every partition's last sequence, and after any reconnect; a
//! write is acknowledged after COMMIT and once the writing node's index holds it.
//!
//! Connections live on one small tokio runtime of their own (a thread per backend), so the
//! actors' and HTTP workers' runtimes only await their answers; every database call has a
//! deadline (`gallery.postgres.timeout_ms`), so a database that vanishes gives 503, not a hang.

pub mod migrate;
pub(crate) mod replica;
pub mod schema;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls};

pub use replica::CatchUp;
pub use schema::{decode_template, encode_template};

/// Where a partition's templates live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// SQLite + FAISS files per partition under `gallery.data_dir`, one node.
    #[default]
    Embedded,
    /// One PostgreSQL database shared by every node (`gallery.postgres`).
    Postgres,
}

/// `[gallery.postgres]`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    /// libpq connection string or URL; several hosts are allowed
    /// (`host=a,b target_session_attrs=read-write` or `postgresql://u@a:5432,b:5432/db?...`).
    pub url: String,
    /// Password, when it is not in `url` (FACEGATE__GALLERY__POSTGRES__PASSWORD).
    pub password: Option<String>,
    /// Deadline of every database call, connecting included.
    pub timeout_ms: u64,
    /// How often each node compares every partition's last sequence with its replica's,
    /// beside the LISTEN/NOTIFY wake-ups.
    pub poll_ms: u64,
    /// Changes kept per partition for replicas that fall behind; a replica further behind
    /// reloads its partition.
    pub change_retention: i64,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            password: None,
            timeout_ms: 5_000,
            poll_ms: 1_000,
            change_retention: 1_000_000,
        }
    }
}

// The URL and the password may hold a secret: never printed.
impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &"<redacted>")
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("timeout_ms", &self.timeout_ms)
            .field("poll_ms", &self.poll_ms)
            .field("change_retention", &self.change_retention)
            .finish()
    }
}

impl PostgresConfig {
    /// The parsed connection settings; errors name the option, never its value.
    pub fn connect_config(&self) -> Result<tokio_postgres::Config, String> {
        let mut cfg: tokio_postgres::Config = self
            .url
            .parse()
            .map_err(|e: tokio_postgres::Error| format!("gallery.postgres.url is not a valid connection string or URL: {e}"))?;
        if cfg.get_hosts().is_empty() {
            return Err("gallery.postgres.url names no host".into());
        }
        if let Some(pw) = &self.password {
            cfg.password(pw.as_str());
        }
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(self.timeout());
        }
        // A peer that vanishes without a FIN (a cut network) is noticed by keepalives.
        cfg.keepalives(true).keepalives_idle(Duration::from_secs(5));
        cfg.application_name("facegate");
        Ok(cfg)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(100))
    }
}

/// Why a database call failed. Messages never hold the connection string or password.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DbError {
    #[error("the database did not answer within {0} ms")]
    Timeout(u64),
    #[error("database: {0}")]
    Db(String),
    #[error("{0}")]
    Data(String),
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        // The server's own message ("password authentication failed for user ..."): the
        // error's Display alone says only "db error".
        match e.as_db_error() {
            Some(db) => DbError::Db(format!("{}: {}", db.severity(), db.message())),
            None => DbError::Db(match std::error::Error::source(&e) {
                Some(src) => format!("{e}: {src}"),
                None => e.to_string(),
            }),
        }
    }
}

/// What the listener tells the partition directory.
#[derive(Debug)]
pub enum Event {
    /// A partition changed (NOTIFY) or was seen with a newer sequence (poll).
    Changed(String),
    /// Connected (again): every partition catches up.
    Up,
    /// Lost the database: partitions answer 503 until they catch up again.
    Down,
}

/// One database cluster as seen by this node: its runtime, a shared reader, the listener.
pub struct PgBackend {
    pub cfg: PostgresConfig,
    connect: tokio_postgres::Config,
    rt: tokio::runtime::Handle,
    reader: tokio::sync::Mutex<Option<Client>>,
    online: AtomicBool,
    /// Last sequence each partition's replica has applied (the poll compares with it).
    seen: DashMap<String, Arc<AtomicI64>>,
}

/// The runtime the connections run on, owned by the partition directory: when it goes,
/// every connection and the listener stop.
pub struct PgRuntime(Option<tokio::runtime::Runtime>);

impl Drop for PgRuntime {
    fn drop(&mut self) {
        // Dropping a runtime inside another one panics; its tasks just stop.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl PgBackend {
    /// Connect once (a wrong URL or password stops start-up), create the schema, and list
    /// the partitions. Blocks the calling thread for at most the deadline.
    pub fn open(cfg: PostgresConfig) -> Result<(Arc<Self>, PgRuntime, Vec<String>), String> {
        if cfg.url.is_empty() {
            return Err("gallery.backend = \"postgres\" needs gallery.postgres.url".into());
        }
        let connect = cfg.connect_config()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("facegate-pg")
            .enable_all()
            .build()
            .map_err(|e| format!("gallery.postgres: runtime: {e}"))?;
        let handle = rt.handle().clone();
        let rt = PgRuntime(Some(rt));
        let backend = Arc::new(Self {
            cfg,
            connect,
            rt: handle.clone(),
            reader: tokio::sync::Mutex::new(None),
            online: AtomicBool::new(false),
            seen: DashMap::new(),
        });
        let b = backend.clone();
        // The caller may be inside a runtime (actix), where blocking on another one panics.
        let names = std::thread::scope(|s| {
            s.spawn(|| {
                handle.block_on(async {
                    let client = b.connect().await?;
                    schema::create(&client).await?;
                    let rows = client.query("SELECT name FROM facegate_partitions ORDER BY name", &[]).await?;
                    Ok::<_, DbError>(rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<String>>())
                })
            })
            .join()
            .unwrap_or_else(|_| Err(DbError::Data("panic while connecting".into())))
        })
        .map_err(|e| format!("gallery.postgres.url: cannot use the database: {e}"))?;
        backend.online.store(true, Ordering::Release);
        Ok((backend, rt, names))
    }

    /// A new connection, its I/O driven on the backend's runtime, within the deadline.
    pub async fn connect(&self) -> Result<Client, DbError> {
        let cfg = self.connect.clone();
        let handle = self.rt.clone();
        let inner = handle.clone();
        let task = handle.spawn(async move {
            let (client, conn) = cfg.connect(NoTls).await?;
            inner.spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "database connection closed");
                }
            });
            Ok::<_, tokio_postgres::Error>(client)
        });
        let ms = self.cfg.timeout_ms;
        match tokio::time::timeout(self.cfg.timeout(), task).await {
            Ok(Ok(r)) => r.map_err(DbError::from),
            // The directory (and its runtime) is gone.
            Ok(Err(_)) => Err(DbError::Data("the database backend is closed".into())),
            Err(_) => Err(DbError::Timeout(ms)),
        }
    }

    /// `f` within the deadline.
    pub async fn deadline<T>(&self, f: impl std::future::Future<Output = Result<T, DbError>>) -> Result<T, DbError> {
        tokio::time::timeout(self.cfg.timeout(), f)
            .await
            .unwrap_or(Err(DbError::Timeout(self.cfg.timeout_ms)))
    }

    /// Is the database reachable (as the listener last saw it)?
    pub fn online(&self) -> bool {
        self.online.load(Ordering::Acquire)
    }

    pub(crate) fn seen(&self, partition: &str) -> Arc<AtomicI64> {
        self.seen.entry(partition.to_string()).or_default().clone()
    }

    /// Every template of `subject` (verify reads the source of truth, as the embedded
    /// backend does), on the shared reader connection.
    pub async fn subject_templates(&self, partition: &str, subject: &str) -> Result<Vec<Vec<f32>>, DbError> {
        self.deadline(async {
            let mut guard = self.reader.lock().await;
            let client = match guard.take() {
                Some(c) if !c.is_closed() => c,
                _ => self.connect().await?,
            };
            let rows = client
                .query(
                    "SELECT template FROM facegate_templates WHERE partition = $1 AND subject_id = $2",
                    &[&partition, &subject],
                )
                .await;
            let rows = match rows {
                Ok(r) => {
                    *guard = Some(client);
                    r
                }
                Err(e) => return Err(e.into()),
            };
            rows.iter().map(|r| decode_template(r.get::<_, &[u8]>(0))).collect()
        })
        .await
    }

    /// The listener: LISTEN for changes, poll every partition's sequence, report the
    /// connection's state; reconnects forever. Runs on the backend's runtime.
    pub fn spawn_listener(self: &Arc<Self>, events: mpsc::UnboundedSender<Event>) {
        let weak = Arc::downgrade(self);
        self.rt.spawn(async move {
            loop {
                let Some(b) = weak.upgrade() else { return };
                let outcome = b.listen_once(&events).await;
                if b.online.swap(false, Ordering::AcqRel) {
                    tracing::warn!(error = ?outcome.err(), "lost the database; partitions answer 503 until it is back");
                    let _ = events.send(Event::Down);
                }
                drop(b);
                if events.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
    }

    async fn listen_once(&self, events: &mpsc::UnboundedSender<Event>) -> Result<(), DbError> {
        let cfg = self.connect.clone();
        let (client, mut conn) = tokio::time::timeout(self.cfg.timeout(), cfg.connect(NoTls))
            .await
            .map_err(|_| DbError::Timeout(self.cfg.timeout_ms))??;
        let (ntx, mut nrx) = mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
            while let Some(m) = messages.next().await {
                match m {
                    Ok(AsyncMessage::Notification(n)) => {
                        let _ = ntx.send(n.payload().to_string());
                    }
                    Ok(_) => {}
                    Err(e) => return Err(DbError::from(e)),
                }
            }
            Ok(())
        });
        let result: Result<(), DbError> = async {
            self.deadline(async { Ok(client.batch_execute(&format!("LISTEN {}", schema::CHANNEL)).await?) })
                .await?;
            if !self.online.swap(true, Ordering::AcqRel) {
                tracing::info!("database reachable; partitions catch up");
            }
            // Wake everyone after any (re)connect: notifications sent meanwhile are lost.
            let _ = events.send(Event::Up);
            let mut poll = tokio::time::interval(Duration::from_millis(self.cfg.poll_ms.max(50)));
            loop {
                tokio::select! {
                    n = nrx.recv() => match n {
                        Some(partition) => { let _ = events.send(Event::Changed(partition)); }
                        None => return Err(DbError::Db("listener connection closed".into())),
                    },
                    _ = poll.tick() => {
                        // The poll doubles as the liveness check of the connection.
                        let rows = self
                            .deadline(async { Ok(client.query("SELECT name, last_seq FROM facegate_partitions", &[]).await?) })
                            .await?;
                        for r in rows {
                            let (name, seq): (String, i64) = (r.get(0), r.get(1));
                            let seen = self.seen(&name).load(Ordering::Acquire);
                            if seq != seen {
                                let _ = events.send(Event::Changed(name));
                            }
                        }
                    }
                }
                if events.is_closed() {
                    return Ok(());
                }
            }
        }
        .await;
        driver.abort();
        result
    }
}

/// 1:1 against the subject's templates as the database holds them.
pub async fn verify(
    pg: &PgBackend,
    shared: &super::Shared,
    subject: &str,
    query: &[f32],
    model_id: &str,
) -> Result<f32, crate::GalleryError> {
    shared.with_loaded(|l| shared.check_model(l, model_id))?;
    let vectors = pg.subject_templates(&shared.partition, subject).await.map_err(|e| {
        tracing::warn!(partition = %shared.partition, error = %e, "verify could not read the database");
        crate::GalleryError::Unavailable(shared.partition.clone())
    })?;
    vectors
        .iter()
        .map(|v| v.iter().zip(query).map(|(a, b)| a * b).sum::<f32>())
        .reduce(f32::max)
        .ok_or_else(|| crate::GalleryError::SubjectNotFound(subject.into()))
}
