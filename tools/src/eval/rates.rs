//! Error rates in the vocabulary of ISO/IEC 19795-1 (FMR, FNMR, FTE, FTA) and NIST FRTE
//! (FPIR, FNIR), on sorted score lists so that millions of comparisons stay cheap.
//!
//! Two views of every rate: over the comparisons that happened ("acquired": both photos
//! passed their gates, the recognizer alone), and end to end, where a refused photo is a
//! non-match (a door that does not open) and can never be a false match.

/// How many of the ascending `sorted` are at or above `t`.
fn at_or_above(sorted: &[f32], t: f32) -> usize {
    sorted.len() - sorted.partition_point(|s| *s < t)
}

/// The lowest threshold at which at most `rate` of the ascending `sorted` scores are at or
/// above it: just above all but the top floor(rate x n) (`next_up`).
fn threshold_at_rate(sorted: &[f32], rate: f64) -> f32 {
    let allowed = (rate * sorted.len() as f64).floor() as usize;
    match sorted.len().checked_sub(allowed + 1) {
        Some(i) => sorted[i].next_up(),
        None => f32::NEG_INFINITY,
    }
}

fn share(n: usize, of: usize) -> f64 {
    n as f64 / of.max(1) as f64
}

/// Verification transactions: genuine and impostor scores of the comparisons that happened,
/// and how many transactions of each kind were refused before any comparison.
pub struct Comparisons {
    genuine: Vec<f32>,
    impostor: Vec<f32>,
    refused_genuine: usize,
    refused_impostor: usize,
}

impl Comparisons {
    pub fn new(mut genuine: Vec<f32>, mut impostor: Vec<f32>, refused_genuine: usize, refused_impostor: usize) -> Self {
        genuine.sort_unstable_by(f32::total_cmp);
        impostor.sort_unstable_by(f32::total_cmp);
        Self {
            genuine,
            impostor,
            refused_genuine,
            refused_impostor,
        }
    }

    pub fn genuine(&self) -> &[f32] {
        &self.genuine
    }
    pub fn impostor(&self) -> &[f32] {
        &self.impostor
    }
    /// Genuine and impostor transactions, refused ones included.
    pub fn transactions(&self) -> (usize, usize) {
        (
            self.genuine.len() + self.refused_genuine,
            self.impostor.len() + self.refused_impostor,
        )
    }
    pub fn refused(&self) -> (usize, usize) {
        (self.refused_genuine, self.refused_impostor)
    }

    /// FMR over the comparisons that happened.
    pub fn fmr(&self, t: f32) -> f64 {
        share(at_or_above(&self.impostor, t), self.impostor.len())
    }
    /// FNMR over the comparisons that happened.
    pub fn fnmr(&self, t: f32) -> f64 {
        share(self.genuine.len() - at_or_above(&self.genuine, t), self.genuine.len())
    }
    /// FMR end to end: a refused transaction never matches.
    pub fn fmr_e2e(&self, t: f32) -> f64 {
        share(at_or_above(&self.impostor, t), self.transactions().1)
    }
    /// FNMR end to end: a refused genuine transaction is a non-match.
    pub fn fnmr_e2e(&self, t: f32) -> f64 {
        let matched = at_or_above(&self.genuine, t);
        share(self.transactions().0 - matched, self.transactions().0)
    }
    /// The lowest threshold whose FMR (comparisons that happened) is at most `fmr`.
    pub fn threshold_at_fmr(&self, fmr: f64) -> f32 {
        threshold_at_rate(&self.impostor, fmr)
    }

    /// Equal error rate over the comparisons that happened, and its threshold.
    pub fn eer(&self) -> (f64, f32) {
        let (mut lo, mut hi) = (-1.0f32, 1.0f32);
        for _ in 0..60 {
            let mid = (lo + hi) / 2.0;
            if self.fnmr(mid) < self.fmr(mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        ((self.fnmr(hi) + self.fmr(hi)) / 2.0, hi)
    }

    /// (FMR, FNMR) at every impostor score from the top down to FMR 1 (at most `points`),
    /// for a DET curve; `e2e` counts refusals.
    pub fn det(&self, points: usize, e2e: bool) -> Vec<(f64, f64)> {
        let n = self.impostor.len();
        let mut out = Vec::new();
        if n == 0 {
            return out;
        }
        // Thresholds evenly spaced in log FMR, from 1/n to 1.
        let lo = (1.0 / n as f64).ln();
        for k in 0..points {
            let fmr = (lo * (1.0 - k as f64 / (points - 1).max(1) as f64)).exp();
            let t = self.threshold_at_fmr(fmr);
            let p = if e2e {
                (self.fmr_e2e(t), self.fnmr_e2e(t))
            } else {
                (self.fmr(t), self.fnmr(t))
            };
            if p.0 > 0.0 && out.last() != Some(&p) {
                out.push(p);
            }
        }
        out
    }
}

/// Open-set 1:N searches: for each mated probe, whether the top candidate is its mate and
/// the top score; for each non-mated probe, the top score. None: the probe was refused.
pub struct Searches {
    pub mated: Vec<Option<(bool, f32)>>,
    pub non_mated: Vec<Option<f32>>,
}

impl Searches {
    /// Rank-1 identification rate, end to end (a refused mated probe is a miss).
    pub fn rank1(&self) -> f64 {
        share(self.mated.iter().flatten().filter(|m| m.0).count(), self.mated.len())
    }
    /// Rank-1 over the mated probes that were searched.
    pub fn rank1_acquired(&self) -> f64 {
        let searched: Vec<_> = self.mated.iter().flatten().collect();
        share(searched.iter().filter(|m| m.0).count(), searched.len())
    }
    /// Share of non-mated searches whose top candidate scores at least `t`.
    pub fn fpir(&self, t: f32) -> f64 {
        share(self.non_mated.iter().flatten().filter(|s| **s >= t).count(), self.non_mated.len())
    }
    /// Share of mated searches that do not return the mate at rank 1 with at least `t`.
    pub fn fnir(&self, t: f32) -> f64 {
        let hits = self.mated.iter().flatten().filter(|(mate, s)| *mate && *s >= t).count();
        1.0 - share(hits, self.mated.len())
    }
    /// The lowest threshold whose FPIR is at most `fpir` (refused non-mated searches count
    /// in the denominator: they returned no candidate).
    pub fn threshold_at_fpir(&self, fpir: f64) -> f32 {
        let mut tops: Vec<f32> = self.non_mated.iter().flatten().copied().collect();
        tops.sort_unstable_by(f32::total_cmp);
        let allowed = (fpir * self.non_mated.len() as f64).floor() as usize;
        match tops.len().checked_sub(allowed + 1) {
            Some(i) => tops[i].next_up(),
            None => f32::NEG_INFINITY,
        }
    }
}

/// Accuracy of same/different decisions (score >= t), None scores (refused) deciding
/// "different".
pub fn accuracy(pairs: &[(bool, Option<f32>)], t: f32) -> f64 {
    share(
        pairs.iter().filter(|(same, s)| s.is_some_and(|s| s >= t) == *same).count(),
        pairs.len(),
    )
}

/// The threshold with the best accuracy (midpoints between sorted scores).
pub fn best_threshold(pairs: &[(bool, Option<f32>)]) -> f32 {
    let mut scores: Vec<f32> = pairs.iter().filter_map(|p| p.1).collect();
    scores.sort_by(f32::total_cmp);
    let mut best = (0.0, 0.0f32);
    for w in scores.windows(2) {
        let t = (w[0] + w[1]) / 2.0;
        let a = accuracy(pairs, t);
        if a > best.0 {
            best = (a, t);
        }
    }
    best.1
}

pub fn percentile(v: &[f32], p: f64) -> f32 {
    if v.is_empty() {
        return f32::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f32::total_cmp);
    s[((p / 100.0) * (s.len() - 1) as f64).round() as usize]
}

// Presentation-attack detection rates (ISO/IEC 30107-3) on attack scores.

/// Share of `v` at or above `t`: refused, for attack scores (higher = more likely an
/// attack, as MAD's morph score; PAD's live score negated).
pub(crate) fn share_at_or_above(v: &[f32], t: f32) -> f64 {
    v.iter().filter(|s| **s >= t).count() as f64 / v.len().max(1) as f64
}

/// The lowest threshold whose BPCER is at most `bpcer`: strictly above all but the
/// allowed number of bona fide scores.
pub(crate) fn threshold_at_bpcer(bona: &[f32], bpcer: f64) -> f32 {
    let mut desc = bona.to_vec();
    desc.sort_by(|a, b| b.total_cmp(a));
    let allowed = (bpcer * desc.len() as f64).floor() as usize;
    desc.get(allowed).map_or(f32::MIN, |s| s.next_up())
}

/// The highest threshold whose APCER is at most `apcer`.
pub(crate) fn threshold_at_apcer(morphs: &[f32], apcer: f64) -> f32 {
    let mut asc = morphs.to_vec();
    asc.sort_by(f32::total_cmp);
    let allowed = (apcer * asc.len() as f64).floor() as usize;
    asc.get(allowed).copied().unwrap_or(f32::MAX)
}

/// Detection equal error rate: where APCER and BPCER cross, and its threshold.
pub(crate) fn d_eer(bona: &[f32], morphs: &[f32]) -> (f64, f32) {
    let mut ts: Vec<f32> = bona.iter().chain(morphs).copied().collect();
    ts.sort_by(f32::total_cmp);
    ts.dedup();
    let mut best = (f64::MAX, 1.0, 0.5f32);
    for t in ts {
        let bpcer = share_at_or_above(bona, t);
        let apcer = 1.0 - share_at_or_above(morphs, t);
        if (bpcer - apcer).abs() < best.0 {
            best = ((bpcer - apcer).abs(), (bpcer + apcer) / 2.0, t);
        }
    }
    (best.1, best.2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_on_a_small_set() {
        let c = Comparisons::new(vec![0.9, 0.7, 0.6, 0.3], vec![0.1, 0.2, 0.65, 0.05], 1, 2);
        assert_eq!(c.transactions(), (5, 6));
        let t = c.threshold_at_fmr(0.0);
        assert!(t > 0.65 && c.fmr(t) == 0.0);
        assert_eq!(c.fnmr(t), 0.5);
        // End to end the refused genuine transaction is a non-match too.
        assert_eq!(c.fnmr_e2e(t), 3.0 / 5.0);
        assert_eq!(c.fmr_e2e(0.6), 1.0 / 6.0);
        let t = c.threshold_at_fmr(0.25);
        assert_eq!(c.fmr(t), 0.25);
        let (eer, _) = c.eer();
        assert!(eer > 0.0 && eer <= 0.5, "{eer}");
        let det = c.det(10, false);
        assert!(det.windows(2).all(|w| w[0].0 <= w[1].0), "{det:?}");
    }

    #[test]
    fn open_set_rates() {
        let s = Searches {
            mated: vec![Some((true, 0.8)), Some((true, 0.4)), Some((false, 0.5)), None],
            non_mated: vec![Some(0.45), Some(0.2), None, Some(0.1)],
        };
        assert_eq!(s.rank1(), 0.5);
        assert!((s.rank1_acquired() - 2.0 / 3.0).abs() < 1e-9);
        let t = s.threshold_at_fpir(0.0);
        assert!(t > 0.45 && s.fpir(t) == 0.0);
        assert_eq!(s.fnir(t), 0.75);
        assert_eq!(s.fpir(0.2), 0.5);
    }

    #[test]
    fn refused_pairs_decide_different() {
        let pairs = [(true, Some(0.9)), (true, None), (false, None), (false, Some(0.1))];
        assert_eq!(accuracy(&pairs, 0.5), 0.75);
        let t = best_threshold(&pairs);
        assert!(t > 0.1 && t < 0.9);
    }

    #[test]
    fn iso_rates_on_a_known_set() {
        let bona: Vec<f32> = (0..100).map(|i| i as f32 / 200.0).collect(); // 0.000 .. 0.495
        let morphs: Vec<f32> = (0..100).map(|i| 0.4 + i as f32 / 200.0).collect(); // 0.400 .. 0.895
                                                                                   // BPCER <= 1 %: one bona fide score (0.495) may be refused, so t lies just above 0.490.
        let t1 = threshold_at_bpcer(&bona, 0.01);
        assert!(t1 > 0.490 && t1 <= 0.4951, "{t1}");
        assert_eq!(share_at_or_above(&bona, t1), 0.01);
        // APCER <= 10 %: the ten lowest morphs (0.400..0.445) may pass.
        let t10 = threshold_at_apcer(&morphs, 0.10);
        assert!((t10 - 0.45).abs() < 1e-6, "{t10}");
        assert!((1.0 - share_at_or_above(&morphs, t10) - 0.10).abs() < 1e-9);
        let (eer, t) = d_eer(&bona, &morphs);
        assert!((eer - 0.10).abs() < 0.011 && (0.4..=0.5).contains(&t), "{eer} at {t}");
        assert_eq!(d_eer(&[0.1, 0.2], &[0.8, 0.9]).0, 0.0);
    }
}
