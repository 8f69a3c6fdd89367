//! `facegate gallery migrate`: copy partitions between the embedded store and PostgreSQL,
//! in chunks of one transaction each, resumable, then verified by counts and a checksum.
//!
//! Into PostgreSQL, template ids are kept, so a copy that stopped half-way resumes after the
//! last id the destination holds; into the embedded store (which numbers its rows itself)
//! templates keep their order and a copy resumes after as many as it holds. The checksum is
//! SHA-256 over (subject, vector as little-endian f32) in id order, of the decoded
//! templates: the same whatever either side stores at rest.
//!
//! Copying into PostgreSQL also appends the changes to the feed, so nodes already running
//! on the database pick the copied templates up as they would any enrolment.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::schema::{self, decode_template, encode_template};
use super::{DbError, PostgresConfig};
use crate::gallery::postgres::Backend;
use crate::gallery::store::{self, Store};
use crate::names::validate_partition;
use crate::GalleryConfig;

const CHUNK: usize = 2_000;

/// What the progress callback is told.
#[derive(Debug, Clone)]
pub enum Progress {
    /// Copying `partition`: `done` of `total` templates (`done` includes a resumed prefix).
    Copying { partition: String, done: u64, total: u64 },
    /// Verified: templates and checksum equal on both sides.
    Verified {
        partition: String,
        templates: u64,
        checksum: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{0}")]
    Usage(String),
    #[error("embedded store of {partition:?}: {detail}")]
    Embedded { partition: String, detail: String },
    #[error("{0}")]
    Db(#[from] DbError),
    #[error("partition {partition:?}: {detail}")]
    Mismatch { partition: String, detail: String },
}

fn emb<E: std::fmt::Display>(partition: &str) -> impl Fn(E) -> MigrateError + '_ {
    move |e| MigrateError::Embedded {
        partition: partition.into(),
        detail: e.to_string(),
    }
}

/// One template as both stores hold it.
struct Row {
    id: i64,
    subject: String,
    vector: Vec<f32>,
    model_id: String,
    quality: f32,
}

#[derive(Default)]
struct Sum {
    hash: Sha256,
    n: u64,
}

impl Sum {
    fn add(&mut self, subject: &str, vector: &[f32]) {
        self.hash.update((subject.len() as u64).to_le_bytes());
        self.hash.update(subject.as_bytes());
        self.hash.update(encode_template(vector));
        self.n += 1;
    }
    fn finish(self) -> (u64, String) {
        let digest = self.hash.finalize();
        (self.n, digest.iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// Copy `partition` (or every partition of the source) from `from` to `to`.
pub fn run(
    cfg: &GalleryConfig,
    from: Backend,
    to: Backend,
    partition: Option<&str>,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), MigrateError> {
    if from == to {
        return Err(MigrateError::Usage("--from and --to name the same backend".into()));
    }
    if let Some(p) = partition {
        validate_partition(p).map_err(|e| MigrateError::Usage(e.to_string()))?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| MigrateError::Usage(e.to_string()))?;
    // The embedded side seals and opens its templates as the service does.
    let master = crate::seal::MasterKey::load(&cfg.encryption).map_err(|e| MigrateError::Usage(e.to_string()))?;
    let master = master.as_ref();
    let pg = rt.block_on(connect(&cfg.postgres))?;
    let names = match (partition, from) {
        (Some(p), _) => vec![p.to_string()],
        (None, Backend::Embedded) => embedded_partitions(&cfg.data_dir),
        (None, Backend::Postgres) => rt.block_on(async {
            let rows = pg.client.query("SELECT name FROM facegate_partitions ORDER BY name", &[]).await?;
            Ok::<_, DbError>(rows.iter().map(|r| r.get::<_, String>(0)).collect())
        })?,
    };
    for name in names {
        let dir = cfg.data_dir.join(&name);
        match from {
            Backend::Embedded => to_postgres(&rt, &pg, &dir, &name, master, progress)?,
            Backend::Postgres => to_embedded(&rt, &pg, &dir, &name, master, progress)?,
        }
        let (a, b) = (embedded_sum(&dir, &name, master)?, rt.block_on(postgres_sum(&pg, &name))?);
        if a != b {
            return Err(MigrateError::Mismatch {
                partition: name,
                detail: format!("embedded holds {} templates (sha256 {}), PostgreSQL {} ({})", a.0, a.1, b.0, b.1),
            });
        }
        progress(Progress::Verified {
            partition: name,
            templates: a.0,
            checksum: a.1,
        });
    }
    Ok(())
}

async fn connect(cfg: &PostgresConfig) -> Result<schema::Conn, DbError> {
    if cfg.url.is_empty() {
        return Err(DbError::Data("gallery.postgres.url is not set".into()));
    }
    let connect = cfg.connect_config().map_err(DbError::Data)?;
    let (client, conn) = connect
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| DbError::Data(format!("gallery.postgres.url: cannot use the database: {e}")))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    schema::create(&client).await?;
    schema::Conn::prepare(client).await
}

fn embedded_partitions(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join(store::FILE_NAME).is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| validate_partition(n).is_ok())
        .collect();
    out.sort();
    out
}

/// The quality and model of each template (the store's `Row` carries id, subject, vector).
fn embedded_meta(dir: &Path, after: i64, limit: usize) -> rusqlite::Result<Vec<(i64, String, f32)>> {
    let conn = rusqlite::Connection::open_with_flags(dir.join(store::FILE_NAME), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt = conn.prepare("SELECT id, model_id, quality FROM templates WHERE id > ?1 ORDER BY id LIMIT ?2")?;
    let rows = stmt.query_map(rusqlite::params![after, limit as i64], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get::<_, f64>(2)? as f32))
    })?;
    rows.collect()
}

/// The store's rows (id, subject, vector) joined with their model and quality.
fn with_meta(dir: &Path, rows: Vec<store::Row>, name: &str) -> Result<Vec<Row>, MigrateError> {
    let Some(first) = rows.first().map(|r| r.id) else {
        return Ok(Vec::new());
    };
    let meta = embedded_meta(dir, first - 1, rows.len()).map_err(emb(name))?;
    let meta: std::collections::HashMap<i64, (String, f32)> = meta.into_iter().map(|(id, m, q)| (id, (m, q))).collect();
    rows.into_iter()
        .map(|r| {
            let (model_id, quality) = meta.get(&r.id).cloned().ok_or_else(|| MigrateError::Mismatch {
                partition: name.into(),
                detail: format!("template {} changed during the copy; stop the nodes writing to it", r.id),
            })?;
            Ok(Row {
                id: r.id,
                subject: r.subject,
                vector: r.vector,
                model_id,
                quality,
            })
        })
        .collect()
}

fn embedded_sum(dir: &Path, name: &str, master: Option<&crate::seal::MasterKey>) -> Result<(u64, String), MigrateError> {
    let mut sum = Sum::default();
    if dir.join(store::FILE_NAME).is_file() {
        let store = Store::open(dir, name, 100, master).map_err(emb(name))?;
        store.for_each_after(0, |r| sum.add(&r.subject, &r.vector)).map_err(emb(name))?;
    }
    Ok(sum.finish())
}

async fn postgres_sum(pg: &schema::Conn, name: &str) -> Result<(u64, String), DbError> {
    let mut sum = Sum::default();
    let mut after = 0i64;
    loop {
        let rows = pg
            .client
            .query(
                "SELECT id, subject_id, template FROM facegate_templates WHERE partition = $1 AND id > $2 ORDER BY id LIMIT 10000",
                &[&name, &after],
            )
            .await?;
        let Some(last) = rows.last().map(|r| r.get::<_, i64>(0)) else {
            break;
        };
        for r in &rows {
            sum.add(r.get(1), &decode_template(r.get(2))?);
        }
        after = last;
    }
    Ok(sum.finish())
}

fn to_postgres(
    rt: &tokio::runtime::Runtime,
    pg: &schema::Conn,
    dir: &Path,
    name: &str,
    master: Option<&crate::seal::MasterKey>,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), MigrateError> {
    if !dir.join(store::FILE_NAME).is_file() {
        return Err(MigrateError::Usage(format!(
            "no embedded partition {name:?} under {}",
            dir.display()
        )));
    }
    let store = Store::open(dir, name, 100, master).map_err(emb(name))?;
    let total = store.count().map_err(emb(name))? as u64;
    // Resume after the last id copied, if the destination is a prefix of the source.
    let (resume, held): (i64, i64) = rt.block_on(async {
        let r = pg
            .client
            .query_one(
                "SELECT coalesce(max(id), 0), count(*) FROM facegate_templates WHERE partition = $1",
                &[&name],
            )
            .await?;
        Ok::<_, DbError>((r.get(0), r.get(1)))
    })?;
    let prefix = embedded_meta(dir, 0, usize::MAX)
        .map_err(emb(name))?
        .iter()
        .filter(|m| m.0 <= resume)
        .count() as i64;
    if held != prefix {
        return Err(MigrateError::Mismatch {
            partition: name.into(),
            detail: format!("PostgreSQL already holds {held} templates that are not a copy of this store's first ones; refusing to mix"),
        });
    }
    let mut done = held as u64;
    progress(Progress::Copying {
        partition: name.into(),
        done,
        total,
    });
    // One pass over the store, a transaction per chunk.
    let mut buf: Vec<store::Row> = Vec::with_capacity(CHUNK);
    let mut failure: Option<MigrateError> = None;
    let mut flush = |buf: &mut Vec<store::Row>, done: &mut u64| -> Result<(), MigrateError> {
        let rows = with_meta(dir, std::mem::take(buf), name)?;
        if rows.is_empty() {
            return Ok(());
        }
        rt.block_on(copy_chunk(pg, name, &rows))?;
        *done += rows.len() as u64;
        progress(Progress::Copying {
            partition: name.into(),
            done: *done,
            total,
        });
        Ok(())
    };
    store
        .for_each_after(resume, |r| {
            if failure.is_some() {
                return;
            }
            buf.push(r);
            if buf.len() >= CHUNK {
                if let Err(e) = flush(&mut buf, &mut done) {
                    failure = Some(e);
                }
            }
        })
        .map_err(emb(name))?;
    if let Some(e) = failure {
        return Err(e);
    }
    flush(&mut buf, &mut done)
}

/// One chunk into PostgreSQL in one transaction: templates, their changes, the partition row.
async fn copy_chunk(pg: &schema::Conn, name: &str, rows: &[Row]) -> Result<(), DbError> {
    pg.client.batch_execute("BEGIN").await?;
    let result = async {
        let head = pg
            .client
            .query_one(
                "INSERT INTO facegate_partitions (name, model_id) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING model_id, next_id, last_seq",
                &[&name, &rows[0].model_id],
            )
            .await?;
        let (model, next_id, last_seq): (Option<String>, i64, i64) = (head.get(0), head.get(1), head.get(2));
        if let Some(m) = model.as_ref().filter(|m| rows.iter().any(|r| &r.model_id != *m)) {
            return Err(DbError::Data(format!(
                "partition {name:?} in PostgreSQL holds templates of model {m:?}"
            )));
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let subs: Vec<&str> = rows.iter().map(|r| r.subject.as_str()).collect();
        let blobs: Vec<Vec<u8>> = rows.iter().map(|r| encode_template(&r.vector)).collect();
        let models: Vec<&str> = rows.iter().map(|r| r.model_id.as_str()).collect();
        let quals: Vec<f32> = rows.iter().map(|r| r.quality).collect();
        pg.client
            .execute(
                "INSERT INTO facegate_templates (partition, id, subject_id, template, model_id, quality)
                 SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::bytea[], $5::text[], $6::real[])",
                &[&name, &ids, &subs, &blobs, &models, &quals],
            )
            .await?;
        let seqs: Vec<i64> = (1..=rows.len() as i64).map(|i| last_seq + i).collect();
        let added = vec![true; rows.len()];
        pg.client
            .execute(
                "INSERT INTO facegate_changes (partition, seq, template_id, added)
                 SELECT $1, * FROM unnest($2::bigint[], $3::bigint[], $4::bool[])",
                &[&name, &seqs, &ids, &added],
            )
            .await?;
        let max_id = ids.iter().copied().max().unwrap_or(0);
        pg.client
            .execute(
                "UPDATE facegate_partitions SET model_id = $2, next_id = $3, last_seq = $4 WHERE name = $1",
                &[&name, &rows[0].model_id, &next_id.max(max_id + 1), &(last_seq + rows.len() as i64)],
            )
            .await?;
        pg.client.execute("SELECT pg_notify($1, $2)", &[&schema::CHANNEL, &name]).await?;
        Ok(())
    }
    .await;
    match result {
        Ok(()) => Ok(pg.client.batch_execute("COMMIT").await?),
        Err(e) => {
            let _ = pg.client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

fn to_embedded(
    rt: &tokio::runtime::Runtime,
    pg: &schema::Conn,
    dir: &Path,
    name: &str,
    master: Option<&crate::seal::MasterKey>,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), MigrateError> {
    let total: i64 = rt.block_on(async {
        Ok::<_, DbError>(
            pg.client
                .query_one("SELECT count(*) FROM facegate_templates WHERE partition = $1", &[&name])
                .await?
                .get(0),
        )
    })?;
    std::fs::create_dir_all(dir).map_err(|e| MigrateError::Embedded {
        partition: name.into(),
        detail: e.to_string(),
    })?;
    // The embedded store numbers its rows itself; a resumed copy continues after as many
    // rows as it holds, which must be the source's first ones.
    let mut store = Store::open(dir, name, 100, master).map_err(emb(name))?;
    let held = store.count().map_err(emb(name))? as i64;
    let (mut after, mut done) = (0i64, held as u64);
    if held > 0 {
        after = rt
            .block_on(async {
                let r = pg
                    .client
                    .query_opt(
                        "SELECT id FROM facegate_templates WHERE partition = $1 ORDER BY id OFFSET $2 LIMIT 1",
                        &[&name, &(held - 1)],
                    )
                    .await?;
                Ok::<_, DbError>(r.map(|r| r.get::<_, i64>(0)))
            })?
            .ok_or_else(|| MigrateError::Mismatch {
                partition: name.into(),
                detail: format!("the embedded store already holds {held} templates, more than PostgreSQL"),
            })?;
    }
    progress(Progress::Copying {
        partition: name.into(),
        done,
        total: total as u64,
    });
    loop {
        let rows = rt.block_on(async {
            let rows = pg
                .client
                .query(
                    "SELECT id, subject_id, template, model_id, quality FROM facegate_templates
                     WHERE partition = $1 AND id > $2 ORDER BY id LIMIT $3",
                    &[&name, &after, &(CHUNK as i64)],
                )
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(Row {
                        id: r.get(0),
                        subject: r.get(1),
                        vector: decode_template(r.get(2))?,
                        model_id: r.get(3),
                        quality: r.get(4),
                    })
                })
                .collect::<Result<Vec<Row>, DbError>>()
        })?;
        let Some(last) = rows.last().map(|r| r.id) else { break };
        let writes: Vec<crate::gallery::Write> = rows
            .into_iter()
            .map(|r| crate::gallery::Write::Enrol {
                subject: r.subject,
                vector: r.vector,
                model_id: r.model_id,
                quality: r.quality,
            })
            .collect();
        let applied = store.apply(&writes).map_err(emb(name))?;
        if let Some(bad) = applied
            .iter()
            .find(|a| !matches!(a, crate::gallery::Applied::Enrolled { evicted, .. } if evicted.is_empty()))
        {
            return Err(MigrateError::Mismatch {
                partition: name.into(),
                detail: format!("the embedded store refused a template: {bad:?}"),
            });
        }
        after = last;
        done += writes.len() as u64;
        progress(Progress::Copying {
            partition: name.into(),
            done,
            total: total as u64,
        });
    }
    Ok(())
}
