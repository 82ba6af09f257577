//! A fixed, log-bucketed histogram of durations: cheap to record into (no allocation, one index
//! computation), mergeable bucket by bucket, and precise to about ±8 % for quantiles.
//!
//! Buckets are upper-inclusive `(lo, hi]` in nanoseconds. The first holds everything up to
//! 10 µs, the last everything over 1000 s; between them each decade is cut at the 24 mantissas
//! of [`MANTISSAS`] (no bucket is more than 17 % wider than its lower bound). The round numbers
//! Prometheus users expect (1, 2.5, 5 per decade, 30 s, 60 s, 900 s …) are all bucket bounds,
//! so the exported `le` buckets are exact.
//!
//! The layout is part of the stored format (per-minute rows keep bucket indexes): changing it
//! needs a migration of `metric_minutes`.

use std::time::Duration;

/// Bucket bounds within a decade, in hundredths of the decade's first value.
const MANTISSAS: [u64; 24] = [
    100, 110, 120, 130, 140, 150, 160, 170, 180, 200, 220, 250, 280, 300, 330, 360, 400, 450, 500,
    550, 600, 700, 800, 900,
];
/// The first decade starts at 10^4 ns = 10 µs.
const FIRST_DECADE: u32 = 4;
/// … and the last ends at 10^12 ns = 1000 s.
const DECADES: u32 = 8;
const FLOOR_NS: u64 = 10u64.pow(FIRST_DECADE);
const CEILING_NS: u64 = 10u64.pow(FIRST_DECADE + DECADES);

/// Underflow, the decades, overflow.
pub const BUCKETS: usize = 1 + DECADES as usize * MANTISSAS.len() + 1;

/// Index of the bucket holding `ns`.
pub fn bucket_index(ns: u64) -> usize {
    if ns <= FLOOR_NS {
        return 0;
    }
    if ns > CEILING_NS {
        return BUCKETS - 1;
    }
    // Upper-inclusive buckets: `ns` is in (lo, hi] exactly when `ns - 1` is in [lo, hi).
    let y = ns - 1;
    let decade = y.ilog10();
    let mantissa = y * 100 / 10u64.pow(decade);
    let within = MANTISSAS.partition_point(|&b| b <= mantissa) - 1;
    1 + (decade - FIRST_DECADE) as usize * MANTISSAS.len() + within
}

/// The bucket's bounds `(lo, hi]` in ns; the overflow bucket's `hi` is `u64::MAX`.
pub fn bucket_bounds(index: usize) -> (u64, u64) {
    if index == 0 {
        return (0, FLOOR_NS);
    }
    if index >= BUCKETS - 1 {
        return (CEILING_NS, u64::MAX);
    }
    let k = index - 1;
    let scale = 10u64.pow(FIRST_DECADE + (k / MANTISSAS.len()) as u32);
    let j = k % MANTISSAS.len();
    let lo = MANTISSAS[j] * scale / 100;
    let hi = MANTISSAS.get(j + 1).copied().unwrap_or(1000) * scale / 100;
    (lo, hi)
}

/// Counts per bucket plus the count, sum and maximum of what was recorded.
#[derive(Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: [u64; BUCKETS],
    count: u64,
    sum_ns: u64,
    max_ns: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count)
            .field("sum_ns", &self.sum_ns)
            .field("max_ns", &self.max_ns)
            .field("buckets", &self.sparse())
            .finish()
    }
}

impl Histogram {
    pub const fn new() -> Histogram {
        Histogram {
            counts: [0; BUCKETS],
            count: 0,
            sum_ns: 0,
            max_ns: 0,
        }
    }

    pub fn record(&mut self, d: Duration) {
        self.record_ns(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn record_ns(&mut self, ns: u64) {
        self.counts[bucket_index(ns)] += 1;
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn sum(&self) -> Duration {
        Duration::from_nanos(self.sum_ns)
    }

    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max_ns)
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.count += other.count;
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    /// How many recorded values were at most `bound_ns`. Exact when `bound_ns` is a bucket
    /// bound (as every bound [`super::exposition`] exports is); otherwise counts up to the
    /// bucket holding it.
    pub fn count_at_most(&self, bound_ns: u64) -> u64 {
        self.counts[..=bucket_index(bound_ns)].iter().sum()
    }

    /// The `q`-quantile (0 ≤ q ≤ 1), interpolated linearly inside its bucket and never above
    /// the largest value recorded; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        // The rank-th smallest value, taking a bucket's values as spread evenly over it (its
        // last one at its upper bound): a single value is then its own every quantile.
        let rank = (q.clamp(0.0, 1.0) * self.count as f64).ceil().max(1.0);
        let mut below = 0u64;
        for (i, &n) in self.counts.iter().enumerate() {
            if n == 0 {
                continue;
            }
            if (below + n) as f64 >= rank {
                let (lo, hi) = bucket_bounds(i);
                if hi == u64::MAX {
                    return Some(self.max());
                }
                let within = (rank - below as f64) / n as f64;
                let ns = lo as f64 + (hi - lo) as f64 * within;
                return Some(Duration::from_nanos((ns as u64).min(self.max_ns)));
            }
            below += n;
        }
        Some(self.max())
    }

    /// Non-empty buckets as (index, count), ascending.
    pub fn sparse(&self) -> Vec<(u16, u64)> {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(i, &n)| (i as u16, n))
            .collect()
    }

    /// Rebuilds a histogram from [`Histogram::sparse`] output and the recorded sum and maximum.
    /// Indexes outside the layout (a damaged row) are ignored.
    pub fn from_sparse(buckets: &[(u16, u64)], sum: Duration, max: Duration) -> Histogram {
        let mut h = Histogram::new();
        for &(i, n) in buckets {
            if let Some(c) = h.counts.get_mut(i as usize) {
                *c += n;
                h.count += n;
            }
        }
        h.sum_ns = u64::try_from(sum.as_nanos()).unwrap_or(u64::MAX);
        h.max_ns = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_bounds_tile_the_range_and_index_agrees_with_them() {
        let mut expected_lo = 0;
        for i in 0..BUCKETS {
            let (lo, hi) = bucket_bounds(i);
            assert_eq!(
                lo,
                expected_lo,
                "bucket {i} starts where {} ends",
                i.max(1) - 1
            );
            assert!(hi > lo);
            if hi != u64::MAX {
                assert_eq!(bucket_index(hi), i, "hi of {i} is inside it");
                assert_eq!(bucket_index(hi + 1), i + 1, "hi+1 of {i} is in the next");
                // Within ±8.5 % of the geometric middle.
                if i > 0 {
                    assert!(
                        (hi as f64 / lo as f64).sqrt() < 1.085,
                        "bucket {i} too wide"
                    );
                }
            }
            expected_lo = hi;
        }
        assert_eq!(bucket_index(0), 0);
        assert_eq!(bucket_index(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket_bounds(1), (10_000, 11_000));
        assert_eq!(
            bucket_bounds(BUCKETS - 2),
            (900_000_000_000, 1_000_000_000_000)
        );
    }

    /// A small deterministic generator, so the tests need no rand crate and never flake.
    struct Lcg(u64);
    impl Lcg {
        fn unit(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }
    }

    fn exact_quantile(sorted: &[u64], q: f64) -> f64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1] as f64
    }

    fn check(name: &str, values: &mut [u64]) {
        let mut h = Histogram::new();
        for &v in values.iter() {
            h.record_ns(v);
        }
        values.sort_unstable();
        for q in [0.5, 0.9, 0.99] {
            let want = exact_quantile(values, q);
            let got = h.quantile(q).unwrap().as_nanos() as f64;
            let err = (got - want).abs() / want;
            assert!(
                err <= 0.10,
                "{name} p{}: got {got}, want {want} (error {err:.3})",
                q * 100.0
            );
        }
        assert_eq!(h.count(), values.len() as u64);
        assert_eq!(h.max().as_nanos() as u64, *values.last().unwrap());
        assert_eq!(h.sum().as_nanos() as u64, values.iter().sum::<u64>());
    }

    #[test]
    fn quantiles_of_known_distributions_are_within_ten_percent() {
        // Uniform 1..=1000 ms.
        let mut uniform: Vec<u64> = (1..=1000).map(|ms| ms * 1_000_000).collect();
        check("uniform", &mut uniform);
        // Log-normal around 20 ms (a typical warm-invocation spread), from Box-Muller.
        let mut rng = Lcg(7);
        let mut lognormal: Vec<u64> = (0..20_000)
            .map(|_| {
                let (u1, u2) = (rng.unit(), rng.unit());
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                (20e6 * (0.8 * z).exp()) as u64
            })
            .collect();
        check("lognormal", &mut lognormal);
        // Exponential with a 300 µs mean: mostly tiny values, a long tail.
        let mut exponential: Vec<u64> = (0..20_000)
            .map(|_| (300e3 * -rng.unit().ln()) as u64 + 20_000)
            .collect();
        check("exponential", &mut exponential);
        // Bimodal: 90 % fast hits, 10 % slow cold paths.
        let mut bimodal: Vec<u64> = (0..10_000)
            .map(|i| {
                if i % 10 == 0 {
                    800_000_000 + i
                } else {
                    2_000_000 + i
                }
            })
            .collect();
        check("bimodal", &mut bimodal);
    }

    #[test]
    fn one_value_is_its_own_quantiles_and_empty_has_none() {
        let mut h = Histogram::new();
        assert_eq!(h.quantile(0.5), None);
        h.record(Duration::from_micros(12_345));
        for q in [0.0, 0.5, 0.99, 1.0] {
            assert_eq!(h.quantile(q), Some(Duration::from_micros(12_345)));
        }
        // Outside the bucketed range: clamped to what was seen.
        let mut tiny = Histogram::new();
        tiny.record(Duration::from_nanos(300));
        assert_eq!(tiny.quantile(0.5), Some(Duration::from_nanos(300)));
        let mut huge = Histogram::new();
        huge.record(Duration::from_secs(5000));
        assert_eq!(huge.quantile(0.99), Some(Duration::from_secs(5000)));
    }

    #[test]
    fn merge_and_sparse_round_trip() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        for ms in [1, 2, 3, 50] {
            a.record(Duration::from_millis(ms));
        }
        for ms in [2, 900_000] {
            b.record(Duration::from_millis(ms));
        }
        let mut both = a.clone();
        both.merge(&b);
        assert_eq!(both.count(), 6);
        assert_eq!(both.max(), Duration::from_millis(900_000));
        let rebuilt = Histogram::from_sparse(&both.sparse(), both.sum(), both.max());
        assert_eq!(rebuilt, both);
        // A damaged row cannot make it panic.
        let odd = Histogram::from_sparse(&[(u16::MAX, 3), (5, 1)], Duration::ZERO, Duration::ZERO);
        assert_eq!(odd.count(), 1);
    }

    #[test]
    fn count_at_most_is_exact_at_bucket_bounds() {
        let mut h = Histogram::new();
        h.record(Duration::from_millis(100)); // exactly on the 0.1 s bound: counts as ≤ 0.1
        h.record(Duration::from_nanos(100_000_001)); // just over
        assert_eq!(h.count_at_most(100_000_000), 1);
        assert_eq!(h.count_at_most(250_000_000), 2);
    }
}
