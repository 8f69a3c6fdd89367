//! Acknowledged means durable: the real server binary is killed with SIGKILL while
//! enrolments are in flight, restarted on the same data directory, and every enrolment it
//! had answered 200 is still there. A process kill proves that no answer precedes its
//! commit; surviving power loss rests on the commit's fsync (SQLite WAL, synchronous=FULL),
//! which no test short of cutting power can show.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;

/// POST a JSON body over real HTTP: the status and body of any answer, `Err` when the
/// server is gone.
fn post(agent: &ureq::Agent, url: &str, body: &str) -> Result<(u16, String), String> {
    match agent.post(url).set("Content-Type", "application/json").send_string(body) {
        Ok(r) => Ok((r.status(), r.into_string().unwrap_or_default())),
        Err(ureq::Error::Status(code, r)) => Ok((code, r.into_string().unwrap_or_default())),
        Err(e) => Err(e.to_string()),
    }
}

fn photo(name: &str) -> String {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("models/testdata")
        .join(name);
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The same master key for every start on `data` (tests only keep it beside the partitions).
fn master_key_file(data: &std::path::Path) -> std::path::PathBuf {
    let path = data.join("test-master.key");
    if !path.exists() {
        std::fs::create_dir_all(data).unwrap_or_else(|e| panic!("{e}"));
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap_or_else(|e| panic!("{e}"));
        f.write_all(facegate_actors::seal::MasterKey::generate_hex().as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    path
}

fn start(data: &std::path::Path, port: u16) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_facegate"))
        .arg("serve")
        .env("FACEGATE__GALLERY__DATA_DIR", data)
        .env("FACEGATE__GALLERY__ENCRYPTION__MASTER_KEY_FILE", master_key_file(data))
        .env("FACEGATE__SERVER__PORT", port.to_string())
        .env("FACEGATE__POOL__WORKERS", "2")
        // One photo under many subjects is what this test writes: the collision check would
        // (rightly) refuse all but the first.
        .env("FACEGATE__COLLISION__POLICY", "off")
        .env("OMP_NUM_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

#[test]
fn no_acknowledged_enrolment_is_lost_when_the_process_is_killed() {
    let data = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let port = free_port();
    let mut server = start(data.path(), port);
    let base = format!("http://127.0.0.1:{port}");
    let image = photo("obama.jpg");
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (base, image, acknowledged, stop) = (base.clone(), image.clone(), acknowledged.clone(), stop.clone());
            std::thread::spawn(move || {
                let client = ureq::agent();
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let subject = format!("w{w}-{i}");
                    let body = serde_json::json!({"image": image, "subject_id": subject}).to_string();
                    match post(&client, &format!("{base}/api/v1/enrol"), &body) {
                        Ok((200, _)) => acknowledged.lock().unwrap_or_else(|e| e.into_inner()).push(subject),
                        Ok(_) => {}
                        Err(_) => break, // the server is gone
                    }
                }
            })
        })
        .collect();
    // Kill it mid-flight, once some enrolments have been answered.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acknowledged.lock().unwrap_or_else(|e| e.into_inner()).len() < 12 {
        assert!(Instant::now() < deadline, "no enrolment was acknowledged");
        std::thread::sleep(Duration::from_millis(10));
    }
    server.kill().unwrap_or_else(|e| panic!("{e}")); // SIGKILL: no shutdown code runs
    let _ = server.wait();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.join();
    }
    let acknowledged = acknowledged.lock().unwrap_or_else(|e| e.into_inner()).clone();

    let mut server = start(data.path(), port);
    let client = ureq::agent();
    let probe = photo("obama2.jpg");
    for subject in &acknowledged {
        let body = serde_json::json!({"image": probe, "subject_id": subject}).to_string();
        let (status, answer) = post(&client, &format!("{base}/api/v1/verify"), &body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status, 200, "acknowledged enrolment {subject} was lost: {answer}");
    }
    let _ = server.kill();
    let _ = server.wait();
}
