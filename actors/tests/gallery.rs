//! The gallery through its public API, inside a real actix system: durability across a
//! restart, concurrent searches during a slow write, fault isolation, model separation.
//! Every test runs on both backends: `embedded` (SQLite + FAISS files) and `postgres` (a real
//! PostgreSQL started for the test, see tests/common/pg.rs).

#[path = "../../tests/common/pg.rs"]
mod pg;

use std::sync::Arc;
use std::time::{Duration, Instant};

use facegate_actors::{GalleryBackend, GalleryConfig, GalleryDirectory, GalleryError, PartitionStatus};

const DIM: usize = 32;

fn unit(seed: u32) -> Vec<f32> {
    let v: Vec<f32> = (0..DIM)
        .map(|i| ((seed as f32 * 12.9898 + i as f32 * 78.233).sin() * 43758.547).fract() - 0.5)
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

/// The default configuration on `dir`, encrypted under a master key kept in a file there
/// (the same key on every call).
fn keyed(dir: &std::path::Path) -> GalleryConfig {
    let key = dir.join("test-master.key");
    if !key.exists() {
        std::fs::write(&key, facegate_actors::seal::MasterKey::generate_hex().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    }
    let mut cfg = GalleryConfig {
        data_dir: dir.to_path_buf(),
        ..GalleryConfig::default()
    };
    cfg.encryption.master_key_file = Some(key);
    cfg
}

/// A test's storage: a scratch directory, and a PostgreSQL for the postgres backend.
struct Fx {
    tmp: tempfile::TempDir,
    pg: Option<pg::Pg>,
}

impl Fx {
    fn new(postgres: bool) -> Self {
        Self {
            tmp: tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")),
            pg: postgres.then(pg::Pg::start),
        }
    }

    fn cfg(&self) -> GalleryConfig {
        let mut cfg = GalleryConfig {
            max_templates_per_subject: 3,
            ..keyed(self.tmp.path())
        };
        if let Some(pg) = &self.pg {
            cfg.backend = GalleryBackend::Postgres;
            cfg.postgres.url = pg.url();
        }
        cfg
    }
}

/// Each test once per backend.
macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[actix_rt::test]
            async fn embedded() {
                super::$name(super::Fx::new(false)).await
            }
            #[actix_rt::test]
            async fn postgres() {
                super::$name(super::Fx::new(true)).await
            }
        }
    )*};
}

both!(
    acknowledged_enrolments_survive_a_restart,
    searches_complete_while_a_write_is_stalled,
    a_fault_in_one_partition_leaves_the_others_serving,
    templates_of_another_model_are_refused_not_compared,
    several_templates_per_subject_one_answer_each,
    a_large_partition_reloads_as_ivf_and_still_finds_and_verifies,
    a_large_partition_reloads_as_lsh_with_exact_scores,
);

fn open(fx: &Fx) -> Arc<GalleryDirectory> {
    GalleryDirectory::open(fx.cfg(), DIM).unwrap_or_else(|e| panic!("{e}"))
}

/// Enrol the template `unit(seed)` of model "m1"; the test fails if it is not acknowledged.
async fn enrol(g: &GalleryDirectory, partition: &str, subject: &str, seed: u32) {
    g.enrol(partition, subject, unit(seed), "m1", 0.9)
        .await
        .unwrap_or_else(|e| panic!("{partition}/{subject}: {e}"));
}

async fn until_ready(g: &GalleryDirectory, partition: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while g.info().iter().any(|p| p.name == partition && p.status != PartitionStatus::Ready) {
        assert!(Instant::now() < deadline, "{partition} never became ready");
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn acknowledged_enrolments_survive_a_restart(fx: Fx) {
    {
        let g = open(&fx);
        let writes: Vec<_> = (0..50)
            .map(|i| {
                let g = g.clone();
                async move { g.enrol("default", &format!("p{i}"), unit(i), "m1", 0.9).await }
            })
            .collect();
        for r in futures_join(writes).await {
            r.unwrap_or_else(|e| panic!("{e}"));
        }
        g.delete("default", "p7").await.unwrap_or_else(|e| panic!("{e}"));
    }
    let g = open(&fx);
    until_ready(&g, "default").await;
    assert_eq!(g.names(), vec!["default"]);
    let hits = g.search("default", unit(3), "m1", 1, 0.0).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(hits[0].subject_id, "p3");
    assert_eq!(g.info()[0].subjects, Some(49));
    assert_eq!(
        g.verify("default", "p7", unit(7), "m1").await,
        Err(GalleryError::SubjectNotFound("p7".into()))
    );
}

async fn searches_complete_while_a_write_is_stalled(fx: Fx) {
    let g = open(&fx);
    enrol(&g, "default", "alice", 1).await;
    // The writer is busy for 2 s (as a slow fsync would be) and an enrolment queues behind it.
    g.stall_writer("default", Duration::from_secs(2)).unwrap_or_else(|e| panic!("{e}"));
    let writer = {
        let g = g.clone();
        actix_rt::spawn(async move { g.enrol("default", "bob", unit(2), "m1", 0.9).await })
    };
    let start = Instant::now();
    for _ in 0..20 {
        let hits = g.search("default", unit(1), "m1", 5, 0.0).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(hits[0].subject_id, "alice");
    }
    let searched = start.elapsed();
    assert!(!writer.is_finished(), "the write should still be waiting for the stalled writer");
    writer.await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("{e}"));
    let waited = start.elapsed();
    // The ordering, not a timing budget: all searches were answered before the write was.
    assert!(searched < waited, "searches {searched:?} vs write {waited:?}");
}

async fn a_fault_in_one_partition_leaves_the_others_serving(fx: Fx) {
    let g = open(&fx);
    enrol(&g, "watchlist", "w1", 10).await;
    enrol(&g, "employees", "e1", 20).await;
    g.stall_writer("watchlist", Duration::from_millis(300))
        .unwrap_or_else(|e| panic!("{e}"));
    g.inject_fault("watchlist").await.unwrap_or_else(|e| panic!("{e}"));
    // The other partition answers throughout.
    let hits = g
        .search("employees", unit(20), "m1", 1, 0.0)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(hits[0].subject_id, "e1");
    // The faulty one comes back with its data, reloaded from its store.
    until_ready(&g, "watchlist").await;
    let hits = g
        .search("watchlist", unit(10), "m1", 1, 0.0)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(hits[0].subject_id, "w1");
    enrol(&g, "watchlist", "w2", 11).await;
}

async fn templates_of_another_model_are_refused_not_compared(fx: Fx) {
    let g = open(&fx);
    g.enrol("default", "a", unit(1), "arcface-w600k-mbf", 0.9)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let Err(err) = g.enrol("default", "b", unit(2), "arcface-w600k-r50", 0.9).await else {
        panic!("a template of another model was accepted")
    };
    assert!(matches!(err, GalleryError::ModelMismatch { .. }), "{err:?}");
    let Err(err) = g.search("default", unit(1), "arcface-w600k-r50", 1, 0.0).await else {
        panic!("templates of another model were compared")
    };
    assert!(matches!(err, GalleryError::ModelMismatch { .. }), "{err:?}");
}

async fn several_templates_per_subject_one_answer_each(fx: Fx) {
    let g = open(&fx);
    for i in 0..5 {
        enrol(&g, "default", "alice", 100 + i).await;
    }
    enrol(&g, "default", "bob", 1).await;
    let info = &g.info()[0];
    assert_eq!((info.subjects, info.templates), (Some(2), Some(4)), "3 templates kept for alice");
    let hits = g
        .search("default", unit(104), "m1", 5, -1.0)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(hits.iter().filter(|c| c.subject_id == "alice").count(), 1);
    assert!((hits[0].score - 1.0).abs() < 1e-5);
    // The oldest templates made room: the first no longer matches exactly.
    let s = g
        .verify("default", "alice", unit(100), "m1")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(s < 0.99, "{s}");
    g.delete("default", "alice").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        g.delete("default", "alice").await,
        Err(GalleryError::SubjectNotFound("alice".into()))
    );
    assert!(matches!(
        g.search("nope", unit(1), "m1", 1, 0.0).await,
        Err(GalleryError::PartitionNotFound(_))
    ));
    assert!(matches!(
        g.search("../etc", unit(1), "m1", 1, 0.0).await,
        Err(GalleryError::InvalidName(_))
    ));
}

async fn a_large_partition_reloads_as_ivf_and_still_finds_and_verifies(fx: Fx) {
    let cfg = GalleryConfig {
        index: facegate_actors::gallery::IndexKind::Ivf,
        ivf_nlist: 4,
        ivf_nprobe: 2,
        approx_min_templates: 300,
        ..fx.cfg()
    };
    let g = big_partition(cfg).await;
    for i in [0, 123, 399] {
        let hits = g.search("big", unit(i), "m1", 1, 0.0).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(hits[0].subject_id, format!("p{i}"));
        let s = g
            .verify("big", &format!("p{i}"), unit(i), "m1")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!((s - 1.0).abs() < 1e-5);
    }
    if fx.pg.is_none() {
        assert!(
            fx.tmp.path().join("big/snapshot/index.faiss").is_file(),
            "a trained IVF index is snapshotted"
        );
    }
    // Changes after the snapshot, then a crash-like restart: the snapshot is restored and
    // brought up to date from the store.
    g.delete("big", "p123").await.unwrap_or_else(|e| panic!("{e}"));
    enrol(&g, "big", "p400", 400).await;
    g.inject_fault("big").await.unwrap_or_else(|e| panic!("{e}"));
    actix_rt::time::sleep(Duration::from_millis(50)).await;
    until_ready(&g, "big").await;
    let hits = g.search("big", unit(123), "m1", 1, 0.0).await.unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(hits[0].subject_id, "p123");
    let hits = g.search("big", unit(400), "m1", 1, 0.0).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(hits[0].subject_id, "p400");
    assert_eq!(g.info()[0].templates, Some(400));
}

/// 400 subjects enrolled into partition "big", then the partition reloaded with `cfg`, which
/// builds its approximate index at load.
async fn big_partition(cfg: GalleryConfig) -> Arc<GalleryDirectory> {
    let g = GalleryDirectory::open(cfg.clone(), DIM).unwrap_or_else(|e| panic!("{e}"));
    for i in 0..400 {
        enrol(&g, "big", &format!("p{i}"), i).await;
    }
    g.close().await;
    let g = GalleryDirectory::open(cfg, DIM).unwrap_or_else(|e| panic!("{e}"));
    until_ready(&g, "big").await;
    g
}

async fn futures_join<T>(futs: Vec<impl std::future::Future<Output = T>>) -> Vec<T> {
    let handles: Vec<_> = futs.into_iter().map(|f| Box::pin(f)).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await);
    }
    out
}

async fn a_large_partition_reloads_as_lsh_with_exact_scores(fx: Fx) {
    let cfg = GalleryConfig {
        index: facegate_actors::gallery::IndexKind::Lsh,
        approx_min_templates: 300,
        ..fx.cfg()
    };
    let g = big_partition(cfg).await;
    for i in [0, 123, 399] {
        let hits = g.search("big", unit(i), "m1", 1, 0.0).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(hits[0].subject_id, format!("p{i}"));
        assert!((hits[0].score - 1.0).abs() < 1e-4, "{}", hits[0].score);
    }
    g.delete("big", "p123").await.unwrap_or_else(|e| panic!("{e}"));
    let hits = g.search("big", unit(123), "m1", 1, 0.0).await.unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(hits[0].subject_id, "p123");
    enrol(&g, "big", "p400", 400).await;
    let hits = g.search("big", unit(400), "m1", 1, 0.0).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(hits[0].subject_id, "p400");
}
