//! Several facegate nodes on one real PostgreSQL (started per test from the wheel that
//! `facegate.sh setup` installs): what one node writes the others serve, an acknowledged
//! enrolment survives a node's kill -9 and a failover to a synchronous standby, and a
//! database that goes away gives 503 UNAVAILABLE, health storage false, and recovery on its
//! own when it is back.

#[macro_use]
mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::dev::ServiceResponse;
use common::pg::{free_port, Pg};
use common::{b64, element, get, photo, post, Storage};
use facegate::config::Config;
use facegate_actors::{GalleryBackend, GalleryDirectory};

fn node_config(storage: &Storage, url: &str) -> Config {
    let mut cfg = storage.config();
    cfg.gallery.backend = GalleryBackend::Postgres;
    cfg.gallery.postgres.url = url.to_string();
    cfg.gallery.postgres.poll_ms = 200;
    cfg.gallery.postgres.timeout_ms = 2_000;
    cfg
}

/// Search `partition` on `svc` with `image` until `want(answer)` holds; the last answer.
async fn search_until<S, B: actix_web::body::MessageBody>(svc: &S, image: &str, want: impl Fn(u16, &str) -> bool) -> (u16, String)
where
    S: actix_web::dev::Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, body) = post(svc, "/api/v1/search", serde_json::json!({"image": image, "top_k": 3}), None).await;
        if want(s.as_u16(), &body) || Instant::now() > deadline {
            return (s.as_u16(), body);
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_web::test]
async fn what_one_node_enrols_the_other_serves_and_a_delete_on_it_reaches_the_first() {
    let storage = Storage::new(true);
    let url = storage.pg.as_ref().map(|p| p.url()).unwrap_or_default();
    let (dir_a, dir_b) = (Storage::new(false), Storage::new(false));
    let a = service!(node_config(&dir_a, &url));
    let b = service!(node_config(&dir_b, &url));
    let (obama, probe) = (b64(&photo("obama.jpg")), b64(&photo("obama2.jpg")));
    let (s, body) = post(
        &a,
        "/api/v1/enrol",
        serde_json::json!({"image": obama, "subject_id": "obama"}),
        None,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    // Read-your-writes on A at once; B converges.
    let (s, body) = post(&a, "/api/v1/search", serde_json::json!({"image": probe}), None).await;
    assert_eq!(
        (s.as_u16(), element(&body, "subject_id").as_deref()),
        (200, Some("obama")),
        "{body}"
    );
    let (s, body) = search_until(&b, &probe, |s, b| s == 200 && b.contains("<subject_id>obama</subject_id>")).await;
    assert_eq!(
        (s, element(&body, "subject_id").as_deref()),
        (200, Some("obama")),
        "B never saw A's enrolment: {body}"
    );
    let (s, body) = post(
        &b,
        "/api/v1/verify",
        serde_json::json!({"image": probe, "subject_id": "obama"}),
        None,
    )
    .await;
    assert_eq!((s.as_u16(), element(&body, "match").as_deref()), (200, Some("true")), "{body}");
    let (_, stats) = get(&b, "/api/v1/stats", None).await;
    assert_eq!(stats, serde_json::json!({"total_subjects": 1, "partitions": {"default": 1}}));
    // A delete on B: A answers 404 once it has converged.
    let (s, body) = post(&b, "/api/v1/delete", serde_json::json!({"subject_id": "obama"}), None).await;
    assert_eq!(s, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, body) = post(
            &a,
            "/api/v1/verify",
            serde_json::json!({"image": probe, "subject_id": "obama"}),
            None,
        )
        .await;
        if s == 404 {
            assert_eq!(element(&body, "status").as_deref(), Some("NOT_FOUND"));
            break;
        }
        assert!(Instant::now() < deadline, "A still verifies a subject deleted on B: {s} {body}");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let (s, body) = post(&a, "/api/v1/search", serde_json::json!({"image": probe}), None).await;
    assert_eq!((s.as_u16(), body.contains("<candidates/>")), (200, true), "{body}");
}

#[actix_web::test]
async fn a_database_that_goes_away_gives_503_and_health_storage_false_then_recovers_by_itself() {
    let storage = Storage::new(true);
    let pg = storage.pg.as_ref().unwrap_or_else(|| panic!("no PostgreSQL"));
    let svc = service!(storage.config());
    let (obama, probe) = (b64(&photo("obama.jpg")), b64(&photo("obama2.jpg")));
    let (s, body) = post(
        &svc,
        "/api/v1/enrol",
        serde_json::json!({"image": obama, "subject_id": "obama"}),
        None,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    pg.stop();
    let (s, body) = search_until(&svc, &probe, |s, _| s == 503).await;
    assert_eq!((s, element(&body, "status").as_deref()), (503, Some("UNAVAILABLE")), "{body}");
    // Retry-After on the refusal, and every biometric call refused alike (never 500).
    let req = actix_web::test::TestRequest::post()
        .uri("/api/v1/enrol")
        .set_payload(serde_json::json!({"image": obama, "subject_id": "second"}).to_string())
        .to_request();
    let started = Instant::now();
    let res = actix_web::test::call_service(&svc, req).await;
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "an enrolment waited past the request timeout"
    );
    for (path, body) in [
        ("/api/v1/verify", serde_json::json!({"image": probe, "subject_id": "obama"})),
        ("/api/v1/delete", serde_json::json!({"subject_id": "obama"})),
    ] {
        let (s, answer) = post(&svc, path, body, None).await;
        assert_eq!(
            (s.as_u16(), element(&answer, "status").as_deref()),
            (503, Some("UNAVAILABLE")),
            "{path}: {answer}"
        );
    }
    let (s, health) = get(&svc, "/api/v1/health", None).await;
    assert_eq!(
        (s.as_u16(), &health["components"]["storage"]),
        (503, &serde_json::json!(false)),
        "{health}"
    );
    // Back: the node reconnects and serves without a restart.
    pg.restart();
    let (s, body) = search_until(&svc, &probe, |s, _| s == 200).await;
    assert_eq!((s, element(&body, "subject_id").as_deref()), (200, Some("obama")), "{body}");
    let (s, health) = get(&svc, "/api/v1/health", None).await;
    assert_eq!(
        (s.as_u16(), &health["components"]["storage"]),
        (200, &serde_json::json!(true)),
        "{health}"
    );
    let (s, body) = post(
        &svc,
        "/api/v1/enrol",
        serde_json::json!({"image": b64(&photo("biden.jpg")), "subject_id": "second"}),
        None,
    )
    .await;
    assert_eq!(s, 200, "{body}");
}

/// The server binary on `url`, serving on `port`.
fn spawn_node(data: &std::path::Path, url: &str, port: u16) -> Child {
    common::spawn_server(
        data,
        port,
        &[
            ("FACEGATE__GALLERY__BACKEND", "postgres"),
            ("FACEGATE__GALLERY__POSTGRES__URL", url),
            ("FACEGATE__GALLERY__POSTGRES__TIMEOUT_MS", "2000"),
        ],
    )
}

/// `writers` threads enrolling distinct subjects over HTTP until `stop`; the subjects
/// answered 200 go into `acked`.
fn writers(port: u16, n: usize, acked: &Arc<Mutex<Vec<String>>>, stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    let image = b64(&photo("obama.jpg"));
    (0..n)
        .map(|w| {
            let (image, acked, stop) = (image.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(40)).build();
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let subject = format!("w{w}-{i}");
                    let body = serde_json::json!({"image": image, "subject_id": subject}).to_string();
                    match agent
                        .post(&format!("http://127.0.0.1:{port}/api/v1/enrol"))
                        .set("Content-Type", "application/json")
                        .send_string(&body)
                    {
                        Ok(r) if r.status() == 200 => acked.lock().unwrap_or_else(|e| e.into_inner()).push(subject),
                        Ok(_) | Err(ureq::Error::Status(..)) => std::thread::sleep(Duration::from_millis(50)),
                        Err(_) => break, // the node is gone
                    }
                }
            })
        })
        .collect()
}

fn count(acked: &Arc<Mutex<Vec<String>>>) -> usize {
    acked.lock().unwrap_or_else(|e| e.into_inner()).len()
}

/// Every subject of `acked` is in `partition` on the node `g`, after convergence.
async fn all_present(g: &GalleryDirectory, acked: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let missing: Vec<&String> = acked.iter().filter(|s| g.contains("default", s) != Ok(true)).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} acknowledged enrolments missing on node B, e.g. {:?}",
            missing.len(),
            acked.len(),
            &missing[..missing.len().min(5)]
        );
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Node B: a partition directory on the same database (no face pipeline needed to check).
fn node_b(url: &str, data: &std::path::Path) -> Arc<GalleryDirectory> {
    let cfg = facegate_actors::GalleryConfig {
        data_dir: data.to_path_buf(),
        backend: GalleryBackend::Postgres,
        postgres: facegate_actors::PostgresConfig {
            url: url.into(),
            poll_ms: 200,
            ..Default::default()
        },
        ..Default::default()
    };
    GalleryDirectory::open(cfg, 512).unwrap_or_else(|e| panic!("{e}"))
}

#[actix_web::test]
async fn a_node_killed_during_eight_concurrent_writers_loses_no_acknowledged_enrolment() {
    let pg = Pg::start();
    let (data_a, data_b) = (Storage::new(false), Storage::new(false));
    let port = free_port();
    let mut a = spawn_node(data_a.path(), &pg.url(), port);
    let b = node_b(&pg.url(), data_b.path());
    let (acked, stop) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(false)));
    let threads = writers(port, 8, &acked, &stop);
    let deadline = Instant::now() + Duration::from_secs(120);
    while count(&acked) < 24 {
        assert!(Instant::now() < deadline, "too few enrolments acknowledged: {}", count(&acked));
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    a.kill().unwrap_or_else(|e| panic!("{e}")); // SIGKILL: no shutdown code runs
    let _ = a.wait();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let acked = acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
    all_present(&b, &acked).await;
    let stored: usize = pg
        .sql("SELECT count(DISTINCT subject_id) FROM facegate_templates")
        .parse()
        .unwrap_or(0);
    assert!(stored >= acked.len(), "{stored} stored for {} acknowledged", acked.len());
}

#[actix_web::test]
async fn a_primary_killed_and_its_synchronous_standby_promoted_loses_no_acknowledged_enrolment() {
    let primary = Pg::start();
    let standby = primary.standby(true);
    let url = format!(
        "postgresql://facegate:{}@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write&connect_timeout=2",
        primary.password, primary.port, standby.port
    );
    let (data_a, data_b) = (Storage::new(false), Storage::new(false));
    let port = free_port();
    let mut a = spawn_node(data_a.path(), &url, port);
    let (acked, stop) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(false)));
    let threads = writers(port, 8, &acked, &stop);
    let deadline = Instant::now() + Duration::from_secs(120);
    while count(&acked) < 16 {
        assert!(Instant::now() < deadline, "too few enrolments acknowledged: {}", count(&acked));
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    primary.kill9();
    let before = count(&acked);
    standby.promote();
    // The node finds the new primary by itself (multi-host URL, read-write target).
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&acked) < before + 8 {
        assert!(Instant::now() < deadline, "no enrolment acknowledged after the failover");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let _ = a.kill();
    let _ = a.wait();
    let acked = acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let b = node_b(&url, data_b.path());
    all_present(&b, &acked).await;
}

#[test]
fn a_wrong_password_stops_start_up_naming_the_option_and_never_printing_the_password() {
    let pg = Pg::start();
    let data = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let wrong = "not-the-password-4711";
    let url = format!("postgresql://facegate:{wrong}@127.0.0.1:{}/postgres", pg.port);
    let out = Command::new(env!("CARGO_BIN_EXE_facegate"))
        .arg("serve")
        .env("FACEGATE__GALLERY__DATA_DIR", data.path())
        .env("FACEGATE__GALLERY__BACKEND", "postgres")
        .env("FACEGATE__GALLERY__POSTGRES__URL", &url)
        .env("FACEGATE__SERVER__PORT", free_port().to_string())
        .env("FACEGATE__POOL__WORKERS", "1")
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with a wrong password");
    assert!(stderr.contains("gallery.postgres.url"), "{stderr}");
    assert!(stderr.contains("password authentication failed"), "{stderr}");
    assert!(!stderr.contains(wrong), "the password was printed: {stderr}");
    // The right password in its own option (as from the environment) is accepted.
    let ok = format!("postgresql://facegate@127.0.0.1:{}/postgres", pg.port);
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_facegate"))
        .arg("serve")
        .env("FACEGATE__GALLERY__DATA_DIR", data.path())
        .env("FACEGATE__GALLERY__BACKEND", "postgres")
        .env("FACEGATE__GALLERY__POSTGRES__URL", &ok)
        .env("FACEGATE__GALLERY__POSTGRES__PASSWORD", &pg.password)
        .env("FACEGATE__SERVER__PORT", port.to_string())
        .env("FACEGATE__POOL__WORKERS", "1")
        .env("OMP_NUM_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let up = loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break true;
        }
        if child.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(up, "the server did not start with the password from its own option");
}

#[actix_web::test]
async fn gallery_migrate_copies_an_embedded_partition_into_postgres_and_back_verified() {
    let pg = Pg::start();
    let (src, back) = (Storage::new(false), Storage::new(false));
    {
        let g = GalleryDirectory::open(src.config().gallery, 8).unwrap_or_else(|e| panic!("{e}"));
        for i in 0..50u32 {
            let v: Vec<f32> = (0..8).map(|k| if k == (i % 8) as usize { 1.0 } else { 0.0 }).collect();
            g.enrol("moved", &format!("s{i}"), v, "m1", 0.9)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        g.close().await;
    }
    let run = |from: &str, to: &str, data: &std::path::Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_facegate"))
            .args(["gallery", "migrate", "--from", from, "--to", to, "--partition", "moved"])
            .env("FACEGATE__GALLERY__DATA_DIR", data)
            .env("FACEGATE__GALLERY__ENCRYPTION__MASTER_KEY_FILE", common::master_key_file(data))
            .env("FACEGATE__GALLERY__POSTGRES__URL", pg.url())
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
        stdout
    };
    let first = run("embedded", "postgres", src.path());
    assert!(first.contains("moved: 50 templates copied and verified"), "{first}");
    // Run again: resumes after what is there, copies nothing twice.
    assert_eq!(run("embedded", "postgres", src.path()), first);
    assert_eq!(pg.sql("SELECT count(*) FROM facegate_templates"), "50");
    assert_eq!(run("postgres", "embedded", back.path()), first, "the same checksum on the way back");
}
