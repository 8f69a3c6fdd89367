//! The durable store of one partition: SQLite in WAL mode with synchronous=FULL, the
//! source of truth for templates. The FAISS index is derived from it at start.
//!
//! A batch of writes is one transaction, so one fsync acknowledges many concurrent
//! enrolments (group commit) and a crash leaves either all of a batch or none of it.
//!
//! Templates cross one boundary, `Codec::encode` / `Codec::decode`: sealed under the
//! partition's data key (see `crate::seal`) when encryption is on, whose wrapped form lives
//! in the `meta` table. Erasure: `secure_delete` zeroes deleted rows in their pages, and a
//! batch that deleted a subject is followed by a TRUNCATE checkpoint, which copies the
//! zeroed pages into the database and empties the WAL, before the delete is answered.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use zeroize::Zeroizing;

use crate::seal::{self, DataKey, MasterKey};

pub const FILE_NAME: &str = "templates.sqlite";

/// A store failure: SQLite's, or a key or ciphertext that does not open.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Sql(#[from] rusqlite::Error),
    #[error("{0}")]
    Seal(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// How templates are written to and read from the store: the one boundary they cross.
#[derive(Clone)]
pub enum Codec {
    Plain,
    Sealed { key: Arc<DataKey>, partition: Arc<str> },
}

impl Codec {
    pub fn is_sealed(&self) -> bool {
        matches!(self, Codec::Sealed { .. })
    }

    pub fn data_key(&self) -> Option<(&DataKey, &str)> {
        match self {
            Codec::Plain => None,
            Codec::Sealed { key, partition } => Some((key, partition)),
        }
    }

    /// A template's stored bytes: f32 little-endian, sealed and bound to its row and subject.
    fn encode(&self, id: i64, subject: &str, vector: &[f32]) -> Vec<u8> {
        let plain: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
        match self {
            Codec::Plain => plain,
            Codec::Sealed { key, partition } => {
                let plain = Zeroizing::new(plain);
                key.seal(&plain, &seal::template_aad(partition, id, subject))
            }
        }
    }

    fn decode(&self, id: i64, subject: &str, blob: &[u8]) -> Result<Vec<f32>> {
        let from_le = |b: &[u8]| b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        match self {
            Codec::Plain => Ok(from_le(blob)),
            Codec::Sealed { key, partition } => key
                .open(blob, &seal::template_aad(partition, id, subject))
                .map(|p| from_le(&p))
                .map_err(|e| {
                    StoreError::Seal(format!(
                        "template row {id} does not open with the partition's data key: {e}; no plaintext is served in its place"
                    ))
                }),
        }
    }
}

/// One write of a batch, in mailbox order.
#[derive(Debug, Clone)]
pub enum Write {
    Enrol {
        subject: String,
        vector: Vec<f32>,
        model_id: String,
        quality: f32,
    },
    Delete {
        subject: String,
    },
}

/// What a write did, for the in-memory index and the caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    Enrolled { id: i64, evicted: Vec<i64> },
    Deleted { ids: Vec<i64> },
    NotFound,
    ModelMismatch { stored: String },
}

pub struct Store {
    conn: Connection,
    max_templates: usize,
    codec: Codec,
    /// A delete's TRUNCATE checkpoint could not finish (a reader held the WAL): retry.
    erase_pending: bool,
}

pub struct Row {
    pub id: i64,
    pub subject: String,
    pub vector: Vec<f32>,
}

impl Store {
    /// Open (or create) the store of `partition`. With a master key the partition's data
    /// key is unwrapped, or created on first use, when the rows are sealed in place; an
    /// encrypted partition without the key, or with another one, does not open.
    pub fn open(dir: &Path, partition: &str, max_templates: usize, master: Option<&MasterKey>) -> Result<Self> {
        let mut conn = connect(dir)?;
        let codec = init_codec(&mut conn, partition, master)?;
        let mut store = Self {
            conn,
            max_templates: max_templates.max(1),
            codec,
            erase_pending: false,
        };
        store.checkpoint()?;
        Ok(store)
    }

    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    /// Copy the WAL into the database and truncate it to zero bytes: with secure_delete,
    /// what a delete removed is then gone from both files. False when a reader kept it
    /// from finishing (retry shortly).
    pub fn checkpoint(&mut self) -> Result<bool> {
        let busy: i64 = self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        self.erase_pending = busy != 0;
        Ok(!self.erase_pending)
    }

    /// A delete's erasure is not complete yet (see `checkpoint`).
    pub fn erase_pending(&self) -> bool {
        self.erase_pending
    }

    /// Re-seal every template under a fresh data key, wrapped by `master`, in one
    /// transaction; the old ciphertexts are erased. Returns the templates re-sealed.
    pub fn rekey(&mut self, partition: &str, master: &MasterKey) -> Result<usize> {
        let fresh = Codec::Sealed {
            key: Arc::new(DataKey::generate()),
            partition: Arc::from(partition),
        };
        let tx = self.conn.transaction()?;
        let n = reseal(&tx, &self.codec, &fresh)?;
        put_key(&tx, &fresh, master)?;
        tx.commit()?;
        self.codec = fresh;
        self.checkpoint()?;
        Ok(n)
    }

    /// Wrap this partition's data key under `new` instead (templates untouched).
    pub fn rewrap(&mut self, new: &MasterKey) -> Result<()> {
        let tx = self.conn.transaction()?;
        put_key(&tx, &self.codec, new)?;
        tx.commit()?;
        self.checkpoint()?;
        Ok(())
    }

    /// The recognizer whose templates this partition holds (set by its first enrolment).
    pub fn model_id(&self) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = 'model_id'", [], |r| r.get(0))
            .optional()
            .map_err(StoreError::from)
    }

    pub fn count(&self) -> Result<usize> {
        Ok(self.conn.query_row("SELECT COUNT(*) FROM templates", [], |r| r.get::<_, i64>(0))? as usize)
    }

    /// About `n` templates spread over the whole partition (every k-th row), row-major.
    pub fn sample(&self, n: usize) -> Result<Vec<f32>> {
        let every = (self.count()? / n.max(1)).max(1) as i64;
        let mut stmt = self
            .conn
            .prepare("SELECT id, subject_id, vector FROM templates WHERE id % ?1 = 0 LIMIT ?2")?;
        let mut out = Vec::new();
        let mut rows = stmt.query(params![every, n as i64])?;
        while let Some(r) = rows.next()? {
            let (id, subject): (i64, String) = (r.get(0)?, r.get(1)?);
            out.extend(self.codec.decode(id, &subject, blob(r, 2)?)?);
        }
        Ok(out)
    }

    /// Every template stored after row `after`.
    pub fn for_each_after(&self, after: i64, mut f: impl FnMut(Row)) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, subject_id, vector FROM templates WHERE id > ?1 ORDER BY id")?;
        let mut rows = stmt.query(params![after])?;
        while let Some(r) = rows.next()? {
            let (id, subject): (i64, String) = (r.get(0)?, r.get(1)?);
            let vector = self.codec.decode(id, &subject, blob(r, 2)?)?;
            f(Row { id, subject, vector });
        }
        Ok(())
    }

    /// (row id, subject) of every template up to row `until`, without the vectors.
    pub fn for_each_subject(&self, until: i64, mut f: impl FnMut(i64, String)) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, subject_id FROM templates WHERE id <= ?1 ORDER BY id")?;
        let mut rows = stmt.query(params![until])?;
        while let Some(r) = rows.next()? {
            f(r.get(0)?, r.get(1)?);
        }
        Ok(())
    }

    /// Apply a batch in one transaction; durable when this returns Ok.
    pub fn apply(&mut self, batch: &[Write]) -> Result<Vec<Applied>> {
        let max = self.max_templates;
        let codec = self.codec.clone();
        let tx = self.conn.transaction()?;
        // Row ids are chosen here, not by SQLite, so that a sealed template is bound to its
        // row: AUTOINCREMENT's counter is the highest id ever used.
        let mut next_id: i64 = tx.query_row(
            "SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'templates'",
            [],
            |r| r.get(0),
        )?;
        let mut deleted = false;
        let mut model: Option<String> = tx
            .query_row("SELECT value FROM meta WHERE key = 'model_id'", [], |r| r.get(0))
            .optional()?;
        let mut out = Vec::with_capacity(batch.len());
        for w in batch {
            match w {
                Write::Enrol {
                    subject,
                    vector,
                    model_id,
                    quality,
                } => {
                    match &model {
                        Some(stored) if stored != model_id => {
                            out.push(Applied::ModelMismatch { stored: stored.clone() });
                            continue;
                        }
                        Some(_) => {}
                        None => {
                            tx.execute("INSERT INTO meta (key, value) VALUES ('model_id', ?1)", params![model_id])?;
                            model = Some(model_id.clone());
                        }
                    }
                    // Keep at most `max` templates per subject: the oldest make room.
                    let mut stmt = tx.prepare_cached("SELECT id FROM templates WHERE subject_id = ?1 ORDER BY id")?;
                    let existing: Vec<i64> = stmt
                        .query_map(params![subject], |r| r.get(0))?
                        .collect::<std::result::Result<_, _>>()?;
                    let excess = (existing.len() + 1).saturating_sub(max);
                    let evicted: Vec<i64> = existing.into_iter().take(excess).collect();
                    for id in &evicted {
                        tx.execute("DELETE FROM templates WHERE id = ?1", params![id])?;
                    }
                    next_id += 1;
                    tx.execute(
                        "INSERT INTO templates (id, subject_id, vector, model_id, quality, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![
                            next_id,
                            subject,
                            codec.encode(next_id, subject, vector),
                            model_id,
                            f64::from(*quality),
                            now_unix()
                        ],
                    )?;
                    out.push(Applied::Enrolled { id: next_id, evicted });
                }
                Write::Delete { subject } => {
                    let mut stmt = tx.prepare_cached("DELETE FROM templates WHERE subject_id = ?1 RETURNING id")?;
                    let ids: Vec<i64> = stmt
                        .query_map(params![subject], |r| r.get(0))?
                        .collect::<std::result::Result<_, _>>()?;
                    deleted |= !ids.is_empty();
                    out.push(if ids.is_empty() {
                        Applied::NotFound
                    } else {
                        Applied::Deleted { ids }
                    });
                }
            }
        }
        tx.commit()?;
        if deleted {
            // Erasure before the delete is answered (a busy reader: the actor retries).
            self.checkpoint()?;
        }
        Ok(out)
    }
}

/// A read-only connection for verify: WAL lets it read beside the writer, and it reads the
/// source of truth rather than what an approximate index keeps.
pub struct Reader {
    conn: Connection,
    codec: Codec,
}

impl Reader {
    pub fn open(dir: &Path, codec: Codec) -> Result<Self> {
        let conn = Connection::open_with_flags(
            dir.join(FILE_NAME),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Self { conn, codec })
    }

    /// The templates of one subject.
    pub fn subject_vectors(&self, subject: &str) -> Result<Vec<Vec<f32>>> {
        let mut stmt = self.conn.prepare_cached("SELECT id, vector FROM templates WHERE subject_id = ?1")?;
        let mut rows = stmt.query(params![subject])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(self.codec.decode(r.get(0)?, subject, blob(r, 1)?)?);
        }
        Ok(out)
    }
}

/// The master key id recorded beside a partition's wrapped data key, if it is encrypted
/// (read at start-up, before any partition loads, to tell a wrong master key).
pub fn key_of(dir: &Path) -> Result<Option<(String, Vec<u8>)>> {
    let conn = Connection::open_with_flags(dir.join(FILE_NAME), rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let has_meta: bool = conn.query_row("SELECT COUNT(*) > 0 FROM sqlite_master WHERE name = 'meta'", [], |r| r.get(0))?;
    if !has_meta {
        return Ok(None);
    }
    let (id, wrapped) = (meta(&conn, "master_key_id")?, meta(&conn, "data_key")?);
    match (id, wrapped) {
        (Some(id), Some(w)) => Ok(Some((
            id,
            hex::decode(w).map_err(|e| StoreError::Seal(format!("the wrapped data key is damaged: {e}")))?,
        ))),
        _ => Ok(None),
    }
}

/// Crypto-shredding: the wrapped data key and every row erased (zeroed, WAL truncated),
/// so whatever copy of the partition's ciphertext survives anywhere no longer opens. Needs
/// no key: a partition whose key is lost can still be destroyed.
pub fn shred(dir: &Path) -> Result<()> {
    let mut conn = connect(dir)?;
    let tx = conn.transaction()?;
    tx.execute("DELETE FROM meta", [])?;
    tx.execute("DELETE FROM templates", [])?;
    tx.commit()?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0))?;
    Ok(())
}

/// A BLOB column, borrowed from the row (no copy of the template).
fn blob<'a>(r: &'a rusqlite::Row<'_>, i: usize) -> Result<&'a [u8]> {
    r.get_ref(i)?.as_blob().map_err(|e| {
        StoreError::Sql(rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Blob,
            Box::new(e),
        ))
    })
}

fn connect(dir: &Path) -> Result<Connection> {
    let conn = Connection::open(dir.join(FILE_NAME))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a commit returns only after the WAL is fsync'd; acknowledged means durable.
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Deleted rows are overwritten with zeros in their pages, not merely unlinked.
    let on: i64 = conn.pragma_update_and_check(None, "secure_delete", 1, |r| r.get(0))?;
    if on != 1 {
        return Err(StoreError::Seal(
            "this SQLite build refuses PRAGMA secure_delete; deleted templates would stay readable".into(),
        ));
    }
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS templates (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             subject_id TEXT NOT NULL,
             vector BLOB NOT NULL,
             model_id TEXT NOT NULL,
             quality REAL NOT NULL,
             created_at INTEGER NOT NULL);
         CREATE INDEX IF NOT EXISTS templates_subject ON templates(subject_id);",
    )?;
    Ok(conn)
}

fn meta(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| r.get(0))
        .optional()?)
}

/// The partition's codec from its meta table and the configured master key.
fn init_codec(conn: &mut Connection, partition: &str, master: Option<&MasterKey>) -> Result<Codec> {
    let wrapped = meta(conn, "data_key")?;
    let wrapped_by = meta(conn, "master_key_id")?.unwrap_or_else(|| "unknown".into());
    match (master, wrapped) {
        (Some(m), Some(w)) => {
            let w = hex::decode(w).map_err(|e| StoreError::Seal(format!("the wrapped data key is damaged: {e}")))?;
            let key = m.unwrap(&w, partition).map_err(|_| {
                StoreError::Seal(format!(
                    "the master key {} does not open this partition's data key (wrapped under master key {wrapped_by}):                      wrong master key, or the store is damaged",
                    m.id()
                ))
            })?;
            Ok(Codec::Sealed {
                key: Arc::new(key),
                partition: Arc::from(partition),
            })
        }
        (Some(m), None) => {
            // First use under encryption: a fresh data key, and any plaintext rows (stored
            // while encryption was off) sealed in the same transaction.
            let codec = Codec::Sealed {
                key: Arc::new(DataKey::generate()),
                partition: Arc::from(partition),
            };
            let tx = conn.transaction()?;
            let n = reseal(&tx, &Codec::Plain, &codec)?;
            put_key(&tx, &codec, m)?;
            tx.commit()?;
            if n > 0 {
                tracing::info!(partition, templates = n, "stored plaintext templates sealed under a new data key");
            }
            Ok(codec)
        }
        (None, Some(_)) => Err(StoreError::Seal(format!(
            "this partition is encrypted (master key {wrapped_by}) but gallery.encryption.mode is \"off\": configure its master key"
        ))),
        (None, None) => Ok(Codec::Plain),
    }
}

/// Re-encode every template from `from` to `to` inside `tx`, in chunks of rows.
fn reseal(tx: &Transaction<'_>, from: &Codec, to: &Codec) -> Result<usize> {
    let (mut after, mut n) = (0i64, 0usize);
    loop {
        let rows: Vec<(i64, String, Vec<u8>)> = tx
            .prepare_cached("SELECT id, subject_id, vector FROM templates WHERE id > ?1 ORDER BY id LIMIT 4096")?
            .query_map(params![after], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<std::result::Result<_, _>>()?;
        let Some(last) = rows.last().map(|r| r.0) else { return Ok(n) };
        let mut update = tx.prepare_cached("UPDATE templates SET vector = ?2 WHERE id = ?1")?;
        for (id, subject, blob) in &rows {
            let v = from.decode(*id, subject, blob)?;
            update.execute(params![id, to.encode(*id, subject, &v)])?;
        }
        n += rows.len();
        after = last;
    }
}

fn put_key(tx: &Transaction<'_>, codec: &Codec, master: &MasterKey) -> Result<()> {
    let Some((key, partition)) = codec.data_key() else {
        return Err(StoreError::Seal("the partition has no data key to wrap".into()));
    };
    for (k, v) in [
        ("data_key", hex::encode(master.wrap(key, partition))),
        ("master_key_id", master.id().to_string()),
        ("cipher", seal::CIPHER.to_string()),
    ] {
        tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)", params![k, v])?;
    }
    Ok(())
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enrol(subject: &str, model: &str) -> Write {
        Write::Enrol {
            subject: subject.into(),
            vector: vec![0.6, 0.8],
            model_id: model.into(),
            quality: 0.9,
        }
    }

    #[test]
    fn batches_survive_reopen_and_the_oldest_templates_make_room() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        {
            let mut s = Store::open(dir.path(), "p", 2, None).unwrap_or_else(|e| panic!("{e}"));
            let out = s
                .apply(&[enrol("a", "m"), enrol("a", "m"), enrol("a", "m"), enrol("b", "x")])
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(matches!(&out[2], Applied::Enrolled { evicted, .. } if evicted.len() == 1));
            assert_eq!(out[3], Applied::ModelMismatch { stored: "m".into() });
        }
        let mut s = Store::open(dir.path(), "p", 2, None).unwrap_or_else(|e| panic!("{e}"));
        let mut rows = Vec::new();
        s.for_each_after(0, |r| rows.push((r.subject, r.vector)))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].1, vec![0.6, 0.8]);
        assert_eq!(s.model_id().ok().flatten().as_deref(), Some("m"));
        let out = s
            .apply(&[Write::Delete { subject: "a".into() }, Write::Delete { subject: "a".into() }])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(&out[0], Applied::Deleted { ids } if ids.len() == 2));
        assert_eq!(out[1], Applied::NotFound);
    }
}
