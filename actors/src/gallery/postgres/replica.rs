//! The partition actor's PostgreSQL side: load the partition into the index, commit write
//! batches, and apply every other node's changes after the last sequence applied.
//!
//! Each database call runs as a future the actor waits on (`ctx.wait`): the mailbox holds
//! writes meanwhile, and they form the next batch (group commit, as with SQLite). The index
//! is only ever changed here, in sequence order, so a replica is always a prefix of the
//! partition's history.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::StreamExt;
use tokio_postgres::IsolationLevel;

use super::schema::{self, Change, Committed, Conn};
use super::{decode_template, DbError, PgBackend};
use crate::gallery::{apply_to_index, GalleryActor, GalleryIndex, IndexKind, IndexSettings, Loaded, PartitionStatus, Reply, Write};
use crate::GalleryError;

/// Changes read per query while catching up.
const FEED_CHUNK: i64 = 10_000;

/// The PostgreSQL state of one partition's actor.
pub(crate) struct PartitionDb {
    backend: Arc<PgBackend>,
    conn: Option<Conn>,
    /// Last sequence applied to the index.
    last_seq: i64,
    seen: Arc<AtomicI64>,
    loaded: bool,
    retry_scheduled: bool,
}

impl PartitionDb {
    pub(crate) fn new(backend: Arc<PgBackend>, partition: &str) -> Self {
        let seen = backend.seen(partition);
        Self {
            backend,
            conn: None,
            last_seq: 0,
            seen,
            loaded: false,
            retry_scheduled: false,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.conn = None;
        self.last_seq = 0;
        self.loaded = false;
        self.retry_scheduled = false;
    }

    pub(crate) fn loaded(&self) -> bool {
        self.loaded
    }

    fn set_last(&mut self, seq: i64) {
        self.last_seq = seq;
        self.seen.store(seq, Ordering::Release);
    }
}

/// Wake a partition: apply the changes committed since its last sequence.
pub struct CatchUp;

impl Message for CatchUp {
    type Result = ();
}

impl Handler<CatchUp> for GalleryActor {
    type Result = ();
    fn handle(&mut self, _: CatchUp, ctx: &mut Self::Context) {
        self.pg_catch_up(ctx);
    }
}

/// A usable connection: the one given if it is still open, else a new one.
async fn ensure(conn: Option<Conn>, backend: &PgBackend) -> Result<Conn, DbError> {
    match conn {
        Some(c) if !c.client.is_closed() => Ok(c),
        _ => {
            let client = backend.connect().await?;
            backend.deadline(Conn::prepare(client)).await
        }
    }
}

enum Feed {
    UpToDate,
    Changes(Vec<Change>),
    /// The replica cannot follow the feed (it was pruned, or the database went back in
    /// time, e.g. restored): reload the partition.
    Reload,
}

/// Every change after `after` up to the database's last sequence.
async fn read_feed(conn: &Conn, partition: &str, after: i64) -> Result<Feed, DbError> {
    let Some((_, db_last)) = schema::head(conn, partition).await? else {
        return Ok(if after == 0 { Feed::UpToDate } else { Feed::Reload });
    };
    read_feed_to(conn, partition, after, db_last).await
}

async fn read_feed_to(conn: &Conn, partition: &str, after: i64, to: i64) -> Result<Feed, DbError> {
    if to < after {
        return Ok(Feed::Reload);
    }
    let mut out: Vec<Change> = Vec::new();
    let mut last = after;
    while last < to {
        let chunk = schema::feed(conn, partition, last, FEED_CHUNK).await?;
        let Some(first) = chunk.first() else { break };
        if first.seq != last + 1 {
            return Ok(Feed::Reload);
        }
        for c in &chunk {
            if c.seq != last + 1 {
                return Ok(Feed::Reload);
            }
            last = c.seq;
        }
        let short = (chunk.len() as i64) < FEED_CHUNK;
        out.extend(chunk);
        if short {
            break;
        }
    }
    Ok(if out.is_empty() { Feed::UpToDate } else { Feed::Changes(out) })
}

/// Apply feed changes in order to the index.
fn apply_changes(loaded: &mut Loaded, changes: &[Change]) -> Result<(), String> {
    let mut adds: Vec<(i64, String, Vec<f32>)> = Vec::new();
    for c in changes {
        match &c.added {
            Some((subject, vector, model)) => {
                loaded.model_id.get_or_insert_with(|| model.clone());
                adds.push((c.id, subject.clone(), vector.clone()));
            }
            None => {
                // Order matters only between an add and a removal of the same id, and an
                // id is removed only after it was added: flush the adds first.
                loaded.index.add(&adds).map_err(|e| e.to_string())?;
                adds.clear();
                loaded.index.remove(&[c.id]).map_err(|e| e.to_string())?;
            }
        }
    }
    loaded.index.add(&adds).map_err(|e| e.to_string())
}

/// Build the index of a partition from one consistent snapshot of the database.
async fn load_index(
    conn: &mut Conn,
    partition: &str,
    dim: usize,
    s: IndexSettings,
) -> Result<(GalleryIndex, Option<String>, i64, usize), DbError> {
    let tx = conn
        .client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let head = tx
        .query_opt("SELECT model_id, last_seq FROM facegate_partitions WHERE name = $1", &[&partition])
        .await?;
    let (model, last_seq): (Option<String>, i64) = head.map(|r| (r.get(0), r.get(1))).unwrap_or((None, 0));
    let count: i64 = tx
        .query_one("SELECT count(*) FROM facegate_templates WHERE partition = $1", &[&partition])
        .await?
        .get(0);
    let count = count as usize;
    let ivf = s.kind == IndexKind::Ivf && count >= s.min_templates.max(s.nlist as usize * 39);
    let lsh = s.kind == IndexKind::Lsh && count >= s.min_templates.max(1);
    let sample = |n: usize| {
        let every = (count / n.max(1)).max(1) as i64;
        let tx = &tx;
        async move {
            let rows = tx
                .query(
                    "SELECT template FROM facegate_templates WHERE partition = $1 AND id % $2 = 0 LIMIT $3",
                    &[&partition, &every, &(n as i64)],
                )
                .await?;
            let mut out = Vec::with_capacity(rows.len() * dim);
            for r in rows {
                out.extend(decode_template(r.get::<_, &[u8]>(0))?);
            }
            Ok::<_, DbError>(out)
        }
    };
    let data = |e: faiss::error::Error| DbError::Data(e.to_string());
    let mut index = if lsh {
        GalleryIndex::new_lsh(dim, &sample(20_000).await?, s.rerank).map_err(data)?
    } else if ivf {
        GalleryIndex::new_ivf(dim, &sample(s.nlist as usize * 64).await?, s.nlist, s.nprobe).map_err(data)?
    } else {
        GalleryIndex::new(dim).map_err(data)?
    };
    let rows = tx
        .query_raw(
            "SELECT id, subject_id, template FROM facegate_templates WHERE partition = $1",
            [partition],
        )
        .await?;
    let mut rows = std::pin::pin!(rows);
    let mut chunk = Vec::with_capacity(8192);
    while let Some(r) = rows.next().await {
        let r = r?;
        chunk.push((r.get::<_, i64>(0), r.get::<_, String>(1), decode_template(r.get::<_, &[u8]>(2))?));
        if chunk.len() == chunk.capacity() {
            index.add(&chunk).map_err(data)?;
            chunk.clear();
        }
    }
    index.add(&chunk).map_err(data)?;
    tx.commit().await?;
    Ok((index, model, last_seq, count))
}

impl GalleryActor {
    fn db_failed(&mut self, ctx: &mut Context<Self>, what: &str, e: &DbError) {
        tracing::warn!(partition = %self.shared.partition, error = %e, "{what} failed; the partition answers 503 until the database is back");
        if let Some(db) = self.pg.as_mut() {
            db.conn = None;
        }
        self.shared.set_status(PartitionStatus::Degraded);
        self.pg_retry_later(ctx);
    }

    fn pg_retry_later(&mut self, ctx: &mut Context<Self>) {
        let Some(db) = self.pg.as_mut() else { return };
        if db.retry_scheduled {
            return;
        }
        db.retry_scheduled = true;
        ctx.run_later(Duration::from_secs(1), |act, ctx| {
            if let Some(db) = act.pg.as_mut() {
                db.retry_scheduled = false;
            }
            act.pg_catch_up(ctx);
        });
    }

    /// Load the partition from the database (at start, after a restart, or when the replica
    /// cannot follow the feed).
    pub(crate) fn pg_load(&mut self, ctx: &mut Context<Self>) {
        let Some(db) = self.pg.as_mut() else { return };
        if !db.loaded {
            self.shared.set_status(PartitionStatus::Loading);
        }
        let (conn, backend) = (db.conn.take(), db.backend.clone());
        let (partition, dim, settings) = (self.shared.partition.clone(), self.dim, self.index);
        let started = std::time::Instant::now();
        let fut = async move {
            let mut conn = ensure(conn, &backend).await?;
            let loaded = load_index(&mut conn, &partition, dim, settings).await?;
            Ok::<_, DbError>((conn, loaded))
        };
        ctx.wait(fut.into_actor(self).map(move |res, act, ctx| match res {
            Ok((conn, (index, model_id, last_seq, count))) => {
                tracing::info!(partition = %act.shared.partition, kind = ?index.kind(), templates = count, ms = started.elapsed().as_millis() as u64, "partition loaded from PostgreSQL");
                *act.shared.state.write() = Some(Loaded { index, model_id });
                if let Some(db) = act.pg.as_mut() {
                    db.conn = Some(conn);
                    db.loaded = true;
                    db.set_last(last_seq);
                }
                act.shared.set_status(PartitionStatus::Ready);
                // Changes committed while the snapshot was read are in the feed.
                act.pg_catch_up(ctx);
            }
            Err(e) => act.db_failed(ctx, "loading", &e),
        }));
    }

    /// Apply the changes after the replica's last sequence.
    pub(crate) fn pg_catch_up(&mut self, ctx: &mut Context<Self>) {
        let Some(db) = self.pg.as_mut() else { return };
        if !db.loaded {
            return self.pg_load(ctx);
        }
        let (conn, backend, after) = (db.conn.take(), db.backend.clone(), db.last_seq);
        let partition = self.shared.partition.clone();
        let fut = async move {
            let conn = ensure(conn, &backend).await?;
            let feed = backend.deadline(read_feed(&conn, &partition, after)).await?;
            Ok::<_, DbError>((conn, feed))
        };
        ctx.wait(fut.into_actor(self).map(|res, act, ctx| match res {
            Ok((conn, feed)) => {
                if let Some(db) = act.pg.as_mut() {
                    db.conn = Some(conn);
                }
                act.pg_apply_feed(ctx, feed);
            }
            Err(e) => act.db_failed(ctx, "catching up", &e),
        }));
    }

    fn pg_apply_feed(&mut self, ctx: &mut Context<Self>, feed: Feed) {
        match feed {
            Feed::UpToDate => self.shared.set_status(PartitionStatus::Ready),
            Feed::Reload => {
                tracing::warn!(partition = %self.shared.partition, "the replica cannot follow the change feed; reloading the partition");
                if let Some(db) = self.pg.as_mut() {
                    db.loaded = false;
                }
                self.pg_load(ctx);
            }
            Feed::Changes(changes) => {
                let last = changes.last().map(|c| c.seq).unwrap_or(0);
                let outcome = catch_unwind(AssertUnwindSafe(|| {
                    let mut guard = self.shared.state.write();
                    let loaded = guard.as_mut().ok_or("index not loaded")?;
                    apply_changes(loaded, &changes)
                }));
                match outcome {
                    Ok(Ok(())) => {
                        if let Some(db) = self.pg.as_mut() {
                            db.set_last(last);
                        }
                        self.shared.set_status(PartitionStatus::Ready);
                    }
                    failed => {
                        let detail = match failed {
                            Ok(Err(e)) => e,
                            _ => "panic".into(),
                        };
                        tracing::error!(partition = %self.shared.partition, error = %detail, "applying changes failed; reloading the partition");
                        if let Some(db) = self.pg.as_mut() {
                            db.loaded = false;
                        }
                        self.pg_load(ctx);
                    }
                }
            }
        }
    }

    /// Commit a batch in one transaction, apply it to the index, then answer its writers.
    pub(crate) fn pg_flush(&mut self, ctx: &mut Context<Self>, writes: Vec<Write>, replies: Vec<Reply>) {
        let partition = self.shared.partition.clone();
        let Some(db) = self.pg.as_mut() else { return };
        if !db.loaded {
            for r in replies {
                let _ = r.send(Err(GalleryError::Unavailable(partition.clone())));
            }
            return;
        }
        let (conn, backend, after) = (db.conn.take(), db.backend.clone(), db.last_seq);
        let (max, retention) = (self.max_per_subject, backend.cfg.change_retention);
        let fut = async move {
            let mut conn = ensure(conn, &backend).await?;
            let committed = backend
                .deadline(schema::apply(&mut conn, &partition, &writes, max, retention))
                .await?;
            // Another node wrote in between: our changes follow theirs in the feed.
            let feed = if committed.last_seq >= committed.first_seq && committed.first_seq != after + 1 {
                Some(backend.deadline(read_feed_to(&conn, &partition, after, committed.last_seq)).await)
            } else {
                None
            };
            Ok::<_, DbError>((conn, writes, committed, feed))
        };
        ctx.wait(fut.into_actor(self).map(move |res, act, ctx| match res {
            Ok((conn, writes, committed, feed)) => {
                if let Some(db) = act.pg.as_mut() {
                    db.conn = Some(conn);
                }
                act.pg_committed(ctx, &writes, committed, feed, replies);
            }
            Err(e) => {
                for r in replies {
                    let _ = r.send(Err(GalleryError::Unavailable(act.shared.partition.clone())));
                }
                act.db_failed(ctx, "a write batch", &e);
            }
        }));
    }

    fn pg_committed(
        &mut self,
        ctx: &mut Context<Self>,
        writes: &[Write],
        c: Committed,
        feed: Option<Result<Feed, DbError>>,
        replies: Vec<Reply>,
    ) {
        let Committed {
            applied,
            first_seq,
            last_seq,
        } = c;
        match feed {
            None if last_seq >= first_seq => {
                let outcome = catch_unwind(AssertUnwindSafe(|| {
                    let mut guard = self.shared.state.write();
                    let loaded = guard.as_mut().ok_or("index not loaded")?;
                    apply_to_index(loaded, writes, &applied)
                }));
                match outcome {
                    Ok(Ok(())) => {
                        if let Some(db) = self.pg.as_mut() {
                            db.set_last(last_seq);
                        }
                    }
                    _ => {
                        tracing::error!(partition = %self.shared.partition, "applying a committed batch failed; reloading the partition");
                        if let Some(db) = self.pg.as_mut() {
                            db.loaded = false;
                        }
                        self.shared.set_status(PartitionStatus::Loading);
                        self.pg_load(ctx);
                    }
                }
            }
            None => {}
            Some(Ok(feed)) => self.pg_apply_feed(ctx, feed),
            Some(Err(e)) => {
                // Committed, but this node could not read it back yet: the write is durable
                // and acknowledged, and the partition answers 503 until it has caught up, so
                // no read on this node misses it.
                self.db_failed(ctx, "reading back a committed batch", &e);
            }
        }
        for (reply, a) in replies.into_iter().zip(applied) {
            let _ = reply.send(Ok(a));
        }
    }
}
