//! The audit trail end to end: each biometric operation and each refusal leaves its record
//! (key name, partition, subjects, decision, scores, model; no image, no template), a key
//! reads only its own partitions' records, bad queries are 400, `facegate audit verify`
//! names an edited or removed record, a record that cannot be written fails the request,
//! and a kill -9 during concurrent searches leaves a chain that verifies and holds every
//! answered request.

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{b64, config, get, key, photo, post};
use facegate::config::{AuditOnFailure, Right};

const A: &str = "tenant-a-key-0123456789";
const B: &str = "tenant-b-key-0123456789";
const A_SEARCH: &str = "tenant-a-search-only-000";
const ALL: [Right; 3] = [Right::Search, Right::Enrol, Right::Admin];

fn audit_file(data: &Path) -> PathBuf {
    data.join("audit.sqlite")
}

/// `facegate audit verify --data-dir D`: exit success and stdout.
fn verify_cli(data: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_facegate"))
        .args(["audit", "verify", "--data-dir"])
        .arg(data)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn morph() -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/morph_obama_biden.png");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[actix_web::test]
async fn every_operation_and_refusal_leaves_its_record_and_only_its_tenant_reads_it() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut cfg = config(tmp.path());
    cfg.auth.keys = vec![
        key("desk-a", A, &["alpha"], &ALL),
        key("desk-b", B, &["beta"], &ALL),
        key("gate-a", A_SEARCH, &["alpha"], &[Right::Search]),
    ];
    let svc = service!(cfg);
    let obama = photo("obama.jpg");
    let enrol = |img: &[u8], subject: &str, p: &str| serde_json::json!({"image": b64(img), "subject_id": subject, "partition": p});
    let probe = serde_json::json!({"image": b64(&photo("obama2.jpg")), "partition": "alpha"});

    let steps = [
        ("/api/v1/enrol", enrol(&obama, "obama", "alpha"), A, 200),
        ("/api/v1/enrol", enrol(&photo("biden.jpg"), "biden", "beta"), B, 200),
        ("/api/v1/search", probe.clone(), A_SEARCH, 200),
        ("/api/v1/verify", enrol(&photo("obama2.jpg"), "obama", "alpha"), A, 200),
        ("/api/v1/verify", enrol(&photo("biden.jpg"), "obama", "alpha"), A, 200),
        // One person under a second identity: refused, and the matched subject recorded.
        ("/api/v1/enrol", enrol(&photo("obama3.jpg"), "barack", "alpha"), A, 409),
        (
            "/api/v1/search",
            serde_json::json!({"image": b64(&photo("coffee.png")), "partition": "alpha"}),
            A,
            400,
        ),
        ("/api/v1/enrol", enrol(&morph(), "morph", "alpha"), A, 422),
        (
            "/api/v1/delete",
            serde_json::json!({"subject_id": "obama", "partition": "alpha"}),
            A,
            200,
        ),
        (
            "/api/v1/delete",
            serde_json::json!({"subject_id": "obama", "partition": "alpha"}),
            A,
            404,
        ),
        // Refused before the partition is known to be the key's: not a biometric operation.
        (
            "/api/v1/search",
            serde_json::json!({"image": b64(&obama), "partition": "beta"}),
            A,
            403,
        ),
    ];
    for (path, body, k, want) in steps {
        let (s, answer) = post(&svc, path, body, Some(k)).await;
        assert_eq!(s.as_u16(), want, "{path}: {answer}");
    }

    let (s, got) = get(&svc, "/api/v1/audit", Some(A)).await;
    assert_eq!(s, 200, "{got}");
    let records = got["records"].as_array().cloned().unwrap_or_default();
    let summary: Vec<(String, String, String, u64)> = records
        .iter()
        .map(|r| {
            (
                r["operation"].as_str().unwrap_or_default().to_string(),
                r["key"].as_str().unwrap_or_default().to_string(),
                r["decision"].as_str().unwrap_or_default().to_string(),
                r["status"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    let want: Vec<(&str, &str, &str, u64)> = vec![
        ("enrol", "desk-a", "OK", 200),
        ("search", "gate-a", "OK", 200),
        ("verify", "desk-a", "MATCH", 200),
        ("verify", "desk-a", "NO_MATCH", 200),
        ("enrol", "desk-a", "IDENTITY_COLLISION", 409),
        ("collision", "desk-a", "IDENTITY_COLLISION", 409),
        ("search", "desk-a", "NO_FACE", 400),
        ("enrol", "desk-a", "MORPH_DETECTED", 422),
        ("delete", "desk-a", "OK", 200),
        ("delete", "desk-a", "NOT_FOUND", 404),
    ];
    let summary_ref: Vec<(&str, &str, &str, u64)> = summary
        .iter()
        .map(|(a, b, c, d)| (a.as_str(), b.as_str(), c.as_str(), *d))
        .collect();
    assert_eq!(summary_ref, want, "{got:#}");
    let subjects = |r: &serde_json::Value| -> Vec<String> {
        r["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["id"].as_str().map(str::to_string))
            .collect()
    };
    for r in &records {
        assert_eq!(r["partition"], "alpha", "{r}");
        let text = r.to_string();
        assert!(text.len() < 1024, "a record is small: {} bytes: {text}", text.len());
        assert!(!text.contains(&b64(&obama)[..64]), "the image is not in the record");
        assert!(!text.contains(A) && !text.contains(A_SEARCH), "a key is never recorded");
        assert_eq!(r["prev"].as_str().map(str::len), Some(64), "{r}");
    }
    let model = records[0]["model_id"].as_str().unwrap_or_default();
    assert_eq!(model, "arcface-w600k-mbf");
    assert_eq!(subjects(&records[0]), ["obama"]);
    assert_eq!(subjects(&records[1]), ["obama"], "the candidate the search returned");
    assert!(records[1]["subjects"][0]["score"].as_f64().unwrap_or(0.0) > 0.4, "{}", records[1]);
    assert!(records[1]["quality"].as_f64().is_some(), "{}", records[1]);
    assert_eq!(subjects(&records[2]), ["obama"]);
    assert!(records[3]["subjects"][0]["score"].as_f64().unwrap_or(1.0) < 0.28, "{}", records[3]);
    assert_eq!(
        subjects(&records[4]),
        ["barack", "obama"],
        "the enrolment and the subject it matched"
    );
    assert_eq!(subjects(&records[5]), ["barack", "obama"]);
    assert!(subjects(&records[6]).is_empty(), "no face: nothing compared");
    assert_eq!(records[7]["gate"]["name"], "mad_score", "{}", records[7]);
    assert!(records[7]["gate"]["score"].as_f64().is_some());
    assert_eq!(subjects(&records[8]), ["obama"]);

    // Tenant B sees its own enrolment only; a foreign and a missing partition are alike.
    let (s, got_b) = get(&svc, "/api/v1/audit", Some(B)).await;
    assert_eq!(s, 200);
    let b_records = got_b["records"].as_array().cloned().unwrap_or_default();
    assert_eq!(b_records.len(), 1, "{got_b}");
    assert_eq!(b_records[0]["partition"], "beta");
    assert!(
        !got_b.to_string().contains("alpha") && !got_b.to_string().contains("obama"),
        "{got_b}"
    );
    let (s1, foreign) = get(&svc, "/api/v1/audit?partition=alpha", Some(B)).await;
    let (s2, missing) = get(&svc, "/api/v1/audit?partition=gamma", Some(B)).await;
    assert_eq!((s1.as_u16(), s2.as_u16()), (403, 403));
    assert_eq!(foreign.to_string().replace("alpha", "P"), missing.to_string().replace("gamma", "P"));
    let (s, _) = get(&svc, "/api/v1/audit", Some(A_SEARCH)).await;
    assert_eq!(s, 403, "reading the audit trail needs the admin right");
    let (s, _) = get(&svc, "/api/v1/audit", None).await;
    assert_eq!(s, 401);

    // Filters: subject, partition, time range, limit.
    let (_, by_subject) = get(&svc, "/api/v1/audit?subject=barack", Some(A)).await;
    assert_eq!(by_subject["records"].as_array().map(Vec::len), Some(2), "{by_subject}");
    let (_, limited) = get(&svc, "/api/v1/audit?partition=alpha&limit=3", Some(A)).await;
    assert_eq!(limited["records"].as_array().map(Vec::len), Some(3));
    assert_eq!(limited["truncated"], true);
    let (_, future) = get(&svc, "/api/v1/audit?from=2100-01-01T00:00:00Z", Some(A)).await;
    assert_eq!(future["records"].as_array().map(Vec::len), Some(0), "{future}");
    let (_, window) = get(&svc, "/api/v1/audit?from=0&to=2100-01-01T00:00:00.5Z", Some(A)).await;
    assert_eq!(window["records"].as_array().map(Vec::len), Some(want.len()));

    for (query, says) in [
        ("from=yesterday", "from:"),
        ("from=2026-12-08T00:00:00Z&to=2026-12-07T00:00:00Z", "before"),
        ("to=2026-02-30T00:00:00Z", "not a valid date"),
        ("from=2026-12-07T10:00:00%2B01:00", "UTC"),
        ("limit=0", "limit"),
        ("limit=many", "limit"),
        ("partition=..%2Fetc", "partition"),
        ("subject=%0A", "subject"),
        ("who=me", "who"),
    ] {
        let (s, body) = get(&svc, &format!("/api/v1/audit?{query}"), Some(A)).await;
        assert_eq!(s, 400, "{query}: {body}");
        let text = body.to_string();
        assert!(text.contains("INVALID_REQUEST") && text.contains(says), "{query}: {text}");
    }

    // The chain of all of it verifies from the command line.
    let (ok, out) = verify_cli(tmp.path());
    assert!(ok, "{out}");
    assert!(out.contains("11 records intact"), "{out}");
}

#[test]
fn editing_or_removing_a_record_makes_audit_verify_name_it() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    actix_web::rt::System::new().block_on(async {
        let mut cfg = config(tmp.path());
        cfg.collision.policy = facegate::config::CollisionPolicy::Off;
        let svc = service!(cfg);
        for i in 0..5 {
            let body = serde_json::json!({"image": b64(&photo("obama.jpg")), "subject_id": format!("s{i}")});
            let (s, answer) = post(&svc, "/api/v1/enrol", body, None).await;
            assert_eq!(s, 200, "{answer}");
        }
    });
    let (ok, out) = verify_cli(tmp.path());
    assert!(ok && out.contains("5 records intact"), "{out}");
    let conn = rusqlite::Connection::open(audit_file(tmp.path())).unwrap_or_else(|e| panic!("{e}"));
    let exec = |sql: &str| conn.execute_batch(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));

    // The decision of record 3 rewritten.
    exec("UPDATE records SET body = replace(body, '\"OK\"', '\"NO_FACE\"') WHERE seq = 3");
    let (ok, out) = verify_cli(tmp.path());
    assert!(!ok, "an edited record must fail: {out}");
    assert!(out.contains("record 3:") && out.contains("edited"), "{out}");

    // Re-hashing the edited record moves the break to the next one, which names it.
    exec("UPDATE records SET hash = (SELECT hash FROM records WHERE seq = 3) WHERE seq = 3");
    let h: Vec<u8> = conn
        .query_row("SELECT body FROM records WHERE seq = 3", [], |r| r.get::<_, String>(0))
        .map(|b| {
            use sha2::Digest;
            sha2::Sha256::digest(b.as_bytes()).to_vec()
        })
        .unwrap_or_else(|e| panic!("{e}"));
    conn.execute("UPDATE records SET hash = ?1 WHERE seq = 3", [h])
        .unwrap_or_else(|e| panic!("{e}"));
    let (ok, out) = verify_cli(tmp.path());
    assert!(!ok && out.contains("record 4:") && out.contains("record 3"), "{out}");

    exec("DELETE FROM records WHERE seq >= 3; DELETE FROM record_subjects WHERE seq >= 3;");
    drop(conn);
    let (ok, out) = verify_cli(tmp.path());
    assert!(ok, "cutting the end shows only against a head noted elsewhere: {out}");
    assert!(out.contains("head: record 2"), "{out}");
    let (ok, out) = verify_cli(&tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")).path().join("none"));
    assert!(!ok && out.contains("does not exist"), "{out}");
}

#[test]
fn a_removed_record_in_the_middle_is_named() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    actix_web::rt::System::new().block_on(async {
        let svc = service!(config(tmp.path()));
        for _ in 0..4 {
            let body = serde_json::json!({"image": b64(&photo("coffee.png"))});
            let (s, _) = post(&svc, "/api/v1/search", body, None).await;
            assert_eq!(s, 404, "no partition yet: a refusal is recorded too");
        }
    });
    let conn = rusqlite::Connection::open(audit_file(tmp.path())).unwrap_or_else(|e| panic!("{e}"));
    conn.execute_batch("DELETE FROM records WHERE seq = 2")
        .unwrap_or_else(|e| panic!("{e}"));
    let (ok, out) = verify_cli(tmp.path());
    assert!(!ok && out.contains("record 2:") && out.contains("missing"), "{out}");
}

#[actix_web::test]
async fn a_record_that_cannot_be_written_fails_the_request_or_is_logged() {
    for on_failure in [AuditOnFailure::Fail, AuditOnFailure::Log] {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut cfg = config(tmp.path());
        cfg.audit.on_failure = on_failure;
        let svc = service!(cfg);
        let search = || serde_json::json!({"image": b64(&photo("obama.jpg"))});
        let (s, _) = post(&svc, "/api/v1/search", search(), None).await;
        assert_eq!(s, 404, "no partition yet");
        // Another process holds the audit file's write lock (a backup, a shell): the
        // writer's commit times out.
        let other = rusqlite::Connection::open(audit_file(tmp.path())).unwrap_or_else(|e| panic!("{e}"));
        other.execute_batch("BEGIN IMMEDIATE").unwrap_or_else(|e| panic!("{e}"));
        let (s, answer) = post(&svc, "/api/v1/search", search(), None).await;
        match on_failure {
            AuditOnFailure::Fail => {
                assert_eq!(s, 503, "{answer}");
                assert!(answer.contains("UNAVAILABLE") && answer.contains("audit"), "{answer}");
                // While the file takes no writes, requests are refused before they run.
                let t = Instant::now();
                let (s, _) = post(&svc, "/api/v1/delete", serde_json::json!({"subject_id": "x"}), None).await;
                assert_eq!(s, 503);
                assert!(t.elapsed() < Duration::from_secs(1), "refused at once, not after a timeout");
            }
            AuditOnFailure::Log => assert_eq!(s, 404, "answered as if written: {answer}"),
        }
        other.execute_batch("COMMIT").unwrap_or_else(|e| panic!("{e}"));
        // The writer finds the file writable again.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (s, answer) = post(&svc, "/api/v1/search", search(), None).await;
            if s == 404 {
                break;
            }
            assert!(Instant::now() < deadline, "the audit trail did not recover: {answer}");
            actix_web::rt::time::sleep(Duration::from_millis(200)).await;
        }
        let (ok, out) = verify_cli(tmp.path());
        assert!(ok, "{out}");
    }
}

#[actix_web::test]
async fn a_disabled_audit_trail_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut cfg = config(tmp.path());
    cfg.audit.enabled = false;
    let svc = service!(cfg);
    let (s, _) = post(&svc, "/api/v1/search", serde_json::json!({"image": b64(&photo("obama.jpg"))}), None).await;
    assert_eq!(s, 404);
    assert!(!audit_file(tmp.path()).exists());
    let (s, got) = get(&svc, "/api/v1/audit", None).await;
    assert_eq!((s.as_u16(), got["records"].as_array().map(Vec::len)), (200, Some(0)));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"))
}

fn spawn(data: &Path, port: u16) -> Child {
    common::spawn_server(data, port, &[])
}

/// kill -9 while searches and enrolments are in flight: the chain verifies (its last record
/// complete or absent) and holds every request that was answered.
#[test]
fn a_kill_during_concurrent_searches_leaves_a_verifiable_chain_holding_every_answer() {
    let data = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let port = free_port();
    let mut server = spawn(data.path(), port);
    let base = format!("http://127.0.0.1:{port}");
    let image = b64(&photo("obama.jpg"));
    let agent = ureq::agent();
    let enrolled = agent
        .post(&format!("{base}/api/v1/enrol"))
        .send_string(&serde_json::json!({"image": image, "subject_id": "obama"}).to_string());
    assert_eq!(enrolled.map(|r| r.status()).ok(), Some(200));
    let answered = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (base, answered, stop) = (base.clone(), answered.clone(), stop.clone());
            let body = serde_json::json!({"image": b64(&photo("obama2.jpg"))}).to_string();
            std::thread::spawn(move || {
                let agent = ureq::agent();
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let id = format!("kill-{c}-{i}");
                    match agent
                        .post(&format!("{base}/api/v1/search"))
                        .set("X-Request-Id", &id)
                        .send_string(&body)
                    {
                        Ok(r) if r.status() == 200 => answered.lock().unwrap_or_else(|e| e.into_inner()).push(id),
                        Ok(_) | Err(ureq::Error::Status(..)) => {}
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while answered.lock().unwrap_or_else(|e| e.into_inner()).len() < 20 {
        assert!(Instant::now() < deadline, "no search was answered");
        std::thread::sleep(Duration::from_millis(10));
    }
    server.kill().unwrap_or_else(|e| panic!("{e}")); // SIGKILL
    let _ = server.wait();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    let (ok, out) = verify_cli(data.path());
    assert!(ok, "the chain after kill -9: {out}");
    let conn = rusqlite::Connection::open(audit_file(data.path())).unwrap_or_else(|e| panic!("{e}"));
    let answered = answered.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for id in &answered {
        let n: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM records WHERE body LIKE '%\"request_id\":\"' || ?1 || '\"%'",
                [id],
                |r| r.get(0),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n, 1, "search {id} was answered 200 but its record is not in the trail");
    }
    // The restarted server continues the same chain.
    drop(conn);
    let mut server = spawn(data.path(), port);
    let again = ureq::agent()
        .post(&format!("{base}/api/v1/search"))
        .send_string(&serde_json::json!({"image": b64(&photo("obama2.jpg"))}).to_string());
    assert_eq!(again.map(|r| r.status()).ok(), Some(200));
    let _ = server.kill();
    let _ = server.wait();
    let (ok, out) = verify_cli(data.path());
    assert!(ok, "{out}");
}
