//! One partition's gallery: a supervised actor that owns the durable store and serialises
//! writes, and a shared read handle that searches use concurrently.
//!
//! Writes arrive as messages; every write queued while one batch commits joins the next
//! batch, which is one SQLite transaction (one fsync): group commit. A write is answered
//! only after its batch is durable, then the in-memory index is updated under a short
//! write lock. A panic or storage error restarts the actor (actix `Supervisor`), which
//! reloads everything from the store while the partition reports itself degraded.

pub mod index;
pub mod postgres;
pub mod snapshot;
pub(crate) mod store;
mod subjects;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use parking_lot::RwLock;
use tokio::sync::oneshot;

pub use index::{Candidate, GalleryIndex, IndexKind};
pub use store::{Applied, Write};

use crate::seal::MasterKey;
use crate::GalleryError;
use store::{Codec, Reader, Store};

/// Whether a partition answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionStatus {
    Ready,
    /// Starting or restarting after a failure: reloading from its store.
    Loading,
    /// Its store could not be opened or read; retried periodically.
    Degraded,
}

/// What searches share with the actor.
pub struct Shared {
    pub partition: String,
    state: RwLock<Option<Loaded>>,
    reader: parking_lot::Mutex<Option<Reader>>,
    status: AtomicU8,
    /// Why the partition is degraded (its last load error), for the admin health detail.
    reason: parking_lot::Mutex<Option<String>>,
    max_per_subject: usize,
}

pub(crate) struct Loaded {
    index: GalleryIndex,
    model_id: Option<String>,
}

impl Shared {
    fn new(partition: String, max_per_subject: usize) -> Self {
        Self {
            partition,
            state: RwLock::new(None),
            reader: parking_lot::Mutex::new(None),
            status: AtomicU8::new(1),
            reason: parking_lot::Mutex::new(None),
            max_per_subject,
        }
    }

    pub fn status(&self) -> PartitionStatus {
        match self.status.load(Ordering::Acquire) {
            0 => PartitionStatus::Ready,
            1 => PartitionStatus::Loading,
            _ => PartitionStatus::Degraded,
        }
    }

    /// The reason of the last failed load while degraded.
    pub fn reason(&self) -> Option<String> {
        self.reason.lock().clone()
    }

    pub(crate) fn set_status(&self, s: PartitionStatus) {
        let v = match s {
            PartitionStatus::Ready => 0,
            PartitionStatus::Loading => 1,
            PartitionStatus::Degraded => 2,
        };
        self.status.store(v, Ordering::Release);
    }

    fn with_loaded<T>(&self, f: impl FnOnce(&Loaded) -> Result<T, GalleryError>) -> Result<T, GalleryError> {
        let guard = self.state.read();
        match (&*guard, self.status()) {
            (Some(loaded), PartitionStatus::Ready) => f(loaded),
            _ => Err(GalleryError::Unavailable(self.partition.clone())),
        }
    }

    fn check_model(&self, loaded: &Loaded, model_id: &str) -> Result<(), GalleryError> {
        match &loaded.model_id {
            Some(stored) if stored != model_id => Err(GalleryError::ModelMismatch {
                partition: self.partition.clone(),
                stored: stored.clone(),
                requested: model_id.into(),
            }),
            _ => Ok(()),
        }
    }

    fn index_err(&self, e: faiss::error::Error) -> GalleryError {
        GalleryError::Index {
            partition: self.partition.clone(),
            detail: e.to_string(),
        }
    }

    /// 1:N search; runs on the caller's thread under a read lock.
    pub fn search(&self, query: &[f32], model_id: &str, top_k: usize, min_score: f32) -> Result<Vec<Candidate>, GalleryError> {
        self.with_loaded(|l| {
            self.check_model(l, model_id)?;
            if query.len() != l.index.dim() {
                return Ok(Vec::new());
            }
            l.index
                .search(query, top_k, min_score, self.max_per_subject)
                .map_err(|e| self.index_err(e))
        })
    }

    /// 1:1: the subject's best score against `query`, from its stored templates.
    pub fn verify(&self, subject: &str, query: &[f32], model_id: &str) -> Result<f32, GalleryError> {
        self.with_loaded(|l| self.check_model(l, model_id))?;
        let guard = self.reader.lock();
        let reader = guard.as_ref().ok_or_else(|| GalleryError::Unavailable(self.partition.clone()))?;
        let vectors = reader.subject_vectors(subject).map_err(|e| GalleryError::Storage {
            partition: self.partition.clone(),
            detail: e.to_string(),
        })?;
        vectors
            .iter()
            .map(|v| v.iter().zip(query).map(|(a, b)| a * b).sum::<f32>())
            .reduce(f32::max)
            .ok_or_else(|| GalleryError::SubjectNotFound(subject.into()))
    }

    pub fn contains(&self, subject: &str) -> Result<bool, GalleryError> {
        self.with_loaded(|l| Ok(l.index.contains(subject)))
    }

    /// Subjects and templates, when loaded.
    pub fn counts(&self) -> Option<(usize, usize)> {
        self.state.read().as_ref().map(|l| (l.index.subjects(), l.index.templates()))
    }

    pub fn probe(&self) -> bool {
        self.with_loaded(|l| Ok(l.index.probe())).unwrap_or(false)
    }
}

pub(crate) type Reply = oneshot::Sender<Result<Applied, GalleryError>>;

/// How a partition indexes its templates.
#[derive(Debug, Clone, Copy)]
pub struct IndexSettings {
    pub kind: IndexKind,
    /// IVF only: lists, lists probed per query.
    pub nlist: u32,
    pub nprobe: u32,
    /// LSH only: the short list re-scored exactly is `rerank` x the hits asked for.
    pub rerank: f32,
    /// Approximate kinds: below this many templates a partition stays exact.
    pub min_templates: usize,
}

pub struct GalleryActor {
    dir: PathBuf,
    dim: usize,
    max_per_subject: usize,
    index: IndexSettings,
    shared: Arc<Shared>,
    /// Wraps the partition's data key; None with encryption off.
    master: Option<Arc<MasterKey>>,
    store: Option<Store>,
    /// Set when the actor stops after a failure: its index is not snapshotted then.
    failed: bool,
    /// Set once the actor has been closed for shutdown.
    closed: bool,
    pending: Vec<(Write, Reply)>,
    flush_scheduled: bool,
    /// Counts the index snapshots removed by deletes; a fresh one is written once the
    /// partition has had no such delete for `RESNAPSHOT_AFTER`.
    snapshot_removals: u64,
    /// The "postgres" backend: the database is the store, the index its replica.
    pg: Option<postgres::replica::PartitionDb>,
}

/// Quiet time after a delete removed an IVF snapshot before a new one is written (so a
/// burst of deletes rewrites it once, and a restart after a crash need not retrain).
const RESNAPSHOT_AFTER: Duration = Duration::from_secs(60);

impl GalleryActor {
    pub fn new(
        dir: PathBuf,
        partition: String,
        dim: usize,
        max_per_subject: usize,
        index: IndexSettings,
        master: Option<Arc<MasterKey>>,
    ) -> (Self, Arc<Shared>) {
        let shared = Arc::new(Shared::new(partition, max_per_subject));
        let actor = Self {
            dir,
            dim,
            max_per_subject,
            index,
            shared: shared.clone(),
            master,
            store: None,
            failed: false,
            closed: false,
            pending: Vec::new(),
            flush_scheduled: false,
            snapshot_removals: 0,
            pg: None,
        };
        (actor, shared)
    }

    /// Keep this partition in PostgreSQL instead of its directory.
    pub(crate) fn with_postgres(mut self, backend: Arc<postgres::PgBackend>) -> Self {
        self.pg = Some(postgres::replica::PartitionDb::new(backend, &self.shared.partition));
        self
    }

    /// Open the store and rebuild the index from it (the store is the truth).
    fn load(&mut self) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("create {}: {e}", self.dir.display()))?;
        let store =
            Store::open(&self.dir, &self.shared.partition, self.max_per_subject, self.master.as_deref()).map_err(|e| e.to_string())?;
        let codec = store.codec().clone();
        let model_id = store.model_id().map_err(|e| e.to_string())?;
        let count = store.count().map_err(|e| e.to_string())?;
        let s = self.index;
        let ivf = s.kind == IndexKind::Ivf && count >= s.min_templates.max(s.nlist as usize * 39);
        let lsh = s.kind == IndexKind::Lsh && count >= s.min_templates.max(1);
        let restored = if ivf {
            snapshot::read(&self.dir, self.dim, s.nlist, &codec)
        } else {
            None
        };
        let restored = restored.and_then(|snap| {
            self.restore(&store, snap)
                .map_err(|e| tracing::warn!(partition = %self.shared.partition, error = %e, "snapshot not usable"))
                .ok()
        });
        let index = match restored {
            Some(index) => index,
            None => {
                let index = if lsh {
                    // Per-bit thresholds at the medians of a sample of the partition.
                    let sample = store.sample(20_000).map_err(|e| e.to_string())?;
                    GalleryIndex::new_lsh(self.dim, &sample, s.rerank).map_err(|e| e.to_string())?
                } else if ivf {
                    // FAISS asks for at least 39 training points per list; 64 keeps k-means stable.
                    let sample = store.sample(s.nlist as usize * 64).map_err(|e| e.to_string())?;
                    GalleryIndex::new_ivf(self.dim, &sample, s.nlist, s.nprobe).map_err(|e| e.to_string())?
                } else {
                    GalleryIndex::new(self.dim).map_err(|e| e.to_string())?
                };
                let index = add_rows(&store, 0, index)?;
                self.write_snapshot(&index, &codec);
                index
            }
        };
        let reader = Reader::open(&self.dir, codec).map_err(|e| e.to_string())?;
        tracing::info!(partition = %self.shared.partition, kind = ?index.kind(), templates = count, "index built");
        *self.shared.state.write() = Some(Loaded { index, model_id });
        *self.shared.reader.lock() = Some(reader);
        self.store = Some(store);
        Ok(())
    }

    /// A restored IVF snapshot brought up to date with the store.
    fn restore(&self, store: &Store, snap: snapshot::Snapshot) -> Result<GalleryIndex, String> {
        let mut index = GalleryIndex::from_ivf(snap.index, self.dim, self.index.nprobe);
        let mut stale: std::collections::HashSet<i64> = snap.ids.into_iter().collect();
        let mut missing = 0usize;
        store
            .for_each_subject(snap.meta.max_id, |id, subject| {
                if stale.remove(&id) {
                    index.register(id, subject);
                } else {
                    missing += 1;
                }
            })
            .map_err(|e| e.to_string())?;
        if missing > 0 {
            return Err(format!("the snapshot lacks {missing} stored templates; rebuilding from the store"));
        }
        let stale: Vec<i64> = stale.into_iter().collect();
        index.remove_stale(&stale).map_err(|e| e.to_string())?;
        let index = add_rows(store, snap.meta.max_id, index)?;
        tracing::info!(partition = %self.shared.partition, deleted_since = stale.len(), "index restored from its snapshot");
        Ok(index)
    }

    /// Snapshot an IVF index (a flat one rebuilds from the store as fast as it would read).
    fn write_snapshot(&self, index: &GalleryIndex, codec: &Codec) {
        if let Some((ivf, ids)) = index.ivf_parts() {
            let meta = snapshot::Meta {
                dim: self.dim,
                nlist: self.index.nlist,
                max_id: ids.iter().copied().max().unwrap_or(0),
                templates: ids.len(),
                sealed: codec.is_sealed(),
            };
            let start = std::time::Instant::now();
            match snapshot::write(&self.dir, ivf, &ids, &meta, codec) {
                Ok(()) => {
                    tracing::info!(partition = %self.shared.partition, ms = start.elapsed().as_millis() as u64, "index snapshot written")
                }
                Err(e) => tracing::warn!(partition = %self.shared.partition, error = %e, "index snapshot failed; the next start rebuilds"),
            }
        }
    }

    /// Graceful shutdown: writes already queued are committed, and a large partition leaves
    /// a fresh snapshot for a fast start (not after a failure). Once.
    fn close(&mut self, ctx: &mut Context<Self>) {
        if self.closed {
            return;
        }
        self.closed = true;
        if self.store.is_some() && !self.pending.is_empty() {
            self.flush(ctx);
        }
        // A PostgreSQL partition keeps no files on the node.
        if !self.failed && self.pg.is_none() {
            if let (Some(loaded), Some(store)) = (self.shared.state.read().as_ref(), self.store.as_ref()) {
                self.write_snapshot(&loaded.index, store.codec());
            }
        }
    }

    fn start_loading(&mut self, ctx: &mut Context<Self>) {
        self.shared.set_status(PartitionStatus::Loading);
        match self.load() {
            Ok(()) => {
                *self.shared.reason.lock() = None;
                self.shared.set_status(PartitionStatus::Ready);
                tracing::info!(partition = %self.shared.partition, counts = ?self.shared.counts(), "partition loaded");
            }
            Err(e) => {
                *self.shared.reason.lock() = Some(e.clone());
                self.shared.set_status(PartitionStatus::Degraded);
                tracing::error!(partition = %self.shared.partition, error = %e, "partition failed to load; retrying in 5 s");
                ctx.run_later(Duration::from_secs(5), |act, ctx| act.start_loading(ctx));
            }
        }
    }

    /// Commit a batch durably, then apply it to the index.
    fn commit(&mut self, writes: &[Write]) -> Result<Vec<Applied>, String> {
        let store = self.store.as_mut().ok_or("store not open")?;
        let applied = store.apply(writes).map_err(|e| e.to_string())?;
        let removed = applied.iter().any(|a| match a {
            Applied::Deleted { .. } => true,
            Applied::Enrolled { evicted, .. } => !evicted.is_empty(),
            Applied::NotFound | Applied::ModelMismatch { .. } => false,
        });
        if removed {
            // An index snapshot still holds the removed templates: gone before the answer.
            if snapshot::remove(&self.dir)? {
                self.snapshot_removals += 1;
            }
        }
        let mut guard = self.shared.state.write();
        let loaded = guard.as_mut().ok_or("index not loaded")?;
        apply_to_index(loaded, writes, &applied)?;
        Ok(applied)
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        self.flush_scheduled = false;
        if self.pending.is_empty() {
            return;
        }
        let (writes, replies): (Vec<Write>, Vec<Reply>) = std::mem::take(&mut self.pending).into_iter().unzip();
        if self.pg.is_some() {
            return self.pg_flush(ctx, writes, replies);
        }
        let removals = self.snapshot_removals;
        let outcome = catch_unwind(AssertUnwindSafe(|| self.commit(&writes)));
        match outcome {
            Ok(Ok(applied)) => {
                for (reply, a) in replies.into_iter().zip(applied) {
                    let _ = reply.send(Ok(a));
                }
                self.retry_erasure(ctx);
                if self.snapshot_removals != removals {
                    self.resnapshot_later(ctx);
                }
            }
            failed => {
                let detail = match failed {
                    Ok(Err(e)) => e,
                    _ => "panic while writing".to_string(),
                };
                tracing::error!(partition = %self.shared.partition, error = %detail, "write batch failed; restarting the partition");
                for reply in replies {
                    let _ = reply.send(Err(GalleryError::Storage {
                        partition: self.shared.partition.clone(),
                        detail: "write failed; the partition is restarting".into(),
                    }));
                }
                self.failed = true;
                ctx.stop(); // the Supervisor restarts us and `started` reloads from the store
            }
        }
    }
}

impl GalleryActor {
    /// A delete's checkpoint still found a reader in the WAL after waiting 5 s for it
    /// (SQLite's busy timeout): retried every 100 ms until the WAL is truncated.
    fn retry_erasure(&mut self, ctx: &mut Context<Self>) {
        if self.store.as_ref().is_some_and(|s| s.erase_pending()) {
            ctx.run_later(Duration::from_millis(100), |act, ctx| {
                if let Some(store) = act.store.as_mut() {
                    if let Err(e) = store.checkpoint() {
                        tracing::warn!(partition = %act.shared.partition, error = %e, "erasure checkpoint failed; retrying");
                    }
                }
                act.retry_erasure(ctx);
            });
        }
    }

    /// After a delete removed the IVF snapshot: a fresh one once deletes have been quiet
    /// for `RESNAPSHOT_AFTER`.
    fn resnapshot_later(&mut self, ctx: &mut Context<Self>) {
        let seen = self.snapshot_removals;
        if seen == 0 {
            return;
        }
        ctx.run_later(RESNAPSHOT_AFTER, move |act, _| {
            if act.snapshot_removals != seen || act.closed || act.failed {
                return;
            }
            act.snapshot_removals = 0;
            if let (Some(loaded), Some(store)) = (act.shared.state.read().as_ref(), act.store.as_ref()) {
                act.write_snapshot(&loaded.index, store.codec());
            }
        });
    }
}

impl Actor for GalleryActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.pg.is_some() {
            return self.pg_load(ctx);
        }
        self.start_loading(ctx);
    }

    fn stopping(&mut self, ctx: &mut Self::Context) -> Running {
        self.close(ctx);
        Running::Stop
    }
}

impl Supervised for GalleryActor {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        tracing::warn!(partition = %self.shared.partition, "partition actor restarting");
        self.shared.set_status(PartitionStatus::Loading);
        self.store = None;
        if let Some(db) = self.pg.as_mut() {
            db.reset();
        }
        self.failed = false;
        self.closed = false;
        *self.shared.state.write() = None;
        *self.shared.reader.lock() = None;
        for (_, reply) in self.pending.drain(..) {
            let _ = reply.send(Err(GalleryError::Unavailable(self.shared.partition.clone())));
        }
        self.flush_scheduled = false;
    }
}

/// A write to commit durably.
pub struct WriteMsg(pub Write);

impl Message for WriteMsg {
    type Result = Result<Applied, GalleryError>;
}

impl Handler<WriteMsg> for GalleryActor {
    type Result = ResponseFuture<Result<Applied, GalleryError>>;

    fn handle(&mut self, msg: WriteMsg, ctx: &mut Self::Context) -> Self::Result {
        let partition = self.shared.partition.clone();
        if self.store.is_none() && !self.pg.as_ref().is_some_and(|db| db.loaded()) {
            return Box::pin(async move { Err(GalleryError::Unavailable(partition)) });
        }
        let (tx, rx) = oneshot::channel();
        self.pending.push((msg.0, tx));
        if !self.flush_scheduled {
            // Runs after the mailbox messages already queued: they join this batch.
            self.flush_scheduled = true;
            ctx.notify(Flush);
        }
        Box::pin(async move { rx.await.unwrap_or(Err(GalleryError::Unavailable(partition))) })
    }
}

struct Flush;

impl Message for Flush {
    type Result = ();
}

impl Handler<Flush> for GalleryActor {
    type Result = ();
    fn handle(&mut self, _: Flush, ctx: &mut Self::Context) {
        self.flush(ctx);
    }
}

/// Close for shutdown (see `GalleryActor::close`); answered when done.
pub struct Close;

impl Message for Close {
    type Result = ();
}

impl Handler<Close> for GalleryActor {
    type Result = ();
    fn handle(&mut self, _: Close, ctx: &mut Self::Context) {
        self.close(ctx);
    }
}

/// Fault injection for tests and drills: the actor panics inside a handler, exactly as
/// a bug would, and must be restarted by its supervisor. Only with the `test-hooks` feature,
/// which production builds do not enable.
#[cfg(feature = "test-hooks")]
pub struct InjectFault;

#[cfg(feature = "test-hooks")]
impl Message for InjectFault {
    type Result = ();
}

#[cfg(feature = "test-hooks")]
impl Handler<InjectFault> for GalleryActor {
    type Result = ();
    fn handle(&mut self, _: InjectFault, ctx: &mut Self::Context) {
        let outcome = catch_unwind(|| panic!("injected fault"));
        if outcome.is_err() {
            self.failed = true;
            ctx.stop();
        }
    }
}

/// Hold the actor's thread for a while, as a slow fsync would (tests of concurrency; the
/// `test-hooks` feature only).
#[cfg(feature = "test-hooks")]
pub struct Stall(pub Duration);

#[cfg(feature = "test-hooks")]
impl Message for Stall {
    type Result = ();
}

#[cfg(feature = "test-hooks")]
impl Handler<Stall> for GalleryActor {
    type Result = ();
    fn handle(&mut self, msg: Stall, _: &mut Self::Context) {
        std::thread::sleep(msg.0);
    }
}

/// Add every stored template after row `after` to `index`, in chunks.
fn add_rows(store: &Store, after: i64, mut index: GalleryIndex) -> Result<GalleryIndex, String> {
    let mut chunk = Vec::with_capacity(8192);
    let mut failure = None;
    store
        .for_each_after(after, |row| {
            if failure.is_some() {
                return;
            }
            chunk.push((row.id, row.subject, row.vector));
            if chunk.len() == chunk.capacity() {
                failure = index.add(&chunk).err();
                chunk.clear();
            }
        })
        .map_err(|e| e.to_string())?;
    if let Some(e) = failure {
        return Err(e.to_string());
    }
    index.add(&chunk).map_err(|e| e.to_string())?;
    Ok(index)
}

/// Apply a committed batch to the in-memory index (both backends).
pub(crate) fn apply_to_index(loaded: &mut Loaded, writes: &[Write], applied: &[Applied]) -> Result<(), String> {
    for (w, a) in writes.iter().zip(applied) {
        match (w, a) {
            (
                Write::Enrol {
                    subject, vector, model_id, ..
                },
                Applied::Enrolled { id, evicted },
            ) => {
                loaded.index.remove(evicted).map_err(|e| e.to_string())?;
                loaded
                    .index
                    .add(&[(*id, subject.clone(), vector.clone())])
                    .map_err(|e| e.to_string())?;
                loaded.model_id.get_or_insert_with(|| model_id.clone());
            }
            (_, Applied::Deleted { ids }) => loaded.index.remove(ids).map_err(|e| e.to_string())?,
            _ => {}
        }
    }
    Ok(())
}
