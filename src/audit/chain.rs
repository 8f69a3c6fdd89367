//! Verifying the chain: every record's `prev` is the SHA-256 of the record before it (or of
//! the anchor pruning left), seqs follow each other without gaps, each record still hashes
//! to what was stored when it was written, and the columns queries use (time, partition,
//! subjects) agree with the hashed body. The first record that fails is named.

use std::collections::BTreeSet;
use std::path::Path;

use rusqlite::{params, Connection, OpenFlags};

use super::record::{format_time, hash, hex, Hash, Record};
use super::writer::anchor;

/// A chain that verified.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub records: u64,
    /// Records before this seq were pruned (0: none).
    pub anchor_seq: u64,
    /// The last record's seq and hash: noted elsewhere, they let a later check see that
    /// no record was cut from the end (the one change a chain cannot show by itself).
    pub head_seq: u64,
    pub head_hash: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum VerifyError {
    #[error("cannot read the audit file: {0}")]
    Unreadable(String),
    #[error("record {seq}: {reason}")]
    Broken { seq: u64, reason: String },
}

/// Open the audit file read-only and check the whole chain.
pub fn verify_file(path: &Path) -> Result<Verified, VerifyError> {
    if !path.is_file() {
        return Err(VerifyError::Unreadable(format!("{} does not exist", path.display())));
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| VerifyError::Unreadable(e.to_string()))?;
    verify(&conn)
}

pub fn verify(conn: &Connection) -> Result<Verified, VerifyError> {
    let io = |e: rusqlite::Error| VerifyError::Unreadable(e.to_string());
    let (anchor_seq, anchor_hash) = anchor(conn).map_err(io)?;
    let mut expected: (u64, Hash) = (anchor_seq + 1, anchor_hash);
    let mut count = 0u64;
    let mut rows_stmt = conn
        .prepare("SELECT seq, time_ms, partition, body, hash FROM records ORDER BY seq")
        .map_err(io)?;
    let mut subjects_stmt = conn.prepare("SELECT subject FROM record_subjects WHERE seq = ?1").map_err(io)?;
    let mut rows = rows_stmt.query([]).map_err(io)?;
    while let Some(row) = rows.next().map_err(io)? {
        let seq: i64 = row.get(0).map_err(io)?;
        let seq = seq as u64;
        let broken = |reason: String| VerifyError::Broken { seq, reason };
        if seq != expected.0 {
            return Err(VerifyError::Broken {
                seq: expected.0,
                reason: format!(
                    "missing: the chain goes from record {} to record {seq}",
                    expected.0.saturating_sub(1)
                ),
            });
        }
        let time_ms: i64 = row.get(1).map_err(io)?;
        let partition: String = row.get(2).map_err(io)?;
        let body: String = row.get(3).map_err(|e| broken(format!("its body is not text ({e}): edited")))?;
        let stored: Vec<u8> = row.get(4).map_err(|e| broken(format!("its hash is unreadable ({e})")))?;
        let h = hash(body.as_bytes());
        if stored != h {
            return Err(broken(
                "edited: its bytes no longer hash to the hash stored when it was written".into(),
            ));
        }
        let record: Record = serde_json::from_str(&body).map_err(|e| broken(format!("edited: its body is not a record ({e})")))?;
        if record.prev != hex(&expected.1) {
            let before = if seq == anchor_seq + 1 && anchor_seq > 0 {
                format!("the anchor left by pruning (record {anchor_seq})")
            } else if seq == 1 {
                "the start of the chain".to_string()
            } else {
                format!("record {}", seq - 1)
            };
            return Err(broken(format!(
                "does not follow {before}: that record or this one was edited, or records were removed"
            )));
        }
        if record.seq != seq || record.partition != partition || record.time != format_time(time_ms) {
            return Err(broken(
                "edited: its seq, time or partition columns disagree with its hashed body".into(),
            ));
        }
        let indexed: BTreeSet<String> = subjects_stmt
            .query_map(params![seq as i64], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(io)?;
        let claimed: BTreeSet<String> = record.subjects.iter().map(|s| s.id.clone()).collect();
        if indexed != claimed {
            return Err(broken("edited: its subject index disagrees with its hashed body".into()));
        }
        expected = (seq + 1, h);
        count += 1;
    }
    let orphan: Option<i64> = conn
        .query_row(
            "SELECT seq FROM record_subjects WHERE seq NOT IN (SELECT seq FROM records) LIMIT 1",
            [],
            |r| r.get(0),
        )
        .ok();
    if let Some(seq) = orphan {
        return Err(VerifyError::Broken {
            seq: seq as u64,
            reason: "removed: its subjects are indexed but the record is gone".into(),
        });
    }
    Ok(Verified {
        records: count,
        anchor_seq,
        head_seq: expected.0 - 1,
        head_hash: hex(&expected.1),
    })
}

#[cfg(test)]
mod tests {
    use super::super::record::{Draft, Operation, Subject};
    use super::super::writer::{open, prune, Writer, FILE_NAME};
    use super::*;

    fn draft(i: usize) -> Draft {
        Draft {
            request_id: format!("r{i}"),
            key: Some("k".into()),
            operation: Operation::Enrol,
            partition: if i.is_multiple_of(2) { "a".into() } else { "b".into() },
            decision: "OK".into(),
            status: 200,
            subjects: vec![Subject {
                id: format!("s{i}"),
                score: None,
            }],
            quality: Some(0.5),
            gate: None,
            model_id: Some("m".into()),
        }
    }

    fn write(path: &Path, n: usize) {
        actix_web::rt::System::new().block_on(async {
            let w = Writer::start(path, None).unwrap_or_else(|e| panic!("{e}"));
            let all: Vec<_> = (0..n).map(|i| w.append(draft(i))).collect();
            for r in futures_util::future::join_all(all).await {
                r.unwrap_or_else(|e| panic!("{e}"));
            }
        });
    }

    #[test]
    fn every_kind_of_tampering_names_its_record() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join(FILE_NAME);
        write(&path, 10);
        write(&path, 2); // a restart continues the chain
        let ok = verify_file(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((ok.records, ok.head_seq, ok.anchor_seq), (12, 12, 0));

        let conn = open(&path).unwrap_or_else(|e| panic!("{e}"));
        let run = |sql: &str| conn.execute_batch(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        let broken_at = |conn: &Connection| match verify(conn) {
            Err(VerifyError::Broken { seq, .. }) => seq,
            other => panic!("{other:?}"),
        };
        run("SAVEPOINT t; UPDATE records SET body = replace(body, '\"s4\"', '\"sX\"') WHERE seq = 5;");
        assert_eq!(broken_at(&conn), 5, "an edited body");
        run("ROLLBACK TO t; RELEASE t;");
        // An editor who also rewrites the stored hash is caught by the next record.
        run("SAVEPOINT t; UPDATE records SET body = replace(body, '\"OK\"', '\"NO\"') WHERE seq = 5;");
        let h: Vec<u8> = conn
            .query_row("SELECT body FROM records WHERE seq = 5", [], |r| r.get::<_, String>(0))
            .map(|b| hash(b.as_bytes()).to_vec())
            .unwrap_or_else(|e| panic!("{e}"));
        conn.execute("UPDATE records SET hash = ?1 WHERE seq = 5", params![h])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(broken_at(&conn), 6);
        run("ROLLBACK TO t; RELEASE t;");
        run("SAVEPOINT t; DELETE FROM records WHERE seq = 7; DELETE FROM record_subjects WHERE seq = 7;");
        assert_eq!(broken_at(&conn), 7, "a removed record");
        run("ROLLBACK TO t; RELEASE t;");
        run("SAVEPOINT t; UPDATE records SET partition = 'b' WHERE seq = 3;");
        assert_eq!(broken_at(&conn), 3, "a partition column moved to another tenant");
        run("ROLLBACK TO t; RELEASE t;");
        run("SAVEPOINT t; DELETE FROM record_subjects WHERE seq = 2;");
        assert_eq!(broken_at(&conn), 2, "a subject hidden from queries");
        run("ROLLBACK TO t; RELEASE t;");
        assert!(verify(&conn).is_ok());
    }

    #[test]
    fn pruning_leaves_an_anchor_the_rest_verifies_from() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join(FILE_NAME);
        write(&path, 6);
        let mut conn = open(&path).unwrap_or_else(|e| panic!("{e}"));
        conn.execute("UPDATE records SET time_ms = time_ms - 1000000 WHERE seq <= 4", [])
            .unwrap_or_else(|e| panic!("{e}"));
        // (Records 1-4 now look 1000 s old to pruning; their bodies still say otherwise,
        // which does not matter once they are gone.)
        let cutoff = super::super::writer::now_ms() - 500_000;
        assert_eq!(prune(&mut conn, cutoff).unwrap_or_else(|e| panic!("{e}")), 4);
        // Records 5 and 6 were unchanged: they verify from the anchor (record 4's hash).
        let ok = verify(&conn).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((ok.records, ok.anchor_seq, ok.head_seq), (2, 4, 6));
        assert_eq!(prune(&mut conn, cutoff).unwrap_or_else(|e| panic!("{e}")), 0);
        conn.execute("DELETE FROM records WHERE seq = 5", [])
            .unwrap_or_else(|e| panic!("{e}"));
        conn.execute("DELETE FROM record_subjects WHERE seq = 5", [])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(verify(&conn), Err(VerifyError::Broken { seq: 5, .. })));
        write(&path, 1);
        let conn = open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(verify(&conn), Err(VerifyError::Broken { seq: 5, .. })), "the gap stays");
    }
}
