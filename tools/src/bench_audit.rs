//! `facegate-tools bench gallery --audit`: what the audit trail costs. Durable inserts
//! through the partition actor without and with an audit record per insert, then exact
//! searches without and with one, on the same data in one run. The records are written as
//! the routes write them (`Audit::entry_for`, `Entry::finish`): one queue, one writer
//! thread, one transaction per batch.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use facegate::audit::{Audit, AuditConfig, Operation};
use facegate_actors::{GalleryConfig, GalleryDirectory};

use crate::bench::{insert, mated_probe, splitmix, subject, template, DIM, MODEL};

type AnyError = Box<dyn std::error::Error>;

pub fn run(templates: usize, queries: usize, writers: usize, dir: Option<PathBuf>) -> Result<(), AnyError> {
    let scratch = tempfile::Builder::new()
        .prefix("facegate-bench-audit-")
        .tempdir_in(dir.unwrap_or_else(std::env::temp_dir))?;
    let cfg = GalleryConfig {
        data_dir: scratch.path().to_path_buf(),
        max_templates_per_subject: 1,
        // The audit record's cost alone: templates in plaintext on both sides (the
        // encryption's own cost is `bench gallery --encryption off,on`).
        encryption: facegate_actors::seal::EncryptionConfig {
            mode: facegate_actors::seal::EncryptionMode::Off,
            ..Default::default()
        },
        ..GalleryConfig::default()
    };
    actix_web::rt::System::new().block_on(async move {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        println!("audit bench: {templates} templates of {DIM} floats per partition, {writers} writers in flight, {queries} exact searches, {cores} cores");
        let g = GalleryDirectory::open(cfg.clone(), DIM)?;
        let audit = Arc::new(Audit::open(&AuditConfig::default(), &cfg.data_dir)?);
        println!("{:<28} {:>14} {:>10} {:>10}", "", "templates/s", "p50 ms", "p99 ms");
        // Plain first, audited second, plain again: drift of the disk shows as a gap
        // between the two plain rounds.
        let mut rates = Vec::new();
        for (round, audited) in [("plain", false), ("audited", true), ("plain-again", false)] {
            let start = Instant::now();
            if audited {
                insert_audited(&g, &audit, round, templates, writers).await?;
            } else {
                insert(&g, round, templates, writers, MODEL).await?;
            }
            let rate = templates as f64 / start.elapsed().as_secs_f64();
            rates.push(rate);
            println!("{:<28} {rate:>14.0}", format!("insert, {}", if audited { "audit on" } else { "audit off" }));
        }
        let plain = (rates[0] + rates[2]) / 2.0;
        println!("insert rate with audit / without: {:.1} %", 100.0 * rates[1] / plain);
        for audited in [false, true, false] {
            let mut lat = Vec::with_capacity(queries);
            for q in 0..queries {
                let i = (splitmix(q as u64 ^ 0x5A5A) % templates as u64) as usize;
                let probe = mated_probe(i, q as u64);
                let t = Instant::now();
                let hits = g.search("plain", probe, MODEL, 5, 0.0).await?;
                if audited {
                    let mut e = audit.entry_for(format!("bench-search-{q}"), Some("bench".into()), Operation::Search, "plain")?;
                    e.model(MODEL);
                    e.candidates(&hits);
                    e.finish(Ok(actix_web::HttpResponse::Ok().finish())).await?;
                }
                lat.push(t.elapsed());
            }
            lat.sort();
            let ms = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
            println!("{:<28} {:>14} {:>10.2} {:>10.2}", format!("search, {}", if audited { "audit on" } else { "audit off" }), "", ms(0.5), ms(0.99));
        }
        g.close().await;
        drop(g);
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
        Ok(())
    })
}

/// Inserts as the enrol route makes them: the durable enrolment, then its durable record.
async fn insert_audited(g: &Arc<GalleryDirectory>, audit: &Arc<Audit>, partition: &str, n: usize, writers: usize) -> Result<(), AnyError> {
    let writers = writers.clamp(1, n.max(1));
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (g, audit, partition) = (g.clone(), audit.clone(), partition.to_string());
            actix_web::rt::spawn(async move {
                let mut i = w;
                while i < n {
                    let mut e = audit
                        .entry_for(format!("bench-enrol-{i}"), Some("bench".into()), Operation::Enrol, &partition)
                        .map_err(|e| e.to_string())?;
                    e.subject(&subject(i), None);
                    e.model(MODEL);
                    let done = g.enrol(&partition, &subject(i), template(i), MODEL, 0.9).await;
                    let outcome = done
                        .map(|()| actix_web::HttpResponse::Ok().finish())
                        .map_err(facegate::error::ApiError::from);
                    e.finish(outcome).await.map_err(|e| e.to_string())?;
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
