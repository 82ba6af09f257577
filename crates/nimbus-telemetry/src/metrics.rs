//! Execution metrics per function and version: Invocations, Errors, Throttles, ColdStarts,
//! Duration and InitDuration histograms, ConcurrentExecutions, provisioned concurrency.
//!
//! The execution engine reports each event through [`Metrics`] (one short lock, no allocation
//! once a series exists, no I/O). Two views come out of it:
//! - live totals since start, for Prometheus ([`Metrics::render_prometheus`]);
//! - per-minute rows: the current minute is accumulated in memory, and a rollup task
//!   ([`Metrics::start_rollup`]) stores each finished minute once, the partial current minute
//!   at shutdown, and prunes rows past retention. Stored rows merge by addition, so a minute
//!   written partly before a restart and partly after adds up.

mod exposition;
mod histogram;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use nimbus_store::{MetricMinute, Store, StoreError};
use tokio::sync::oneshot;

pub use exposition::{Collector, Exposition, Kind, DURATION_BOUNDS_S};
pub use histogram::Histogram;

/// Length of one series point.
pub const PERIOD: Duration = Duration::from_secs(60);
const PERIOD_MS: i64 = 60_000;

/// One finished invocation, as the execution engine saw it.
#[derive(Debug, Clone)]
pub struct InvocationRecord {
    pub duration: Duration,
    /// The function failed (X-Amz-Function-Error), timed out or crashed.
    pub error: bool,
    pub cold_start: bool,
    /// Set on cold starts whose runtime reported its initialisation.
    pub init_duration: Option<Duration>,
    /// Served by a provisioned (pre-initialised) instance.
    pub provisioned: bool,
}

/// The metrics registry. Cheap to clone; every clone records into the same series.
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    /// Milliseconds since the Unix epoch; replaceable so tests can cross minute boundaries.
    clock: Clock,
    state: Mutex<State>,
    /// Held for writing while closed minutes move from memory to the store, for reading while
    /// a query reads both.
    persist: tokio::sync::RwLock<()>,
    /// Families added by other parts of the platform, written after the execution ones.
    collectors: RwLock<Vec<Arc<dyn Collector>>>,
}

type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

impl Default for Inner {
    fn default() -> Inner {
        Inner {
            clock: Arc::new(nimbus_store::now_ms),
            state: Default::default(),
            persist: Default::default(),
            collectors: Default::default(),
        }
    }
}

#[derive(Default)]
struct State {
    /// function → version (or provisioned qualifier) → series.
    series: HashMap<Arc<str>, HashMap<Arc<str>, Series>>,
    /// Finished minutes not stored yet.
    closed: Vec<Closed>,
}

struct Closed {
    function: Arc<str>,
    version: Arc<str>,
    minute: Minute,
}

/// Everything known about one function version.
struct Series {
    function: Arc<str>,
    version: Arc<str>,
    /// Execution families are exported only for series that executed (a series may exist only
    /// for an alias's provisioned concurrency).
    executed: bool,
    /// Since the server started (Prometheus).
    total: Tally,
    concurrency: i64,
    /// (allocated, busy) provisioned instances, when provisioned concurrency is configured here.
    provisioned: Option<(u32, u32)>,
    minute: Minute,
}

/// The accumulating minute of a series.
#[derive(Clone)]
struct Minute {
    start_ms: i64,
    tally: Tally,
    concurrency_max: u64,
    provisioned_utilization_max: Option<f64>,
}

/// What invocations and throttles add up to, over a minute or since start.
#[derive(Clone)]
struct Tally {
    invocations: u64,
    errors: u64,
    throttles: u64,
    cold_starts: u64,
    provisioned_invocations: u64,
    duration: Histogram,
    init_duration: Histogram,
}

impl Tally {
    const fn new() -> Tally {
        Tally {
            invocations: 0,
            errors: 0,
            throttles: 0,
            cold_starts: 0,
            provisioned_invocations: 0,
            duration: Histogram::new(),
            init_duration: Histogram::new(),
        }
    }

    fn invocation(&mut self, rec: &InvocationRecord) {
        self.invocations += 1;
        self.errors += u64::from(rec.error);
        self.cold_starts += u64::from(rec.cold_start);
        self.provisioned_invocations += u64::from(rec.provisioned);
        self.duration.record(rec.duration);
        if let Some(init) = rec.init_duration {
            self.init_duration.record(init);
        }
    }
}

fn minute_of(ms: i64) -> i64 {
    ms.div_euclid(PERIOD_MS) * PERIOD_MS
}

fn utilization(allocated: u32, busy: u32) -> f64 {
    if allocated == 0 {
        0.0
    } else {
        (busy as f64 / allocated as f64).min(1.0)
    }
}

impl Minute {
    /// A fresh minute; gauges start where they stand, since they hold across the boundary.
    fn starting(start_ms: i64, concurrency: i64, provisioned: Option<(u32, u32)>) -> Minute {
        Minute {
            start_ms,
            tally: Tally::new(),
            concurrency_max: concurrency.max(0) as u64,
            provisioned_utilization_max: provisioned.map(|(a, b)| utilization(a, b)),
        }
    }

    /// Nothing happened and nothing was running: not worth a row.
    fn is_idle(&self) -> bool {
        self.tally.invocations == 0
            && self.tally.throttles == 0
            && self.concurrency_max == 0
            && self.provisioned_utilization_max.is_none()
    }

    fn to_row(&self, function: &str, version: &str) -> MetricMinute {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let t = &self.tally;
        MetricMinute {
            function: function.to_string(),
            version: version.to_string(),
            minute_ms: self.start_ms,
            invocations: t.invocations,
            errors: t.errors,
            throttles: t.throttles,
            cold_starts: t.cold_starts,
            provisioned_invocations: t.provisioned_invocations,
            duration_sum_ms: ms(t.duration.sum()),
            duration_max_ms: ms(t.duration.max()),
            duration_buckets: t.duration.sparse(),
            init_duration_max_ms: ms(t.init_duration.max()),
            init_duration_buckets: t.init_duration.sparse(),
            concurrency_max: self.concurrency_max,
            provisioned_utilization_max: self.provisioned_utilization_max,
        }
    }
}

impl Series {
    fn new(function: Arc<str>, version: Arc<str>, minute_ms: i64) -> Series {
        Series {
            function,
            version,
            executed: false,
            total: Tally::new(),
            concurrency: 0,
            provisioned: None,
            minute: Minute::starting(minute_ms, 0, None),
        }
    }

    /// Moves to `minute_ms` if the accumulating minute is an older one, closing it.
    fn roll(&mut self, minute_ms: i64, closed: &mut Vec<Closed>) {
        if self.minute.start_ms >= minute_ms {
            return;
        }
        let next = Minute::starting(minute_ms, self.concurrency, self.provisioned);
        let done = std::mem::replace(&mut self.minute, next);
        if !done.is_idle() {
            closed.push(Closed {
                function: self.function.clone(),
                version: self.version.clone(),
                minute: done,
            });
        }
    }

    /// Closes what the current minute holds so far and starts it again from zero (at
    /// shutdown: the rest of the minute, if any, is merged into the stored row later).
    fn close_partial(&mut self, closed: &mut Vec<Closed>) {
        let next = Minute::starting(self.minute.start_ms, self.concurrency, self.provisioned);
        let partial = std::mem::replace(&mut self.minute, next);
        if !partial.is_idle() {
            closed.push(Closed {
                function: self.function.clone(),
                version: self.version.clone(),
                minute: partial,
            });
        }
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    #[cfg(test)]
    fn with_clock(clock: impl Fn() -> i64 + Send + Sync + 'static) -> Metrics {
        Metrics {
            inner: Arc::new(Inner {
                clock: Arc::new(clock),
                ..Inner::default()
            }),
        }
    }

    fn now_ms(&self) -> i64 {
        (self.inner.clock)()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves counters, not invariants: keep counting.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `op` on the series of `function`+`version` in the current minute, creating it if
    /// needed and `create` says so (the only allocation, once per series).
    fn with_series(
        &self,
        function: &str,
        version: &str,
        create: bool,
        op: impl FnOnce(&mut Series),
    ) {
        let minute = minute_of(self.now_ms());
        let mut st = self.state();
        let State { series, closed } = &mut *st;
        if let Some(s) = series.get_mut(function).and_then(|m| m.get_mut(version)) {
            s.roll(minute, closed);
            op(s);
            return;
        }
        if !create {
            return;
        }
        let f: Arc<str> = match series.get_key_value(function) {
            Some((k, _)) => k.clone(),
            None => Arc::from(function),
        };
        let v: Arc<str> = Arc::from(version);
        let s = series
            .entry(f.clone())
            .or_default()
            .entry(v.clone())
            .or_insert_with(|| Series::new(f, v, minute));
        op(s);
    }

    /// One finished invocation. `version` is the executed version label ("$LATEST", "3").
    pub fn invocation(&self, function: &str, version: &str, rec: &InvocationRecord) {
        self.with_series(function, version, true, |s| {
            s.executed = true;
            s.total.invocation(rec);
            s.minute.tally.invocation(rec);
        });
    }

    /// A refused invocation (429).
    pub fn throttle(&self, function: &str, version: &str) {
        self.with_series(function, version, true, |s| {
            s.executed = true;
            s.total.throttles += 1;
            s.minute.tally.throttles += 1;
        });
    }

    /// Invocations running now: +1 when one starts, -1 when it ends.
    pub fn concurrency_add(&self, function: &str, version: &str, delta: i64) {
        // An invocation still running when its function was deleted (and its series
        // forgotten) ends without bringing the series back.
        self.with_series(function, version, delta > 0, |s| {
            s.executed = true;
            s.concurrency = (s.concurrency + delta).max(0);
            s.minute.concurrency_max = s.minute.concurrency_max.max(s.concurrency as u64);
        });
    }

    /// Provisioned instances allocated for function+qualifier (alias name or version) and how
    /// many of them are busy now. `allocated == 0` means provisioned concurrency is gone.
    pub fn provisioned(&self, function: &str, qualifier: &str, allocated: u32, busy: u32) {
        self.with_series(function, qualifier, allocated > 0, |s| {
            if allocated == 0 {
                s.provisioned = None;
                return;
            }
            s.provisioned = Some((allocated, busy));
            let u = utilization(allocated, busy);
            let max = s.minute.provisioned_utilization_max.get_or_insert(u);
            *max = max.max(u);
        });
    }

    /// The function was deleted: drop its live series. Its minutes so far are still stored
    /// (by the rollup task) and stay until retention.
    pub fn forget_function(&self, function: &str) {
        let mut st = self.state();
        let State { series, closed } = &mut *st;
        for (_, s) in series.remove(function).into_iter().flatten() {
            if !s.minute.is_idle() {
                closed.push(Closed {
                    function: s.function,
                    version: s.version,
                    minute: s.minute,
                });
            }
        }
    }

    /// Adds a family writer (the API gateway's, async events'); scrapes call it after the
    /// execution families.
    pub fn register(&self, collector: Arc<dyn Collector>) {
        self.inner
            .collectors
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(collector);
    }

    /// Every family in the Prometheus text format, version 0.0.4.
    pub fn render_prometheus(&self) -> String {
        let mut out = Exposition::new();
        self.collect_execution(&mut out);
        let collectors = self
            .inner
            .collectors
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for c in collectors {
            c.collect(&mut out);
        }
        out.finish()
    }

    fn collect_execution(&self, out: &mut Exposition) {
        // Copy out under the lock (histograms are plain arrays), write without it.
        struct Snap {
            function: Arc<str>,
            version: Arc<str>,
            executed: bool,
            total: Tally,
            concurrency: i64,
            provisioned: Option<(u32, u32)>,
        }
        let mut snaps: Vec<Snap> = {
            let st = self.state();
            st.series
                .values()
                .flat_map(|m| m.values())
                .map(|s| Snap {
                    function: s.function.clone(),
                    version: s.version.clone(),
                    executed: s.executed,
                    total: s.total.clone(),
                    concurrency: s.concurrency,
                    provisioned: s.provisioned,
                })
                .collect()
        };
        snaps.sort_by(|a, b| (&a.function, &a.version).cmp(&(&b.function, &b.version)));
        let executed: Vec<&Snap> = snaps.iter().filter(|s| s.executed).collect();
        fn labels(s: &Snap) -> [(&'static str, &str); 2] {
            [("function", &s.function), ("version", &s.version)]
        }
        /// Name, help, and which count of a [`Tally`] it exports.
        type Counter = (&'static str, &'static str, fn(&Tally) -> u64);
        let counters: [Counter; 5] = [
            (
                "nimbus_invocations_total",
                "Invocations that ran, whether they succeeded or failed.",
                |t| t.invocations,
            ),
            (
                "nimbus_errors_total",
                "Invocations that ended in a function error (including timeouts and crashes).",
                |t| t.errors,
            ),
            (
                "nimbus_throttles_total",
                "Invocations refused with 429 because a concurrency limit was reached.",
                |t| t.throttles,
            ),
            (
                "nimbus_cold_starts_total",
                "Invocations that had to start a new instance.",
                |t| t.cold_starts,
            ),
            (
                "nimbus_provisioned_concurrency_invocations_total",
                "Invocations served by a provisioned (pre-initialised) instance.",
                |t| t.provisioned_invocations,
            ),
        ];
        for (name, help, count) in counters {
            out.family(name, help, Kind::Counter);
            for s in &executed {
                out.sample(name, &labels(s), count(&s.total) as f64);
            }
        }
        out.family(
            "nimbus_duration_seconds",
            "Time from the event being handed to the function to its result.",
            Kind::Histogram,
        );
        for s in &executed {
            out.histogram(
                "nimbus_duration_seconds",
                &labels(s),
                &s.total.duration,
                &DURATION_BOUNDS_S,
            );
        }
        out.family(
            "nimbus_init_duration_seconds",
            "Time a new instance's runtime took to initialise, on cold starts.",
            Kind::Histogram,
        );
        for s in &executed {
            out.histogram(
                "nimbus_init_duration_seconds",
                &labels(s),
                &s.total.init_duration,
                &DURATION_BOUNDS_S,
            );
        }
        out.family(
            "nimbus_concurrent_executions",
            "Invocations running now.",
            Kind::Gauge,
        );
        for s in &executed {
            out.sample(
                "nimbus_concurrent_executions",
                &labels(s),
                s.concurrency as f64,
            );
        }
        let provisioned: Vec<(&Snap, u32, u32)> = snaps
            .iter()
            .filter_map(|s| s.provisioned.map(|(a, b)| (s, a, b)))
            .collect();
        fn qualifier_labels(s: &Snap) -> [(&'static str, &str); 2] {
            [("function", &s.function), ("qualifier", &s.version)]
        }
        out.family(
            "nimbus_provisioned_concurrency_utilization",
            "Busy provisioned instances divided by those allocated (0 to 1).",
            Kind::Gauge,
        );
        for (s, allocated, busy) in &provisioned {
            out.sample(
                "nimbus_provisioned_concurrency_utilization",
                &qualifier_labels(s),
                utilization(*allocated, *busy),
            );
        }
        out.family(
            "nimbus_provisioned_concurrent_executions",
            "Invocations running now on provisioned instances.",
            Kind::Gauge,
        );
        for (s, _, busy) in &provisioned {
            out.sample(
                "nimbus_provisioned_concurrent_executions",
                &qualifier_labels(s),
                *busy as f64,
            );
        }
    }

    /// Closes every minute older than the one `now_ms` falls in (and, with `partial`, the
    /// current ones too); forgets closed minutes older than `cutoff_ms`.
    fn close_minutes(&self, now_ms: i64, partial: bool, cutoff_ms: i64) {
        let minute = minute_of(now_ms);
        let mut st = self.state();
        let State { series, closed } = &mut *st;
        for s in series.values_mut().flat_map(|m| m.values_mut()) {
            s.roll(minute, closed);
            if partial {
                s.close_partial(closed);
            }
        }
        closed.retain(|c| c.minute.start_ms >= cutoff_ms);
    }

    /// Stores the closed minutes and then forgets them. A reader ([`Metrics::series`]) sees
    /// each minute either in memory or in the store, never in both or neither: it reads both
    /// under the same lock this write holds. A failed write keeps them for the next round
    /// (the store's write is one transaction, so it added nothing).
    async fn store_closed(&self, store: &dyn Store) {
        let _writing = self.inner.persist.write().await;
        let rows: Vec<MetricMinute> = self
            .state()
            .closed
            .iter()
            .map(|c| c.minute.to_row(&c.function, &c.version))
            .collect();
        if rows.is_empty() {
            return;
        }
        let n = rows.len();
        match store.put_metric_minutes(rows).await {
            // Only the rollup removes from `closed`; others only append. The first `n` are
            // the ones just stored.
            Ok(()) => drop(self.state().closed.drain(..n)),
            Err(e) => tracing::error!(error = %e, rows = n, "could not store metric minutes"),
        }
    }

    /// The minutes of `function` (one version, if given) held in memory: closed ones not yet
    /// stored and the current ones.
    fn memory_minutes(&self, function: &str, version: Option<&str>) -> Vec<MetricMinute> {
        let st = self.state();
        let wanted = |v: &str| version.is_none_or(|w| w == v);
        let mut rows: Vec<MetricMinute> = st
            .closed
            .iter()
            .filter(|c| &*c.function == function && wanted(&c.version))
            .map(|c| c.minute.to_row(&c.function, &c.version))
            .collect();
        if let Some(versions) = st.series.get(function) {
            rows.extend(
                versions
                    .values()
                    .filter(|s| wanted(&s.version) && !s.minute.is_idle())
                    .map(|s| s.minute.to_row(&s.function, &s.version)),
            );
        }
        rows
    }

    /// Per-minute series of `function` (of one version, if given) for the minutes that start
    /// in `[from_ms, until_ms)`: stored rows merged with those still in memory. Minutes without
    /// any activity are left out.
    pub async fn series(
        &self,
        store: &dyn Store,
        function: &str,
        version: Option<&str>,
        from_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<VersionSeries>, StoreError> {
        let from = minute_of(from_ms);
        let (stored, memory) = {
            let _reading = self.inner.persist.read().await;
            let stored = store
                .metric_minutes(function, version, from, until_ms)
                .await?;
            (stored, self.memory_minutes(function, version))
        };
        let mut by_version: std::collections::BTreeMap<String, Vec<MetricMinute>> =
            Default::default();
        for row in stored.into_iter().chain(
            memory
                .into_iter()
                .filter(|m| m.minute_ms >= from && m.minute_ms < until_ms),
        ) {
            let rows = by_version.entry(row.version.clone()).or_default();
            match rows.binary_search_by_key(&row.minute_ms, |m| m.minute_ms) {
                Ok(at) => rows[at].merge(&row),
                Err(at) => rows.insert(at, row),
            }
        }
        Ok(by_version
            .into_iter()
            .map(|(version, rows)| {
                let mut total = MetricMinute {
                    minute_ms: from,
                    ..Default::default()
                };
                for r in &rows {
                    total.merge(r);
                }
                VersionSeries {
                    version,
                    summary: MinuteStats::of(&total),
                    points: rows.iter().map(MinuteStats::of).collect(),
                }
            })
            .collect())
    }

    /// Starts the task that stores finished minutes and prunes those older than `retention`.
    pub fn start_rollup(&self, store: Arc<dyn Store>, retention: Duration) -> MetricsRollup {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(rollup(self.clone(), store, retention, stopped));
        MetricsRollup { stop, task }
    }
}

/// One version's points in a window and their aggregate.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionSeries {
    pub version: String,
    /// The whole window as one point (percentiles from the merged histograms; `minute_ms` is
    /// the window's first minute).
    pub summary: MinuteStats,
    pub points: Vec<MinuteStats>,
}

/// One minute (or a merged window) as users read it: counts, percentiles and maxima.
#[derive(Debug, Clone, PartialEq)]
pub struct MinuteStats {
    pub minute_ms: i64,
    pub invocations: u64,
    pub errors: u64,
    pub throttles: u64,
    pub cold_starts: u64,
    pub provisioned_invocations: u64,
    pub duration_p50_ms: Option<f64>,
    pub duration_p90_ms: Option<f64>,
    pub duration_p99_ms: Option<f64>,
    pub duration_max_ms: Option<f64>,
    /// Median init duration, when there were cold starts that reported one.
    pub init_duration_p50_ms: Option<f64>,
    pub concurrent_executions_max: u64,
    pub provisioned_concurrency_utilization_max: Option<f64>,
}

impl MinuteStats {
    pub fn of(m: &MetricMinute) -> MinuteStats {
        let from_ms = |ms: f64| Duration::from_secs_f64((ms / 1000.0).max(0.0));
        let duration = Histogram::from_sparse(
            &m.duration_buckets,
            from_ms(m.duration_sum_ms),
            from_ms(m.duration_max_ms),
        );
        let init = Histogram::from_sparse(
            &m.init_duration_buckets,
            Duration::ZERO,
            from_ms(m.init_duration_max_ms),
        );
        let q = |h: &Histogram, q: f64| h.quantile(q).map(|d| d.as_secs_f64() * 1000.0);
        MinuteStats {
            minute_ms: m.minute_ms,
            invocations: m.invocations,
            errors: m.errors,
            throttles: m.throttles,
            cold_starts: m.cold_starts,
            provisioned_invocations: m.provisioned_invocations,
            duration_p50_ms: q(&duration, 0.5),
            duration_p90_ms: q(&duration, 0.9),
            duration_p99_ms: q(&duration, 0.99),
            duration_max_ms: (!duration.is_empty()).then_some(m.duration_max_ms),
            init_duration_p50_ms: q(&init, 0.5),
            concurrent_executions_max: m.concurrency_max,
            provisioned_concurrency_utilization_max: m.provisioned_utilization_max,
        }
    }
}

/// The rollup task's handle; `shutdown` stores every minute held in memory and stops it.
pub struct MetricsRollup {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsRollup {
    /// Stores the finished minutes and the partial current ones, then stops the task. Call it
    /// once invocations have ended; what is recorded afterwards is not stored.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// How long after a minute ends its row is written (events reported right at the boundary
/// still land in it).
const ROLLUP_DELAY_MS: i64 = 1_000;

async fn rollup(
    metrics: Metrics,
    store: Arc<dyn Store>,
    retention: Duration,
    mut stop: oneshot::Receiver<()>,
) {
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    loop {
        let now = metrics.now_ms();
        let next = minute_of(now) + PERIOD_MS + ROLLUP_DELAY_MS;
        let wait = Duration::from_millis((next - now).max(0) as u64);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut stop => break,
        }
        let now = metrics.now_ms();
        let cutoff = now.saturating_sub(retention_ms);
        metrics.close_minutes(now, false, cutoff);
        metrics.store_closed(&*store).await;
        match store.prune_metric_minutes(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "metrics retention"),
            Err(e) => tracing::warn!(error = %e, "metrics retention failed"),
        }
    }
    let now = metrics.now_ms();
    metrics.close_minutes(now, true, now.saturating_sub(retention_ms));
    metrics.store_closed(&*store).await;
}

/// The end of year 9999 UTC: later times are clamped to it (and earlier ones to the epoch) so
/// every time parsed can be printed.
const LAST_TIME_MS: i64 = 253_402_300_799_999;

/// Parses a time as the metrics API and CLI accept it: an ISO-8601 / RFC 3339 time
/// (`2026-01-02T15:04:05Z`), milliseconds since the Unix epoch, a duration before `now_ms`
/// (`90s`, `30m`, `1h`, `2d`), or `now`; clamped to the epoch .. year 9999. The error is a
/// sentence naming the accepted forms.
pub fn parse_time(s: &str, now_ms: i64) -> Result<i64, String> {
    parse_unclamped(s, now_ms).map(|ms| ms.clamp(0, LAST_TIME_MS))
}

fn parse_unclamped(s: &str, now_ms: i64) -> Result<i64, String> {
    use time::format_description::well_known::{Iso8601, Rfc3339};
    let s = s.trim();
    let bad = || {
        format!(
            "{s:?} is not a time: give an ISO-8601 time such as 2026-01-02T15:04:05Z, \
             milliseconds since the Unix epoch, or a duration before now such as 30m, 1h or 2d"
        )
    };
    if s.is_empty() {
        return Err(bad());
    }
    if s == "now" {
        return Ok(now_ms);
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<i64>().map_err(|_| bad());
    }
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339)
        .or_else(|_| time::OffsetDateTime::parse(s, &Iso8601::DEFAULT))
    {
        return i64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|_| bad());
    }
    let ago = humantime::parse_duration(s).map_err(|_| bad())?;
    i64::try_from(ago.as_millis())
        .ok()
        .and_then(|ago| now_ms.checked_sub(ago))
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests;
