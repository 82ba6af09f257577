//! The Prometheus text exposition format (version 0.0.4): `# HELP` and `# TYPE` once per
//! family, then its samples, with label values and help text escaped as the format requires.
//!
//! Other metric families (the API gateway's, async events') implement [`Collector`] and are
//! registered with [`super::Metrics::register`]; they write through the same [`Exposition`].

use super::histogram::Histogram;

/// A family's Prometheus type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Something that writes metric families into a scrape.
pub trait Collector: Send + Sync + 'static {
    fn collect(&self, out: &mut Exposition);
}

/// Upper bounds (seconds) of the `_bucket` series exported for duration histograms. Each is a
/// bound of the internal layout, so the counts are exact.
pub const DURATION_BOUNDS_S: [f64; 19] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 900.0,
];

/// A scrape being written.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines. Its samples follow.
    pub fn family(&mut self, name: &str, help: &str, kind: Kind) {
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        for c in help.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                c => self.out.push(c),
            }
        }
        self.out.push_str("\n# TYPE ");
        self.out.push_str(name);
        self.out.push(' ');
        self.out.push_str(kind.as_str());
        self.out.push('\n');
    }

    /// One sample line: `name{labels} value`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        self.labels(labels, None);
        self.out.push(' ');
        self.value(value);
        self.out.push('\n');
    }

    /// A histogram's `_bucket` (cumulative, at `bounds_s` and `+Inf`), `_sum` and `_count` lines.
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        h: &Histogram,
        bounds_s: &[f64],
    ) {
        for &b in bounds_s {
            self.out.push_str(name);
            self.out.push_str("_bucket");
            self.labels(labels, Some(b));
            self.out.push(' ');
            let count = h.count_at_most((b * 1e9).round() as u64);
            self.out.push_str(&count.to_string());
            self.out.push('\n');
        }
        self.out.push_str(name);
        self.out.push_str("_bucket");
        self.labels(labels, Some(f64::INFINITY));
        self.out.push(' ');
        self.out.push_str(&h.count().to_string());
        self.out.push('\n');
        self.sample(&format!("{name}_sum"), labels, h.sum().as_secs_f64());
        self.sample(&format!("{name}_count"), labels, h.count() as f64);
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<f64>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.out.push_str(k);
            self.out.push_str("=\"");
            for c in v.chars() {
                match c {
                    '\\' => self.out.push_str("\\\\"),
                    '"' => self.out.push_str("\\\""),
                    '\n' => self.out.push_str("\\n"),
                    c => self.out.push(c),
                }
            }
            self.out.push('"');
        }
        if let Some(le) = le {
            if !labels.is_empty() {
                self.out.push(',');
            }
            self.out.push_str("le=\"");
            self.value(le);
            self.out.push('"');
        }
        self.out.push('}');
    }

    fn value(&mut self, v: f64) {
        if v.is_nan() {
            self.out.push_str("NaN");
        } else if v == f64::INFINITY {
            self.out.push_str("+Inf");
        } else if v == f64::NEG_INFINITY {
            self.out.push_str("-Inf");
        } else {
            // Rust prints integers without a fraction and never uses an exponent; both parse.
            self.out.push_str(&v.to_string());
        }
    }

    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::histogram::{bucket_bounds, bucket_index};
    use std::time::Duration;

    #[test]
    fn exported_bounds_are_bucket_bounds() {
        for b in DURATION_BOUNDS_S {
            let ns = (b * 1e9).round() as u64;
            assert_eq!(bucket_bounds(bucket_index(ns)).1, ns, "{b} s");
        }
    }

    #[test]
    fn families_samples_and_escaping() {
        let mut e = Exposition::new();
        e.family("x_total", "Counts \\ things\nover lines.", Kind::Counter);
        e.sample("x_total", &[("function", "a\"b\\c\nd"), ("v", "1")], 3.0);
        e.sample("x_total", &[], 0.25);
        e.family("d_seconds", "Durations.", Kind::Histogram);
        let mut h = Histogram::new();
        h.record(Duration::from_millis(3));
        h.record(Duration::from_millis(700));
        e.histogram("d_seconds", &[("f", "g")], &h, &[0.005, 1.0]);
        assert_eq!(
            e.finish(),
            "# HELP x_total Counts \\\\ things\\nover lines.\n\
             # TYPE x_total counter\n\
             x_total{function=\"a\\\"b\\\\c\\nd\",v=\"1\"} 3\n\
             x_total 0.25\n\
             # HELP d_seconds Durations.\n\
             # TYPE d_seconds histogram\n\
             d_seconds_bucket{f=\"g\",le=\"0.005\"} 1\n\
             d_seconds_bucket{f=\"g\",le=\"1\"} 2\n\
             d_seconds_bucket{f=\"g\",le=\"+Inf\"} 2\n\
             d_seconds_sum{f=\"g\"} 0.703\n\
             d_seconds_count{f=\"g\"} 2\n"
        );
    }
}
