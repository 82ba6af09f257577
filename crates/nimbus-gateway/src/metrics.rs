//! Per-route metrics as API Gateway reports them for HTTP APIs (Count, 4XX, 5XX, Latency,
//! IntegrationLatency), by API, stage and route, rendered in Prometheus's text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Histogram bucket upper bounds, in milliseconds.
const BUCKETS_MS: [f64; 14] = [
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0, 30000.0,
];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS_MS.len()],
    count: u64,
    sum_ms: f64,
}

impl Histogram {
    fn record(&mut self, d: Duration) {
        let ms = d.as_secs_f64() * 1e3;
        if let Some(i) = BUCKETS_MS.iter().position(|b| ms <= *b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum_ms += ms;
    }
}

#[derive(Default, Clone)]
struct RouteStats {
    count: u64,
    client_errors: u64,
    server_errors: u64,
    latency: Histogram,
    integration_latency: Histogram,
}

/// One request as the metrics see it.
pub struct Observation<'a> {
    pub api_id: &'a str,
    pub stage: &'a str,
    /// The matched route key, or `-` when no route matched.
    pub route: &'a str,
    pub status: u16,
    pub latency: Duration,
    /// `None` when no integration was called (no route, a mock, a CORS preflight).
    pub integration_latency: Option<Duration>,
}

#[derive(Default)]
pub struct RouteMetrics {
    /// API → stage → route → stats; nested so a request looks its series up without allocating.
    stats: Mutex<Series>,
}

type Series = BTreeMap<String, BTreeMap<String, BTreeMap<String, RouteStats>>>;

fn entry<'m, V: Default>(map: &'m mut BTreeMap<String, V>, key: &str) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_string(), V::default());
    }
    map.get_mut(key).expect("the key was inserted above")
}

impl RouteMetrics {
    pub fn record(&self, o: &Observation<'_>) {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let s = entry(entry(entry(&mut stats, o.api_id), o.stage), o.route);
        s.count += 1;
        match o.status {
            400..=499 => s.client_errors += 1,
            500..=599 => s.server_errors += 1,
            _ => {}
        }
        s.latency.record(o.latency);
        if let Some(d) = o.integration_latency {
            s.integration_latency.record(d);
        }
    }

    /// Forgets an API's series (it was deleted).
    pub fn forget_api(&self, api_id: &str) {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        stats.remove(api_id);
    }

    /// The metrics in Prometheus's text exposition format.
    pub fn render_prometheus(&self) -> String {
        let stats: Vec<((String, String, String), RouteStats)> = {
            let series = self.stats.lock().unwrap_or_else(|p| p.into_inner());
            series
                .iter()
                .flat_map(|(api, stages)| {
                    stages.iter().flat_map(move |(stage, routes)| {
                        routes.iter().map(move |(route, s)| {
                            ((api.clone(), stage.clone(), route.clone()), s.clone())
                        })
                    })
                })
                .collect()
        };
        let mut out = String::new();
        let counters: [Counter; 3] = [
            (
                "nimbus_gateway_requests_total",
                "Requests the gateway answered (API Gateway's Count).",
                |s| s.count,
            ),
            (
                "nimbus_gateway_4xx_total",
                "Requests answered with a 4xx status (API Gateway's 4XX).",
                |s| s.client_errors,
            ),
            (
                "nimbus_gateway_5xx_total",
                "Requests answered with a 5xx status (API Gateway's 5XX).",
                |s| s.server_errors,
            ),
        ];
        for (name, help, get) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for ((api, stage, route), s) in &stats {
                let _ = writeln!(out, "{name}{{{}}} {}", labels(api, stage, route), get(s));
            }
        }
        let histograms: [HistogramOf; 2] = [
            (
                "nimbus_gateway_latency_ms",
                "Time from receiving a request to sending the response (API Gateway's Latency).",
                |s| &s.latency,
            ),
            (
                "nimbus_gateway_integration_latency_ms",
                "Time the integration took (API Gateway's IntegrationLatency).",
                |s| &s.integration_latency,
            ),
        ];
        for (name, help, get) in histograms {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for ((api, stage, route), s) in &stats {
                let h = get(s);
                let l = labels(api, stage, route);
                let mut cumulative = 0;
                for (b, n) in BUCKETS_MS.iter().zip(h.counts.iter()) {
                    cumulative += n;
                    let _ = writeln!(out, "{name}_bucket{{{l},le=\"{b}\"}} {cumulative}");
                }
                let _ = writeln!(out, "{name}_bucket{{{l},le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(out, "{name}_sum{{{l}}} {:.3}", h.sum_ms);
                let _ = writeln!(out, "{name}_count{{{l}}} {}", h.count);
            }
        }
        out
    }
}

/// A counter's name, help text and value.
type Counter = (&'static str, &'static str, fn(&RouteStats) -> u64);
/// A histogram's name, help text and data.
type HistogramOf = (&'static str, &'static str, fn(&RouteStats) -> &Histogram);

fn labels(api: &str, stage: &str, route: &str) -> String {
    format!(
        "api=\"{}\",stage=\"{}\",route=\"{}\"",
        escape(api),
        escape(stage),
        escape(route)
    )
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_statuses_and_latencies_per_route() {
        let m = RouteMetrics::default();
        for (status, integ) in [(200, Some(3)), (404, None), (502, Some(40)), (201, Some(1))] {
            m.record(&Observation {
                api_id: "a1",
                stage: "$default",
                route: "GET /items/{id}",
                status,
                latency: Duration::from_millis(5),
                integration_latency: integ.map(Duration::from_millis),
            });
        }
        let text = m.render_prometheus();
        let l = r#"api="a1",stage="$default",route="GET /items/{id}""#;
        for want in [
            format!("nimbus_gateway_requests_total{{{l}}} 4"),
            format!("nimbus_gateway_4xx_total{{{l}}} 1"),
            format!("nimbus_gateway_5xx_total{{{l}}} 1"),
            format!("nimbus_gateway_latency_ms_count{{{l}}} 4"),
            format!("nimbus_gateway_latency_ms_bucket{{{l},le=\"2.5\"}} 0"),
            format!("nimbus_gateway_latency_ms_bucket{{{l},le=\"5\"}} 4"),
            format!("nimbus_gateway_integration_latency_ms_count{{{l}}} 3"),
            format!("nimbus_gateway_integration_latency_ms_bucket{{{l},le=\"1\"}} 1"),
            format!("nimbus_gateway_integration_latency_ms_sum{{{l}}} 44.000"),
        ] {
            assert!(text.contains(&want), "missing {want} in\n{text}");
        }
        m.forget_api("a1");
        assert!(!m.render_prometheus().contains("a1"));
    }
}
