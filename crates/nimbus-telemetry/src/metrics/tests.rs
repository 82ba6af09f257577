use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};

use nimbus_store::SqliteStore;

use super::*;

/// A minute well after the epoch, so "before it" is a valid time too.
const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn clocked() -> (Metrics, Arc<AtomicI64>) {
    let now = Arc::new(AtomicI64::new(T0 + 5_000));
    let c = now.clone();
    (Metrics::with_clock(move || c.load(Ordering::SeqCst)), now)
}

fn rec(ms: u64, error: bool, cold: Option<u64>) -> InvocationRecord {
    InvocationRecord {
        duration: Duration::from_millis(ms),
        error,
        cold_start: cold.is_some(),
        init_duration: cold.map(Duration::from_millis),
        provisioned: false,
    }
}

/// A parsed scrape: every sample by `name{labels}` and every family's type, after checking
/// the text line by line as a Prometheus parser would.
struct Scrape {
    samples: BTreeMap<String, f64>,
    types: BTreeMap<String, String>,
}

fn parse(text: &str) -> Scrape {
    assert!(text.ends_with('\n'), "a scrape ends with a newline");
    let mut types = BTreeMap::new();
    let mut helps = HashSet::new();
    let mut samples = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(!help.is_empty() && !help.contains('\n'));
            assert!(helps.insert(name.to_string()), "HELP for {name} twice");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(helps.contains(name), "TYPE before HELP for {name}");
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "TYPE for {name} twice"
            );
            current = Some(name.to_string());
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line}");
        // name{label="value",...} number
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{name}"
        );
        let family = current.as_deref().expect("sample before any TYPE");
        let ok = name == family
            || (types[family] == "histogram"
                && [
                    format!("{family}_bucket"),
                    format!("{family}_sum"),
                    format!("{family}_count"),
                ]
                .contains(&name.to_string()));
        assert!(ok, "sample {name} under family {family}");
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                check_labels(labels);
            }
        }
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "{series} twice"
        );
    }
    Scrape { samples, types }
}

/// `{k="v",...}` with values escaped: only \\, \" and \n after a backslash, no raw quote.
fn check_labels(s: &str) {
    let inner = s
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .expect("braces");
    let mut chars = inner.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        assert!(!key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        assert_eq!(chars.next(), Some('"'));
        loop {
            match chars.next().expect("unterminated label value") {
                '\\' => assert!(matches!(chars.next(), Some('\\' | '"' | 'n'))),
                '"' => break,
                '\n' => panic!("raw newline in a label value"),
                _ => {}
            }
        }
        match chars.next() {
            None => break,
            Some(',') => continue,
            Some(c) => panic!("unexpected {c:?} after a label value"),
        }
    }
}

fn get(s: &Scrape, series: &str) -> f64 {
    *s.samples
        .get(series)
        .unwrap_or_else(|| panic!("no sample {series} in {:#?}", s.samples.keys()))
}

#[test]
fn prometheus_text_has_counts_histograms_and_gauges() {
    let m = Metrics::new();
    let f = "hello";
    m.invocation(f, "$LATEST", &rec(3, false, Some(120)));
    for i in 0..3 {
        m.invocation(f, "$LATEST", &rec(10 + i, false, None));
    }
    m.invocation(f, "$LATEST", &rec(2_000, true, None));
    m.invocation(f, "2", &rec(1, false, Some(80)));
    m.throttle(f, "$LATEST");
    m.throttle(f, "$LATEST");
    m.concurrency_add(f, "$LATEST", 1);
    m.concurrency_add(f, "$LATEST", 1);
    m.concurrency_add(f, "$LATEST", -1);
    m.provisioned(f, "live", 4, 1);
    let s = parse(&m.render_prometheus());

    let l = r#"{function="hello",version="$LATEST"}"#;
    assert_eq!(get(&s, &format!("nimbus_invocations_total{l}")), 5.0);
    assert_eq!(get(&s, &format!("nimbus_errors_total{l}")), 1.0);
    assert_eq!(get(&s, &format!("nimbus_throttles_total{l}")), 2.0);
    assert_eq!(get(&s, &format!("nimbus_cold_starts_total{l}")), 1.0);
    assert_eq!(get(&s, &format!("nimbus_concurrent_executions{l}")), 1.0);
    assert_eq!(
        get(
            &s,
            r#"nimbus_invocations_total{function="hello",version="2"}"#
        ),
        1.0
    );
    let b = |le: &str| {
        get(
            &s,
            &format!(
                r#"nimbus_duration_seconds_bucket{{function="hello",version="$LATEST",le="{le}"}}"#
            ),
        )
    };
    assert_eq!(b("0.005"), 1.0);
    assert_eq!(b("0.01"), 2.0, "10 ms is counted as ≤ 0.01");
    assert_eq!(b("0.025"), 4.0);
    assert_eq!(b("1"), 4.0);
    assert_eq!(b("2.5"), 5.0);
    assert_eq!(b("+Inf"), 5.0);
    assert_eq!(get(&s, &format!("nimbus_duration_seconds_count{l}")), 5.0);
    let sum = get(&s, &format!("nimbus_duration_seconds_sum{l}"));
    assert!((sum - 2.036).abs() < 1e-9, "{sum}");
    assert_eq!(
        get(&s, &format!("nimbus_init_duration_seconds_count{l}")),
        1.0
    );
    // Buckets are cumulative: never decreasing, ending at the count.
    let mut last = 0.0;
    for b in DURATION_BOUNDS_S {
        let v = get(
            &s,
            &format!(
                r#"nimbus_init_duration_seconds_bucket{{function="hello",version="2",le="{b}"}}"#
            ),
        );
        assert!(v >= last);
        last = v;
    }
    let p = r#"{function="hello",qualifier="live"}"#;
    assert_eq!(
        get(
            &s,
            &format!("nimbus_provisioned_concurrency_utilization{p}")
        ),
        0.25
    );
    assert_eq!(
        get(&s, &format!("nimbus_provisioned_concurrent_executions{p}")),
        1.0
    );
    // The alias has provisioned concurrency but never executed as a version: no execution
    // series for it.
    assert!(!s.samples.keys().any(|k| k.contains(r#"version="live""#)));
    for (family, kind) in [
        ("nimbus_invocations_total", "counter"),
        ("nimbus_errors_total", "counter"),
        ("nimbus_throttles_total", "counter"),
        ("nimbus_cold_starts_total", "counter"),
        (
            "nimbus_provisioned_concurrency_invocations_total",
            "counter",
        ),
        ("nimbus_duration_seconds", "histogram"),
        ("nimbus_init_duration_seconds", "histogram"),
        ("nimbus_concurrent_executions", "gauge"),
        ("nimbus_provisioned_concurrency_utilization", "gauge"),
        ("nimbus_provisioned_concurrent_executions", "gauge"),
    ] {
        assert_eq!(
            s.types.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
    }
}

#[test]
fn an_empty_registry_still_declares_its_families() {
    let s = parse(&Metrics::new().render_prometheus());
    assert!(s.samples.is_empty());
    assert_eq!(s.types.len(), 10);
}

#[test]
fn label_values_are_escaped() {
    let m = Metrics::new();
    m.invocation("we\"ird\\na\nme", "$LATEST", &rec(1, false, None));
    let text = m.render_prometheus();
    let s = parse(&text);
    assert_eq!(
        get(
            &s,
            r#"nimbus_invocations_total{function="we\"ird\\na\nme",version="$LATEST"}"#
        ),
        1.0
    );
}

#[test]
fn registered_collectors_follow_the_execution_families() {
    struct Gateway;
    impl Collector for Gateway {
        fn collect(&self, out: &mut Exposition) {
            out.family(
                "nimbus_api_requests_total",
                "Requests per route.",
                Kind::Counter,
            );
            out.sample(
                "nimbus_api_requests_total",
                &[("route", "GET /items/{id}")],
                7.0,
            );
        }
    }
    let m = Metrics::new();
    m.register(Arc::new(Gateway));
    let s = parse(&m.render_prometheus());
    assert_eq!(
        get(&s, r#"nimbus_api_requests_total{route="GET /items/{id}"}"#),
        7.0
    );
}

#[test]
fn forget_function_drops_live_series_but_keeps_its_minute() {
    let (m, _) = clocked();
    m.invocation("gone", "$LATEST", &rec(5, false, None));
    m.invocation("kept", "$LATEST", &rec(5, false, None));
    m.concurrency_add("gone", "$LATEST", 1);
    m.forget_function("gone");
    m.concurrency_add("gone", "$LATEST", -1); // it was running when deleted
    let s = parse(&m.render_prometheus());
    assert!(!s.samples.keys().any(|k| k.contains("gone")));
    assert!(s.samples.keys().any(|k| k.contains("kept")));
    let rows = m.memory_minutes("gone", None);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].invocations, 1);
}

#[tokio::test]
async fn minutes_roll_over_are_stored_once_and_read_back_merged() {
    let (m, now) = clocked();
    let store = SqliteStore::in_memory().unwrap();
    for ms in [10, 20, 30] {
        m.invocation("f", "$LATEST", &rec(ms, false, None));
    }
    m.concurrency_add("f", "$LATEST", 1); // one stays running into the next minute
    now.store(T0 + 60_000 + 2_000, Ordering::SeqCst);
    m.invocation("f", "$LATEST", &rec(40, true, Some(100)));
    m.throttle("f", "1");

    // Before the rollup: both minutes in memory.
    let series = m
        .series(&store, "f", None, T0 - 3_600_000, T0 + 120_000)
        .await
        .unwrap();
    assert_eq!(series.len(), 2, "{series:?}");
    let latest = &series[0];
    assert_eq!(latest.version, "$LATEST");
    assert_eq!(
        latest
            .points
            .iter()
            .map(|p| (p.minute_ms, p.invocations, p.errors))
            .collect::<Vec<_>>(),
        [(T0, 3, 0), (T0 + 60_000, 1, 1)]
    );
    assert_eq!(latest.points[0].concurrent_executions_max, 1);
    assert_eq!(
        latest.points[1].concurrent_executions_max, 1,
        "still running in the new minute"
    );
    assert_eq!(latest.points[1].init_duration_p50_ms, Some(100.0));
    assert_eq!(latest.points[0].init_duration_p50_ms, None);
    let p50 = latest.points[0].duration_p50_ms.unwrap();
    assert!((p50 - 20.0).abs() <= 2.0, "{p50}");
    assert_eq!(latest.points[0].duration_max_ms, Some(30.0));
    assert_eq!(latest.summary.invocations, 4);
    assert_eq!(latest.summary.errors, 1);
    assert_eq!(latest.summary.duration_max_ms, Some(40.0));
    assert_eq!(series[1].version, "1");
    assert_eq!(series[1].points[0].throttles, 1);

    // The rollup stores the finished minute only, once.
    m.close_minutes(T0 + 60_000 + 2_000, false, 0);
    m.store_closed(&store).await;
    m.store_closed(&store).await;
    let stored = store.metric_minutes("f", None, 0, i64::MAX).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!((stored[0].minute_ms, stored[0].invocations), (T0, 3));
    // Readers still see both minutes, each once.
    let again = m
        .series(&store, "f", Some("$LATEST"), T0, T0 + 120_000)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].points, latest.points);
    // The window is [since, until): the second minute is outside this one.
    let first = m
        .series(&store, "f", Some("$LATEST"), T0 + 30_000, T0 + 60_000)
        .await
        .unwrap();
    assert_eq!(first[0].points.len(), 1);
}

#[tokio::test]
async fn a_partial_minute_written_at_shutdown_adds_up_with_the_rest_after_a_restart() {
    let store = SqliteStore::in_memory().unwrap();
    let (before, _) = clocked();
    for ms in [1, 2] {
        before.invocation("f", "$LATEST", &rec(ms, false, None));
    }
    before.close_minutes(T0 + 5_000, true, 0);
    before.store_closed(&store).await;
    assert!(before.memory_minutes("f", None).is_empty());

    let (after, _) = clocked();
    for ms in [300, 400, 500] {
        after.invocation("f", "$LATEST", &rec(ms, true, None));
    }
    let check = |s: &[VersionSeries]| {
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].points.len(), 1);
        let p = &s[0].points[0];
        assert_eq!((p.invocations, p.errors), (5, 3));
        assert_eq!(p.duration_max_ms, Some(500.0));
        // Percentiles come from the merged buckets: the median is the 300 ms one.
        let p50 = p.duration_p50_ms.unwrap();
        assert!((p50 - 300.0).abs() <= 30.0, "{p50}");
    };
    check(
        &after
            .series(&store, "f", None, T0, T0 + 60_000)
            .await
            .unwrap(),
    );
    after.close_minutes(T0 + 6_000, true, 0);
    after.store_closed(&store).await;
    check(
        &after
            .series(&store, "f", None, T0, T0 + 60_000)
            .await
            .unwrap(),
    );
    let stored = store.metric_minutes("f", None, 0, i64::MAX).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].invocations, 5);
}

#[tokio::test]
async fn idle_minutes_are_not_stored_and_old_ones_are_dropped() {
    let store = SqliteStore::in_memory().unwrap();
    let (m, now) = clocked();
    m.invocation("f", "$LATEST", &rec(1, false, None));
    // Three idle minutes later nothing new is closed; the old minute is past the cutoff.
    now.store(T0 + 4 * 60_000, Ordering::SeqCst);
    m.close_minutes(T0 + 4 * 60_000, true, T0 + 60_000);
    m.store_closed(&store).await;
    assert!(store
        .metric_minutes("f", None, 0, i64::MAX)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn the_rollup_task_stores_the_current_minute_at_shutdown() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    let m = Metrics::new();
    let rollup = m.start_rollup(store.clone(), Duration::from_secs(48 * 3600));
    m.invocation("f", "$LATEST", &rec(7, false, Some(50)));
    m.invocation("f", "$LATEST", &rec(9, false, None));
    rollup.shutdown().await;
    let rows = store.metric_minutes("f", None, 0, i64::MAX).await.unwrap();
    let total: u64 = rows.iter().map(|r| r.invocations).sum();
    assert_eq!(total, 2);
    assert_eq!(rows.iter().map(|r| r.cold_starts).sum::<u64>(), 1);
}

#[test]
fn provisioned_utilization_is_tracked_per_minute_and_removed_at_zero() {
    let (m, now) = clocked();
    m.provisioned("f", "live", 2, 2);
    m.provisioned("f", "live", 2, 0);
    now.store(T0 + 60_000, Ordering::SeqCst);
    m.provisioned("f", "live", 2, 1);
    m.close_minutes(T0 + 60_000, false, 0);
    let rows = m.memory_minutes("f", Some("live"));
    assert_eq!(
        rows.iter()
            .map(|r| r.provisioned_utilization_max)
            .collect::<Vec<_>>(),
        [Some(1.0), Some(0.5)]
    );
    m.provisioned("f", "live", 0, 0);
    let s = parse(&m.render_prometheus());
    assert!(!s.samples.keys().any(|k| k.contains("live")));
}

#[test]
fn times_in_every_accepted_form() {
    let now = T0;
    assert_eq!(parse_time("now", now), Ok(T0));
    assert_eq!(parse_time("1h", now), Ok(T0 - 3_600_000));
    assert_eq!(parse_time("90s", now), Ok(T0 - 90_000));
    assert_eq!(parse_time("2d", now), Ok(T0 - 2 * 86_400_000));
    assert_eq!(parse_time("1767225600000", now), Ok(T0));
    assert_eq!(parse_time("2026-01-01T00:00:00Z", now), Ok(T0));
    assert_eq!(parse_time("2026-01-01T01:00:00+01:00", now), Ok(T0));
    assert_eq!(parse_time("2026-01-01T00:00:00.250Z", now), Ok(T0 + 250));
    assert_eq!(
        parse_time("100y", now),
        Ok(0),
        "before the epoch is the epoch"
    );
    assert_eq!(
        parse_time("9223372036854775807", now),
        Ok(LAST_TIME_MS),
        "printable"
    );
    for bad in [
        "",
        "yesterday",
        "-5",
        "1h ago",
        "2026-13-01T00:00:00Z",
        "99999999999999999999",
    ] {
        let e = parse_time(bad, now).unwrap_err();
        assert!(e.contains("ISO-8601") && e.contains("30m"), "{bad}: {e}");
    }
}

/// The cost of the calls the invoke path makes. A measurement, not a check (no timed
/// assertions in tests), optimised like the dependencies are:
/// `CARGO_PROFILE_TEST_OPT_LEVEL=2 cargo test -p nimbus-telemetry --lib hot_path -- --ignored --nocapture`
#[test]
#[ignore]
fn hot_path_cost() {
    let m = Metrics::new();
    let r = rec(12, false, None);
    for v in 0..50 {
        m.invocation(&format!("fn-{v}"), "$LATEST", &r);
    }
    let n = 2_000_000u32;
    let t = std::time::Instant::now();
    for i in 0..n {
        m.concurrency_add("fn-7", "$LATEST", 1);
        m.invocation("fn-7", "$LATEST", &rec(u64::from(i % 900) + 1, false, None));
        m.concurrency_add("fn-7", "$LATEST", -1);
    }
    let per_invocation = t.elapsed() / n;
    println!("one invocation's three calls: {per_invocation:?}");
}
