//! The in-memory search structure of one partition, keyed by the store's row ids, with
//! the subject of every id. Inner product on unit vectors is cosine.
//!
//! Two kinds, chosen per partition by configuration:
//! * exact: FAISS `IDMap,Flat`. Deletes tombstone ids, which searches skip, compacted out
//!   of FAISS in batches: `remove_ids` costs O(n) whatever the number of ids (~450 ms at
//!   1M), so one call per batch, not per delete.
//! * IVF: FAISS `IVF{nlist},Flat`, trained on a sample of the partition, probing `nprobe`
//!   lists per query. Scores are exact for the vectors it visits; removal is cheap.
//! * LSH: FAISS `IDMap,LSH{d}t,RFlat`: a 64-byte sign code per template (thresholds at the
//!   medians of a sample) scanned by Hamming distance, the best `rerank` x k re-scored
//!   exactly from the full vectors. A mated probe at cosine 0.5 sits ~4.7 standard
//!   deviations of Hamming distance below the 1,000th random template of a million, so
//!   the short list holds it and rank-1 matches exact search. FAISS cannot remove from a
//!   refined index: deletes stay tombstones until the partition's next load.
//!
//! Searches take `&self` (FAISS's search is const and thread-safe; `ConcurrentIndex`
//! exposes it), so many run at once under a read lock.

use std::collections::HashSet;
use std::sync::Once;

use faiss::index::{
    flat::FlatIndexImpl, id_map::IdMap, ivf_flat::IVFFlatIndexImpl, lsh::LshIndex, refine_flat::RefineFlatIndexImpl, ConcurrentIndex,
};
use faiss::{index_factory, selector::IdSelector, FlatIndex, Idx, Index, MetricType};
use serde::{Deserialize, Serialize};

use super::subjects::Subjects;

/// Tombstones compacted out of an exact index once this many accumulate.
const COMPACT_AT: usize = 1024;

/// Index kind of a partition (configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexKind {
    Exact,
    Ivf,
    Lsh,
}

enum Backend {
    Exact(IdMap<FlatIndexImpl>),
    Ivf(IVFFlatIndexImpl),
    Lsh(IdMap<RefineFlatIndexImpl<LshIndex>>),
}

pub struct GalleryIndex {
    backend: Backend,
    dim: usize,
    subjects: Subjects,
    tombstones: HashSet<i64>,
}

/// One subject in a search answer: its best template's score.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub subject_id: String,
    pub score: f32,
}

impl GalleryIndex {
    /// An exact index.
    pub fn new(dim: usize) -> faiss::error::Result<Self> {
        limit_library_threads();
        let index = index_factory(dim as u32, "IDMap,Flat", MetricType::InnerProduct)?
            .into_id_map()?
            .try_cast_inner_index::<FlatIndexImpl>()?;
        Ok(Self::with(Backend::Exact(index), dim))
    }

    /// An IVF index trained on `sample` (row-major unit vectors).
    pub fn new_ivf(dim: usize, sample: &[f32], nlist: u32, nprobe: u32) -> faiss::error::Result<Self> {
        limit_library_threads();
        let mut index = IVFFlatIndexImpl::new_ip(FlatIndex::new_ip(dim as u32)?, dim as u32, nlist)?;
        index.train(sample)?;
        index.set_nprobe(nprobe.clamp(1, nlist));
        Ok(Self::with(Backend::Ivf(index), dim))
    }

    /// An LSH index with exact re-scoring, its thresholds trained on `sample`.
    pub fn new_lsh(dim: usize, sample: &[f32], rerank: f32) -> faiss::error::Result<Self> {
        limit_library_threads();
        let lsh = LshIndex::new_with_options(dim as u32, dim as u32, false, true)?;
        let mut refine = RefineFlatIndexImpl::new(lsh)?;
        refine.set_k_factor(rerank.max(1.0));
        let mut index = IdMap::new(refine)?;
        index.train(sample)?;
        Ok(Self::with(Backend::Lsh(index), dim))
    }

    /// An IVF index restored from a snapshot; fill its subjects with `register`.
    pub fn from_ivf(mut index: IVFFlatIndexImpl, dim: usize, nprobe: u32) -> Self {
        limit_library_threads();
        let nlist = index.nlist();
        index.set_nprobe(nprobe.clamp(1, nlist));
        Self::with(Backend::Ivf(index), dim)
    }

    /// The IVF index and the ids it holds, for a snapshot.
    pub fn ivf_parts(&self) -> Option<(&IVFFlatIndexImpl, Vec<i64>)> {
        match &self.backend {
            Backend::Ivf(i) => Some((i, self.subjects.ids())),
            Backend::Exact(_) | Backend::Lsh(_) => None,
        }
    }

    /// Record the subject of an id the FAISS index already holds (restored snapshot).
    pub fn register(&mut self, id: i64, subject: String) {
        self.subjects.insert(id, &subject);
    }

    /// Drop ids from FAISS that the store no longer has (deleted after a snapshot).
    pub fn remove_stale(&mut self, ids: &[i64]) -> faiss::error::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<Idx> = ids.iter().map(|id| Idx::new(*id as u64)).collect();
        let sel = IdSelector::batch(&ids)?;
        match &mut self.backend {
            Backend::Exact(i) => i.remove_ids(&sel)?,
            Backend::Ivf(i) => i.remove_ids(&sel)?,
            // A refined index cannot remove: searches skip these ids instead.
            Backend::Lsh(_) => {
                self.tombstones.extend(ids.iter().filter_map(|i| i.get()).map(|i| i as i64));
                0
            }
        };
        Ok(())
    }

    fn with(backend: Backend, dim: usize) -> Self {
        Self {
            backend,
            dim,
            subjects: Subjects::default(),
            tombstones: HashSet::new(),
        }
    }

    pub fn kind(&self) -> IndexKind {
        match self.backend {
            Backend::Exact(_) => IndexKind::Exact,
            Backend::Ivf(_) => IndexKind::Ivf,
            Backend::Lsh(_) => IndexKind::Lsh,
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn subjects(&self) -> usize {
        self.subjects.subjects()
    }

    pub fn templates(&self) -> usize {
        self.subjects.templates()
    }

    pub fn contains(&self, subject: &str) -> bool {
        self.subjects.contains(subject)
    }

    fn ntotal(&self) -> usize {
        match &self.backend {
            Backend::Exact(i) => i.ntotal() as usize,
            Backend::Ivf(i) => i.ntotal() as usize,
            Backend::Lsh(i) => i.ntotal() as usize,
        }
    }

    /// Add templates (row id, subject, unit vector) in one FAISS call.
    pub fn add(&mut self, rows: &[(i64, String, Vec<f32>)]) -> faiss::error::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut flat = Vec::with_capacity(rows.len() * self.dim);
        let mut ids = Vec::with_capacity(rows.len());
        for (id, _, v) in rows {
            if v.len() != self.dim {
                return Err(faiss::error::Error::BadDimension);
            }
            flat.extend_from_slice(v);
            ids.push(Idx::new(*id as u64));
        }
        match &mut self.backend {
            Backend::Exact(i) => i.add_with_ids(&flat, &ids)?,
            Backend::Ivf(i) => i.add_with_ids(&flat, &ids)?,
            Backend::Lsh(i) => i.add_with_ids(&flat, &ids)?,
        }
        for (id, subject, _) in rows {
            self.subjects.insert(*id, subject);
        }
        Ok(())
    }

    /// Forget template ids at once: removed from IVF directly, tombstoned in an exact index
    /// (compacted when enough accumulate).
    pub fn remove(&mut self, ids: &[i64]) -> faiss::error::Result<()> {
        let mut gone = Vec::new();
        for id in ids {
            if self.subjects.remove(*id) {
                gone.push(Idx::new(*id as u64));
                self.tombstones.insert(*id);
            }
        }
        match &mut self.backend {
            Backend::Ivf(i) if !gone.is_empty() => {
                i.remove_ids(&IdSelector::batch(&gone)?)?;
                self.tombstones.clear();
            }
            Backend::Exact(_) if self.tombstones.len() >= COMPACT_AT => self.compact()?,
            _ => {}
        }
        Ok(())
    }

    pub fn compact(&mut self) -> faiss::error::Result<()> {
        if self.tombstones.is_empty() || matches!(self.backend, Backend::Lsh(_)) {
            return Ok(());
        }
        let ids: Vec<Idx> = self.tombstones.iter().map(|id| Idx::new(*id as u64)).collect();
        let sel = IdSelector::batch(&ids)?;
        match &mut self.backend {
            Backend::Exact(i) => i.remove_ids(&sel)?,
            Backend::Ivf(i) => i.remove_ids(&sel)?,
            Backend::Lsh(_) => 0,
        };
        self.tombstones.clear();
        Ok(())
    }

    /// The best `top_k` subjects (each once, by its best template) scoring at least
    /// `min_score`, best first.
    pub fn search(&self, query: &[f32], top_k: usize, min_score: f32, max_per_subject: usize) -> faiss::error::Result<Vec<Candidate>> {
        let total = self.ntotal();
        if total == 0 || top_k == 0 {
            return Ok(Vec::new());
        }
        // Each subject holds at most `max_per_subject` templates, so this many hits hold
        // at least `top_k` distinct live subjects when that many exist.
        let k = (top_k * max_per_subject.max(1) + self.tombstones.len()).min(total);
        let result = match &self.backend {
            Backend::Exact(i) => ConcurrentIndex::search(i, query, k)?,
            Backend::Ivf(i) => ConcurrentIndex::search(i, query, k)?,
            Backend::Lsh(i) => {
                // The refinement runs in the base index's metric, L2: on unit vectors
                // |a - b|^2 = 2 - 2 cos, the same order; turned back into cosine here.
                let mut r = ConcurrentIndex::search(i, query, k)?;
                r.distances.iter_mut().for_each(|d| *d = 1.0 - *d / 2.0);
                r
            }
        };
        let mut seen = HashSet::with_capacity(top_k);
        let mut out = Vec::with_capacity(top_k);
        for (label, score) in result.labels.iter().zip(&result.distances) {
            let Some(id) = label.get().map(|v| v as i64) else { continue };
            if *score < min_score {
                break; // results are sorted by score
            }
            let Some((slot, subject)) = self.subjects.of(id) else { continue }; // tombstoned
            if seen.insert(slot) {
                out.push(Candidate {
                    subject_id: subject.to_string(),
                    score: *score,
                });
                if out.len() == top_k {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// A real call into FAISS, for health.
    pub fn probe(&self) -> bool {
        let q = vec![0f32; self.dim];
        match &self.backend {
            Backend::Exact(i) => ConcurrentIndex::search(i, &q, 1).is_ok(),
            Backend::Ivf(i) => ConcurrentIndex::search(i, &q, 1).is_ok(),
            Backend::Lsh(i) => ConcurrentIndex::search(i, &q, 1).is_ok(),
        }
    }
}

/// FAISS's OpenMP pool spinning beside busy request threads made searches 4-8x slower
/// (MODELS.md): one thread; parallelism comes from concurrent requests. Set here, not
/// only by OMP_NUM_THREADS, so a binary started without facegate.sh behaves the same.
/// (BLAS is used by FAISS only for batches of 20+ queries; OPENBLAS_NUM_THREADS=1 is set
/// by facegate.sh, since Debian's libblas exposes no thread setter to link against.)
fn limit_library_threads() {
    static ONCE: Once = Once::new();
    extern "C" {
        fn omp_set_num_threads(n: std::os::raw::c_int);
    }
    // SAFETY: sets a process-wide integer in libgomp; safe to call at any time.
    ONCE.call_once(|| unsafe { omp_set_num_threads(1) });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u32, dim: usize) -> Vec<f32> {
        let v: Vec<f32> = (0..dim)
            .map(|i| ((seed as f32 * 12.9898 + i as f32 * 78.233).sin() * 43758.547).fract())
            .collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn search_returns_each_subject_once_by_its_best_template() {
        let mut idx = GalleryIndex::new(16).unwrap_or_else(|e| panic!("{e}"));
        let rows: Vec<_> = (0..20).map(|i| (i as i64 + 1, format!("s{}", i % 5), unit(i, 16))).collect();
        idx.add(&rows).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((idx.subjects(), idx.templates()), (5, 20));
        let hits = idx.search(&unit(7, 16), 3, -1.0, 10).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(hits.len(), 3);
        assert_eq!(hits[0].subject_id, "s2");
        assert!((hits[0].score - 1.0).abs() < 1e-5);
        let subjects: HashSet<_> = hits.iter().map(|c| c.subject_id.clone()).collect();
        assert_eq!(subjects.len(), 3);
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    }

    #[test]
    fn removed_templates_are_never_returned_before_or_after_compaction() {
        let mut idx = GalleryIndex::new(8).unwrap_or_else(|e| panic!("{e}"));
        idx.add(&[(1, "a".into(), unit(1, 8)), (2, "b".into(), unit(2, 8))])
            .unwrap_or_else(|e| panic!("{e}"));
        idx.remove(&[1]).unwrap_or_else(|e| panic!("{e}"));
        let hits = idx.search(&unit(1, 8), 5, -1.0, 1).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(hits.iter().map(|c| c.subject_id.as_str()).collect::<Vec<_>>(), vec!["b"]);
        idx.compact().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(idx.search(&unit(1, 8), 5, -1.0, 1).map(|h| h.len()).unwrap_or(0), 1);
        assert!(!idx.contains("a"));
    }

    #[test]
    fn ivf_finds_mated_probes_and_removes_at_once() {
        let rows: Vec<_> = (0..2000).map(|i| (i as i64 + 1, format!("s{i}"), unit(i, 16))).collect();
        let sample: Vec<f32> = rows.iter().flat_map(|r| r.2.clone()).collect();
        let mut idx = GalleryIndex::new_ivf(16, &sample, 16, 16).unwrap_or_else(|e| panic!("{e}"));
        idx.add(&rows).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(idx.kind(), IndexKind::Ivf);
        let hits = idx.search(&unit(42, 16), 1, 0.0, 1).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(hits[0].subject_id, "s42");
        idx.remove(&[43]).unwrap_or_else(|e| panic!("{e}"));
        let hits = idx.search(&unit(42, 16), 1, 0.0, 1).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(hits[0].subject_id, "s42");
        assert_eq!(idx.ntotal(), 1999);
    }

    #[test]
    fn lsh_rescored_finds_mated_probes_and_skips_deleted() {
        let dim = 64;
        let rows: Vec<_> = (0..5000).map(|i| (i as i64 + 1, format!("s{i}"), unit(i, dim))).collect();
        let sample: Vec<f32> = rows.iter().take(2000).flat_map(|r| r.2.clone()).collect();
        let mut idx = GalleryIndex::new_lsh(dim, &sample, 16.0).unwrap_or_else(|e| panic!("{e}"));
        idx.add(&rows).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(idx.kind(), IndexKind::Lsh);
        for i in [0u32, 777, 4999] {
            let hits = idx.search(&unit(i, dim), 3, 0.0, 1).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(hits[0].subject_id, format!("s{i}"));
            assert!((hits[0].score - 1.0).abs() < 1e-5, "scores are exact after re-scoring");
        }
        idx.remove(&[778]).unwrap_or_else(|e| panic!("{e}"));
        idx.compact().unwrap_or_else(|e| panic!("{e}"));
        let hits = idx.search(&unit(777, dim), 1, 0.0, 1).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(hits[0].subject_id, "s777");
    }

    #[test]
    fn min_score_cuts_the_list() {
        let mut idx = GalleryIndex::new(8).unwrap_or_else(|e| panic!("{e}"));
        idx.add(&[(1, "a".into(), unit(1, 8)), (2, "b".into(), unit(2, 8))])
            .unwrap_or_else(|e| panic!("{e}"));
        let hits = idx.search(&unit(1, 8), 5, 0.99, 1).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(hits.len(), 1);
    }
}
