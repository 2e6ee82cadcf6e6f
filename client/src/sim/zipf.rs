//! Zipf's law over ranks `1..=n`: `P(k) ∝ 1/k^s`, sampled with `rand_distr`'s
//! Zipf (rejection sampling, no table); and the least-squares fit of `s` to
//! observed counts by rank on log-log axes.

use super::rng::Rng;
use rand_distr::Distribution;

/// A Zipf distribution over `n` ranks with exponent `s`.
#[derive(Clone, Debug)]
pub struct Zipf {
    /// `None` only if `rand_distr` refused the parameters (it cannot, for the
    /// `n ≥ 1` and `s ≥ 0` that `new` ensures); sampling then gives rank 1.
    dist: Option<rand_distr::Zipf<f64>>,
    n: usize,
    s: f64,
    /// The generalized harmonic number `H(n, s)`, for [`p`](Self::p).
    norm: f64,
}

impl Zipf {
    /// Zipf over ranks `1..=n` (n ≥ 1) with exponent `s` (≥ 0; a negative or
    /// non-finite `s` is taken as 0, uniform).
    pub fn new(n: usize, s: f64) -> Self {
        let n = n.max(1);
        let s = if s.is_finite() { s.max(0.0) } else { 0.0 };
        let norm = (1..=n).map(|k| 1.0 / (k as f64).powf(s)).sum();
        let dist = rand_distr::Zipf::new(n as u64, s).ok();
        Self { dist, n, s, norm }
    }

    /// The probability of 0-based rank index `i`.
    pub fn p(&self, i: usize) -> f64 {
        if i >= self.n {
            return 0.0;
        }
        1.0 / ((i + 1) as f64).powf(self.s) / self.norm
    }

    /// A 0-based rank index.
    pub fn sample(&self, rng: &mut Rng) -> usize {
        let rank = self.dist.as_ref().map_or(1, |d| d.sample(rng) as usize);
        rank.clamp(1, self.n) - 1
    }

    /// Number of ranks.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Never true (there is at least one rank).
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

/// Fits `counts[rank-1] ≈ C / rank^s` by least squares on `log count` against
/// `log rank`, over ranks with a nonzero count, after sorting counts descending.
/// Returns `(s, C)`, or `None` with fewer than two nonzero counts.
pub fn fit(counts: &[u64]) -> Option<(f64, f64)> {
    let mut sorted: Vec<u64> = counts.iter().copied().filter(|c| *c > 0).collect();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    if sorted.len() < 2 {
        return None;
    }
    let pts: Vec<(f64, f64)> = sorted
        .iter()
        .enumerate()
        .map(|(i, c)| (((i + 1) as f64).ln(), (*c as f64).ln()))
        .collect();
    let n = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    Some((-slope, (my - slope * mx).exp()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empirical_frequencies_match_the_distribution() {
        for s in [0.0, 0.8, 1.0, 1.5] {
            let z = Zipf::new(50, s);
            let mut rng = Rng::new(42);
            let n = 400_000;
            let mut counts = vec![0u64; 50];
            for _ in 0..n {
                counts[z.sample(&mut rng)] += 1;
            }
            for (i, c) in counts.iter().enumerate() {
                let expected = z.p(i) * n as f64;
                // within 5 standard deviations of a binomial count, plus 1
                let sd = (expected * (1.0 - z.p(i))).sqrt();
                assert!(
                    (*c as f64 - expected).abs() <= 5.0 * sd + 1.0,
                    "s={s} rank {} got {c} expected {expected:.0}",
                    i + 1
                );
            }
            let total: f64 = (0..50).map(|i| z.p(i)).sum();
            assert!((total - 1.0).abs() < 1e-9);
        }
    }

    #[test]
    fn the_fit_recovers_the_exponent() {
        let counts: Vec<u64> = (1..=100)
            .map(|k| (1e6 / (k as f64).powf(1.2)) as u64)
            .collect();
        let (s, c) = fit(&counts).unwrap();
        assert!((s - 1.2).abs() < 0.01, "{s}");
        assert!((c - 1e6).abs() / 1e6 < 0.05, "{c}");
        let z = Zipf::new(100, 1.0);
        let mut rng = Rng::new(3);
        let mut counts = vec![0u64; 100];
        for _ in 0..1_000_000 {
            counts[z.sample(&mut rng)] += 1;
        }
        let (s, _) = fit(&counts).unwrap();
        assert!((s - 1.0).abs() < 0.05, "{s}");
        assert!(fit(&[5]).is_none());
        assert!(fit(&[0, 0, 3]).is_none());
    }
}
