//! `facegate-tools bench abuse`: a running server under the abuse a hostile or careless client
//! can bring, on loopback, bounded in time, printing the server's RSS, the rate and p99 it
//! serves to well-behaved clients meanwhile, and what it accepted that it should not have.
//!
//! 1. slow bodies: N connections declare 15 MiB bodies and send them slowly;
//! 2. retry storm: 64 clients retrying at once on 503, against clients that wait
//!    Retry-After (run the server with FACEGATE__POOL__MAX_INFLIGHT=8);
//! 3. forged truncation: a JPEG cut at 200 points, FF D9 appended, offered for enrolment;
//! 4. decode cost: small files that declare large decodes (a 1 MiB PNG iCCP chunk, a
//!    10 KB JPEG claiming 12000x3333), 8 at a time.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;

use crate::client::{element, Client};

type AnyError = Box<dyn std::error::Error>;

pub struct Abuse {
    pub server: String,
    /// The server's process id, for its RSS (/proc/PID/status).
    pub pid: u32,
    pub image: Vec<u8>,
    pub slow_connections: usize,
    pub seconds: u64,
}

pub fn run(a: &Abuse) -> Result<(), AnyError> {
    let body = search_body(&a.image);
    // The searched partition must exist, or search answers 404 before the pipeline runs.
    let b64 = base64::engine::general_purpose::STANDARD.encode(&a.image);
    let enrol = serde_json::json!({"image": b64, "subject_id": "abuse-0", "partition": "abuse"});
    let r = Client::new(&a.server, None).post("/api/v1/enrol", &enrol.to_string())?;
    if r.status != 200 {
        return Err(format!("enrolling the photo answered {}: {}", r.status, r.body).into());
    }
    println!("server RSS at rest: {} MB", rss_mb(a.pid));
    let (well, _) = measure(a, &body, 4, false, || Ok(()))?;
    well.print("4 well-behaved clients alone");
    slow_bodies(a, &body)?;
    retry_storm(a, &body)?;
    forged_truncation(a)?;
    decode_cost(a)?;
    Ok(())
}

fn search_body(image: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(image);
    serde_json::json!({"image": b64, "partition": "abuse"}).to_string()
}

fn rss_mb(pid: u32) -> u64 {
    facegate::procfs::bytes(&format!("/proc/{pid}/status"), "VmRSS").map_or(0, |b| b >> 20)
}

/// What clients saw over a run: latencies of served answers (not 503), refusals, peak RSS.
#[derive(Default)]
struct Seen {
    served: Vec<f64>,
    refused: usize,
    refused_without_retry_after: usize,
    failed: usize,
    wall: f64,
    peak_rss_mb: u64,
}

impl Seen {
    fn print(&self, label: &str) {
        let mut v = self.served.clone();
        v.sort_by(f64::total_cmp);
        let q = |p: f64| {
            v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0.0)
        };
        println!(
            "{label}: served {:.1}/s, p50 {:.0} ms, p99 {:.0} ms; 503 {} ({} without Retry-After); transport errors {}; peak RSS {} MB",
            v.len() as f64 / self.wall,
            q(0.5) * 1e3,
            q(0.99) * 1e3,
            self.refused,
            self.refused_without_retry_after,
            self.failed,
            self.peak_rss_mb
        );
    }
}

/// `clients` threads posting `body` to search for `a.seconds`, retrying a 503 at once
/// (`storm`) or after its Retry-After, while `beside` runs; RSS sampled every 100 ms.
fn measure(
    a: &Abuse,
    body: &str,
    clients: usize,
    storm: bool,
    beside: impl FnOnce() -> Result<(), AnyError>,
) -> Result<(Seen, ()), AnyError> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (seen, stop, body, server) = (seen.clone(), stop.clone(), body.to_string(), a.server.clone());
            std::thread::spawn(move || {
                let client = Client::new(&server, None);
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let answer = client.post("/api/v1/search", &body);
                    let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
                    match answer {
                        Ok(r) if r.status == 503 => {
                            s.refused += 1;
                            s.refused_without_retry_after += usize::from(r.retry_after.is_none());
                            drop(s);
                            if !storm {
                                std::thread::sleep(Duration::from_secs(r.retry_after.unwrap_or(1)));
                            }
                        }
                        Ok(_) => s.served.push(t.elapsed().as_secs_f64()),
                        Err(_) => s.failed += 1,
                    }
                }
            })
        })
        .collect();
    let sampler = {
        let (stop, pid, seen) = (stop.clone(), a.pid, seen.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let rss = rss_mb(pid);
                let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
                s.peak_rss_mb = s.peak_rss_mb.max(rss);
                drop(s);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let beside = beside();
    std::thread::sleep(Duration::from_secs(a.seconds).saturating_sub(start.elapsed()));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let _ = sampler.join();
    beside?;
    let mut s = std::mem::take(&mut *seen.lock().unwrap_or_else(|p| p.into_inner()));
    s.wall = start.elapsed().as_secs_f64();
    Ok((s, ()))
}

/// Slow connections declaring 15 MiB bodies, fed 16 KiB per connection every 100 ms by
/// one thread, beside 4 well-behaved clients.
fn slow_bodies(a: &Abuse, body: &str) -> Result<(), AnyError> {
    let addr = a.server.trim_start_matches("http://").trim_end_matches('/').to_string();
    let n = a.slow_connections;
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut conns: Vec<TcpStream> = (0..n)
                .filter_map(|_| {
                    let mut s = TcpStream::connect(&addr).ok()?;
                    let head = format!(
                        "POST /api/v1/search HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{{\"image\": \"",
                        15 << 20
                    );
                    s.write_all(head.as_bytes()).ok()?;
                    s.set_nonblocking(true).ok()?;
                    Some(s)
                })
                .collect();
            let opened = conns.len();
            let chunk = vec![b'A'; 16 << 10];
            while !stop.load(Ordering::Relaxed) {
                // A connection the server closed (refused, timed out) is dropped; one whose
                // socket buffer is full (the server not reading) is kept.
                conns.retain_mut(|c| match c.write(&chunk) {
                    Ok(n) => n > 0,
                    Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                });
                std::thread::sleep(Duration::from_millis(100));
            }
            (opened, conns.len())
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let (seen, _) = measure(a, body, 4, false, || Ok(()))?;
    stop.store(true, Ordering::Relaxed);
    let (opened, open_at_end) = feeder.join().map_err(|_| "feeder panicked")?;
    seen.print(&format!(
        "{n} slow 15 MiB uploads ({opened} opened, {open_at_end} still open after {} s) beside 4 well-behaved clients",
        a.seconds + 2
    ));
    Ok(())
}

fn retry_storm(a: &Abuse, body: &str) -> Result<(), AnyError> {
    let (polite, _) = measure(a, body, 64, false, || Ok(()))?;
    polite.print("64 clients honouring Retry-After");
    let (storm, _) = measure(a, body, 64, true, || Ok(()))?;
    storm.print("64 clients retrying at once");
    Ok(())
}

fn forged_truncation(a: &Abuse) -> Result<(), AnyError> {
    let client = Client::new(&a.server, None);
    let (mut accepted, mut refused, mut other) = (0, 0, 0);
    for i in 0..200 {
        let cut = a.image.len() * (20 + i * 3 / 4) / 200;
        let mut forged = a.image[..cut].to_vec();
        forged.extend_from_slice(&[0xFF, 0xD9]);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&forged);
        let body = serde_json::json!({"image": b64, "subject_id": format!("forged-{i}"), "partition": "abuse-forged"});
        let r = client.post("/api/v1/enrol", &body.to_string())?;
        match (r.status, element(&r.body, "status").as_deref()) {
            (200, _) => {
                accepted += 1;
                let del = serde_json::json!({"subject_id": format!("forged-{i}"), "partition": "abuse-forged"});
                client.post("/api/v1/delete", &del.to_string())?;
            }
            (400, Some("DECODE_FAILED")) => refused += 1,
            _ => other += 1,
        }
    }
    println!("forged truncation (200 cuts at 10-85 % + FF D9): accepted {accepted}, refused DECODE_FAILED {refused}, other {other}");
    Ok(())
}

/// 8 concurrent uploads of each small-but-costly file, repeated for 5 s, with the peak RSS.
fn decode_cost(a: &Abuse) -> Result<(), AnyError> {
    for (label, file) in [
        ("PNG with a 1 MiB iCCP chunk", iccp_png()?),
        ("10 KB JPEG declaring 12000x3333", tall_claim_jpeg()?),
    ] {
        let body = search_body(&file);
        let short = Abuse {
            seconds: 5,
            server: a.server.clone(),
            pid: a.pid,
            image: Vec::new(),
            slow_connections: 0,
        };
        let before = rss_mb(a.pid);
        let (seen, _) = measure(&short, &body, 8, false, || Ok(()))?;
        let client = Client::new(&a.server, None);
        let r = client.post("/api/v1/search", &body)?;
        println!(
            "{label} ({} bytes): answer {} {}, {:.1} answers/s, RSS {} MB before, peak {} MB",
            file.len(),
            r.status,
            element(&r.body, "status").unwrap_or_default(),
            seen.served.len() as f64 / seen.wall,
            before,
            seen.peak_rss_mb
        );
    }
    Ok(())
}

/// A valid 64x64 PNG carrying a 1 MiB iCCP chunk of compressed zeros (inflating to ~1 GB).
fn iccp_png() -> Result<Vec<u8>, AnyError> {
    let mut png = Vec::new();
    image::RgbImage::from_pixel(64, 64, image::Rgb([120, 90, 80]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    let zeros = zlib_zeros(1 << 20);
    let mut data = b"icc\0\0".to_vec();
    data.extend_from_slice(&zeros);
    let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
    chunk.extend_from_slice(b"iCCP");
    chunk.extend_from_slice(&data);
    let crc = crc32fast::hash(&chunk[4..]);
    chunk.extend_from_slice(&crc.to_be_bytes());
    // After IHDR (8 signature + 25 bytes).
    png.splice(33..33, chunk);
    Ok(png)
}

/// A zlib stream of about `len` bytes of compressed zeros (deflate reaches ~1000:1 on them).
fn zlib_zeros(len: usize) -> Vec<u8> {
    use flate2::{write::ZlibEncoder, Compression};
    let mut enc = ZlibEncoder::new(Vec::new(), Compression::best());
    let block = vec![0u8; 1 << 20];
    while enc.get_ref().len() < len {
        let _ = enc.write_all(&block);
    }
    enc.finish().unwrap_or_default()
}

/// A ~10 KB baseline JPEG whose frame header claims 12000x3333 pixels.
fn tall_claim_jpeg() -> Result<Vec<u8>, AnyError> {
    let img = image::RgbImage::from_fn(128, 128, |x, y| image::Rgb([(x * 2) as u8, (y * 2) as u8, 90]));
    let mut jpeg = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)?;
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).ok_or("no SOF0")?;
    jpeg[sof + 5..sof + 7].copy_from_slice(&3333u16.to_be_bytes());
    jpeg[sof + 7..sof + 9].copy_from_slice(&12000u16.to_be_bytes());
    Ok(jpeg)
}
