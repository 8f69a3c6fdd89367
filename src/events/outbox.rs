//! The durable outbox: subscriptions and the deliveries not yet made, in their own SQLite
//! file under the data directory (WAL, synchronous=FULL: a delivery row is on disk before
//! the API answers the request that caused it, and survives a kill -9 or a power cut).

use std::path::Path;

use parking_lot::Mutex;
use rusqlite::{params, Connection};

use super::Subscription;

pub struct Outbox {
    /// Writes of the request path (new deliveries, subscriptions).
    api: Mutex<Connection>,
    /// The delivery workers' own connection: their updates never hold the request path's lock.
    worker: Mutex<Connection>,
}

/// One delivery to make: an event's body for one subscription.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: i64,
    pub subscription_id: String,
    pub event_id: String,
    pub kind: String,
    pub body: String,
    pub created_ms: i64,
    pub attempts: i64,
}

/// A delivery to queue.
pub struct NewDelivery {
    pub subscription_id: String,
    pub event_id: String,
    pub kind: String,
    pub body: String,
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let c = Connection::open(path)?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "FULL")?;
    c.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(c)
}

impl Outbox {
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        let api = open(path)?;
        api.execute_batch(
            "CREATE TABLE IF NOT EXISTS subscriptions (
                id TEXT PRIMARY KEY, partition TEXT NOT NULL, url TEXT NOT NULL, secret TEXT NOT NULL,
                events TEXT NOT NULL, threshold REAL NOT NULL, created_ms INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS deliveries (
                id INTEGER PRIMARY KEY AUTOINCREMENT, subscription_id TEXT NOT NULL, event_id TEXT NOT NULL,
                kind TEXT NOT NULL, body TEXT NOT NULL, created_ms INTEGER NOT NULL,
                next_ms INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0);
             CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (next_ms);",
        )?;
        let worker = open(path)?;
        Ok(Self {
            api: Mutex::new(api),
            worker: Mutex::new(worker),
        })
    }

    /// Queue deliveries in one fsync'd transaction, due at once.
    pub fn push(&self, rows: &[NewDelivery], now_ms: i64) -> rusqlite::Result<()> {
        let mut c = self.api.lock();
        let tx = c.transaction()?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO deliveries (subscription_id, event_id, kind, body, created_ms, next_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            )?;
            for r in rows {
                ins.execute(params![r.subscription_id, r.event_id, r.kind, r.body, now_ms])?;
            }
        }
        tx.commit()
    }

    /// Due deliveries (next attempt at or before `now_ms`), oldest due first, skipping `busy`.
    pub fn due(&self, now_ms: i64, busy: &std::collections::HashSet<i64>, limit: usize) -> rusqlite::Result<Vec<Delivery>> {
        let c = self.worker.lock();
        let mut q = c.prepare_cached(
            "SELECT id, subscription_id, event_id, kind, body, created_ms, attempts FROM deliveries
             WHERE next_ms <= ?1 ORDER BY next_ms, id LIMIT ?2",
        )?;
        let rows = q.query_map(params![now_ms, (limit + busy.len()) as i64], |r| {
            Ok(Delivery {
                id: r.get(0)?,
                subscription_id: r.get(1)?,
                event_id: r.get(2)?,
                kind: r.get(3)?,
                body: r.get(4)?,
                created_ms: r.get(5)?,
                attempts: r.get(6)?,
            })
        })?;
        let mut out = Vec::new();
        for d in rows {
            let d = d?;
            if !busy.contains(&d.id) {
                out.push(d);
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// When the next delivery falls due, if any is queued.
    pub fn next_due_ms(&self) -> rusqlite::Result<Option<i64>> {
        let c = self.worker.lock();
        c.query_row("SELECT MIN(next_ms) FROM deliveries", [], |r| r.get::<_, Option<i64>>(0))
    }

    pub fn done(&self, id: i64) -> rusqlite::Result<()> {
        self.worker.lock().execute("DELETE FROM deliveries WHERE id = ?1", [id]).map(|_| ())
    }

    pub fn retry_at(&self, id: i64, attempts: i64, next_ms: i64) -> rusqlite::Result<()> {
        self.worker
            .lock()
            .execute(
                "UPDATE deliveries SET attempts = ?2, next_ms = ?3 WHERE id = ?1",
                params![id, attempts, next_ms],
            )
            .map(|_| ())
    }

    pub fn depth(&self) -> rusqlite::Result<i64> {
        self.worker.lock().query_row("SELECT COUNT(*) FROM deliveries", [], |r| r.get(0))
    }

    pub fn subscriptions(&self) -> rusqlite::Result<Vec<Subscription>> {
        let c = self.api.lock();
        let mut q =
            c.prepare("SELECT id, partition, url, secret, events, threshold, created_ms FROM subscriptions ORDER BY created_ms, id")?;
        let rows = q.query_map([], |r| {
            let events: String = r.get(4)?;
            Ok(Subscription {
                id: r.get(0)?,
                partition: r.get(1)?,
                url: r.get(2)?,
                secret: r.get(3)?,
                events: events.split(',').filter(|e| !e.is_empty()).map(str::to_string).collect(),
                threshold: r.get(5)?,
                created_ms: r.get(6)?,
            })
        })?;
        rows.collect()
    }

    pub fn add_subscription(&self, s: &Subscription) -> rusqlite::Result<()> {
        self.api
            .lock()
            .execute(
                "INSERT INTO subscriptions (id, partition, url, secret, events, threshold, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![s.id, s.partition, s.url, s.secret, s.events.join(","), s.threshold, s.created_ms],
            )
            .map(|_| ())
    }

    /// Remove a subscription and the deliveries still queued for it.
    pub fn remove_subscription(&self, id: &str) -> rusqlite::Result<bool> {
        let mut c = self.api.lock();
        let tx = c.transaction()?;
        let gone = tx.execute("DELETE FROM subscriptions WHERE id = ?1", [id])? > 0;
        tx.execute("DELETE FROM deliveries WHERE subscription_id = ?1", [id])?;
        tx.commit()?;
        Ok(gone)
    }
}
