//! `bench watch`: the watchlist figures of BENCHMARKS.md, on the real server binary.
//! - identify on a frame of five faces against search on one of those faces (p50 of N runs);
//! - webhook delivery delay, from the client's receipt of the answer to the receiver's
//!   receipt of the event, on loopback (p50, p90);
//! - events lost across kill -9 cycles: enrolments answered, the server killed while their
//!   events are being delivered, restarted, and every answered enrolment's event counted.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;

use crate::client::Client;

type AnyError = Box<dyn std::error::Error>;

pub struct Watch {
    pub binary: Option<PathBuf>,
    pub runs: usize,
    pub cycles: usize,
    pub workers: usize,
}

/// Events the receiver got: request id -> when, and every subject id of enrol events.
#[derive(Default)]
struct Inbox {
    by_request: BTreeMap<String, Instant>,
    subjects: BTreeSet<String>,
}

fn receiver() -> Result<(u16, Arc<Mutex<Inbox>>), AnyError> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let inbox = Arc::new(Mutex::new(Inbox::default()));
    let sink = inbox.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let sink = sink.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reader = BufReader::new(stream);
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        if k.eq_ignore_ascii_case("content-length") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                }
                let mut body = vec![0u8; len];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                let at = Instant::now();
                let event: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                if let Ok(mut inbox) = sink.lock() {
                    if let Some(r) = event["request_id"].as_str() {
                        inbox.by_request.entry(r.to_string()).or_insert(at);
                    }
                    if let Some(s) = event["subject_id"].as_str() {
                        inbox.subjects.insert(s.to_string());
                    }
                }
                let _ = reader
                    .get_mut()
                    .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            });
        }
    });
    Ok((port, inbox))
}

struct Server {
    child: Child,
}

/// The scratch gallery's master key (encryption at rest is on by default), made once in the
/// data directory so that every restart of a cycle opens the same partitions.
fn master_key_file(data: &Path) -> Result<std::path::PathBuf, AnyError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data.join("bench-master.key");
    if !path.exists() {
        std::fs::create_dir_all(data)?;
        let mut f = std::fs::File::options().write(true).create_new(true).mode(0o600).open(&path)?;
        f.write_all(facegate_actors::seal::MasterKey::generate_hex().as_bytes())?;
    }
    Ok(path)
}

impl Server {
    fn start(binary: &Path, data: &Path, port: u16, workers: usize) -> Result<Self, AnyError> {
        let key = master_key_file(data)?;
        let child = Command::new(binary)
            .arg("serve")
            .env("FACEGATE__GALLERY__DATA_DIR", data)
            .env("FACEGATE__GALLERY__ENCRYPTION__MASTER_KEY_FILE", &key)
            .env("FACEGATE__SERVER__PORT", port.to_string())
            .env("FACEGATE__POOL__WORKERS", workers.to_string())
            .env("FACEGATE__COLLISION__POLICY", "off")
            .env("FACEGATE__WEBHOOKS__RETRY_BASE_MS", "100")
            .env("FACEGATE__WEBHOOKS__RETRY_MAX_MS", "500")
            .env("OMP_NUM_THREADS", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("the server did not start".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self { child })
    }

    fn kill(mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

fn photo(name: &str) -> Result<image::RgbImage, AnyError> {
    let path = crate::config::resolve(&Path::new("models/testdata").join(name));
    Ok(image::open(&path).map_err(|e| format!("{}: {e}", path.display()))?.to_rgb8())
}

fn jpeg(img: &image::RgbImage) -> Result<Vec<u8>, AnyError> {
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Jpeg)?;
    Ok(out)
}

/// Five registry photos of faces side by side at 360 px high, and the first of them alone.
fn frames() -> Result<(Vec<u8>, Vec<u8>), AnyError> {
    let h = 360;
    let tiles: Vec<image::RgbImage> = ["obama2.jpg", "biden.jpg", "obama.jpg", "obama3.jpg", "astronaut.png"]
        .iter()
        .map(|n| {
            photo(n).map(|p| {
                let w = p.width() * h / p.height();
                image::imageops::resize(&p, w, h, image::imageops::FilterType::Triangle)
            })
        })
        .collect::<Result<_, _>>()?;
    let width = tiles.iter().map(|t| t.width()).sum();
    let mut frame = image::RgbImage::new(width, h);
    let mut x = 0;
    for t in &tiles {
        image::imageops::replace(&mut frame, t, i64::from(x), 0);
        x += t.width();
    }
    Ok((jpeg(&frame)?, jpeg(&tiles[0])?))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn free_port() -> Result<u16, AnyError> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// POST with a request id of ours, answered 200 or an error naming the answer.
fn call(agent: &ureq::Agent, url: &str, body: &str, request_id: &str) -> Result<String, AnyError> {
    match agent.post(url).set("X-Request-Id", request_id).send_string(body) {
        Ok(r) => Ok(r.into_string()?),
        Err(ureq::Error::Status(c, r)) => Err(format!("{url}: {c} {}", r.into_string().unwrap_or_default()).into()),
        Err(e) => Err(e.to_string().into()),
    }
}

pub fn run(w: &Watch) -> Result<(), AnyError> {
    let binary = match &w.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.with_file_name("facegate"),
    };
    let data = tempfile::tempdir()?;
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let (hook, inbox) = receiver()?;
    let (five, one) = frames()?;
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build();

    let server = Server::start(&binary, data.path(), port, w.workers)?;
    let client = Client::new(&base, None);
    for (subject, file) in [("obama", "obama.jpg"), ("biden", "biden.jpg")] {
        let body = serde_json::json!({"image": b64(&jpeg(&photo(file)?)?), "subject_id": subject, "partition": "watch"});
        let a = client.post("/api/v1/enrol", &body.to_string())?;
        if a.status != 200 {
            return Err(format!("enrol {subject}: {} {}", a.status, a.body).into());
        }
    }
    let identify5 = serde_json::json!({"image": b64(&five), "partitions": ["watch"], "min_score": 0.3}).to_string();
    let identify1 = serde_json::json!({"image": b64(&one), "partitions": ["watch"], "min_score": 0.3}).to_string();
    let search1 = serde_json::json!({"image": b64(&one), "partition": "watch", "min_score": 0.3}).to_string();
    let check = call(&agent, &format!("{base}/api/v1/identify"), &identify5, "check")?;
    let faces = check.matches("<face>").count();
    println!(
        "frame: {} bytes, {faces} faces analysed (faces_detected {})",
        five.len(),
        crate::client::element(&check, "faces_detected").unwrap_or_default()
    );
    let timed = |path: &str, body: &str| -> Result<f64, AnyError> {
        for i in 0..3 {
            call(&agent, &format!("{base}{path}"), body, &format!("warm-{i}"))?;
        }
        let mut t = Vec::with_capacity(w.runs);
        for i in 0..w.runs {
            let start = Instant::now();
            call(&agent, &format!("{base}{path}"), body, &format!("run-{i}"))?;
            t.push(ms(start.elapsed()));
        }
        Ok(percentile(&mut t, 0.5))
    };
    let s1 = timed("/api/v1/search", &search1)?;
    let i1 = timed("/api/v1/identify", &identify1)?;
    let i5 = timed("/api/v1/identify", &identify5)?;
    println!(
        "latency p50 over {} runs, {} workers: search 1 face {s1:.1} ms | identify 1 face {i1:.1} ms | identify {faces} faces {i5:.1} ms = {:.2}x search (target <= 2.5x)",
        w.runs,
        w.workers,
        i5 / s1
    );

    // Delivery delay: one match event per identify of the one-face frame.
    let sub = serde_json::json!({"url": format!("http://127.0.0.1:{hook}/"), "partition": "watch", "events": ["match", "enrol"], "threshold": 0.3});
    let a = client.post("/api/v1/webhooks", &sub.to_string())?;
    if a.status != 201 {
        return Err(format!("subscribe: {} {}", a.status, a.body).into());
    }
    let mut answered = Vec::new();
    for i in 0..w.runs {
        let id = format!("delay-{i}");
        call(&agent, &format!("{base}/api/v1/identify"), &identify1, &id)?;
        answered.push((id, Instant::now()));
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    let mut delays: Vec<f64> = {
        let inbox = inbox.lock().map_err(|_| "receiver poisoned")?;
        answered
            .iter()
            .filter_map(|(id, at)| inbox.by_request.get(id).map(|got| ms(got.saturating_duration_since(*at))))
            .collect()
    };
    let received = delays.len();
    println!(
        "delivery delay after the answer, {received}/{} events: p50 {:.1} ms, p90 {:.1} ms (target p50 <= 100 ms)",
        answered.len(),
        percentile(&mut delays, 0.5),
        percentile(&mut delays, 0.9)
    );
    server.kill();

    // Kill -9 cycles: enrolments answered, then SIGKILL at once, while their events are in flight.
    let mut sent = BTreeSet::new();
    for cycle in 0..w.cycles {
        let server = Server::start(&binary, data.path(), port, w.workers)?;
        for i in 0..5 {
            let subject = format!("k{cycle}-{i}");
            let body = serde_json::json!({"image": b64(&one), "subject_id": subject, "partition": "watch"}).to_string();
            call(&agent, &format!("{base}/api/v1/enrol"), &body, &format!("kill-{cycle}-{i}"))?;
            sent.insert(subject);
        }
        server.kill();
    }
    let server = Server::start(&binary, data.path(), port, w.workers)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let lost = loop {
        let missing = {
            let inbox = inbox.lock().map_err(|_| "receiver poisoned")?;
            sent.iter().filter(|s| !inbox.subjects.contains(*s)).count()
        };
        if missing == 0 || Instant::now() > deadline {
            break missing;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    server.kill();
    println!(
        "kill -9 cycles: {}, enrolments answered {}, their events lost {lost}",
        w.cycles,
        sent.len()
    );
    Ok(())
}
