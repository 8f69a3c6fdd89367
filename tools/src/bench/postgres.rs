//! `facegate-tools bench postgres`: the "postgres" gallery backend on a real PostgreSQL
//! (`--url`, or a throwaway cluster from the wheel `facegate.sh setup` installs): durable
//! inserts per second from concurrent writers (group commit), how long another node takes
//! to see an acknowledged write at a steady write rate, and how long a large partition
//! takes to load from the database into a node.

use std::sync::Arc;
use std::time::{Duration, Instant};

use facegate_actors::{GalleryBackend, GalleryConfig, GalleryDirectory, PostgresConfig};

use super::{insert, subject, template, wait_ready, AnyError, DIM, MODEL};

#[path = "../../../tests/common/pg.rs"]
mod pg;

pub struct Args {
    pub url: Option<String>,
    pub inserts: usize,
    pub writers: usize,
    pub rate: u32,
    pub seconds: u64,
    pub load_templates: usize,
}

fn directory(url: &str, data: &std::path::Path) -> Result<Arc<GalleryDirectory>, AnyError> {
    let cfg = GalleryConfig {
        data_dir: data.to_path_buf(),
        backend: GalleryBackend::Postgres,
        postgres: PostgresConfig {
            url: url.into(),
            ..Default::default()
        },
        ..Default::default()
    };
    Ok(GalleryDirectory::open(cfg, DIM)?)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub fn run(args: Args) -> Result<(), AnyError> {
    let own = match &args.url {
        Some(_) => None,
        None => {
            println!("starting a throwaway PostgreSQL (fsync on, synchronous_commit on)");
            Some(pg::Pg::start())
        }
    };
    let url = args.url.clone().or_else(|| own.as_ref().map(|p| p.url())).unwrap_or_default();
    let scratch = tempfile::tempdir()?;
    let run_id = std::process::id();
    actix_web::rt::System::new().block_on(async move {
        // 1. Durable inserts from concurrent writers into one partition.
        let a = directory(&url, &scratch.path().join("a"))?;
        let p = format!("insert{run_id}");
        let start = Instant::now();
        insert(&a, &p, args.inserts, args.writers, MODEL).await?;
        let secs = start.elapsed().as_secs_f64();
        println!(
            "durable inserts: {} templates from {} writers in {:.2} s = {:.0} per s (each acknowledged after COMMIT)",
            args.inserts,
            args.writers,
            secs,
            args.inserts as f64 / secs
        );

        // 2. Convergence on a second node at a steady write rate.
        let b = directory(&url, &scratch.path().join("b"))?;
        let p = format!("converge{run_id}");
        a.enrol(&p, "warm-up", template(0), MODEL, 0.9).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !b.exists(&p) || b.contains(&p, "warm-up") != Ok(true) {
            if Instant::now() > deadline {
                return Err("node B never saw the partition".into());
            }
            actix_web::rt::time::sleep(Duration::from_millis(5)).await;
        }
        let n = (args.rate as u64 * args.seconds) as usize;
        let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
        let mut waits = Vec::with_capacity(n);
        let t0 = Instant::now();
        for i in 0..n {
            let due = t0 + interval * i as u32;
            if let Some(d) = due.checked_duration_since(Instant::now()) {
                actix_web::rt::time::sleep(d).await;
            }
            let (a, b, p) = (a.clone(), b.clone(), p.clone());
            waits.push(actix_web::rt::spawn(async move {
                let s = subject(i + 1);
                a.enrol(&p, &s, template(i + 1), MODEL, 0.9).await.map_err(|e| e.to_string())?;
                let acked = Instant::now();
                let give_up = acked + Duration::from_secs(30);
                while b.contains(&p, &s) != Ok(true) {
                    if Instant::now() > give_up {
                        return Err(format!("{s} never reached node B"));
                    }
                    actix_web::rt::time::sleep(Duration::from_micros(500)).await;
                }
                Ok::<f64, String>(acked.elapsed().as_secs_f64() * 1e3)
            }));
        }
        let mut ms = Vec::with_capacity(n);
        for w in waits {
            ms.push(w.await.map_err(|e| e.to_string())??);
        }
        let offered = n as f64 / t0.elapsed().as_secs_f64();
        ms.sort_by(f64::total_cmp);
        println!(
            "replica convergence (ack on node A -> visible on node B) at {offered:.0} writes/s over {} writes: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            n,
            percentile(&ms, 0.5),
            percentile(&ms, 0.99),
            ms.last().copied().unwrap_or(f64::NAN)
        );
        a.close().await;
        b.close().await;

        // 3. A large partition loaded from PostgreSQL into a fresh node.
        let p = format!("load{run_id}");
        let seeded = Instant::now();
        seed(&url, &p, args.load_templates).await?;
        println!(
            "seeded {} templates of {DIM} floats into {p} in {:.1} s (one COPY-like batch per 5,000)",
            args.load_templates,
            seeded.elapsed().as_secs_f64()
        );
        let start = Instant::now();
        let c = directory(&url, &scratch.path().join("c"))?;
        wait_ready(&c, &p).await?;
        println!(
            "partition load from PostgreSQL: {} templates in {:.1} s (connect, read, FAISS exact index)",
            c.info().iter().find(|i| i.name == p).and_then(|i| i.templates).unwrap_or(0),
            start.elapsed().as_secs_f64()
        );
        c.close().await;
        Ok::<(), AnyError>(())
    })?;
    drop(own);
    Ok(())
}

/// `n` templates straight into the tables (as `gallery migrate` writes them).
async fn seed(url: &str, partition: &str, n: usize) -> Result<(), AnyError> {
    let cfg: facegate_actors::gallery::postgres::PostgresConfig = PostgresConfig {
        url: url.into(),
        ..Default::default()
    };
    let (client, conn) = cfg.connect_config()?.connect(tokio_postgres::NoTls).await?;
    actix_web::rt::spawn(async move {
        let _ = conn.await;
    });
    client
        .execute(
            "INSERT INTO facegate_partitions (name, model_id, next_id, last_seq) VALUES ($1, $2, $3, 0)",
            &[&partition, &MODEL, &(n as i64 + 1)],
        )
        .await?;
    let mut i = 0usize;
    while i < n {
        let end = (i + 5_000).min(n);
        let ids: Vec<i64> = (i + 1..=end).map(|x| x as i64).collect();
        let subs: Vec<String> = (i..end).map(subject).collect();
        let blobs: Vec<Vec<u8>> = (i..end)
            .map(|x| facegate_actors::gallery::postgres::encode_template(&template(x)))
            .collect();
        let models = vec![MODEL; ids.len()];
        let quals = vec![0.9f32; ids.len()];
        client
            .execute(
                "INSERT INTO facegate_templates (partition, id, subject_id, template, model_id, quality)
                 SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::bytea[], $5::text[], $6::real[])",
                &[&partition, &ids, &subs, &blobs, &models, &quals],
            )
            .await?;
        i = end;
    }
    Ok(())
}
