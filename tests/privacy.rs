//! Biometric data at rest, seen from the API: a template enrolled from a real photo is
//! sealed on disk, an acknowledged delete leaves no byte of it or of its subject id in any
//! file under the data directory (encryption on and off), the admin health detail says
//! whether encryption is on and why a partition is degraded, and a wrong master key
//! stops start-up.

#[macro_use]
mod common;

use std::path::{Path, PathBuf};

use common::*;
use facegate::config::Right;
use facegate_actors::seal::{template_aad, EncryptionMode, MasterKey, MasterKeySource};

const ADMIN: &str = "privacy-admin-key-0123456";

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

/// Files holding any 16-byte piece of `bytes`.
fn files_holding_any_piece(root: &Path, bytes: &[u8]) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = bytes.chunks_exact(16).flat_map(|p| files_holding(root, p)).collect();
    found.sort();
    found.dedup();
    found
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// The stored row of `subject` and its plaintext template (opened with the master key when
/// the partition is sealed, as any reader holding the key would).
fn stored(data: &Path, partition: &str, subject: &str, key: Option<&Path>) -> (Vec<u8>, Vec<u8>) {
    let conn = rusqlite::Connection::open(data.join(partition).join("templates.sqlite")).unwrap_or_else(|e| panic!("{e}"));
    let (id, blob): (i64, Vec<u8>) = conn
        .query_row("SELECT id, vector FROM templates WHERE subject_id = ?1", [subject], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let Some(key) = key else {
        return (blob.clone(), blob);
    };
    let wrapped: String = conn
        .query_row("SELECT value FROM meta WHERE key = 'data_key'", [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{e}"));
    let mk = MasterKey::parse(&std::fs::read(key).unwrap_or_default(), MasterKeySource::File(key.to_path_buf()))
        .unwrap_or_else(|e| panic!("{e}"));
    let dk = mk.unwrap(&unhex(&wrapped), partition).unwrap_or_else(|e| panic!("{e}"));
    let plain = dk
        .open(&blob, &template_aad(partition, id, subject))
        .unwrap_or_else(|e| panic!("{e}"));
    (blob, plain.to_vec())
}

async fn enrol_delete_scan(encrypted: bool) {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = tmp.path().join("data");
    let mut cfg = config(&data);
    let key_path = cfg.gallery.encryption.master_key_file.clone();
    if !encrypted {
        cfg.gallery.encryption.mode = EncryptionMode::Off;
    }
    cfg.auth.keys = vec![key("ops", ADMIN, &["*"], &[Right::Search, Right::Enrol, Right::Admin])];
    let svc = service!(cfg);
    let subject = "erasure-obama-4821";
    for (s, photo_name) in [(subject, "obama.jpg"), ("biden", "biden.jpg")] {
        let body = serde_json::json!({"image": b64(&photo(photo_name)), "subject_id": s, "partition": "staff"});
        let (status, answer) = post(&svc, "/api/v1/enrol", body, Some(ADMIN)).await;
        assert_eq!(status, 200, "{answer}");
    }
    let key = if encrypted { key_path.as_deref() } else { None };
    let (blob, plain) = stored(&data, "staff", subject, key);
    assert_eq!(plain.len(), 512 * 4, "a 512-d f32 template");
    let (_, kept_plain) = stored(&data, "staff", "biden", key);
    if encrypted {
        assert_ne!(blob, plain);
        assert!(files_holding_any_piece(&data, &plain).is_empty(), "no plaintext template on disk");
    } else {
        assert!(!files_holding(&data, &plain).is_empty(), "plaintext when off (the scan finds it)");
    }
    let (_, h) = get(&svc, "/api/v1/health", Some(ADMIN)).await;
    assert_eq!(h["encryption"]["mode"], if encrypted { "on" } else { "off" }, "{h}");

    let body = serde_json::json!({"subject_id": subject, "partition": "staff"});
    let (status, answer) = post(&svc, "/api/v1/delete", body, Some(ADMIN)).await;
    assert_eq!(status, 200, "{answer}");
    // At the acknowledgement: nothing of the template, its stored form or its id.
    let found = files_holding_any_piece(&data, &plain);
    assert!(found.is_empty(), "encrypted={encrypted}: template bytes in {found:?}");
    assert!(
        files_holding(&data, &blob[..32]).is_empty(),
        "encrypted={encrypted}: the stored row survives"
    );
    // The audit trail keeps the record of the delete itself (who deleted whom): by design
    // the evidence outlives the data, bounded by audit.retention_days (README).
    let found: Vec<PathBuf> = files_holding(&data, subject.as_bytes())
        .into_iter()
        .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("audit.sqlite")))
        .collect();
    assert!(found.is_empty(), "encrypted={encrypted}: subject id in {found:?}");
    // The other subject is still served (and, when off, still found by the same scan).
    if !encrypted {
        assert!(!files_holding(&data, &kept_plain).is_empty());
    }
    let body = serde_json::json!({"image": b64(&photo("biden.jpg")), "subject_id": "biden", "partition": "staff"});
    let (status, answer) = post(&svc, "/api/v1/verify", body, Some(ADMIN)).await;
    assert_eq!(
        (status.as_u16(), element(&answer, "match").as_deref()),
        (200, Some("true")),
        "{answer}"
    );
}

#[actix_web::test]
async fn an_acknowledged_delete_leaves_nothing_of_the_subject_on_disk_encrypted() {
    enrol_delete_scan(true).await;
}

#[actix_web::test]
async fn an_acknowledged_delete_leaves_nothing_of_the_subject_on_disk_plaintext() {
    enrol_delete_scan(false).await;
}

#[actix_web::test]
async fn health_names_a_degraded_partition_and_a_wrong_key_stops_start_up() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = tmp.path().join("data");
    let mut cfg = config(&data);
    cfg.auth.keys = vec![key("ops", ADMIN, &["*"], &[Right::Search, Right::Enrol, Right::Admin])];
    {
        let svc = service!(cfg.clone());
        for p in ["damaged", "sound"] {
            let body = serde_json::json!({"image": b64(&photo("obama.jpg")), "subject_id": "obama", "partition": p});
            let (status, answer) = post(&svc, "/api/v1/enrol", body, Some(ADMIN)).await;
            assert_eq!(status, 200, "{answer}");
        }
    }
    // Another master key opens none of the partitions: start-up stops, naming it.
    let mut wrong = cfg.clone();
    let other = tmp.path().join("other.key");
    std::fs::write(&other, MasterKey::generate_hex().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    wrong.gallery.encryption.master_key_file = Some(other);
    let err = facegate::app::AppState::start(wrong)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("opens none") && err.contains("damaged") && err.contains("sound"),
        "{err}"
    );

    // One flipped bit in one partition: it is degraded with its reason, the other serves.
    let conn = rusqlite::Connection::open(data.join("damaged/templates.sqlite")).unwrap_or_else(|e| panic!("{e}"));
    conn.execute_batch("UPDATE templates SET vector = CAST(substr(vector, 1, 40) || x'0102030405060708' || substr(vector, 49) AS BLOB);")
        .unwrap_or_else(|e| panic!("{e}"));
    drop(conn);
    let svc = service!(cfg);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let h = loop {
        let (_, h) = get(&svc, "/api/v1/health", Some(ADMIN)).await;
        if h["partitions"]["damaged"] == "degraded" && h["partitions"]["sound"] == "ready" {
            break h;
        }
        assert!(std::time::Instant::now() < deadline, "{h}");
        actix_web::rt::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let reason = h["degraded"]["damaged"].as_str().unwrap_or_default();
    assert!(reason.contains("does not open"), "{h}");
    let (_, public) = get(&svc, "/api/v1/health", None).await;
    assert!(public.get("degraded").is_none() && public.get("encryption").is_none(), "{public}");
    let body = serde_json::json!({"image": b64(&photo("obama2.jpg")), "partition": "sound"});
    let (status, answer) = post(&svc, "/api/v1/search", body, Some(ADMIN)).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("<subject_id>obama</subject_id>"), "{answer}");
    let body = serde_json::json!({"image": b64(&photo("obama2.jpg")), "partition": "damaged"});
    let (status, _) = post(&svc, "/api/v1/search", body, Some(ADMIN)).await;
    assert_eq!(status, 503, "a damaged partition answers unavailable, never from plaintext");
}
