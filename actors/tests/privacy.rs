//! Biometric data at rest, through the gallery's public API and the files it leaves: every
//! template and index snapshot sealed, a deleted subject gone from every file under the
//! data directory when its delete is answered, keys that stop start-up when wrong, a
//! damaged partition degraded alone, rotation and crypto-shredding.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use facegate_actors::gallery::IndexKind;
use facegate_actors::seal::{admin, template_aad, EncryptionMode, MasterKey, MasterKeySource};
use facegate_actors::{GalleryConfig, GalleryDirectory, PartitionStatus};

const DIM: usize = 32;

fn unit(seed: u32) -> Vec<f32> {
    let v: Vec<f32> = (0..DIM)
        .map(|i| ((seed as f32 * 12.9898 + i as f32 * 78.233).sin() * 43758.547).fract() - 0.5)
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

fn le_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A master key file outside the data directory.
fn key_file(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, MasterKey::generate_hex().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    path
}

fn config(data: &Path, key: Option<&Path>, index: IndexKind) -> GalleryConfig {
    let mut cfg = GalleryConfig {
        data_dir: data.to_path_buf(),
        index,
        ivf_nlist: 4,
        ivf_nprobe: 4,
        approx_min_templates: 300,
        ..GalleryConfig::default()
    };
    match key {
        Some(k) => cfg.encryption.master_key_file = Some(k.to_path_buf()),
        None => cfg.encryption.mode = EncryptionMode::Off,
    }
    cfg
}

async fn until_ready(g: &GalleryDirectory, partition: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while g.info().iter().any(|p| p.name == partition && p.status != PartitionStatus::Ready) {
        assert!(Instant::now() < deadline, "{partition} never became ready: {:?}", g.info());
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn until_degraded(g: &GalleryDirectory, partition: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(p) = g
            .info()
            .into_iter()
            .find(|p| p.name == partition && p.status == PartitionStatus::Degraded)
        {
            return p.reason.unwrap_or_default();
        }
        assert!(Instant::now() < deadline, "{partition} never became degraded: {:?}", g.info());
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn enrol(g: &GalleryDirectory, partition: &str, subject: &str, seed: u32) {
    g.enrol(partition, subject, unit(seed), "m1", 0.9)
        .await
        .unwrap_or_else(|e| panic!("{partition}/{subject}: {e}"));
}

/// Every file under `root` whose bytes contain `needle`.
fn files_holding(root: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(path);
                }
            }
        }
    }
    found
}

/// The files holding any 16-byte piece of `bytes` (a partial copy counts).
fn files_holding_any_piece(root: &Path, bytes: &[u8]) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = bytes.chunks_exact(16).flat_map(|piece| files_holding(root, piece)).collect();
    found.sort();
    found.dedup();
    found
}

/// The stored bytes of a subject's templates (whatever the store holds: sealed or not).
fn stored_blobs(data: &Path, partition: &str, subject: &str) -> Vec<(i64, Vec<u8>)> {
    let conn = rusqlite::Connection::open(data.join(partition).join("templates.sqlite")).unwrap_or_else(|e| panic!("{e}"));
    let mut stmt = conn
        .prepare("SELECT id, vector FROM templates WHERE subject_id = ?1")
        .unwrap_or_else(|e| panic!("{e}"));
    let rows = stmt
        .query_map([subject], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap_or_else(|e| panic!("{e}"));
    rows.map(|r| r.unwrap_or_else(|e| panic!("{e}"))).collect()
}

fn sql(data: &Path, partition: &str, statement: &str) {
    let conn = rusqlite::Connection::open(data.join(partition).join("templates.sqlite")).unwrap_or_else(|e| panic!("{e}"));
    conn.execute_batch(statement).unwrap_or_else(|e| panic!("{statement}: {e}"));
}

/// `n` subjects p0..p{n-1} in `partition`; with IVF the partition is reloaded so that it
/// loads as IVF and leaves its snapshot.
async fn filled(cfg: &GalleryConfig, partition: &str, n: u32) -> Arc<GalleryDirectory> {
    let g = GalleryDirectory::open(cfg.clone(), DIM).unwrap_or_else(|e| panic!("{e}"));
    for i in 0..n {
        enrol(&g, partition, &format!("p{i}"), i).await;
    }
    if cfg.index == IndexKind::Ivf {
        g.close().await;
        let g = GalleryDirectory::open(cfg.clone(), DIM).unwrap_or_else(|e| panic!("{e}"));
        until_ready(&g, partition).await;
        assert!(
            cfg.data_dir.join(partition).join("snapshot/index.faiss").is_file(),
            "an IVF partition leaves its snapshot"
        );
        return g;
    }
    g
}

/// Enrol, delete, and at the acknowledgement look for the subject's bytes in every file.
async fn erasure(index: IndexKind, encrypted: bool) {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = tmp.path().join("data");
    let key = key_file(tmp.path(), "master.key");
    let cfg = config(&data, encrypted.then_some(key.as_path()), index);
    let g = filled(&cfg, "staff", 320).await;
    // A subject with three templates, a distinctive id, enrolled last (its rows in the WAL).
    let subject = "erasure-subject-7f3a91";
    for seed in [9001, 9002, 9003] {
        enrol(&g, "staff", subject, seed).await;
    }
    let stored = stored_blobs(&data, "staff", subject);
    assert_eq!(stored.len(), 3);
    let kept = stored_blobs(&data, "staff", "p5");
    for (_, blob) in &stored {
        assert!(
            !files_holding(&data, blob).is_empty(),
            "the scan finds a stored template before the delete"
        );
    }
    if encrypted {
        assert!(
            files_holding_any_piece(&data, &le_bytes(&unit(9001))).is_empty(),
            "sealed: no plaintext on disk even before the delete"
        );
    }
    g.delete("staff", subject).await.unwrap_or_else(|e| panic!("{e}"));
    // At the acknowledgement: no plaintext, no sealed form, no id, in any file.
    for seed in [9001, 9002, 9003] {
        let found = files_holding_any_piece(&data, &le_bytes(&unit(seed)));
        assert!(found.is_empty(), "{index:?} encrypted={encrypted}: plaintext template in {found:?}");
    }
    for (_, blob) in &stored {
        let found = files_holding(&data, &blob[..32]);
        assert!(found.is_empty(), "{index:?} encrypted={encrypted}: stored template in {found:?}");
    }
    let found = files_holding(&data, subject.as_bytes());
    assert!(found.is_empty(), "{index:?} encrypted={encrypted}: subject id in {found:?}");
    // The others are still there, and found by the same scan.
    assert!(!files_holding(&data, &kept[0].1).is_empty());
    let hits = g.search("staff", unit(5), "m1", 1, 0.0).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(hits[0].subject_id, "p5");
    // After a clean shutdown and a restart, still nothing (the snapshot is rewritten without it).
    g.close().await;
    let g = GalleryDirectory::open(cfg.clone(), DIM).unwrap_or_else(|e| panic!("{e}"));
    until_ready(&g, "staff").await;
    assert!(files_holding(&data, subject.as_bytes()).is_empty());
    assert!(files_holding_any_piece(&data, &le_bytes(&unit(9002))).is_empty());
    assert!(!g.contains("staff", subject).unwrap_or(true));
}

#[actix_rt::test]
async fn a_deleted_subject_is_gone_from_every_file_at_its_acknowledgement_exact_encrypted() {
    erasure(IndexKind::Exact, true).await;
}

#[actix_rt::test]
async fn a_deleted_subject_is_gone_from_every_file_at_its_acknowledgement_ivf_encrypted() {
    erasure(IndexKind::Ivf, true).await;
}

#[actix_rt::test]
async fn a_deleted_subject_is_gone_from_every_file_at_its_acknowledgement_exact_plaintext() {
    erasure(IndexKind::Exact, false).await;
}

#[actix_rt::test]
async fn a_deleted_subject_is_gone_from_every_file_at_its_acknowledgement_ivf_plaintext() {
    erasure(IndexKind::Ivf, false).await;
}

#[actix_rt::test]
async fn templates_and_ivf_snapshots_hold_no_plaintext_and_the_scan_sees_it_when_off() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let key = key_file(tmp.path(), "master.key");
    for encrypted in [true, false] {
        let data = tmp.path().join(format!("data-{encrypted}"));
        let cfg = config(&data, encrypted.then_some(key.as_path()), IndexKind::Ivf);
        let g = filled(&cfg, "big", 320).await;
        g.close().await;
        let snapshot = data.join("big/snapshot");
        let plain = le_bytes(&unit(17));
        let in_snapshot = files_holding(&snapshot, &plain);
        if encrypted {
            let anywhere = files_holding_any_piece(&data, &plain);
            assert!(anywhere.is_empty(), "{anywhere:?}");
        } else {
            assert!(!in_snapshot.is_empty(), "a plaintext snapshot holds the template (the scan works)");
        }
        // The sealed snapshot is restored at the next start (no retraining), and finds.
        let g = GalleryDirectory::open(cfg, DIM).unwrap_or_else(|e| panic!("{e}"));
        until_ready(&g, "big").await;
        let hits = g.search("big", unit(17), "m1", 1, 0.0).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(hits[0].subject_id, "p17");
        let s = g.verify("big", "p17", unit(17), "m1").await.unwrap_or_else(|e| panic!("{e}"));
        assert!((s - 1.0).abs() < 1e-5);
        g.close().await;
    }
}

#[actix_rt::test]
async fn a_missing_or_wrong_master_key_stops_start_up_and_loads_nothing() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = tmp.path().join("data");
    let (key_a, key_b) = (key_file(tmp.path(), "a.key"), key_file(tmp.path(), "b.key"));
    let g = GalleryDirectory::open(config(&data, Some(&key_a), IndexKind::Exact), DIM).unwrap_or_else(|e| panic!("{e}"));
    enrol(&g, "one", "x", 1).await;
    enrol(&g, "two", "y", 2).await;
    g.close().await;

    let err = GalleryDirectory::open(config(&data, Some(&key_b), IndexKind::Exact), DIM)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    let id_b = MasterKey::from_file(&key_b).map(|k| k.id().to_string()).unwrap_or_default();
    assert!(
        err.contains("opens none") && err.contains(&id_b) && err.contains("one") && err.contains("two"),
        "{err}"
    );

    let mut no_key = config(&data, Some(&key_a), IndexKind::Exact);
    no_key.encryption.master_key_file = None;
    if std::env::var_os(facegate_actors::seal::MASTER_KEY_ENV).is_none() {
        let err = GalleryDirectory::open(no_key, DIM).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            err.contains("no master key is configured") && err.contains("FACEGATE_MASTER_KEY"),
            "{err}"
        );
    }
    let mut missing = config(&data, Some(&key_a), IndexKind::Exact);
    missing.encryption.master_key_file = Some(tmp.path().join("nope.key"));
    let err = GalleryDirectory::open(missing, DIM)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("nope.key"), "{err}");

    // Encryption off on encrypted partitions: no plaintext fallback, each says why.
    let g = GalleryDirectory::open(config(&data, None, IndexKind::Exact), DIM).unwrap_or_else(|e| panic!("{e}"));
    let reason = until_degraded(&g, "one").await;
    assert!(reason.contains("encrypted") && reason.contains("off"), "{reason}");
    assert!(g.search("one", unit(1), "m1", 1, 0.0).await.is_err());
}

#[actix_rt::test]
async fn a_damaged_or_swapped_row_degrades_its_partition_while_the_others_serve() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = tmp.path().join("data");
    let key = key_file(tmp.path(), "master.key");
    let cfg = config(&data, Some(&key), IndexKind::Exact);
    let g = GalleryDirectory::open(cfg.clone(), DIM).unwrap_or_else(|e| panic!("{e}"));
    for p in ["flipped", "swapped", "fine"] {
        enrol(&g, p, "a", 1).await;
        enrol(&g, p, "b", 2).await;
    }
    g.close().await;
    // One bit of one ciphertext; two subjects' rows exchanged (each a valid ciphertext).
    sql(
        &data,
        "flipped",
        "UPDATE templates SET vector = CAST(substr(vector, 1, 30) || x'0102030405060708' || substr(vector, 39) AS BLOB) WHERE subject_id = 'b';",
    );
    sql(
        &data,
        "swapped",
        "UPDATE templates SET subject_id = CASE subject_id WHEN 'a' THEN 'b' ELSE 'a' END;",
    );
    let g = GalleryDirectory::open(cfg, DIM).unwrap_or_else(|e| panic!("{e}"));
    for p in ["flipped", "swapped"] {
        let reason = until_degraded(&g, p).await;
        assert!(reason.contains("does not open"), "{p}: {reason}");
        assert!(g.search(p, unit(1), "m1", 1, 0.0).await.is_err(), "no plaintext fallback");
    }
    until_ready(&g, "fine").await;
    let hits = g.search("fine", unit(2), "m1", 1, 0.0).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(hits[0].subject_id, "b");
}

#[actix_rt::test]
async fn a_partition_under_another_master_key_is_degraded_alone() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (key_a, key_b) = (key_file(tmp.path(), "a.key"), key_file(tmp.path(), "b.key"));
    let (data, other) = (tmp.path().join("data"), tmp.path().join("other"));
    for (dir, key, p) in [(&data, &key_a, "mine"), (&other, &key_b, "foreign")] {
        let g = GalleryDirectory::open(config(dir, Some(key), IndexKind::Exact), DIM).unwrap_or_else(|e| panic!("{e}"));
        enrol(&g, p, "s", 3).await;
        g.close().await;
    }
    std::fs::rename(other.join("foreign"), data.join("foreign")).unwrap_or_else(|e| panic!("{e}"));
    let g = GalleryDirectory::open(config(&data, Some(&key_a), IndexKind::Exact), DIM).unwrap_or_else(|e| panic!("{e}"));
    let reason = until_degraded(&g, "foreign").await;
    let id_b = MasterKey::from_file(&key_b).map(|k| k.id().to_string()).unwrap_or_default();
    assert!(reason.contains("does not open") && reason.contains(&id_b), "{reason}");
    until_ready(&g, "mine").await;
    assert_eq!(g.search("mine", unit(3), "m1", 1, 0.0).await.map(|h| h.len()), Ok(1));
}

#[actix_rt::test]
async fn rewrap_changes_the_master_key_without_re_encrypting_and_rekey_reseals_everything() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = tmp.path().join("data");
    let (old, new) = (key_file(tmp.path(), "old.key"), key_file(tmp.path(), "new.key"));
    let cfg = config(&data, Some(&old), IndexKind::Exact);
    let g = GalleryDirectory::open(cfg.clone(), DIM).unwrap_or_else(|e| panic!("{e}"));
    for i in 0..20 {
        enrol(&g, "staff", &format!("p{i}"), i).await;
    }
    enrol(&g, "guests", "g", 99).await;
    g.close().await;
    let before = stored_blobs(&data, "staff", "p4");

    let _lock = admin::lock_data_dir(&data).unwrap_or_else(|e| panic!("{e}"));
    assert!(admin::lock_data_dir(&data).is_err(), "one holder of the data directory at a time");
    let new_key = MasterKey::from_file(&new).unwrap_or_else(|e| panic!("{e}"));
    let lines = admin::rewrap(&cfg, &new_key).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(stored_blobs(&data, "staff", "p4"), before, "templates untouched by a rewrap");
    // Again: idempotent after an interruption.
    let again = admin::rewrap(&cfg, &new_key).unwrap_or_else(|e| panic!("{e}"));
    assert!(again.iter().all(|l| l.contains("already")), "{again:?}");
    drop(_lock);

    let err = GalleryDirectory::open(cfg.clone(), DIM)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("opens none"), "the old key no longer opens anything: {err}");
    let cfg = config(&data, Some(&new), IndexKind::Exact);
    let g = GalleryDirectory::open(cfg.clone(), DIM).unwrap_or_else(|e| panic!("{e}"));
    until_ready(&g, "staff").await;
    assert_eq!(
        g.search("staff", unit(4), "m1", 1, 0.0).await.map(|h| h[0].subject_id.clone()),
        Ok("p4".into())
    );
    g.close().await;

    // Rekey: every row re-sealed under a fresh data key; the old ciphertexts gone from disk.
    let n = admin::rekey(&cfg, "staff").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(n, 20);
    let after = stored_blobs(&data, "staff", "p4");
    assert_ne!(after[0].1, before[0].1);
    assert!(files_holding(&data, &before[0].1[..32]).is_empty(), "old ciphertext erased");
    let g = GalleryDirectory::open(cfg, DIM).unwrap_or_else(|e| panic!("{e}"));
    until_ready(&g, "staff").await;
    assert_eq!(
        g.search("staff", unit(4), "m1", 1, 0.0).await.map(|h| h[0].subject_id.clone()),
        Ok("p4".into())
    );
    assert_eq!(g.info().iter().find(|p| p.name == "staff").and_then(|p| p.subjects), Some(20));
}

#[actix_rt::test]
async fn dropping_a_partition_shreds_its_key_and_leaves_the_others() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = tmp.path().join("data");
    let key = key_file(tmp.path(), "master.key");
    let cfg = config(&data, Some(&key), IndexKind::Exact);
    let g = GalleryDirectory::open(cfg.clone(), DIM).unwrap_or_else(|e| panic!("{e}"));
    enrol(&g, "gone", "dropped-subject-31", 5).await;
    enrol(&g, "kept", "k", 6).await;
    g.close().await;
    let blob = stored_blobs(&data, "gone", "dropped-subject-31");
    admin::drop_partition(&cfg, "gone").unwrap_or_else(|e| panic!("{e}"));
    assert!(!data.join("gone").exists());
    assert!(files_holding(&data, b"dropped-subject-31").is_empty());
    assert!(files_holding(&data, &blob[0].1[..32]).is_empty());
    assert!(
        admin::drop_partition(&cfg, "gone").is_err(),
        "a missing partition is named, not ignored"
    );
    let g = GalleryDirectory::open(cfg, DIM).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(g.names(), vec!["kept"]);
    until_ready(&g, "kept").await;
}

#[actix_rt::test]
async fn a_plaintext_partition_is_sealed_in_place_when_encryption_is_turned_on() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = tmp.path().join("data");
    let key = key_file(tmp.path(), "master.key");
    let g = GalleryDirectory::open(config(&data, None, IndexKind::Exact), DIM).unwrap_or_else(|e| panic!("{e}"));
    assert!(g.master_key().is_none());
    enrol(&g, "legacy", "old-subject", 7).await;
    g.close().await;
    assert!(!files_holding(&data, &le_bytes(&unit(7))).is_empty(), "plaintext while off");
    let g = GalleryDirectory::open(config(&data, Some(&key), IndexKind::Exact), DIM).unwrap_or_else(|e| panic!("{e}"));
    until_ready(&g, "legacy").await;
    assert!(
        files_holding_any_piece(&data, &le_bytes(&unit(7))).is_empty(),
        "sealed in place, plaintext erased"
    );
    let blob = stored_blobs(&data, "legacy", "old-subject");
    let mk =
        MasterKey::parse(&std::fs::read(&key).unwrap_or_default(), MasterKeySource::File(key.clone())).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(g.master_key().map(|m| m.id().to_string()), Some(mk.id().to_string()));
    assert_eq!(blob[0].1.len(), DIM * 4 + facegate_actors::seal::OVERHEAD);
    // The seal API opens it, as any backend would: the data key unwrapped from the store's
    // meta table, the row bound to its partition, id and subject.
    let conn = rusqlite::Connection::open(data.join("legacy/templates.sqlite")).unwrap_or_else(|e| panic!("{e}"));
    let wrapped: String = conn
        .query_row("SELECT value FROM meta WHERE key = 'data_key'", [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{e}"));
    let dk = mk
        .unwrap(&hex::decode(wrapped).unwrap_or_default(), "legacy")
        .unwrap_or_else(|e| panic!("{e}"));
    let plain = dk
        .open(&blob[0].1, &template_aad("legacy", blob[0].0, "old-subject"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&plain[..], &le_bytes(&unit(7))[..]);
    assert!(dk.open(&blob[0].1, &template_aad("legacy", blob[0].0, "someone-else")).is_err());
    let hits = g.search("legacy", unit(7), "m1", 1, 0.0).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(hits[0].subject_id, "old-subject");
}
