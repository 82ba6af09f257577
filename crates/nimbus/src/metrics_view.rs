//! `nimbus metrics`: a function's per-minute series as a table, one row per metric, with the
//! window's total and a sparkline of its minutes.

use serde_json::Value;

/// Most sparkline columns; longer windows put several minutes in a column.
const MAX_COLUMNS: usize = 40;
const MINUTE_MS: i64 = 60_000;
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// How the window's minutes map onto sparkline columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Columns {
    pub first_minute_ms: i64,
    pub minutes_per_column: usize,
    pub count: usize,
}

impl Columns {
    /// The minutes starting in `[since_ms, until_ms)`, in at most [`MAX_COLUMNS`] columns.
    pub fn new(since_ms: i64, until_ms: i64) -> Columns {
        let first = since_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
        // Saturating: the bounds come from the command line.
        let span = until_ms.saturating_sub(first).saturating_add(MINUTE_MS - 1);
        let minutes = usize::try_from(span / MINUTE_MS)
            .unwrap_or(usize::MAX)
            .max(1);
        let per = minutes.div_ceil(MAX_COLUMNS);
        Columns {
            first_minute_ms: first,
            minutes_per_column: per,
            count: minutes.div_ceil(per),
        }
    }

    fn column_of(&self, minute_ms: i64) -> Option<usize> {
        let minute = (minute_ms - self.first_minute_ms).div_euclid(MINUTE_MS);
        let col = usize::try_from(minute).ok()? / self.minutes_per_column;
        (col < self.count).then_some(col)
    }
}

/// How minutes that share a column combine.
#[derive(Clone, Copy)]
enum Combine {
    Sum,
    Max,
}

/// One value per column from the points' `key`; minutes without a point count as zero.
fn column_values(points: &[Value], cols: &Columns, key: &str, how: Combine) -> Vec<f64> {
    let mut out = vec![0.0; cols.count];
    for p in points {
        let Some(ts) = p["timestamp"].as_str() else {
            continue;
        };
        let Ok(ms) = nimbus_telemetry::metrics::parse_time(ts, 0) else {
            continue;
        };
        let (Some(col), Some(v)) = (cols.column_of(ms), p[key].as_f64()) else {
            continue;
        };
        out[col] = match how {
            Combine::Sum => out[col] + v,
            Combine::Max => out[col].max(v),
        };
    }
    out
}

/// ▁ for zero, ▂ to █ for the rest in proportion to the largest value.
pub fn sparkline(values: &[f64]) -> String {
    let max = values.iter().copied().fold(0.0, f64::max);
    values
        .iter()
        .map(|&v| {
            if v <= 0.0 || max <= 0.0 {
                BARS[0]
            } else {
                BARS[1 + ((v / max) * 6.0).round() as usize]
            }
        })
        .collect()
}

fn count(v: &Value) -> String {
    v.as_u64()
        .map(|n| n.to_string())
        .unwrap_or_else(|| "0".into())
}

fn millis(v: &Value) -> String {
    match v.as_f64() {
        None => "-".into(),
        Some(ms) if ms >= 10_000.0 => format!("{:.1} s", ms / 1000.0),
        Some(ms) if ms >= 100.0 => format!("{ms:.0} ms"),
        Some(ms) if ms >= 10.0 => format!("{ms:.1} ms"),
        Some(ms) => format!("{ms:.2} ms"),
    }
}

fn percent(v: &Value) -> String {
    v.as_f64()
        .map(|u| format!("{:.0} %", u * 100.0))
        .unwrap_or_else(|| "-".into())
}

/// One table row: its label, the point field it shows, how that is written, and how the
/// minutes of a column combine.
struct Metric {
    label: &'static str,
    key: &'static str,
    format: fn(&Value) -> String,
    combine: Combine,
}

const fn metric(
    label: &'static str,
    key: &'static str,
    format: fn(&Value) -> String,
    combine: Combine,
) -> Metric {
    Metric {
        label,
        key,
        format,
        combine,
    }
}

const METRICS: [Metric; 10] = [
    metric("Invocations", "invocations", count, Combine::Sum),
    metric("Errors", "errors", count, Combine::Sum),
    metric("Throttles", "throttles", count, Combine::Sum),
    metric("ColdStarts", "coldStarts", count, Combine::Sum),
    metric("Duration p50", "durationP50Ms", millis, Combine::Max),
    metric("Duration p90", "durationP90Ms", millis, Combine::Max),
    metric("Duration p99", "durationP99Ms", millis, Combine::Max),
    metric(
        "InitDuration p50",
        "initDurationP50Ms",
        millis,
        Combine::Max,
    ),
    metric(
        "ConcurrentExecutions max",
        "concurrentExecutionsMax",
        count,
        Combine::Max,
    ),
    metric(
        "ProvisionedConcurrencyUtilization max",
        "provisionedConcurrencyUtilizationMax",
        percent,
        Combine::Max,
    ),
];

/// The table rows of one version's series: metric, window total, sparkline. A column of
/// several minutes shows their sum for counts and the largest value for the rest.
pub fn rows(series: &Value, cols: &Columns) -> Vec<Vec<String>> {
    let summary = &series["summary"];
    let points = series["points"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    METRICS
        .iter()
        .map(|m| {
            vec![
                m.label.to_string(),
                (m.format)(&summary[m.key]),
                sparkline(&column_values(points, cols, m.key, m.combine)),
            ]
        })
        .collect()
}

/// The sparkline column's heading: what one character stands for.
pub fn column_heading(cols: &Columns) -> String {
    match cols.minutes_per_column {
        1 => "PER MINUTE".into(),
        n => format!("PER {n} MINUTES"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    #[test]
    fn windows_fit_in_forty_columns() {
        assert_eq!(
            Columns::new(T0, T0 + 3_600_000),
            Columns {
                first_minute_ms: T0,
                minutes_per_column: 2,
                count: 30
            }
        );
        // A window not on a minute boundary covers the minute it starts in.
        let c = Columns::new(T0 + 30_000, T0 + 10 * 60_000 + 1);
        assert_eq!(
            (c.first_minute_ms, c.minutes_per_column, c.count),
            (T0, 1, 11)
        );
        let day = Columns::new(T0, T0 + 86_400_000);
        assert_eq!((day.minutes_per_column, day.count), (36, 40));
        assert_eq!(Columns::new(T0, T0 + 1).count, 1);
        assert_eq!(Columns::new(0, i64::MAX).count, 40, "no overflow");
    }

    #[test]
    fn sparklines_scale_to_the_largest_value_and_show_zero_as_the_floor() {
        assert_eq!(sparkline(&[0.0, 1.0, 2.0, 4.0]), "▁▄▅█");
        assert_eq!(sparkline(&[0.0, 0.0]), "▁▁");
        assert_eq!(sparkline(&[0.0, 0.01, 100.0]), "▁▂█", "tiny is not zero");
    }

    #[test]
    fn rows_total_and_bucket_minutes() {
        let cols = Columns::new(T0, T0 + 5 * 60_000);
        let point = |minute: i64, n: u64, p50: f64| {
            json!({
                "timestamp": nimbus_telemetry::utc_timestamp(T0 + minute * 60_000, "Z"),
                "invocations": n, "durationP50Ms": p50,
            })
        };
        let series = json!({
            "summary": { "invocations": 6, "durationP50Ms": 12.34, "errors": 1,
                         "provisionedConcurrencyUtilizationMax": 0.5 },
            "points": [point(0, 2, 10.0), point(3, 4, 20.0), point(99, 9, 1.0)],
        });
        let rows = rows(&series, &cols);
        assert_eq!(rows[0], ["Invocations", "6", "▅▁▁█▁"]);
        assert_eq!(rows[1][1], "1");
        assert_eq!(rows[4][..2], ["Duration p50", "12.3 ms"]);
        assert_eq!(rows[7][1], "-", "no cold starts, no init duration");
        assert_eq!(rows[9][1], "50 %");
        assert_eq!(column_heading(&cols), "PER MINUTE");
    }
}
