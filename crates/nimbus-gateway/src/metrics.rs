//! Per-route metrics as API Gateway reports them for HTTP APIs (Count, 4XX, 5XX, Latency,
//! IntegrationLatency), by API, stage and route. A telemetry [`Collector`]: they are written
//! into the same `/metrics` scrape as the functions' metrics, with the same histogram layout.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use nimbus_telemetry::metrics::{Collector, Exposition, Histogram, Kind, DURATION_BOUNDS_S};

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

/// API → stage → route → stats; nested so a request looks its series up without allocating.
type Series = BTreeMap<String, BTreeMap<String, BTreeMap<String, RouteStats>>>;

#[derive(Default)]
pub struct RouteMetrics {
    stats: Mutex<Series>,
}

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

    fn snapshot(&self) -> Vec<((String, String, String), RouteStats)> {
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
    }
}

/// A counter's name, help text and value.
type Counter = (&'static str, &'static str, fn(&RouteStats) -> u64);
/// A histogram's name, help text and data.
type HistogramOf = (&'static str, &'static str, fn(&RouteStats) -> &Histogram);

impl Collector for RouteMetrics {
    fn collect(&self, out: &mut Exposition) {
        let stats = self.snapshot();
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
            out.family(name, help, Kind::Counter);
            for ((api, stage, route), s) in &stats {
                let labels = [
                    ("api", api.as_str()),
                    ("stage", stage.as_str()),
                    ("route", route.as_str()),
                ];
                out.sample(name, &labels, get(s) as f64);
            }
        }
        let histograms: [HistogramOf; 2] = [
            (
                "nimbus_gateway_latency_seconds",
                "Time from receiving a request to sending the response head (API Gateway's Latency).",
                |s| &s.latency,
            ),
            (
                "nimbus_gateway_integration_latency_seconds",
                "Time the integration took (API Gateway's IntegrationLatency).",
                |s| &s.integration_latency,
            ),
        ];
        for (name, help, get) in histograms {
            out.family(name, help, Kind::Histogram);
            for ((api, stage, route), s) in &stats {
                let labels = [
                    ("api", api.as_str()),
                    ("stage", stage.as_str()),
                    ("route", route.as_str()),
                ];
                out.histogram(name, &labels, get(s), &DURATION_BOUNDS_S);
            }
        }
    }
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
        let mut out = Exposition::new();
        m.collect(&mut out);
        let text = out.finish();
        let l = r#"api="a1",stage="$default",route="GET /items/{id}""#;
        for want in [
            format!("nimbus_gateway_requests_total{{{l}}} 4"),
            format!("nimbus_gateway_4xx_total{{{l}}} 1"),
            format!("nimbus_gateway_5xx_total{{{l}}} 1"),
            format!("nimbus_gateway_latency_seconds_count{{{l}}} 4"),
            format!("nimbus_gateway_latency_seconds_bucket{{{l},le=\"0.0025\"}} 0"),
            format!("nimbus_gateway_latency_seconds_bucket{{{l},le=\"0.005\"}} 4"),
            format!("nimbus_gateway_integration_latency_seconds_count{{{l}}} 3"),
            format!("nimbus_gateway_integration_latency_seconds_bucket{{{l},le=\"0.001\"}} 1"),
        ] {
            assert!(text.contains(&want), "missing {want} in\n{text}");
        }
        m.forget_api("a1");
        let mut out = Exposition::new();
        m.collect(&mut out);
        assert!(!out.finish().contains("a1"));
    }
}
