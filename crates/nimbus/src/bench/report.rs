//! What a bench run measured, and how it is printed: the figures table, memory and ceiling
//! lines, ratios against the peer, and the issue 4 targets with pass/fail.

use std::fmt::Write as _;
use std::time::Duration;

use super::loadgen::{BurstRun, Failures, LoadRun};
use super::stats::{self, or_dash, Latency};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Nimbus,
    ServerlessOffline,
    /// The same runtimes behind the thinnest Runtime API relay (`relay.rs`): the floor.
    RelayFloor,
}

impl System {
    pub fn label(self) -> &'static str {
        match self {
            System::Nimbus => "nimbus",
            System::ServerlessOffline => "serverless-offline",
            System::RelayFloor => "floor: Runtime API relay",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Python,
    Node,
    /// The compiled Rust hello (examples/rust-hello) on the `provided` runtime.
    Provided,
}

impl Lang {
    pub fn label(self) -> &'static str {
        match self {
            Lang::Python => "python",
            Lang::Node => "node",
            Lang::Provided => "provided (rust)",
        }
    }
}

/// Forced cold starts, timed one by one.
#[derive(Debug, Clone, Default)]
pub struct Cold {
    pub attempted: usize,
    /// Invokes shown to be cold (see `Report::cold_check`), the only ones timed.
    pub verified: usize,
    pub failures: Failures,
    pub latency: Option<Latency>,
}

/// Everything measured for one function on one system.
#[derive(Debug, Clone)]
pub struct Row {
    pub system: System,
    pub lang: Lang,
    pub cold: Option<Cold>,
    /// Closed-loop runs, one per concurrency level.
    pub warm: Vec<LoadRun>,
    pub burst: Option<BurstRun>,
    /// Why the measurement stopped early, if it did.
    pub error: Option<String>,
}

impl Row {
    pub fn new(system: System, lang: Lang) -> Row {
        Row {
            system,
            lang,
            cold: None,
            warm: Vec::new(),
            burst: None,
            error: None,
        }
    }

    /// Records why a measurement stopped, after any reason already recorded (a peer's cold
    /// series runs before its warm runs, and both can fail).
    pub fn stopped(&mut self, why: String) {
        self.error = Some(match self.error.take() {
            Some(earlier) => format!("{earlier}; {why}"),
            None => why,
        });
    }

    pub fn run_at(&self, c: usize) -> Option<&LoadRun> {
        self.warm.iter().find(|r| r.concurrency == c)
    }

    pub fn rate_at(&self, c: usize) -> Option<f64> {
        self.run_at(c).filter(|r| r.ok > 0).map(LoadRun::rate)
    }

    /// Warm latency: the concurrency-1 run.
    pub fn warm_latency(&self) -> Option<Latency> {
        self.run_at(1)?.latency()
    }

    pub fn cold_latency(&self) -> Option<Latency> {
        self.cold.as_ref()?.latency
    }
}

/// Wall time of starting an interpreter that does nothing.
#[derive(Debug, Clone)]
pub struct Floor {
    /// `python3 -c pass`
    pub command: String,
    pub latency: Result<Latency, String>,
}

/// Nimbus's memory: idle, and what each warm instance adds on the platform's side.
#[derive(Debug, Clone)]
pub struct Memory {
    pub idle_rss_kb: u64,
    /// Warm idle instances while measuring (as the server counts them).
    pub instances: usize,
    /// Server RSS growth per instance, kB.
    pub rss_per_instance_kb: f64,
    /// PSS of the platform's per-instance processes (sandbox helper, namespace init), plus the
    /// python zygote's own (unique) memory growth, per instance, kB.
    pub helpers_pss_per_instance_kb: f64,
    pub helper_processes: usize,
    /// Which function held the instances.
    pub function: String,
}

impl Memory {
    pub fn per_instance_kb(&self) -> f64 {
        self.rss_per_instance_kb + self.helpers_pss_per_instance_kb
    }
}

#[derive(Debug, Clone)]
pub enum PeerState {
    Measured,
    /// `--no-peer`.
    Skipped,
    /// It could not be installed or started; why.
    Unavailable(String),
}

/// A whole run.
#[derive(Debug, Clone)]
pub struct Report {
    /// `2026-11-23 15:04 UTC`
    pub when: String,
    /// CPU, cores, memory, kernel.
    pub machine: String,
    pub command: String,
    pub cold_n: usize,
    pub duration: Duration,
    pub concurrency: Vec<usize>,
    pub burst_n: usize,
    pub rows: Vec<Row>,
    pub floors: Vec<Floor>,
    pub memory: Result<Memory, String>,
    /// The load generator against a trivial local server: one run per ceiling level.
    pub ceiling: Vec<LoadRun>,
    pub peer: PeerState,
    pub notes: Vec<String>,
}

/// One issue 4 target and whether the run met it.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub target: String,
    pub measured: Option<String>,
    pub pass: Option<bool>,
    /// The same figure for the Runtime API floor, and whether the floor meets the target: a
    /// target the floor misses is out of reach for that runtime on this machine.
    pub floor: Option<(String, bool)>,
}

impl Check {
    fn new(target: impl Into<String>, measured: Option<(String, bool)>) -> Check {
        let (measured, pass) = match measured {
            Some((m, p)) => (Some(m), Some(p)),
            None => (None, None),
        };
        Check {
            target: target.into(),
            measured,
            pass,
            floor: None,
        }
    }

    fn with_floor(mut self, floor: Option<(String, bool)>) -> Check {
        self.floor = floor;
        self
    }
}

const MS: Duration = Duration::from_millis(1);

impl Report {
    pub fn row(&self, system: System, lang: Lang) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.system == system && r.lang == lang)
    }

    fn nimbus(&self, lang: Lang) -> Option<&Row> {
        self.row(System::Nimbus, lang)
    }

    fn peer_row(&self, lang: Lang) -> Option<&Row> {
        self.row(System::ServerlessOffline, lang)
    }

    /// The highest concurrency level run (the throughput target is read there).
    pub fn top_concurrency(&self) -> usize {
        self.concurrency.iter().copied().max().unwrap_or(1)
    }

    /// Nimbus throughput over the peer's at the top concurrency.
    pub fn throughput_ratio(&self, lang: Lang) -> Option<f64> {
        let c = self.top_concurrency();
        stats::ratio(
            self.nimbus(lang)?.rate_at(c)?,
            self.peer_row(lang)?.rate_at(c)?,
        )
    }

    /// How many times faster Nimbus starts cold (peer cold p50 over Nimbus cold p50).
    pub fn cold_speedup(&self, lang: Lang) -> Option<f64> {
        stats::ratio(
            self.peer_row(lang)?.cold_latency()?.p50.as_secs_f64(),
            self.nimbus(lang)?.cold_latency()?.p50.as_secs_f64(),
        )
    }

    /// The issue 4 targets, each with what this run measured.
    pub fn checks(&self) -> Vec<Check> {
        let cold = |lang: Lang, p99: bool, limit: Duration| {
            self.nimbus(lang).and_then(Row::cold_latency).map(|l| {
                let v = if p99 { l.p99 } else { l.p50 };
                (format!("{} ms", stats::ms(v)), v <= limit)
            })
        };
        let mut out = vec![
            Check::new(
                "python cold start p50 ≤ 5 ms",
                cold(Lang::Python, false, 5 * MS),
            ),
            Check::new(
                "python cold start p99 ≤ 15 ms",
                cold(Lang::Python, true, 15 * MS),
            ),
            Check::new(
                "node cold start p50 ≤ 30 ms",
                cold(Lang::Node, false, 30 * MS),
            ),
            Check::new(
                "provided (rust) cold start p50 ≤ 5 ms",
                cold(Lang::Provided, false, 5 * MS),
            ),
        ];
        let warm = |row: Option<&Row>| {
            row.and_then(Row::warm_latency)
                .map(|l| (stats::us_cell(l.p50), l.p50 <= Duration::from_micros(200)))
        };
        for lang in [Lang::Python, Lang::Node, Lang::Provided] {
            out.push(
                Check::new(
                    format!("{} warm p50 ≤ 200 µs at c=1", lang.label()),
                    warm(self.nimbus(lang)),
                )
                .with_floor(warm(self.row(System::RelayFloor, lang))),
            );
        }
        let c = self.top_concurrency();
        let rate = |row: Option<&Row>| {
            row.and_then(|r| r.rate_at(c))
                .map(|r| (format!("{} /s", stats::per_sec(r)), r >= 10_000.0))
        };
        for lang in [Lang::Python, Lang::Node, Lang::Provided] {
            out.push(
                Check::new(
                    format!("{} ≥ 10,000 invokes/s at c={c}", lang.label()),
                    rate(self.nimbus(lang)),
                )
                .with_floor(rate(self.row(System::RelayFloor, lang))),
            );
        }
        for lang in [Lang::Python, Lang::Node] {
            out.push(
                Check::new(
                    format!(
                        "{} throughput ≥ 10× serverless-offline's (c={c})",
                        lang.label()
                    ),
                    self.throughput_ratio(lang)
                        .map(|r| (stats::times(r), r >= 10.0)),
                )
                .with_floor(
                    self.row(System::RelayFloor, lang)
                        .and_then(|f| f.rate_at(c))
                        .zip(self.peer_row(lang).and_then(|p| p.rate_at(c)))
                        .and_then(|(f, p)| stats::ratio(f, p))
                        .map(|r| (stats::times(r), r >= 10.0)),
                ),
            );
        }
        for lang in [Lang::Python, Lang::Node] {
            out.push(Check::new(
                format!(
                    "{} cold start ≥ 20× faster than serverless-offline's (p50)",
                    lang.label()
                ),
                self.cold_speedup(lang)
                    .map(|r| (stats::times(r), r >= 20.0)),
            ));
        }
        let mem = self.memory.as_ref().ok();
        out.push(Check::new(
            "idle server RSS ≤ 30 MB",
            mem.map(|m| (stats::kb(m.idle_rss_kb as f64), m.idle_rss_kb <= 30 * 1024)),
        ));
        out.push(Check::new(
            "platform memory per warm instance ≤ 200 KB",
            mem.map(|m| (stats::kb(m.per_instance_kb()), m.per_instance_kb() <= 200.0)),
        ));
        out
    }

    /// The figures table: a row per function and system, then the interpreter floors.
    pub fn figures_table(&self) -> String {
        let mut out = String::from(
            "| system | function | cold p50 (ms) | cold p99 (ms) | verified cold | warm p50 (µs) | warm p99 (µs) |",
        );
        for c in &self.concurrency {
            let _ = write!(out, " inv/s c={c} |");
        }
        let _ = writeln!(
            out,
            " burst 0→{n}: all answered (ms) | burst failed |",
            n = self.burst_n
        );
        out.push_str("|---|---|---:|---:|---:|---:|---:|");
        for _ in &self.concurrency {
            out.push_str("---:|");
        }
        out.push_str("---:|---:|\n");
        for r in &self.rows {
            let cold = r.cold.as_ref();
            let cold_l = r.cold_latency();
            let warm = r.warm_latency();
            let _ = write!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                r.system.label(),
                r.lang.label(),
                or_dash(cold_l, |l| stats::ms(l.p50)),
                or_dash(cold_l, |l| stats::ms(l.p99)),
                or_dash(cold, |c| format!("{}/{}", c.verified, c.attempted)),
                or_dash(warm, |l| stats::us(l.p50)),
                or_dash(warm, |l| stats::us(l.p99)),
            );
            for c in &self.concurrency {
                let cell = or_dash(r.run_at(*c), |run| {
                    let f = run.failures.total();
                    if f > 0 {
                        format!("{} ({f} failed)", stats::per_sec(run.rate()))
                    } else {
                        stats::per_sec(run.rate())
                    }
                });
                let _ = write!(out, " {cell} |");
            }
            let _ = writeln!(
                out,
                " {} | {} |",
                or_dash(r.burst.as_ref(), |b| stats::ms(b.all_answered)),
                or_dash(r.burst.as_ref(), |b| b.failures.total().to_string()),
            );
        }
        for f in &self.floors {
            let l = f.latency.as_ref().ok();
            let _ = write!(
                out,
                "| floor | `{}` | {} | {} | | | |",
                f.command,
                or_dash(l, |l| stats::ms(l.p50)),
                or_dash(l, |l| stats::ms(l.p99)),
            );
            for _ in &self.concurrency {
                out.push_str(" |");
            }
            out.push_str(" | |\n");
        }
        out
    }

    pub fn checks_table(&self) -> String {
        let mut out = String::from(
            "| target | measured | Runtime API floor | result |\n|---|---:|---:|---|\n",
        );
        for c in self.checks() {
            let result = match (c.pass, &c.floor) {
                (Some(true), _) => "pass",
                (Some(false), Some((_, false))) => {
                    "**fail**: out of reach here (the floor misses it)"
                }
                (Some(false), _) => "**fail**",
                (None, _) => "—",
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {result} |",
                c.target,
                c.measured.as_deref().unwrap_or("not measured"),
                c.floor.as_ref().map_or("", |(f, _)| f.as_str()),
            );
        }
        out
    }

    /// The lines under the figures: memory, the generator's ceiling, ratios, how it was run.
    pub fn summary_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        match &self.memory {
            Ok(m) => out.push(format!(
                "**Memory** (Nimbus): server RSS idle {} (functions created, no instances). \
                 Platform memory per warm instance {} = server RSS growth {} + PSS of the \
                 platform's own per-instance processes and the python zygote's unique memory \
                 growth {} ({} `nimbus` helper processes), over {} idle warm instances of `{}`.",
                stats::kb(m.idle_rss_kb as f64),
                stats::kb(m.per_instance_kb()),
                stats::kb(m.rss_per_instance_kb),
                stats::kb(m.helpers_pss_per_instance_kb),
                m.helper_processes,
                m.instances,
                m.function,
            )),
            Err(e) => out.push(format!("**Memory**: not measured ({e}).")),
        }
        if !self.ceiling.is_empty() {
            let parts: Vec<String> = self
                .ceiling
                .iter()
                .map(|r| {
                    let lat = or_dash(r.latency(), |l| format!(", p50 {} µs", stats::us(l.p50)));
                    format!(
                        "{} inv/s at c={}{lat}",
                        stats::per_sec(r.rate()),
                        r.concurrency
                    )
                })
                .collect();
            out.push(format!(
                "**Load generator ceiling** (the same generator against a trivial local HTTP \
                 server returning 200, on this machine): {}. A figure near it is the \
                 generator's limit, not the server's.",
                parts.join("; ")
            ));
        }
        match &self.peer {
            PeerState::Measured => {
                let c = self.top_concurrency();
                let mut parts = Vec::new();
                for lang in [Lang::Python, Lang::Node] {
                    parts.push(format!(
                        "{}: throughput at c={c} {} the peer's, cold-start speed-up {}",
                        lang.label(),
                        or_dash(self.throughput_ratio(lang), stats::times),
                        or_dash(self.cold_speedup(lang), stats::times),
                    ));
                }
                out.push(format!(
                    "**Nimbus / serverless-offline**: {} (speed-up: the peer's cold p50 over \
                     Nimbus's; below 1× Nimbus is the slower).",
                    parts.join("; ")
                ));
            }
            PeerState::Skipped => out.push("**Peer**: skipped (`--no-peer`).".into()),
            PeerState::Unavailable(why) => {
                out.push(format!("**Peer**: serverless-offline not measured: {why}."))
            }
        }
        out.push(format!(
            "{} forced cold starts per function; warm latency from the c=1 run; closed-loop \
             throughput over {} s per concurrency level; burst of {} concurrent invokes from \
             zero instances.",
            self.cold_n,
            self.duration.as_secs_f64(),
            self.burst_n
        ));
        out.extend(self.failure_notes());
        out.extend(self.notes.iter().cloned());
        out
    }

    /// One line per failed request kind, so a failure count in the table has its reason.
    fn failure_notes(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in &self.rows {
            let name = format!("{} {}", r.system.label(), r.lang.label());
            if let Some(e) = &r.error {
                out.push(format!("{name}: measurement stopped: {e}"));
            }
            if let Some(c) = &r.cold {
                if c.failures.total() > 0 {
                    out.push(format!(
                        "{name} cold starts failed: {}",
                        c.failures.summary()
                    ));
                }
            }
            for run in &r.warm {
                if run.failures.total() > 0 {
                    out.push(format!(
                        "{name} at c={} failed: {}",
                        run.concurrency,
                        run.failures.summary()
                    ));
                }
            }
            if let Some(b) = &r.burst {
                if b.failures.total() > 0 {
                    out.push(format!(
                        "{name} burst: {} of {} failed: {}",
                        b.failures.total(),
                        b.requests,
                        b.failures.summary()
                    ));
                }
            }
        }
        for f in &self.floors {
            if let Err(e) = &f.latency {
                out.push(format!("floor `{}`: {e}", f.command));
            }
        }
        out
    }

    /// The whole block as markdown.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "Run {} on {}: `{}`.\n\n",
            self.when, self.machine, self.command
        );
        out.push_str(&self.figures_table());
        out.push('\n');
        for l in self.summary_lines() {
            out.push_str(&l);
            out.push_str("\n\n");
        }
        out.push_str("Issue 4 targets:\n\n");
        out.push_str(&self.checks_table());
        out
    }
}

pub const BEGIN: &str = "<!-- nimbus bench: begin -->";
pub const END: &str = "<!-- nimbus bench: end -->";

/// `existing` with the text between `begin` and `end` replaced by `block` (markers kept), or
/// with a marked block appended when it has none.
pub fn replace_between(existing: &str, begin: &str, end: &str, block: &str) -> String {
    let block = format!("{begin}\n{}\n{end}", block.trim_end());
    match existing.find(begin) {
        Some(b) => match existing[b..].find(end) {
            Some(e) => format!(
                "{}{block}{}",
                &existing[..b],
                &existing[b + e + end.len()..]
            ),
            None => format!("{}{block}\n", &existing[..b]),
        },
        None if existing.is_empty() => format!("{block}\n"),
        None => format!("{}\n\n{block}\n", existing.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_reason_a_row_stopped_keeps_the_first() {
        let mut row = Row::new(System::ServerlessOffline, Lang::Node);
        row.stopped("its cold-start mode: did not listen".into());
        row.stopped("the first invoke failed".into());
        assert_eq!(
            row.error.as_deref(),
            Some("its cold-start mode: did not listen; the first invoke failed")
        );
    }

    /// The main bench block's markers.
    fn replace_block(existing: &str, block: &str) -> String {
        replace_between(existing, BEGIN, END, block)
    }
    use crate::bench::loadgen::Failure;

    fn run(c: usize, ok: u64, secs: u64, lat_us: &[u64]) -> LoadRun {
        LoadRun {
            concurrency: c,
            ok,
            failures: Failures::default(),
            elapsed: Duration::from_secs(secs),
            latencies: lat_us.iter().map(|u| Duration::from_micros(*u)).collect(),
        }
    }

    fn cold(ms: u64) -> Cold {
        Cold {
            attempted: 3,
            verified: 3,
            failures: Failures::default(),
            latency: Some(Latency {
                samples: 3,
                p50: Duration::from_millis(ms),
                p99: Duration::from_millis(ms * 2),
            }),
        }
    }

    fn report() -> Report {
        let mut py = Row::new(System::Nimbus, Lang::Python);
        py.cold = Some(cold(4));
        py.warm = vec![
            run(1, 5000, 1, &[150, 160, 170]),
            run(64, 12_000, 1, &[900]),
        ];
        let mut failures = Failures::default();
        failures.add(Failure::Status(429, String::new()));
        py.burst = Some(BurstRun {
            requests: 200,
            ok: 199,
            failures,
            all_answered: Duration::from_millis(850),
        });
        let mut node = Row::new(System::Nimbus, Lang::Node);
        node.cold = Some(cold(40));
        node.warm = vec![run(1, 3000, 1, &[300]), run(64, 8000, 1, &[1000])];
        node.warm[1]
            .failures
            .add(Failure::Function("Unhandled".into()));
        let mut peer_py = Row::new(System::ServerlessOffline, Lang::Python);
        peer_py.cold = Some(cold(100));
        peer_py.warm = vec![run(1, 500, 1, &[2000]), run(64, 1000, 1, &[60000])];
        let mut peer_node = Row::new(System::ServerlessOffline, Lang::Node);
        peer_node.cold = Some(cold(400));
        peer_node.warm = vec![run(1, 400, 1, &[2500]), run(64, 900, 1, &[70000])];
        // The node floor itself misses 10,000/s at c=64; nothing reaches the python floor.
        let mut floor_node = Row::new(System::RelayFloor, Lang::Node);
        floor_node.warm = vec![run(1, 5000, 1, &[150]), run(64, 9000, 1, &[800])];
        Report {
            when: "2026-11-23 15:00 UTC".into(),
            machine: "test machine".into(),
            command: "nimbus bench".into(),
            cold_n: 3,
            duration: Duration::from_secs(1),
            concurrency: vec![1, 64],
            burst_n: 200,
            rows: vec![py, node, peer_py, peer_node, floor_node],
            floors: vec![
                Floor {
                    command: "python3 -c pass".into(),
                    latency: Ok(Latency {
                        samples: 30,
                        p50: Duration::from_micros(45_260),
                        p99: Duration::from_millis(60),
                    }),
                },
                Floor {
                    command: "node -e 0".into(),
                    latency: Err("node: not found".into()),
                },
            ],
            memory: Ok(Memory {
                idle_rss_kb: 20 * 1024,
                instances: 20,
                rss_per_instance_kb: 100.0,
                helpers_pss_per_instance_kb: 150.0,
                helper_processes: 40,
                function: "bench-sleep".into(),
            }),
            ceiling: vec![run(64, 50_000, 1, &[800])],
            peer: PeerState::Measured,
            notes: vec![],
        }
    }

    #[test]
    fn ratios_against_the_peer() {
        let r = report();
        assert_eq!(r.throughput_ratio(Lang::Python), Some(12.0));
        assert_eq!(r.cold_speedup(Lang::Python), Some(25.0));
        assert_eq!(r.cold_speedup(Lang::Node), Some(10.0));
        assert_eq!(r.throughput_ratio(Lang::Provided), None, "no peer row");
    }

    #[test]
    fn targets_pass_fail_and_unmeasured() {
        let checks = report().checks();
        let get = |t: &str| {
            checks
                .iter()
                .find(|c| c.target == t)
                .unwrap_or_else(|| panic!("no check {t}"))
                .clone()
        };
        assert_eq!(get("python cold start p50 ≤ 5 ms").pass, Some(true));
        assert_eq!(
            get("python cold start p99 ≤ 15 ms").measured.as_deref(),
            Some("8.0 ms")
        );
        assert_eq!(get("node cold start p50 ≤ 30 ms").pass, Some(false));
        assert_eq!(get("provided (rust) cold start p50 ≤ 5 ms").pass, None);
        assert_eq!(get("python warm p50 ≤ 200 µs at c=1").pass, Some(true));
        assert_eq!(get("node warm p50 ≤ 200 µs at c=1").pass, Some(false));
        let t = get("python ≥ 10,000 invokes/s at c=64");
        assert_eq!(
            (t.measured.as_deref(), t.pass),
            (Some("12,000 /s"), Some(true))
        );
        assert_eq!(get("node ≥ 10,000 invokes/s at c=64").pass, Some(false));
        assert_eq!(
            get("python throughput ≥ 10× serverless-offline's (c=64)").pass,
            Some(true)
        );
        assert_eq!(
            get("node cold start ≥ 20× faster than serverless-offline's (p50)").pass,
            Some(false)
        );
        assert_eq!(get("idle server RSS ≤ 30 MB").pass, Some(true));
        let m = get("platform memory per warm instance ≤ 200 KB");
        assert_eq!(
            (m.measured.as_deref(), m.pass),
            (Some("250 KB"), Some(false))
        );
    }

    #[test]
    fn figures_table_shape() {
        let t = report().figures_table();
        let lines: Vec<&str> = t.lines().collect();
        // Header, rule, five rows (one of them the Runtime API floor), two interpreter floors;
        // every line has the same number of cells.
        assert_eq!(lines.len(), 9);
        let cells = |l: &str| l.matches('|').count();
        assert!(lines.iter().all(|l| cells(l) == cells(lines[0])), "{t}");
        assert!(lines[0].contains("inv/s c=64") && lines[0].contains("burst 0→200"));
        assert_eq!(
            lines[2],
            "| nimbus | python | 4.0 | 8.0 | 3/3 | 160 | 170 | 5,000 | 12,000 | 850.0 | 1 |"
        );
        assert!(lines[3].contains("| 8,000 (1 failed) |"), "{}", lines[3]);
        assert!(lines[6].starts_with("| floor: Runtime API relay | node | — | — | — | 150 |"));
        assert!(lines[7].starts_with("| floor | `python3 -c pass` | 45.3 | 60.0 |"));
        assert!(lines[8].starts_with("| floor | `node -e 0` | — | — |"));
    }

    #[test]
    fn summary_explains_failures() {
        let r = report();
        let lines = r.summary_lines();
        assert!(lines
            .iter()
            .any(|l| l == "nimbus python burst: 1 of 200 failed: 1× HTTP 429"));
        assert!(lines
            .iter()
            .any(|l| l == "nimbus node at c=64 failed: 1× function error Unhandled"));
        assert!(lines
            .iter()
            .any(|l| l == "floor `node -e 0`: node: not found"));
        assert!(lines.iter().any(|l| l
            .contains("python: throughput at c=64 12.0× the peer's, cold-start speed-up 25.0×;")));
        assert!(lines.iter().any(|l| l.contains("50,000 inv/s at c=64")));
        let md = r.markdown();
        assert!(md.contains("| python cold start p50 ≤ 5 ms | 4.0 ms |  | pass |"));
        assert!(md.contains("| node cold start p50 ≤ 30 ms | 40.0 ms |  | **fail** |"));
        assert!(md.contains("| provided (rust) cold start p50 ≤ 5 ms | not measured |  | — |"));
        // A miss the floor shares is out of reach; one the floor meets is a plain fail.
        assert!(md.contains(
            "| node ≥ 10,000 invokes/s at c=64 | 8,000 /s | 9,000 /s | **fail**: out of reach here (the floor misses it) |"
        ));
        assert!(md.contains("| node warm p50 ≤ 200 µs at c=1 | 300 µs | 150 µs | **fail** |"));
        assert!(md.contains("| floor: Runtime API relay | node |"));
        // The floor's throughput over the peer's (9,000 over 900 /s) bounds the ratio too.
        assert!(md.contains(
            "| node throughput ≥ 10× serverless-offline's (c=64) | 8.9× | 10.0× | **fail** |"
        ));
    }

    #[test]
    fn unavailable_peer_is_said() {
        let mut r = report();
        r.rows.retain(|row| row.system == System::Nimbus);
        r.peer = PeerState::Unavailable("npm ci failed: network".into());
        let lines = r.summary_lines();
        assert!(lines
            .iter()
            .any(|l| l == "**Peer**: serverless-offline not measured: npm ci failed: network."));
        let checks = r.checks();
        assert!(checks
            .iter()
            .filter(|c| c.target.contains("serverless-offline"))
            .all(|c| c.pass.is_none()));
    }

    #[test]
    fn block_replacement_keeps_the_rest() {
        let doc = format!("# B\n\nintro\n\n{BEGIN}\nold table\n{END}\n\nhistory\n");
        let out = replace_block(&doc, "new table\n");
        assert_eq!(
            out,
            format!("# B\n\nintro\n\n{BEGIN}\nnew table\n{END}\n\nhistory\n")
        );
        // Idempotent.
        assert_eq!(replace_block(&out, "new table"), out);
        // No markers: appended after the text.
        assert_eq!(
            replace_block("# B\n", "t"),
            format!("# B\n\n{BEGIN}\nt\n{END}\n")
        );
        assert_eq!(replace_block("", "t"), format!("{BEGIN}\nt\n{END}\n"));
        // A begin marker without an end: everything after it is the old block.
        assert_eq!(
            replace_block(&format!("x\n{BEGIN}\nstale"), "t"),
            format!("x\n{BEGIN}\nt\n{END}\n")
        );
    }
}
