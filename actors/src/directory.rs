//! The partition directory: every partition's actor and read handle, by name. Loads the
//! partitions found under the data directory at start and creates one on its first enrol.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix::prelude::*;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use crate::gallery::postgres::{self, Backend, CatchUp, Event, PgBackend, PgRuntime, PostgresConfig};
use crate::gallery::{store, Applied, Candidate, Close, GalleryActor, IndexKind, IndexSettings, PartitionStatus, Shared, Write, WriteMsg};
#[cfg(feature = "test-hooks")]
use crate::gallery::{InjectFault, Stall};
use crate::names::{validate_partition, validate_subject};
use crate::seal::{EncryptionConfig, MasterKey};
use crate::GalleryError;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GalleryConfig {
    /// "embedded" (SQLite + FAISS files under `data_dir`, one node) or "postgres" (one
    /// database shared by several nodes, `[gallery.postgres]`).
    pub backend: Backend,
    pub postgres: PostgresConfig,
    /// One sub-directory per partition, each with its SQLite store.
    pub data_dir: PathBuf,
    /// Templates kept per subject; an enrolment beyond it replaces the oldest.
    pub max_templates_per_subject: usize,
    /// "exact" (FAISS Flat), "lsh" (sign codes + exact re-scoring) or "ivf" (IVF-Flat).
    pub index: IndexKind,
    /// IVF: inverted lists and lists probed per search.
    pub ivf_nlist: u32,
    pub ivf_nprobe: u32,
    /// LSH: hits re-scored exactly, as a multiple of the hits a search needs.
    pub lsh_rerank: f32,
    /// An approximate partition stays exact below this size; it is built approximate when
    /// it loads past it.
    pub approx_min_templates: usize,
    /// Create the gallery's files and directories readable by this user only (0600 /
    /// 0700: the process umask becomes 077); false keeps the umask the service started with.
    pub private_files: bool,
    /// Templates and index snapshots sealed at rest (`[gallery.encryption]`).
    pub encryption: EncryptionConfig,
}

impl Default for GalleryConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Embedded,
            postgres: PostgresConfig::default(),
            data_dir: PathBuf::from("data"),
            max_templates_per_subject: 10,
            index: IndexKind::Exact,
            ivf_nlist: 1024,
            ivf_nprobe: 32,
            lsh_rerank: 32.0,
            approx_min_templates: 100_000,
            private_files: true,
            encryption: EncryptionConfig::default(),
        }
    }
}

impl GalleryConfig {
    fn index_settings(&self) -> IndexSettings {
        IndexSettings {
            kind: self.index,
            nlist: self.ivf_nlist.max(1),
            nprobe: self.ivf_nprobe.max(1),
            rerank: self.lsh_rerank.max(1.0),
            min_templates: self.approx_min_templates,
        }
    }
}

#[derive(Clone)]
struct Partition {
    addr: Addr<GalleryActor>,
    shared: Arc<Shared>,
    arbiter: ArbiterHandle,
}

/// One partition's line in stats and health.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionInfo {
    pub name: String,
    pub status: PartitionStatus,
    pub subjects: Option<usize>,
    pub templates: Option<usize>,
    /// Why it is degraded (its last load error).
    pub reason: Option<String>,
}

pub struct GalleryDirectory {
    cfg: GalleryConfig,
    dim: usize,
    master: Option<Arc<MasterKey>>,
    partitions: DashMap<String, Partition>,
    /// The database of the "postgres" backend, the runtime of its connections and the
    /// thread that hands its events to the partitions.
    pg: Option<Arc<PgBackend>>,
    pg_runtime: Option<PgRuntime>,
    pg_events: Option<ArbiterHandle>,
}

impl Drop for GalleryDirectory {
    fn drop(&mut self) {
        if let Some(a) = self.pg_events.take() {
            a.stop();
        }
        // Its connections and listener end with it.
        drop(self.pg_runtime.take());
    }
}

impl GalleryDirectory {
    /// Start an actor for every partition on disk. Must run inside an actix system.
    pub fn open(cfg: GalleryConfig, dim: usize) -> std::io::Result<Arc<Self>> {
        if cfg.private_files {
            // SQLite and FAISS create their files themselves (the journal, the snapshots):
            // only the umask reaches all of them.
            // SAFETY: umask only swaps the process's file-creation mask; it cannot fail.
            unsafe { libc::umask(0o077) };
        }
        std::fs::create_dir_all(&cfg.data_dir)?;
        warn_if_readable_by_others(&cfg.data_dir);
        if cfg.backend == Backend::Postgres {
            return Self::open_postgres(cfg, dim);
        }
        let master = MasterKey::load(&cfg.encryption)
            .map_err(|e| std::io::Error::other(e.to_string()))?
            .map(Arc::new);
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&cfg.data_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if validate_partition(&name).is_ok() && entry.path().join(store::FILE_NAME).is_file() {
                names.push(name);
            } else if entry.path().is_dir() {
                tracing::warn!(entry = %entry.path().display(), "ignoring a directory that is not a partition");
            }
        }
        if let Some(m) = &master {
            check_master_key(&cfg.data_dir, &names, m)?;
        }
        let dir = Arc::new(Self {
            cfg,
            dim,
            master,
            partitions: DashMap::new(),
            pg: None,
            pg_runtime: None,
            pg_events: None,
        });
        for name in &names {
            dir.start(name);
        }
        Ok(dir)
    }

    /// The master key in use: None with encryption off.
    pub fn master_key(&self) -> Option<&MasterKey> {
        self.master.as_deref()
    }

    /// The "postgres" backend: every partition in the database, and a listener that keeps
    /// them up to date and finds the partitions other nodes create.
    fn open_postgres(cfg: GalleryConfig, dim: usize) -> std::io::Result<Arc<Self>> {
        let (backend, runtime, names) = PgBackend::open(cfg.postgres.clone()).map_err(std::io::Error::other)?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let events = Arbiter::new();
        // Templates reach the database as the recognizer's floats: the seal of the
        // embedded store is not applied on this backend yet, and health says so.
        tracing::warn!("gallery.backend = postgres: templates are stored in PostgreSQL without encryption at rest");
        let dir = Arc::new(Self {
            cfg,
            dim,
            master: None,
            partitions: DashMap::new(),
            pg: Some(backend.clone()),
            pg_runtime: Some(runtime),
            pg_events: Some(events.handle()),
        });
        for name in names.iter().filter(|n| validate_partition(n).is_ok()) {
            dir.start(name);
        }
        backend.spawn_listener(tx);
        // Events are handled on an actix thread: starting a partition needs the system.
        let weak = Arc::downgrade(&dir);
        events.spawn(async move {
            while let Some(event) = rx.recv().await {
                let Some(dir) = weak.upgrade() else { return };
                dir.on_event(event);
            }
        });
        Ok(dir)
    }

    fn on_event(&self, event: Event) {
        match event {
            Event::Changed(name) => {
                if validate_partition(&name).is_ok() {
                    self.start(&name).addr.do_send(CatchUp);
                }
            }
            Event::Up => {
                for p in self.partitions.iter() {
                    p.addr.do_send(CatchUp);
                }
            }
            Event::Down => {
                for p in self.partitions.iter() {
                    if p.shared.status() == PartitionStatus::Ready {
                        p.shared.set_status(PartitionStatus::Degraded);
                    }
                }
            }
        }
    }

    /// The durable storage is reachable (always, for the embedded backend: its probe is
    /// the write to the data directory).
    pub fn storage_online(&self) -> bool {
        self.pg.as_ref().is_none_or(|b| b.online())
    }

    fn start(&self, name: &str) -> Partition {
        self.partitions
            .entry(name.to_string())
            .or_insert_with(|| {
                let (actor, shared) = GalleryActor::new(
                    self.cfg.data_dir.join(name),
                    name.to_string(),
                    self.dim,
                    self.cfg.max_templates_per_subject,
                    self.cfg.index_settings(),
                    self.master.clone(),
                );
                let actor = match &self.pg {
                    Some(b) => actor.with_postgres(b.clone()),
                    None => actor,
                };
                // Each partition has its own thread: a slow fsync in one never delays another.
                let arbiter = Arbiter::new();
                let addr = Supervisor::start_in_arbiter(&arbiter.handle(), move |_| actor);
                Partition {
                    addr,
                    shared,
                    arbiter: arbiter.handle(),
                }
            })
            .clone()
    }

    fn get(&self, name: &str) -> Result<Partition, GalleryError> {
        validate_partition(name)?;
        self.partitions
            .get(name)
            .map(|p| p.clone())
            .ok_or_else(|| GalleryError::PartitionNotFound(name.into()))
    }

    pub fn exists(&self, name: &str) -> bool {
        self.partitions.contains_key(name)
    }

    /// Partition names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.partitions.iter().map(|e| e.key().clone()).collect();
        names.sort();
        names
    }

    pub fn info(&self) -> Vec<PartitionInfo> {
        let mut out: Vec<PartitionInfo> = self
            .partitions
            .iter()
            .map(|e| {
                let counts = e.shared.counts();
                PartitionInfo {
                    name: e.key().clone(),
                    status: e.shared.status(),
                    subjects: counts.map(|c| c.0),
                    templates: counts.map(|c| c.1),
                    reason: e.shared.reason(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    async fn write(&self, p: &Partition, w: Write) -> Result<Applied, GalleryError> {
        p.addr
            .send(WriteMsg(w))
            .await
            .unwrap_or_else(|_| Err(GalleryError::Unavailable(p.shared.partition.clone())))
    }

    /// Store a template durably; creates the partition on its first enrolment.
    pub async fn enrol(&self, partition: &str, subject: &str, vector: Vec<f32>, model_id: &str, quality: f32) -> Result<(), GalleryError> {
        validate_partition(partition)?;
        validate_subject(subject)?;
        let p = self.start(partition);
        let w = Write::Enrol {
            subject: subject.into(),
            vector,
            model_id: model_id.into(),
            quality,
        };
        match self.write(&p, w).await? {
            Applied::Enrolled { .. } => Ok(()),
            Applied::ModelMismatch { stored } => Err(GalleryError::ModelMismatch {
                partition: partition.into(),
                stored,
                requested: model_id.into(),
            }),
            other => Err(GalleryError::Storage {
                partition: partition.into(),
                detail: format!("unexpected outcome {other:?}"),
            }),
        }
    }

    /// Remove every template of a subject, durably.
    pub async fn delete(&self, partition: &str, subject: &str) -> Result<(), GalleryError> {
        validate_subject(subject)?;
        let p = self.get(partition)?;
        match self.write(&p, Write::Delete { subject: subject.into() }).await? {
            Applied::Deleted { .. } => Ok(()),
            Applied::NotFound => Err(GalleryError::SubjectNotFound(subject.into())),
            other => Err(GalleryError::Storage {
                partition: partition.into(),
                detail: format!("unexpected outcome {other:?}"),
            }),
        }
    }

    /// 1:N search on the blocking pool: it never queues behind writes.
    pub async fn search(
        &self,
        partition: &str,
        query: Vec<f32>,
        model_id: &str,
        top_k: usize,
        min_score: f32,
    ) -> Result<Vec<Candidate>, GalleryError> {
        let p = self.get(partition)?;
        let model_id = model_id.to_string();
        blocking(&p, move |s| s.search(&query, &model_id, top_k, min_score)).await
    }

    pub async fn verify(&self, partition: &str, subject: &str, query: Vec<f32>, model_id: &str) -> Result<f32, GalleryError> {
        validate_subject(subject)?;
        let p = self.get(partition)?;
        if let Some(pg) = &self.pg {
            return postgres::verify(pg, &p.shared, subject, &query, model_id).await;
        }
        let (subject, model_id) = (subject.to_string(), model_id.to_string());
        blocking(&p, move |s| s.verify(&subject, &query, &model_id)).await
    }

    /// Is the subject enrolled? (Checked before running the image pipeline for verify.)
    pub fn contains(&self, partition: &str, subject: &str) -> Result<bool, GalleryError> {
        validate_subject(subject)?;
        self.get(partition)?.shared.contains(subject)
    }

    /// The index layer answers: a real FAISS call on a scratch index and on every ready
    /// partition.
    pub fn probe(&self) -> bool {
        let scratch = crate::gallery::GalleryIndex::new(self.dim).map(|i| i.probe()).unwrap_or(false);
        scratch
            && self
                .partitions
                .iter()
                .filter(|p| p.shared.status() == PartitionStatus::Ready)
                .all(|p| p.shared.probe())
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Close every partition (queued writes committed, snapshots written), then stop their
    /// actors and threads and forget them.
    pub async fn close(&self) {
        let all: Vec<Partition> = self.partitions.iter().map(|p| p.clone()).collect();
        for p in &all {
            let _ = p.addr.send(Close).await;
        }
        for p in &all {
            p.arbiter.stop();
        }
        self.partitions.clear();
    }

    /// Make one partition's actor panic (fault-isolation tests and drills).
    #[cfg(feature = "test-hooks")]
    pub async fn inject_fault(&self, partition: &str) -> Result<(), GalleryError> {
        let p = self.get(partition)?;
        p.addr
            .send(InjectFault)
            .await
            .map_err(|_| GalleryError::Unavailable(partition.into()))
    }

    /// Occupy one partition's writer for `d`, as a slow disk would (concurrency tests).
    #[cfg(feature = "test-hooks")]
    pub fn stall_writer(&self, partition: &str, d: std::time::Duration) -> Result<(), GalleryError> {
        let p = self.get(partition)?;
        p.addr.do_send(Stall(d));
        Ok(())
    }
}

async fn blocking<T: Send + 'static>(
    p: &Partition,
    f: impl FnOnce(&Shared) -> Result<T, GalleryError> + Send + 'static,
) -> Result<T, GalleryError> {
    let shared = p.shared.clone();
    let name = shared.partition.clone();
    tokio::task::spawn_blocking(move || f(&shared))
        .await
        .unwrap_or_else(|_| Err(GalleryError::Unavailable(name)))
}

/// Start-up with a master key that opens none of the encrypted partitions stops here,
/// before anything loads: it is the wrong key, not one damaged partition (which loads
/// degraded, naming why, while the others serve).
fn check_master_key(root: &Path, names: &[String], master: &MasterKey) -> std::io::Result<()> {
    let (mut opened, mut refused) = (0usize, Vec::new());
    for name in names {
        match store::key_of(&root.join(name)) {
            Ok(Some((wrapped_by, wrapped))) => match master.unwrap(&wrapped, name) {
                Ok(_) => opened += 1,
                Err(_) => refused.push(format!("{name} (wrapped under master key {wrapped_by})")),
            },
            Ok(None) => {}
            Err(e) => tracing::warn!(partition = %name, error = %e, "cannot read the partition's key; it will report degraded"),
        }
    }
    if opened == 0 && !refused.is_empty() {
        return Err(std::io::Error::other(format!(
            "the master key {} (from {}) opens none of the encrypted partitions: {}. Wrong master key: nothing was loaded",
            master.id(),
            master.source(),
            refused.join(", ")
        )));
    }
    for r in &refused {
        tracing::error!(partition = %r, master_key = %master.id(), "this partition's data key does not open with the master key; it stays degraded");
    }
    Ok(())
}

/// Warn, naming one, when files or directories under the gallery can be read by other
/// users (left by an earlier run with another umask, or copied in).
fn warn_if_readable_by_others(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let (mut loose, mut first) = (0usize, None);
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for path in std::iter::once(dir.clone()).chain(entries.flatten().map(|e| e.path())) {
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            if path != dir && meta.is_dir() {
                stack.push(path);
                continue;
            }
            if meta.permissions().mode() & 0o077 != 0 {
                loose += 1;
                first.get_or_insert(path);
            }
        }
    }
    if let Some(first) = first {
        tracing::warn!(
            files = loose,
            first = %first.display(),
            "gallery files are readable by other users; chmod -R go= the data directory"
        );
    }
}
