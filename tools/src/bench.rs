//! `facegate-tools bench gallery`: the gallery at scale without the image pipeline. Synthetic
//! unit templates (seeded), durable inserts through the partition actor with many
//! writers in flight, start-up time and resident memory per template after a reload, and
//! search latency and rank-1 on mated probes (a template plus noise, cosine ~0.5 to its
//! source) for each index kind, side by side on the same partition.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Subcommand;
use facegate_actors::seal::{EncryptionConfig, EncryptionMode, MasterKey};

mod postgres;
use facegate_actors::{GalleryConfig, GalleryDirectory, IndexKind, PartitionStatus};

#[derive(Subcommand)]
pub enum BenchSet {
    /// Insert rate, start-up, memory and search at gallery scale.
    Gallery {
        /// Templates in the partition.
        #[arg(long, default_value_t = 10_000)]
        templates: usize,
        /// Mated probes searched per index kind.
        #[arg(long, default_value_t = 500)]
        queries: usize,
        /// Concurrent enrolments in flight while inserting.
        #[arg(long, default_value_t = 256)]
        writers: usize,
        /// IVF lists (default: 4 sqrt(n), at most 1024) and lists probed (default: nlist/32, at least 8).
        #[arg(long)]
        nlist: Option<u32>,
        #[arg(long)]
        nprobe: Option<u32>,
        /// Where the scratch partition is written (default: the system temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Index kinds measured, in order ("ivf" runs twice: trained, then from its snapshot).
        /// The first kind's resident memory is the clean figure; "= exact" needs exact first.
        #[arg(long, value_delimiter = ',', default_value = "exact,lsh,ivf")]
        kinds: Vec<String>,
        /// Instead of the index kinds: durable inserts and exact searches without and with
        /// an audit record for each (as the enrol and search routes write them), side by side.
        #[arg(long)]
        audit: bool,
        /// Encryption at rest measured, in order, each on its own scratch partition: "on"
        /// (templates sealed, a fresh master key) and/or "off" (plaintext).
        #[arg(long, value_delimiter = ',', default_value = "on")]
        encryption: Vec<String>,
        /// Subjects deleted after the inserts (durable deletes, each answered after its
        /// erasure: secure_delete + WAL truncation), to measure the delete rate.
        #[arg(long, default_value_t = 1000)]
        deletes: usize,
    },
    /// Write synthetic templates straight into a partition's store (server stopped), so a
    /// load test runs against a gallery of a realistic size.
    Seed {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value = "bench")]
        partition: String,
        #[arg(long, default_value_t = 10_000)]
        templates: usize,
        /// Must be the model the server runs (templates of other models are refused).
        #[arg(long, default_value = "arcface-w600k-mbf")]
        model_id: String,
        /// The server's master key file (else FACEGATE_MASTER_KEY), so that it opens the partition.
        #[arg(long)]
        master_key_file: Option<PathBuf>,
        /// "off": write plaintext, for a server run with gallery.encryption.mode = "off".
        #[arg(long, default_value = "on")]
        encryption: String,
    },
    /// End-to-end load over real HTTP against a running server: search and verify at each
    /// concurrency, then enrol. The enrol phase sends each photo under many subject ids: run
    /// the server with FACEGATE__COLLISION__POLICY=off, or it measures identity-collision 409s.
    Load {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        server: String,
        #[arg(long, env = "FACEGATE_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
        /// Photo sets, each a file or a folder (its first 40 images); default: 40 LFW
        /// photos, obama2.jpg, deepface's img2.jpg and img1.jpg (those present), else the
        /// registry test photos.
        #[arg(long, value_delimiter = ',')]
        photos: Vec<PathBuf>,
        /// Partition searched (seeded with `bench seed`) and the subject verified against.
        #[arg(long, default_value = "bench")]
        partition: String,
        #[arg(long, default_value = "s00000000")]
        subject: String,
        #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16")]
        concurrency: Vec<usize>,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Abuse a running server on loopback (slow uploads, a retry storm, forged truncated
    /// JPEGs, costly small images) and print its RSS and what it serves meanwhile. Run the
    /// server with FACEGATE__POOL__MAX_INFLIGHT=8 and FACEGATE__COLLISION__POLICY=off.
    Abuse {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        server: String,
        /// The server's process id (its RSS is read from /proc).
        #[arg(long)]
        pid: u32,
        /// A JPEG face photo (searched by the well-behaved clients; cut for the forgeries).
        #[arg(long)]
        image: PathBuf,
        #[arg(long, default_value_t = 256)]
        slow_connections: usize,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 15)]
        seconds: u64,
    },
    /// Watchlist figures on the real server binary (spawned on loopback with a scratch data
    /// directory): identify on a five-face frame against a one-face search, webhook delivery
    /// delay after the answer, and events lost across kill -9 cycles.
    Watch {
        /// The facegate binary (default: beside this one).
        #[arg(long)]
        binary: Option<PathBuf>,
        /// Timed requests per measurement.
        #[arg(long, default_value_t = 30)]
        runs: usize,
        #[arg(long, default_value_t = 10)]
        cycles: usize,
        /// Pipeline workers of the server.
        #[arg(long, default_value_t = 2)]
        workers: usize,
    },
    /// The "postgres" gallery backend: durable inserts from concurrent writers, replica
    /// convergence on a second node at a steady write rate, a large partition's load time.
    Postgres {
        /// A database to use (default: a throwaway cluster from the PostgreSQL wheel).
        #[arg(long, env = "FACEGATE_BENCH_PG_URL", hide_env_values = true)]
        url: Option<String>,
        #[arg(long, default_value_t = 5_000)]
        inserts: usize,
        #[arg(long, default_value_t = 16)]
        writers: usize,
        /// Writes per second on node A while node B's convergence is timed.
        #[arg(long, default_value_t = 100)]
        rate: u32,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Templates of the partition whose load into a fresh node is timed.
        #[arg(long, default_value_t = 100_000)]
        load_templates: usize,
    },
}

type AnyError = Box<dyn std::error::Error>;

pub(crate) const DIM: usize = 512;
pub(crate) const MODEL: &str = "bench-synthetic";

pub fn run(set: BenchSet) -> Result<(), AnyError> {
    match set {
        BenchSet::Gallery {
            templates,
            queries,
            writers,
            dir,
            audit: true,
            ..
        } => crate::bench_audit::run(templates, queries, writers, dir),
        BenchSet::Gallery {
            templates,
            queries,
            writers,
            nlist,
            nprobe,
            dir,
            kinds,
            audit: _,
            encryption,
            deletes,
        } => {
            for mode in &encryption {
                gallery(templates, queries, writers, (nlist, nprobe), dir.clone(), &kinds, mode, deletes)?;
            }
            Ok(())
        }
        BenchSet::Seed {
            data_dir,
            partition,
            templates,
            model_id,
            master_key_file,
            encryption,
        } => seed(&data_dir, &partition, templates, &model_id, master_key_file, &encryption),
        BenchSet::Load {
            server,
            api_key,
            photos,
            partition,
            subject,
            concurrency,
            seconds,
        } => load(&server, api_key, &photos, &partition, &subject, &concurrency, seconds),
        BenchSet::Watch {
            binary,
            runs,
            cycles,
            workers,
        } => crate::watch::run(&crate::watch::Watch {
            binary,
            runs,
            cycles,
            workers,
        }),
        BenchSet::Postgres {
            url,
            inserts,
            writers,
            rate,
            seconds,
            load_templates,
        } => postgres::run(postgres::Args {
            url,
            inserts,
            writers,
            rate,
            seconds,
            load_templates,
        }),
        BenchSet::Abuse {
            server,
            pid,
            image,
            slow_connections,
            seconds,
        } => crate::abuse::run(&crate::abuse::Abuse {
            server,
            pid,
            image: std::fs::read(&image)?,
            slow_connections,
            seconds,
        }),
    }
}

/// `[gallery.encryption]` for "on" (with `key_file`) or "off".
fn encryption(mode: &str, key_file: Option<PathBuf>) -> Result<EncryptionConfig, AnyError> {
    Ok(EncryptionConfig {
        mode: match mode {
            "on" => EncryptionMode::On,
            "off" => EncryptionMode::Off,
            other => return Err(format!("--encryption: {other:?} is neither \"on\" nor \"off\"").into()),
        },
        master_key_file: key_file,
    })
}

#[allow(clippy::too_many_arguments)]
fn gallery(
    templates: usize,
    queries: usize,
    writers: usize,
    ivf: (Option<u32>, Option<u32>),
    dir: Option<PathBuf>,
    kinds: &[String],
    mode: &str,
    deletes: usize,
) -> Result<(), AnyError> {
    let (nlist, nprobe) = ivf;
    let mut rounds = Vec::new();
    for k in kinds {
        match k.as_str() {
            "exact" => rounds.push(IndexKind::Exact),
            "lsh" => rounds.push(IndexKind::Lsh),
            "ivf" => rounds.extend([IndexKind::Ivf, IndexKind::Ivf]),
            other => return Err(format!("--kinds: unknown index kind {other:?} (exact, lsh, ivf)").into()),
        }
    }
    let scratch = tempfile::Builder::new()
        .prefix("facegate-bench-")
        .tempdir_in(dir.unwrap_or_else(std::env::temp_dir))?;
    let nlist = nlist.unwrap_or_else(|| ((4.0 * (templates as f64).sqrt()) as u32).clamp(16, 1024));
    let nprobe = nprobe.unwrap_or((nlist / 32).max(8));
    let key_file = scratch.path().join("master.key");
    std::fs::write(&key_file, MasterKey::generate_hex().as_bytes())?;
    let data_dir = scratch.path().join("data");
    let base = GalleryConfig {
        data_dir: data_dir.clone(),
        max_templates_per_subject: 1,
        ivf_nlist: nlist,
        ivf_nprobe: nprobe,
        approx_min_templates: 0,
        encryption: encryption(mode, Some(key_file))?,
        ..GalleryConfig::default()
    };
    actix_web::rt::System::new().block_on(async move {
        println!("gallery bench, encryption {mode}: {templates} templates of {DIM} floats, {queries} mated probes, {} cores", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));

        let g = GalleryDirectory::open(base.clone(), DIM)?;
        let start = Instant::now();
        insert(&g, "bench", templates, writers, MODEL).await?;
        let secs = start.elapsed().as_secs_f64();
        println!("insert (encryption {mode}): {:.0} durable templates/s ({templates} in {secs:.1} s, {writers} writers in flight, SQLite WAL synchronous=FULL, one fsync per batch)", templates as f64 / secs);
        let deletes = deletes.min(templates / 2);
        if deletes > 0 {
            let start = Instant::now();
            delete(&g, "bench", templates, deletes, writers).await?;
            let secs = start.elapsed().as_secs_f64();
            println!("delete (encryption {mode}): {:.0} durable erasures/s ({deletes} subjects in {secs:.2} s, {writers} in flight; each answered after secure_delete and the WAL truncated)", deletes as f64 / secs);
            // The deleted subjects come back, so the search rounds see every template.
            insert_range(&g, "bench", templates - deletes..templates, writers, MODEL).await?;
        }
        g.close().await;
        drop(g);
        actix_web::rt::time::sleep(Duration::from_millis(500)).await;
        let disk = dir_size(&data_dir.join("bench"));
        println!("store on disk: {:.0} B per template", disk as f64 / templates as f64);

        let probes: Vec<(usize, Vec<f32>)> = (0..queries).map(|q| {
            let i = (splitmix(q as u64 ^ 0xA5A5) % templates as u64) as usize;
            (i, mated_probe(i, q as u64))
        }).collect();
        let mut exact_top1: Vec<Option<String>> = Vec::new();
        println!("{:<22} {:>9} {:>12} {:>10} {:>10} {:>9} {:>12}", format!("index (encryption {mode})"), "start s", "RSS B/tmpl", "p50 ms", "p99 ms", "rank-1", "= exact top1");
        // IVF twice: trained from the store (then snapshotted), and restored from that snapshot.
        let mut ivf_rounds = 0;
        for kind in rounds {
            let rss0 = rss_bytes();
            let start = Instant::now();
            let g = GalleryDirectory::open(GalleryConfig { index: kind, ..base.clone() }, DIM)?;
            wait_ready(&g, "bench").await?;
            let startup = start.elapsed().as_secs_f64();
            let per_template = (rss_bytes().saturating_sub(rss0)) as f64 / templates as f64;
            let mut lat = Vec::with_capacity(queries);
            let (mut rank1, mut agree) = (0usize, 0usize);
            let mut tops = Vec::with_capacity(queries);
            for (qi, (i, probe)) in probes.iter().enumerate() {
                let t = Instant::now();
                let hits = g.search("bench", probe.clone(), MODEL, 5, 0.0).await?;
                lat.push(t.elapsed());
                let top = hits.first().map(|c| c.subject_id.clone());
                if top.as_deref() == Some(subject(*i).as_str()) {
                    rank1 += 1;
                }
                if kind == IndexKind::Exact {
                    exact_top1.push(top.clone());
                } else if exact_top1.get(qi) == Some(&top) {
                    agree += 1;
                }
                tops.push(top);
            }
            if kind == IndexKind::Exact {
                agree = queries;
            }
            lat.sort();
            let ms = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
            let name = match kind {
                IndexKind::Exact => "exact".to_string(),
                IndexKind::Lsh => format!("lsh{DIM} rerank x{}", base.lsh_rerank),
                IndexKind::Ivf => {
                    ivf_rounds += 1;
                    format!("ivf{nlist}/{nprobe} {}", if ivf_rounds == 1 { "trained" } else { "snapshot" })
                }
            };
            let agreement = if exact_top1.is_empty() { "n/a".to_string() } else { format!("{:.1}%", 100.0 * agree as f64 / queries as f64) };
            println!("{name:<22} {startup:>9.1} {per_template:>12.0} {:>10.2} {:>10.2} {:>8.1}% {agreement:>12}", ms(0.5), ms(0.99), 100.0 * rank1 as f64 / queries as f64);
            g.close().await;
            drop(g);
            actix_web::rt::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(())
    })
}

pub(crate) fn subject(i: usize) -> String {
    format!("s{i:08}")
}

pub(crate) async fn insert(g: &Arc<GalleryDirectory>, partition: &str, n: usize, writers: usize, model: &str) -> Result<(), AnyError> {
    insert_range(g, partition, 0..n, writers, model).await
}

async fn insert_range(
    g: &Arc<GalleryDirectory>,
    partition: &str,
    range: std::ops::Range<usize>,
    writers: usize,
    model: &str,
) -> Result<(), AnyError> {
    let writers = writers.clamp(1, range.len().max(1));
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (g, partition, model, range) = (g.clone(), partition.to_string(), model.to_string(), range.clone());
            actix_web::rt::spawn(async move {
                let mut i = range.start + w;
                while i < range.end {
                    g.enrol(&partition, &subject(i), template(i), &model, 0.9)
                        .await
                        .map_err(|e| e.to_string())?;
                    i += writers;
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// Delete the last `n` of `total` subjects, `writers` in flight.
async fn delete(g: &Arc<GalleryDirectory>, partition: &str, total: usize, n: usize, writers: usize) -> Result<(), AnyError> {
    let writers = writers.clamp(1, n.max(1));
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (g, partition) = (g.clone(), partition.to_string());
            actix_web::rt::spawn(async move {
                let mut i = total - n + w;
                while i < total {
                    g.delete(&partition, &subject(i)).await.map_err(|e| e.to_string())?;
                    i += writers;
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

async fn wait_ready(g: &GalleryDirectory, partition: &str) -> Result<(), AnyError> {
    loop {
        match g.info().iter().find(|p| p.name == partition).map(|p| p.status) {
            Some(PartitionStatus::Ready) => return Ok(()),
            Some(PartitionStatus::Degraded) => return Err("partition failed to load".into()),
            _ => actix_web::rt::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

pub(crate) fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Standard normal values from a seed (Box-Muller).
fn gaussians(seed: u64, n: usize) -> Vec<f32> {
    let mut state = seed;
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        state = splitmix(state);
        let u1 = ((state >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        state = splitmix(state);
        let u2 = (state >> 11) as f64 / (1u64 << 53) as f64;
        let r = (-2.0 * u1.ln()).sqrt();
        out.push((r * (2.0 * std::f64::consts::PI * u2).cos()) as f32);
        out.push((r * (2.0 * std::f64::consts::PI * u2).sin()) as f32);
    }
    out.truncate(n);
    out
}

fn normalised(v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

pub(crate) fn template(i: usize) -> Vec<f32> {
    normalised(gaussians(i as u64, DIM))
}

/// The template plus noise: cosine ~0.5 to its source, like a genuine pair of photos.
pub(crate) fn mated_probe(i: usize, q: u64) -> Vec<f32> {
    let sigma = (3.0f32 / DIM as f32).sqrt();
    let t = template(i);
    let noise = gaussians(q ^ 0xDEAD_BEEF_u64.rotate_left(17), DIM);
    normalised(t.iter().zip(noise).map(|(a, e)| a + sigma * e).collect())
}

fn rss_bytes() -> u64 {
    facegate::procfs::bytes("/proc/self/status", "VmRSS").unwrap_or(0)
}

fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

/// Seeds through the partition actor, as enrolments do (durable batched commits), so the
/// store's layout stays the gallery's business.
fn seed(
    data_dir: &std::path::Path,
    partition: &str,
    n: usize,
    model_id: &str,
    master_key_file: Option<PathBuf>,
    mode: &str,
) -> Result<(), AnyError> {
    facegate_actors::names::validate_partition(partition)?;
    let cfg = GalleryConfig {
        data_dir: data_dir.to_path_buf(),
        encryption: encryption(mode, master_key_file)?,
        ..GalleryConfig::default()
    };
    actix_web::rt::System::new().block_on(async move {
        let g = GalleryDirectory::open(cfg, DIM)?;
        let start = Instant::now();
        insert(&g, partition, n, 256, model_id).await?;
        g.close().await;
        println!(
            "seeded {n} synthetic templates of {model_id} into {} in {:.1} s",
            data_dir.join(partition).display(),
            start.elapsed().as_secs_f64()
        );
        Ok(())
    })
}

struct Sample {
    latency: Duration,
    status: u16,
}

/// Run `threads` clients for `secs` seconds, each sending `body(i)` to `path` in a loop.
fn hammer(
    client: &crate::client::Client,
    path: &str,
    threads: usize,
    secs: u64,
    body: &(dyn Fn(usize) -> String + Sync),
) -> (Vec<Sample>, f64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let counter = std::sync::atomic::AtomicUsize::new(0);
    let samples = std::sync::Mutex::new(Vec::new());
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                let mut mine = Vec::new();
                while Instant::now() < deadline {
                    let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let payload = body(i);
                    let t = Instant::now();
                    let status = client.post(path, &payload).map(|a| a.status).unwrap_or(0);
                    mine.push(Sample {
                        latency: t.elapsed(),
                        status,
                    });
                }
                samples.lock().unwrap_or_else(|e| e.into_inner()).extend(mine);
            });
        }
    });
    let wall = start.elapsed().as_secs_f64();
    (samples.into_inner().unwrap_or_else(|e| e.into_inner()), wall)
}

fn report(set: &str, label: &str, threads: usize, samples: &[Sample], wall: f64) {
    let mut ok: Vec<Duration> = samples.iter().filter(|s| s.status == 200).map(|s| s.latency).collect();
    ok.sort();
    let pct = |p: f64| {
        ok.get(((ok.len().max(1) - 1) as f64 * p) as usize)
            .map(|d| d.as_secs_f64() * 1e3)
            .unwrap_or(f64::NAN)
    };
    let overloaded = samples.iter().filter(|s| s.status == 503).count();
    let refused = samples.iter().filter(|s| (400..500).contains(&s.status)).count();
    let failed = samples
        .iter()
        .filter(|s| s.status == 0 || (s.status >= 500 && s.status != 503))
        .count();
    println!(
        "{set:<16} {label:<7} {threads:>3} {:>9.1} {:>8.1} {:>8.1} {:>8.1} {:>8} {:>8} {:>6}",
        ok.len() as f64 / wall,
        pct(0.5),
        pct(0.95),
        pct(0.99),
        refused,
        overloaded,
        failed
    );
}

fn load(
    server: &str,
    key: Option<String>,
    photos: &[PathBuf],
    partition: &str,
    subject_id: &str,
    levels: &[usize],
    secs: u64,
) -> Result<(), AnyError> {
    use base64::Engine;
    let encode = |b: &Vec<u8>| base64::engine::general_purpose::STANDARD.encode(b);
    let mut sets: Vec<(String, Vec<String>)> = crate::photo_sets::load(photos)?
        .into_iter()
        .map(|s| (s.name, s.photos.iter().map(encode).collect()))
        .collect();
    if sets.is_empty() {
        let registry = crate::config::resolve(std::path::Path::new("models/testdata"));
        let photos = ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"]
            .iter()
            .filter_map(|f| std::fs::read(registry.join(f)).ok())
            .map(|b| encode(&b))
            .collect();
        sets.push(("registry photos".into(), photos));
    }
    let client = crate::client::Client::new(server, key);
    println!(
        "load: {} photo sets, {secs} s per level, partition {partition}, server {server}",
        sets.len()
    );
    println!(
        "{:<16} {:<7} {:>3} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6}",
        "photos", "what", "c", "ok/s", "p50 ms", "p95 ms", "p99 ms", "4xx", "503", "errors"
    );
    for (name, images) in &sets {
        for &c in levels {
            let body = |i: usize| serde_json::json!({"image": images[i % images.len()], "partition": partition, "top_k": 5}).to_string();
            let (samples, wall) = hammer(&client, "/api/v1/search", c, secs, &body);
            report(name, "search", c, &samples, wall);
        }
        for &c in levels {
            let body = |i: usize| {
                serde_json::json!({"image": images[i % images.len()], "partition": partition, "subject_id": subject_id}).to_string()
            };
            let (samples, wall) = hammer(&client, "/api/v1/verify", c, secs, &body);
            report(name, "verify", c, &samples, wall);
        }
        let c = levels.iter().copied().max().unwrap_or(4).min(4);
        let body = |i: usize| {
            serde_json::json!({"image": images[i % images.len()], "partition": format!("{partition}-enrol"), "subject_id": format!("load-{i}")})
                .to_string()
        };
        let (samples, wall) = hammer(&client, "/api/v1/enrol", c, secs, &body);
        report(name, "enrol", c, &samples, wall);
    }
    Ok(())
}
