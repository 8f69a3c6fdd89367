//! The durable store of one partition: SQLite in WAL mode with synchronous=FULL, the
//! source of truth for templates. The FAISS index is derived from it at start.
//!
//! A batch of writes is one transaction, so one fsync acknowledges many concurrent
//! enrolments (group commit) and a crash leaves either all of a batch or none of it.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};

pub const FILE_NAME: &str = "templates.sqlite";

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
}

pub struct Row {
    pub id: i64,
    pub subject: String,
    pub vector: Vec<f32>,
}

impl Store {
    pub fn open(dir: &Path, max_templates: usize) -> rusqlite::Result<Self> {
        let conn = Connection::open(dir.join(FILE_NAME))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a commit returns only after the WAL is fsync'd; acknowledged means durable.
        conn.pragma_update(None, "synchronous", "FULL")?;
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
        Ok(Self {
            conn,
            max_templates: max_templates.max(1),
        })
    }

    /// The recognizer whose templates this partition holds (set by its first enrolment).
    pub fn model_id(&self) -> rusqlite::Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = 'model_id'", [], |r| r.get(0))
            .optional()
    }

    pub fn count(&self) -> rusqlite::Result<usize> {
        self.conn
            .query_row("SELECT COUNT(*) FROM templates", [], |r| r.get::<_, i64>(0))
            .map(|n| n as usize)
    }

    /// About `n` templates spread over the whole partition (every k-th row), row-major.
    pub fn sample(&self, n: usize) -> rusqlite::Result<Vec<f32>> {
        let every = (self.count()? / n.max(1)).max(1) as i64;
        let mut stmt = self.conn.prepare("SELECT vector FROM templates WHERE id % ?1 = 0 LIMIT ?2")?;
        let mut out = Vec::new();
        let mut rows = stmt.query(params![every, n as i64])?;
        while let Some(r) = rows.next()? {
            let blob: Vec<u8> = r.get(0)?;
            out.extend(from_bytes(&blob));
        }
        Ok(out)
    }

    /// Every template stored after row `after`.
    pub fn for_each_after(&self, after: i64, mut f: impl FnMut(Row)) -> rusqlite::Result<()> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, subject_id, vector FROM templates WHERE id > ?1 ORDER BY id")?;
        let mut rows = stmt.query(params![after])?;
        while let Some(r) = rows.next()? {
            let blob: Vec<u8> = r.get(2)?;
            f(Row {
                id: r.get(0)?,
                subject: r.get(1)?,
                vector: from_bytes(&blob),
            });
        }
        Ok(())
    }

    /// (row id, subject) of every template up to row `until`, without the vectors.
    pub fn for_each_subject(&self, until: i64, mut f: impl FnMut(i64, String)) -> rusqlite::Result<()> {
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
    pub fn apply(&mut self, batch: &[Write]) -> rusqlite::Result<Vec<Applied>> {
        let max = self.max_templates;
        let tx = self.conn.transaction()?;
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
                    let existing: Vec<i64> = stmt.query_map(params![subject], |r| r.get(0))?.collect::<Result<_, _>>()?;
                    let excess = (existing.len() + 1).saturating_sub(max);
                    let evicted: Vec<i64> = existing.into_iter().take(excess).collect();
                    for id in &evicted {
                        tx.execute("DELETE FROM templates WHERE id = ?1", params![id])?;
                    }
                    tx.execute(
                        "INSERT INTO templates (subject_id, vector, model_id, quality, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![subject, to_bytes(vector), model_id, f64::from(*quality), now_unix()],
                    )?;
                    out.push(Applied::Enrolled {
                        id: tx.last_insert_rowid(),
                        evicted,
                    });
                }
                Write::Delete { subject } => {
                    let mut stmt = tx.prepare_cached("DELETE FROM templates WHERE subject_id = ?1 RETURNING id")?;
                    let ids: Vec<i64> = stmt.query_map(params![subject], |r| r.get(0))?.collect::<Result<_, _>>()?;
                    out.push(if ids.is_empty() {
                        Applied::NotFound
                    } else {
                        Applied::Deleted { ids }
                    });
                }
            }
        }
        tx.commit()?;
        Ok(out)
    }
}

/// A read-only connection for verify: WAL lets it read beside the writer, and it reads the
/// source of truth rather than what an approximate index keeps.
pub struct Reader {
    conn: Connection,
}

impl Reader {
    pub fn open(dir: &Path) -> rusqlite::Result<Self> {
        let conn = Connection::open_with_flags(
            dir.join(FILE_NAME),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Self { conn })
    }

    /// The templates of one subject.
    pub fn subject_vectors(&self, subject: &str) -> rusqlite::Result<Vec<Vec<f32>>> {
        let mut stmt = self.conn.prepare_cached("SELECT vector FROM templates WHERE subject_id = ?1")?;
        let rows = stmt.query_map(params![subject], |r| r.get::<_, Vec<u8>>(0))?;
        rows.map(|b| b.map(|b| from_bytes(&b))).collect()
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn from_bytes(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
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
            let mut s = Store::open(dir.path(), 2).unwrap_or_else(|e| panic!("{e}"));
            let out = s
                .apply(&[enrol("a", "m"), enrol("a", "m"), enrol("a", "m"), enrol("b", "x")])
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(matches!(&out[2], Applied::Enrolled { evicted, .. } if evicted.len() == 1));
            assert_eq!(out[3], Applied::ModelMismatch { stored: "m".into() });
        }
        let mut s = Store::open(dir.path(), 2).unwrap_or_else(|e| panic!("{e}"));
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
