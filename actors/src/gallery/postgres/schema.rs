//! The database side: tables, the batch transaction, the change history, the template codec.
//!
//! * `facegate_partitions`: one row per partition, its recognizer, its next template id and
//!   the sequence of its last change. Every write batch locks this row first, so writers of
//!   one partition on every node are serialised and a partition's sequences commit in
//!   order: a replica that has read up to sequence n never sees n+1 commit after n+2.
//! * `facegate_templates`: the templates; `(partition, id)` with ids dense per partition
//!   (the index keys its subjects by id).
//! * `facegate_changes`: `(partition, seq)` -> template added or removed, the replicas'
//!   feed. Old changes are pruned past `change_retention`; a replica that fell behind that
//!   far reloads its partition.
//!
//! A partition name is only ever a bound parameter, never part of a statement's text.

use std::collections::{HashMap, HashSet};

use tokio_postgres::{Client, Statement};

use super::DbError;
use crate::gallery::{Applied, Write};

/// The NOTIFY channel; the payload is the partition's name.
pub const CHANNEL: &str = "facegate_changes";

const DDL: &str = "
CREATE TABLE IF NOT EXISTS facegate_partitions (
    name text PRIMARY KEY,
    model_id text,
    next_id bigint NOT NULL DEFAULT 1,
    last_seq bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS facegate_templates (
    partition text NOT NULL REFERENCES facegate_partitions (name),
    id bigint NOT NULL,
    subject_id text NOT NULL,
    template bytea NOT NULL,
    model_id text NOT NULL,
    quality real NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (partition, id));
CREATE INDEX IF NOT EXISTS facegate_templates_subject ON facegate_templates (partition, subject_id);
CREATE TABLE IF NOT EXISTS facegate_changes (
    partition text NOT NULL,
    seq bigint NOT NULL,
    template_id bigint NOT NULL,
    added boolean NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (partition, seq));
";

/// Create the tables if missing. Nodes starting together take an advisory lock so that
/// concurrent CREATE ... IF NOT EXISTS cannot collide.
pub async fn create(client: &Client) -> Result<(), DbError> {
    client
        .batch_execute(&format!("BEGIN; SELECT pg_advisory_xact_lock(7469361839266534451); {DDL} COMMIT;"))
        .await?;
    Ok(())
}

/// A template as stored: little-endian f32s. This pair is the one place a template crosses
/// into the database, so that sealing (encryption) can wrap it here.
pub fn encode_template(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn decode_template(b: &[u8]) -> Result<Vec<f32>, DbError> {
    if !b.len().is_multiple_of(4) {
        return Err(DbError::Data(format!(
            "a stored template of {} bytes is not a vector of f32",
            b.len()
        )));
    }
    Ok(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// A connection with the statements a partition uses, prepared once.
pub struct Conn {
    pub client: Client,
    lock: Statement,
    lock_existing: Statement,
    existing: Statement,
    delete: Statement,
    insert: Statement,
    changes: Statement,
    update: Statement,
    prune: Statement,
    notify: Statement,
    head: Statement,
    feed: Statement,
}

impl Conn {
    pub async fn prepare(client: Client) -> Result<Self, DbError> {
        let (lock, lock_existing, existing, delete, insert, changes) = futures_util::try_join!(
            client.prepare(
                "INSERT INTO facegate_partitions (name) VALUES ($1) ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
                 RETURNING model_id, next_id, last_seq"
            ),
            client.prepare("SELECT model_id, next_id, last_seq FROM facegate_partitions WHERE name = $1 FOR UPDATE"),
            client.prepare("SELECT subject_id, id FROM facegate_templates WHERE partition = $1 AND subject_id = ANY($2) ORDER BY id"),
            client.prepare("DELETE FROM facegate_templates WHERE partition = $1 AND id = ANY($2)"),
            client.prepare(
                "INSERT INTO facegate_templates (partition, id, subject_id, template, model_id, quality)
                 SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::bytea[], $5::text[], $6::real[])"
            ),
            client.prepare(
                "INSERT INTO facegate_changes (partition, seq, template_id, added)
                 SELECT $1, * FROM unnest($2::bigint[], $3::bigint[], $4::bool[])"
            ),
        )?;
        let (update, prune, notify, head, feed) = futures_util::try_join!(
            client.prepare("UPDATE facegate_partitions SET model_id = $2, next_id = $3, last_seq = $4 WHERE name = $1"),
            client.prepare("DELETE FROM facegate_changes WHERE partition = $1 AND seq <= $2"),
            client.prepare("SELECT pg_notify($1, $2)"),
            client.prepare("SELECT model_id, last_seq FROM facegate_partitions WHERE name = $1"),
            client.prepare(
                "SELECT c.seq, c.template_id, c.added, t.subject_id, t.template, t.model_id
                 FROM facegate_changes c
                 LEFT JOIN facegate_templates t ON c.added AND t.partition = c.partition AND t.id = c.template_id
                 WHERE c.partition = $1 AND c.seq > $2 ORDER BY c.seq LIMIT $3"
            ),
        )?;
        Ok(Self {
            client,
            lock,
            lock_existing,
            existing,
            delete,
            insert,
            changes,
            update,
            prune,
            notify,
            head,
            feed,
        })
    }
}

/// A committed batch: what each write did and the sequences its changes took.
pub struct Committed {
    pub applied: Vec<Applied>,
    /// First and last sequence written (first > last: the batch changed nothing).
    pub first_seq: i64,
    pub last_seq: i64,
}

/// Apply a batch in one transaction; durable (and, with a synchronous standby, replicated)
/// when this returns Ok.
pub async fn apply(conn: &mut Conn, partition: &str, batch: &[Write], max_templates: usize, retention: i64) -> Result<Committed, DbError> {
    let Conn {
        client,
        lock,
        lock_existing,
        existing,
        delete,
        insert,
        changes,
        update,
        prune,
        notify,
        ..
    } = conn;
    let tx = client.transaction().await?;
    let enrols = batch.iter().any(|w| matches!(w, Write::Enrol { .. }));
    let head = if enrols {
        Some(tx.query_one(&*lock, &[&partition]).await?)
    } else {
        tx.query_opt(&*lock_existing, &[&partition]).await?
    };
    let Some(head) = head else {
        // Deletes in a partition the database has never seen.
        return Ok(Committed {
            applied: batch.iter().map(|_| Applied::NotFound).collect(),
            first_seq: 1,
            last_seq: 0,
        });
    };
    let (mut model, mut next_id, start_seq): (Option<String>, i64, i64) = (head.get(0), head.get(1), head.get(2));
    let stored_model = model.clone();
    let subjects: Vec<&str> = batch
        .iter()
        .map(|w| match w {
            Write::Enrol { subject, .. } | Write::Delete { subject } => subject.as_str(),
        })
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut held: HashMap<String, Vec<i64>> = HashMap::new();
    for r in tx.query(&*existing, &[&partition, &subjects]).await? {
        held.entry(r.get(0)).or_default().push(r.get(1));
    }
    let max = max_templates.max(1);
    let mut seq = start_seq;
    let mut ins: Vec<(i64, &str, Vec<u8>, &str, f32)> = Vec::new();
    let mut removed: Vec<i64> = Vec::new();
    let (mut ch_seq, mut ch_id, mut ch_added) = (Vec::new(), Vec::new(), Vec::new());
    let mut applied = Vec::with_capacity(batch.len());
    for w in batch {
        match w {
            Write::Enrol {
                subject,
                vector,
                model_id,
                quality,
            } => {
                match &model {
                    Some(m) if m != model_id => {
                        applied.push(Applied::ModelMismatch { stored: m.clone() });
                        continue;
                    }
                    Some(_) => {}
                    None => model = Some(model_id.clone()),
                }
                let list = held.entry(subject.clone()).or_default();
                // Keep at most `max` templates per subject: the oldest make room.
                let excess = (list.len() + 1).saturating_sub(max);
                let evicted: Vec<i64> = list.drain(..excess).collect();
                for id in &evicted {
                    seq += 1;
                    ch_seq.push(seq);
                    ch_id.push(*id);
                    ch_added.push(false);
                    removed.push(*id);
                }
                let id = next_id;
                next_id += 1;
                list.push(id);
                seq += 1;
                ch_seq.push(seq);
                ch_id.push(id);
                ch_added.push(true);
                ins.push((id, subject.as_str(), encode_template(vector), model_id.as_str(), *quality));
                applied.push(Applied::Enrolled { id, evicted });
            }
            Write::Delete { subject } => {
                let ids = held.remove(subject).unwrap_or_default();
                if ids.is_empty() {
                    applied.push(Applied::NotFound);
                    continue;
                }
                for id in &ids {
                    seq += 1;
                    ch_seq.push(seq);
                    ch_id.push(*id);
                    ch_added.push(false);
                    removed.push(*id);
                }
                applied.push(Applied::Deleted { ids });
            }
        }
    }
    // A template enrolled and removed within the batch is never inserted.
    let gone: HashSet<i64> = removed.iter().copied().collect();
    ins.retain(|r| !gone.contains(&r.0));
    if seq == start_seq {
        // Nothing changed (every write refused): nothing to commit.
        return Ok(Committed {
            applied,
            first_seq: start_seq + 1,
            last_seq: start_seq,
        });
    }
    let ids: Vec<i64> = ins.iter().map(|r| r.0).collect();
    let subs: Vec<&str> = ins.iter().map(|r| r.1).collect();
    let blobs: Vec<&[u8]> = ins.iter().map(|r| r.2.as_slice()).collect();
    let models: Vec<&str> = ins.iter().map(|r| r.3).collect();
    let quals: Vec<f32> = ins.iter().map(|r| r.4).collect();
    let prune_below = seq - retention.max(1);
    let crosses = seq / 1024 != start_seq / 1024 && prune_below > 0;
    // Sent together (pipelined): the server runs them in this order.
    futures_util::try_join!(
        async {
            if !removed.is_empty() {
                tx.execute(&*delete, &[&partition, &removed]).await?;
            }
            Ok::<_, tokio_postgres::Error>(())
        },
        async {
            if !ids.is_empty() {
                tx.execute(&*insert, &[&partition, &ids, &subs, &blobs, &models, &quals]).await?;
            }
            Ok::<_, tokio_postgres::Error>(())
        },
        async { tx.execute(&*changes, &[&partition, &ch_seq, &ch_id, &ch_added]).await },
        async {
            let model = model.as_ref().or(stored_model.as_ref());
            tx.execute(&*update, &[&partition, &model, &next_id, &seq]).await
        },
        async {
            if crosses {
                tx.execute(&*prune, &[&partition, &prune_below]).await?;
            }
            Ok::<_, tokio_postgres::Error>(())
        },
        async { tx.query_one(&*notify, &[&CHANNEL, &partition]).await },
    )?;
    tx.commit().await?;
    Ok(Committed {
        applied,
        first_seq: start_seq + 1,
        last_seq: seq,
    })
}

/// One change of the feed. `added` holds the template when it was added and still exists.
pub struct Change {
    pub seq: i64,
    pub id: i64,
    pub added: Option<(String, Vec<f32>, String)>,
}

/// The partition's recognizer and last sequence in the database (None: no such partition).
pub async fn head(conn: &Conn, partition: &str) -> Result<Option<(Option<String>, i64)>, DbError> {
    let row = conn.client.query_opt(&conn.head, &[&partition]).await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// Up to `limit` changes after `after`, in sequence order.
pub async fn feed(conn: &Conn, partition: &str, after: i64, limit: i64) -> Result<Vec<Change>, DbError> {
    let rows = conn.client.query(&conn.feed, &[&partition, &after, &limit]).await?;
    rows.iter()
        .map(|r| {
            let added: bool = r.get(2);
            let template: Option<&[u8]> = r.get(4);
            let added = match (added, template) {
                (true, Some(t)) => Some((r.get::<_, String>(3), decode_template(t)?, r.get::<_, String>(5))),
                _ => None,
            };
            Ok(Change {
                seq: r.get(0),
                id: r.get(1),
                added,
            })
        })
        .collect()
}
