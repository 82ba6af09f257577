//! Summaries of measured samples: percentiles, rates and ratios, and how they are printed.

use std::time::Duration;

/// The nearest-rank percentile (`p` in 0..=1) of samples sorted ascending: the smallest sample
/// with at least `p` of all samples at or below it. `None` when there are no samples.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// p50 and p99 of a set of latencies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    pub samples: usize,
    pub p50: Duration,
    pub p99: Duration,
}

impl Latency {
    /// Sorts `samples` in place and summarises them; `None` when empty.
    pub fn of(samples: &mut [Duration]) -> Option<Latency> {
        samples.sort_unstable();
        Some(Latency {
            samples: samples.len(),
            p50: percentile(samples, 0.50)?,
            p99: percentile(samples, 0.99)?,
        })
    }
}

/// `a / b`, or `None` when it means nothing (b is zero, either is not finite).
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    let r = a / b;
    (a.is_finite() && b.is_finite() && b != 0.0 && r.is_finite()).then_some(r)
}

/// Events per second over `elapsed`; zero for an empty window.
pub fn rate(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

/// Milliseconds with one decimal: `12.3`.
pub fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

/// Whole microseconds: `187`.
pub fn us(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e6)
}

/// A rate with thousands separated by commas, as the tables print it: `12,345`.
pub fn per_sec(r: f64) -> String {
    if !r.is_finite() {
        return "—".into();
    }
    let digits = (r.round() as u64).to_string();
    let groups: Vec<&str> = digits
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|g| std::str::from_utf8(g).unwrap_or_default())
        .collect();
    groups.join(",")
}

/// A ratio as `12.3×` (one decimal below 100, none above).
pub fn times(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}×")
    } else {
        format!("{r:.1}×")
    }
}

/// Kibibytes as `812 KB` or, from 10 MB up, `23.4 MB`.
pub fn kb(k: f64) -> String {
    if k >= 10.0 * 1024.0 {
        format!("{:.1} MB", k / 1024.0)
    } else {
        format!("{k:.0} KB")
    }
}

/// A cell for a value that may be missing.
pub fn or_dash<T>(v: Option<T>, f: impl FnOnce(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| "—".into())
}

/// A table cell in whole microseconds: `187 µs`.
pub fn us_cell(d: Duration) -> String {
    format!("{} µs", us(d))
}

/// The p50 and p99 cells of a run's latency, dashes when it has none.
pub fn p50_p99_cells(l: Option<&Latency>) -> (String, String) {
    (
        or_dash(l.map(|l| l.p50), us_cell),
        or_dash(l.map(|l| l.p99), us_cell),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_cells_are_microseconds_or_dashes() {
        let l = Latency {
            samples: 2,
            p50: Duration::from_micros(187),
            p99: Duration::from_micros(1_203),
        };
        assert_eq!(p50_p99_cells(Some(&l)), ("187 µs".into(), "1203 µs".into()));
        assert_eq!(p50_p99_cells(None), ("—".into(), "—".into()));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.50), Some(50));
        assert_eq!(percentile(&v, 0.99), Some(99));
        assert_eq!(percentile(&v, 1.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        // Out-of-range p is clamped, not a panic.
        assert_eq!(percentile(&v, 7.0), Some(100));
        assert_eq!(percentile(&v, -1.0), Some(1));
    }

    #[test]
    fn percentiles_of_small_and_empty_sets() {
        assert_eq!(percentile::<u32>(&[], 0.5), None);
        assert_eq!(percentile(&[7], 0.5), Some(7));
        assert_eq!(percentile(&[7], 0.99), Some(7));
        // Even count: p50 is the lower middle, p99 of 10 samples is the largest.
        let v = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        assert_eq!(percentile(&v, 0.5), Some(5));
        assert_eq!(percentile(&v, 0.99), Some(10));
        // 200 samples: p99 is the 198th, so the two slowest do not set it.
        let v: Vec<u32> = (1..=200).collect();
        assert_eq!(percentile(&v, 0.99), Some(198));
    }

    #[test]
    fn latency_summary_sorts_first() {
        let mut v: Vec<Duration> = [5, 1, 4, 2, 3].map(Duration::from_millis).to_vec();
        let l = Latency::of(&mut v).unwrap();
        assert_eq!(l.samples, 5);
        assert_eq!(l.p50, Duration::from_millis(3));
        assert_eq!(l.p99, Duration::from_millis(5));
        assert_eq!(Latency::of(&mut []), None);
    }

    #[test]
    fn ratios_refuse_meaningless_division() {
        assert_eq!(ratio(10.0, 4.0), Some(2.5));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(f64::NAN, 1.0), None);
        assert_eq!(ratio(1.0, f64::INFINITY), None);
        assert_eq!(ratio(0.0, 3.0), Some(0.0));
    }

    #[test]
    fn rates() {
        assert_eq!(rate(500, Duration::from_millis(250)), 2000.0);
        assert_eq!(rate(5, Duration::ZERO), 0.0);
    }

    #[test]
    fn formatting() {
        assert_eq!(ms(Duration::from_micros(12_345)), "12.3");
        assert_eq!(us(Duration::from_nanos(187_400)), "187");
        assert_eq!(per_sec(12_345.4), "12,345");
        assert_eq!(per_sec(999.5), "1,000");
        assert_eq!(per_sec(1_234_567.0), "1,234,567");
        assert_eq!(per_sec(42.0), "42");
        assert_eq!(per_sec(f64::NAN), "—");
        assert_eq!(times(3.17), "3.2×");
        assert_eq!(times(123.4), "123×");
        assert_eq!(kb(812.3), "812 KB");
        assert_eq!(kb(24_000.0), "23.4 MB");
        assert_eq!(or_dash(None::<f64>, |v| v.to_string()), "—");
        assert_eq!(or_dash(Some(2), |v| v.to_string()), "2");
    }
}
