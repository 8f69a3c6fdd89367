//! Webhooks end to end: a receiver on loopback checks every delivery's signature with its
//! own HMAC-SHA256 (refusing a bad one), deliveries are retried after the receiver was
//! down, and no acknowledged event is lost when the server is killed with SIGKILL between
//! its answer and the delivery.

#[macro_use]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::test as atest;
use common::*;
use facegate::config::Right;
use hmac::{Hmac, Mac};

const SECRET: &str = "receiver-secret-0123456789";

/// What the receiver got: the signature check's verdict, the event type header, the body.
#[derive(Debug, Clone)]
struct Got {
    valid: bool,
    kind: String,
    body: serde_json::Value,
}

struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Got>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The receiver's own check: HMAC-SHA256(secret, "t.body") against v1, t within 5 minutes.
fn signature_ok(header: &str, body: &str) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<u64>().ok(),
            Some(("v1", v)) => v1 = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else { return false };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if now.abs_diff(t) > 300 {
        return false;
    }
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    mac.update(format!("{t}.{body}").as_bytes());
    mac.verify_slice(&v1).is_ok()
}

/// An HTTP receiver on `port` (0: any): 204 to a delivery whose signature checks, 401 otherwise.
fn receiver(port: u16) -> Receiver {
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
    listener.set_nonblocking(true).unwrap_or_else(|e| panic!("{e}"));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_else(|e| panic!("{e}"));
    let got = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (g, st) = (got.clone(), stop.clone());
    std::thread::spawn(move || {
        while !st.load(Ordering::Relaxed) {
            let Ok((stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = BufReader::new(stream);
            let mut headers = Vec::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                headers.push(line.trim_end().to_string());
            }
            let header = |name: &str| {
                headers
                    .iter()
                    .find_map(|h| {
                        h.split_once(':')
                            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                            .map(|(_, v)| v.trim().to_string())
                    })
                    .unwrap_or_default()
            };
            let len: usize = header("content-length").parse().unwrap_or(0);
            let mut body = vec![0u8; len];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let body = String::from_utf8_lossy(&body).into_owned();
            let valid = signature_ok(&header("facegate-signature"), &body);
            g.lock().unwrap_or_else(|e| e.into_inner()).push(Got {
                valid,
                kind: header("facegate-event"),
                body: serde_json::from_str(&body).unwrap_or_default(),
            });
            let status = if valid { "204 No Content" } else { "401 Unauthorized" };
            let _ = reader
                .get_mut()
                .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes());
        }
    });
    Receiver { port, got, stop }
}

impl Receiver {
    /// Wait until `pred` holds over what was received (at most `secs`).
    fn wait(&self, secs: u64, pred: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.got.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if pred(&got) || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn subscribe<S, B: actix_web::body::MessageBody>(svc: &S, body: serde_json::Value, key: Option<&str>) -> (u16, serde_json::Value)
where
    S: actix_web::dev::Service<actix_http::Request, Response = actix_web::dev::ServiceResponse<B>, Error = actix_web::Error>,
{
    let mut req = atest::TestRequest::post().uri("/api/v1/webhooks").set_payload(body.to_string());
    if let Some(k) = key {
        req = req.insert_header(("X-API-Key", k));
    }
    let res = atest::call_service(svc, req.to_request()).await;
    let status = res.status().as_u16();
    let bytes = atest::read_body(res).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())),
    )
}

fn kinds(got: &[Got], kind: &str, valid: bool) -> usize {
    got.iter().filter(|g| g.kind == kind && g.valid == valid).count()
}

#[actix_web::test]
async fn deliveries_are_signed_carry_no_image_and_a_bad_signature_is_refused() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut cfg = config(tmp.path());
    cfg.webhooks.retry_base_ms = 100;
    let svc = service!(cfg);
    let rx = receiver(0);
    let url = format!("http://127.0.0.1:{}/hook", rx.port);
    let (s, good) = subscribe(
        &svc,
        serde_json::json!({"url": url, "events": ["enrol", "match", "unknown", "delete"], "threshold": 0.3, "secret": SECRET}),
        None,
    )
    .await;
    assert_eq!(s, 201, "{good}");
    assert_eq!(good["secret"], SECRET);
    // A second subscription whose secret the receiver does not hold: its deliveries fail the check.
    let (s, bad) = subscribe(&svc, serde_json::json!({"url": url, "events": ["enrol"]}), None).await;
    assert_eq!(s, 201, "{bad}");
    assert_eq!(bad["secret"].as_str().map(str::len), Some(64), "a generated secret: {bad}");
    let (s, listed) = get(&svc, "/api/v1/webhooks", None).await;
    assert_eq!(s, 200);
    assert_eq!(listed["webhooks"].as_array().map(Vec::len), Some(2), "{listed}");
    assert!(!listed.to_string().contains(SECRET), "a listing never shows secrets: {listed}");

    let (s, body) = post(
        &svc,
        "/api/v1/enrol",
        serde_json::json!({"image": b64(&photo("obama.jpg")), "subject_id": "obama"}),
        None,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let got = rx.wait(10, |g| kinds(g, "enrol", true) >= 1 && kinds(g, "enrol", false) >= 1);
    assert_eq!(kinds(&got, "enrol", true), 1, "{got:?}");
    assert!(
        kinds(&got, "enrol", false) >= 1,
        "the other secret's delivery is refused by the receiver: {got:?}"
    );
    let enrol = got
        .iter()
        .find(|g| g.kind == "enrol" && g.valid)
        .map(|g| g.body.clone())
        .unwrap_or_default();
    assert_eq!(enrol["subject_id"], "obama");
    assert_eq!(enrol["partition"], "default");
    assert_eq!(enrol["subscription_id"], good["id"]);
    assert!(enrol["id"].as_str().is_some_and(|i| i.starts_with("evt_")), "{enrol}");
    assert!(enrol["request_id"].as_str().is_some_and(|i| !i.is_empty()), "{enrol}");
    assert!(enrol["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{enrol}");

    let (s, body) = post(
        &svc,
        "/api/v1/identify",
        serde_json::json!({"image": b64(&photo("obama2.jpg"))}),
        None,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = post(
        &svc,
        "/api/v1/identify",
        serde_json::json!({"image": b64(&photo("biden.jpg"))}),
        None,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let got = rx.wait(10, |g| kinds(g, "match", true) >= 1 && kinds(g, "unknown", true) >= 1);
    let matched = got.iter().find(|g| g.kind == "match").map(|g| g.body.clone()).unwrap_or_default();
    assert_eq!(matched["candidates"][0]["subject_id"], "obama", "{got:?}");
    assert!(matched["candidates"][0]["score"].as_f64().is_some_and(|s| s >= 0.3), "{matched}");
    assert!(matched["face"]["box"]["width"].as_i64().is_some_and(|w| w > 0), "{matched}");
    assert_eq!(matched["face"]["pad_decision"], "live");
    assert_eq!(kinds(&got, "unknown", true), 1, "biden matches nobody: {got:?}");
    for g in &got {
        let text = g.body.to_string();
        assert!(text.len() < 2048, "an event is ids and scores, not pixels: {text}");
        for field in ["image", "template", "vector", "embedding"] {
            assert!(g.body.get(field).is_none(), "{text}");
        }
    }

    // Unsubscribing stops the refused deliveries' retries.
    let res = atest::call_service(
        &svc,
        atest::TestRequest::delete()
            .uri(&format!("/api/v1/webhooks?id={}", bad["id"].as_str().unwrap_or_default()))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), 200);
    let (_, metrics) = get(&svc, "/metrics", None).await;
    let text = metrics.as_str().unwrap_or_default().to_string();
    assert!(text.contains("facegate_webhook_deliveries_total{outcome=\"delivered\"}"), "{text}");
    assert!(text.contains("facegate_webhook_deliveries_total{outcome=\"failed\"}"), "{text}");
    assert!(text.contains("facegate_webhook_queue_depth"), "{text}");
}

#[actix_web::test]
async fn a_delivery_is_retried_until_the_receiver_is_back() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut cfg = config(tmp.path());
    cfg.webhooks.retry_base_ms = 100;
    cfg.webhooks.retry_max_ms = 400;
    let svc = service!(cfg);
    let port = free_port(); // nothing listens there yet
    let (s, sub) = subscribe(
        &svc,
        serde_json::json!({"url": format!("http://127.0.0.1:{port}/"), "events": ["enrol"], "secret": SECRET}),
        None,
    )
    .await;
    assert_eq!(s, 201, "{sub}");
    let started = Instant::now();
    let (s, body) = post(
        &svc,
        "/api/v1/enrol",
        serde_json::json!({"image": b64(&photo("obama.jpg")), "subject_id": "obama"}),
        None,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a dead receiver does not slow the answer"
    );
    std::thread::sleep(Duration::from_millis(1200));
    let (_, metrics) = get(&svc, "/metrics", None).await;
    let text = metrics.as_str().unwrap_or_default().to_string();
    let failed = text
        .lines()
        .find(|l| l.starts_with("facegate_webhook_deliveries_total{outcome=\"failed\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(failed >= 2.0, "attempts on the dead receiver were retried: {text}");
    assert!(text.contains("facegate_webhook_queue_depth 1"), "{text}");
    let rx = receiver(port);
    let got = rx.wait(10, |g| kinds(g, "enrol", true) >= 1);
    assert_eq!(kinds(&got, "enrol", true), 1, "{got:?}");
    assert_eq!(got[0].body["subject_id"], "obama");
}

#[actix_web::test]
async fn bad_urls_and_other_tenants_partitions_are_refused() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut cfg = config(tmp.path());
    cfg.webhooks.deny_networks.push("10.0.0.0/8".into());
    cfg.webhooks.deny_networks.push("127.0.0.2/32".into());
    let (a, b) = ("tenant-a-admin-0123456789", "tenant-b-admin-0123456789");
    cfg.auth.keys = vec![
        key("a", a, &["alpha"], &[Right::Admin]),
        key("b", b, &["beta"], &[Right::Admin]),
        key("s", "tenant-a-search-012345678", &["alpha"], &[Right::Search]),
    ];
    let svc = service!(cfg);
    for url in [
        "ftp://127.0.0.1/x",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "http://10.1.2.3/hook",
        "http://127.0.0.2:9/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://user:pass@127.0.0.1:9/",
        "not a url",
    ] {
        let (s, body) = subscribe(&svc, serde_json::json!({"url": url, "partition": "alpha"}), Some(a)).await;
        assert_eq!(s, 400, "{url}: {body}");
    }
    let ok = serde_json::json!({"url": "http://127.0.0.1:9/hook", "partition": "alpha"});
    let (s, mine) = subscribe(&svc, ok.clone(), Some(a)).await;
    assert_eq!(s, 201, "{mine}");
    let (s, _) = subscribe(&svc, ok.clone(), Some(b)).await;
    assert_eq!(s, 403, "b may not subscribe to alpha");
    let (s, _) = subscribe(&svc, ok, Some("tenant-a-search-012345678")).await;
    assert_eq!(s, 403, "subscribing needs the admin right");
    let (s, listed) = get(&svc, "/api/v1/webhooks", Some(b)).await;
    assert_eq!(s, 200);
    assert_eq!(listed["webhooks"].as_array().map(Vec::len), Some(0), "b sees none of a's: {listed}");
    let id = mine["id"].as_str().unwrap_or_default().to_string();
    for (k, want) in [(b, 404), (a, 200), (a, 404)] {
        let res = atest::call_service(
            &svc,
            atest::TestRequest::delete()
                .uri(&format!("/api/v1/webhooks?id={id}"))
                .insert_header(("X-API-Key", k))
                .to_request(),
        )
        .await;
        assert_eq!(res.status().as_u16(), want, "{k}");
    }
}

/// The real binary, killed with SIGKILL right after it answered: the events of every
/// answered enrolment are delivered by the next process on the same data directory.
#[test]
fn no_event_is_lost_when_the_server_is_killed_between_answer_and_delivery() {
    let data = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (port, hook) = (free_port(), free_port());
    let base = format!("http://127.0.0.1:{port}");
    let spawn = || {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_facegate"))
            .arg("serve")
            .env("FACEGATE__GALLERY__DATA_DIR", data.path())
            .env(
                "FACEGATE__GALLERY__ENCRYPTION__MASTER_KEY_FILE",
                common::master_key_file(data.path()),
            )
            .env("FACEGATE__SERVER__PORT", port.to_string())
            .env("FACEGATE__POOL__WORKERS", "1")
            .env("FACEGATE__COLLISION__POLICY", "off")
            .env("FACEGATE__WEBHOOKS__RETRY_BASE_MS", "100")
            .env("FACEGATE__WEBHOOKS__RETRY_MAX_MS", "200")
            .env("OMP_NUM_THREADS", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    };
    let client = ureq::agent();
    let post = |path: &str, body: serde_json::Value| match client.post(&format!("{base}{path}")).send_string(&body.to_string()) {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap_or_default()),
        Err(e) => panic!("{e}"),
    };
    let mut server = spawn();
    let (s, body) = post(
        "/api/v1/webhooks",
        serde_json::json!({"url": format!("http://127.0.0.1:{hook}/"), "events": ["enrol"], "secret": SECRET}),
    );
    assert_eq!(s, 201, "{body}");
    let image = b64(&photo("obama.jpg"));
    let mut answered = Vec::new();
    for i in 0..5 {
        let subject = format!("s{i}");
        let (s, body) = post("/api/v1/enrol", serde_json::json!({"image": image, "subject_id": subject}));
        assert_eq!(s, 200, "{body}");
        answered.push(subject);
    }
    // The receiver is down: nothing can have been delivered before the kill.
    server.kill().unwrap_or_else(|e| panic!("{e}"));
    let _ = server.wait();
    let rx = receiver(hook);
    let mut server = spawn();
    let got = rx.wait(20, |g| kinds(g, "enrol", true) >= answered.len());
    let _ = server.kill();
    let _ = server.wait();
    let delivered: std::collections::BTreeSet<String> = got
        .iter()
        .filter(|g| g.valid)
        .filter_map(|g| g.body["subject_id"].as_str().map(str::to_string))
        .collect();
    for s in &answered {
        assert!(delivered.contains(s), "the event of answered enrolment {s} was lost: {got:?}");
    }
}
