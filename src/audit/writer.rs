//! The audit file and its single writer: a thread that owns the SQLite connection and
//! commits every record queued while the previous commit ran as one transaction (group
//! commit: one fsync for many requests). A request is answered once its batch is durable.
//! A transaction per batch means a kill at any instant leaves whole batches or none: the
//! chain's last record is complete or absent.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use super::record::{hash, Draft, Hash, Record, GENESIS};

pub const FILE_NAME: &str = "audit.sqlite";

/// Records committed in one transaction at most; the rest wait for the next.
const MAX_BATCH: usize = 4096;

/// How long a commit waits for a lock held by another process (an operator's sqlite3
/// shell, a backup) before the batch fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// After a failed commit, how often the writer tries the file again while idle.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// How often expired records are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Open (creating it if need be) the audit file for writing: WAL, synchronous=FULL.
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a commit returns only after the WAL is fsync'd; a request answered after its
    // record's commit has a durable record.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS records (
             seq INTEGER PRIMARY KEY,
             time_ms INTEGER NOT NULL,
             partition TEXT NOT NULL,
             body TEXT NOT NULL,
             hash BLOB NOT NULL);
         CREATE INDEX IF NOT EXISTS records_time ON records(time_ms);
         CREATE INDEX IF NOT EXISTS records_partition ON records(partition, time_ms);
         CREATE TABLE IF NOT EXISTS record_subjects (
             seq INTEGER NOT NULL,
             subject TEXT NOT NULL,
             PRIMARY KEY (seq, subject)) WITHOUT ROWID;
         CREATE INDEX IF NOT EXISTS record_subjects_subject ON record_subjects(subject, seq);",
    )?;
    Ok(conn)
}

/// The anchor left by pruning: the last pruned record's seq and hash.
pub fn anchor(conn: &Connection) -> rusqlite::Result<(u64, Hash)> {
    let get = |k: &str| -> rusqlite::Result<Option<String>> {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", params![k], |r| r.get(0))
            .optional()
    };
    let (Some(seq), Some(h)) = (get("anchor_seq")?, get("anchor_hash")?) else {
        return Ok((0, GENESIS));
    };
    let bad = |what: &str| rusqlite::Error::InvalidColumnName(format!("meta.{what} is malformed"));
    let seq = seq.parse::<u64>().map_err(|_| bad("anchor_seq"))?;
    Ok((seq, parse_hex(&h).ok_or_else(|| bad("anchor_hash"))?))
}

pub fn parse_hex(s: &str) -> Option<Hash> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The chain's head: the last record's seq and the hash of its bytes, or the anchor.
fn head(conn: &Connection) -> rusqlite::Result<(u64, Hash)> {
    let last: Option<(i64, String)> = conn
        .query_row("SELECT seq, body FROM records ORDER BY seq DESC LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    match last {
        Some((seq, body)) => Ok((seq as u64, hash(body.as_bytes()))),
        None => anchor(conn),
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

struct Job {
    draft: Draft,
    done: oneshot::Sender<Result<u64, String>>,
}

/// The handle requests append through.
pub struct Writer {
    tx: mpsc::Sender<Job>,
    /// False after a failed commit, until a commit (or an idle probe) succeeds again.
    healthy: Arc<AtomicBool>,
}

impl Writer {
    /// Open the file and start the writer thread. `retention` None keeps every record.
    pub fn start(path: &Path, retention: Option<Duration>) -> rusqlite::Result<Self> {
        let mut conn = open(path)?;
        let head = head(&conn)?;
        // The head, logged: kept elsewhere, it shows whether records were later cut from the
        // end of the chain, which the chain alone cannot.
        tracing::info!(head_seq = head.0, head_sha256 = %super::record::hex(&head.1), "audit chain head at start");
        if let Some(keep) = retention {
            prune(&mut conn, now_ms() - keep.as_millis() as i64)?;
        }
        let (tx, rx) = mpsc::channel();
        let healthy = Arc::new(AtomicBool::new(true));
        let flag = healthy.clone();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || run(conn, rx, head, flag, retention))
            .map_err(|e| rusqlite::Error::InvalidPath(format!("cannot start the audit writer: {e}").into()))?;
        Ok(Self { tx, healthy })
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Queue a record and wait until its batch is durable: its seq.
    pub async fn append(&self, draft: Draft) -> Result<u64, String> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Job { draft, done })
            .map_err(|_| "the audit writer has stopped".to_string())?;
        wait.await.map_err(|_| "the audit writer has stopped".to_string())?
    }
}

fn run(mut conn: Connection, rx: mpsc::Receiver<Job>, mut head: (u64, Hash), healthy: Arc<AtomicBool>, retention: Option<Duration>) {
    let mut last_prune = Instant::now();
    loop {
        let wait = if healthy.load(Ordering::Relaxed) {
            PRUNE_EVERY
        } else {
            PROBE_EVERY
        };
        let first = match rx.recv_timeout(wait) {
            Ok(job) => Some(job),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        if let Some(keep) = retention.filter(|_| last_prune.elapsed() >= PRUNE_EVERY) {
            match prune(&mut conn, now_ms() - keep.as_millis() as i64) {
                Ok(n) if n > 0 => tracing::info!(records = n, "audit: pruned records past audit.retention_days"),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "audit: pruning failed"),
            }
            last_prune = Instant::now();
        }
        let Some(first) = first else {
            if !healthy.load(Ordering::Relaxed) {
                // A write that commits nothing tells whether the file takes writes again.
                let ok = conn.execute_batch("BEGIN IMMEDIATE; COMMIT;").is_ok();
                if !ok {
                    let _ = conn.execute_batch("ROLLBACK;");
                }
                healthy.store(ok, Ordering::Relaxed);
            }
            continue;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (drafts, replies): (Vec<Draft>, Vec<_>) = batch.into_iter().map(|j| (j.draft, j.done)).unzip();
        match commit(&mut conn, head, drafts) {
            Ok(new_head) => {
                healthy.store(true, Ordering::Relaxed);
                let first_seq = head.0 + 1;
                head = new_head;
                for (i, reply) in replies.into_iter().enumerate() {
                    let _ = reply.send(Ok(first_seq + i as u64));
                }
            }
            Err(e) => {
                healthy.store(false, Ordering::Relaxed);
                tracing::error!(error = %e, records = replies.len(), "audit: a batch of records could not be written");
                for reply in replies {
                    let _ = reply.send(Err(e.to_string()));
                }
            }
        }
    }
}

/// Append a batch after `head` in one transaction: the new head.
fn commit(conn: &mut Connection, head: (u64, Hash), drafts: Vec<Draft>) -> rusqlite::Result<(u64, Hash)> {
    let now = now_ms();
    let tx = conn.transaction()?;
    let (mut seq, mut prev) = head;
    {
        let mut insert = tx.prepare_cached("INSERT INTO records (seq, time_ms, partition, body, hash) VALUES (?1, ?2, ?3, ?4, ?5)")?;
        let mut subject = tx.prepare_cached("INSERT OR IGNORE INTO record_subjects (seq, subject) VALUES (?1, ?2)")?;
        for draft in drafts {
            seq += 1;
            let record = Record::new(draft, seq, now, &prev);
            let body = String::from_utf8(record.canonical()).map_err(|e| rusqlite::Error::Utf8Error(e.utf8_error()))?;
            let h = hash(body.as_bytes());
            insert.execute(params![seq as i64, now, record.partition, body, &h[..]])?;
            for s in &record.subjects {
                subject.execute(params![seq as i64, s.id])?;
            }
            prev = h;
        }
    }
    tx.commit()?;
    Ok((seq, prev))
}

/// Remove the records older than `cutoff_ms` that precede every newer one (a prefix of
/// the chain, so what is left still verifies), and keep the last removed record's hash as
/// the anchor the remaining chain starts from. One transaction: the anchor and the
/// removal land together. The number of records removed.
pub fn prune(conn: &mut Connection, cutoff_ms: i64) -> rusqlite::Result<usize> {
    let tx = conn.transaction()?;
    let keep_from: Option<i64> = tx.query_row("SELECT MIN(seq) FROM records WHERE time_ms >= ?1", params![cutoff_ms], |r| r.get(0))?;
    let last: Option<(i64, String)> = tx
        .query_row(
            "SELECT seq, body FROM records WHERE seq < ?1 ORDER BY seq DESC LIMIT 1",
            params![keep_from.unwrap_or(i64::MAX)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((last, body)) = last else {
        return Ok(0);
    };
    tx.execute("DELETE FROM record_subjects WHERE seq <= ?1", params![last])?;
    let n = tx.execute("DELETE FROM records WHERE seq <= ?1", params![last])?;
    tx.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('anchor_seq', ?1), ('anchor_hash', ?2)",
        params![last.to_string(), super::record::hex(&hash(body.as_bytes()))],
    )?;
    tx.commit()?;
    Ok(n)
}
