//! `nimbus bench --events`: durable asynchronous invocation. At each concurrency level, the
//! load generator sends `InvocationType=Event` invokes of the python hello for `--duration`
//! (each answered 202 only once the event is committed), then the run waits until the
//! dispatcher has run every accepted event. Reported: accepts per second with their latency,
//! and the rate at which accepted events were processed end to end. Beside them, once the
//! server has stopped: the store's own insert rate (`Store::enqueue_async_events` called
//! in-process, one event per call from as many tasks, and all of them in one call), the
//! ceiling the accept path's HTTP, JSON and group commit work under.

use std::fmt::Write;
use std::time::{Duration, Instant};

use nimbus_client::Client;

use super::loadgen::{self, LoadRun, Target};
use super::raw::{self, TempStore};
use super::server::Server;
use super::steps::{self, Bounds, StepRun};
use super::{progress, stats, BenchArgs, Interpreters};

pub const BEGIN: &str = "<!-- nimbus bench events: begin -->";
pub const END: &str = "<!-- nimbus bench events: end -->";

/// How long the run waits for the dispatcher to finish a level's events.
const DRAIN_LIMIT: Duration = Duration::from_secs(600);

/// Events (and synchronous invokes) timed one at a time for the end-to-end latency.
const E2E_EVENTS: usize = 300;

/// A raw insert run also stops after this many events, so its table stays bounded.
const MAX_RAW_EVENTS: u64 = 200_000;

struct Level {
    /// Accepts while the function is paused (reserved concurrency 0): the accept path alone,
    /// every event held by the dispatcher.
    paused: LoadRun,
    /// From releasing the function to the last held event done.
    released_drain: Option<Duration>,
    /// Accepts while the dispatcher runs the events on the same cores.
    accept: LoadRun,
    /// From the first accept to the last event done.
    drained: Option<Duration>,
    /// The store alone: one event per `enqueue_async_events` call from `c` tasks.
    raw: Option<StepRun>,
    /// The store alone: `c` events per call from one task (only above c=1).
    raw_batched: Option<StepRun>,
}

/// Waits until no asynchronous event is pending; how long that took from `since`.
async fn drain(client: &Client, since: Instant) -> anyhow::Result<Option<Duration>> {
    let until = Instant::now() + DRAIN_LIMIT;
    while Instant::now() < until {
        if client.status().await?["asyncEventsPending"].as_u64() == Some(0) {
            return Ok(Some(since.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(None)
}

/// Inserts at `c`: `c` tasks with one event per call, and (above c=1) one task with `c` per call.
async fn raw_inserts(
    store: &TempStore,
    c: usize,
    duration: Duration,
) -> (StepRun, Option<StepRun>) {
    let bounds = Bounds {
        duration,
        max_items: MAX_RAW_EVENTS,
    };
    let enqueue = |worker: usize, per_call: usize| raw::Enqueue {
        store: store.store.clone(),
        per_call,
        worker: worker as u64,
        next: 0,
    };
    let one = steps::closed_loop((0..c).map(|w| enqueue(w, 1)).collect(), bounds).await;
    let batched = if c > 1 {
        // Worker ids past the one-per-call run's keep the request ids distinct.
        Some(steps::closed_loop(vec![enqueue(c, c)], bounds).await)
    } else {
        None
    };
    (one, batched)
}

pub async fn run(args: &BenchArgs, interpreters: &Interpreters) -> anyhow::Result<String> {
    let started = Instant::now();
    let mut notes = Vec::new();
    let top = args.concurrency.iter().copied().max().unwrap_or(1);
    let server = Server::start(top + 8).await?;
    let client = Client::new(&server.endpoint);
    let python = super::create_python_hello(&client, args, &mut notes, "events").await?;
    let target = Target::invoke(&server.endpoint, python)?.event();
    let mut levels = Vec::new();
    eprintln!("asynchronous invocation ...");
    for &c in &args.concurrency {
        // The accept path alone: with the function paused (reserved concurrency 0, Lambda's
        // "throttle") every accepted event is stored held, so the dispatcher does not compete;
        // releasing it runs them all.
        client.set_reserved_concurrency(python, Some(0)).await?;
        let paused = loadgen::closed_loop(&target, c, 0, args.duration).await;
        eprintln!("    accept, function paused {}", progress(&paused));
        client.set_reserved_concurrency(python, None).await?;
        let released_drain = drain(&client, Instant::now()).await?;
        if let Some(d) = released_drain {
            eprintln!(
                "    released: all {} events done {:.1} s later",
                paused.ok,
                d.as_secs_f64()
            );
        }
        // As in use: accepts and the dispatcher running the function share the cores.
        let t0 = Instant::now();
        let accept = loadgen::closed_loop(&target, c, 0, args.duration).await;
        eprintln!("    accept, function running {}", progress(&accept));
        let drained = drain(&client, t0).await?;
        match drained {
            Some(d) => eprintln!(
                "    all {} events done {:.1} s after the first accept",
                accept.ok,
                d.as_secs_f64()
            ),
            None => notes.push(format!(
                "At c={c} the accepted events were not all done within {} s.",
                DRAIN_LIMIT.as_secs()
            )),
        }
        if released_drain.is_none() {
            notes.push(format!(
                "At c={c} the events accepted while the function was paused were not all done within {} s of releasing it.",
                DRAIN_LIMIT.as_secs()
            ));
        }
        levels.push(Level {
            paused,
            released_drain,
            accept,
            drained,
            raw: None,
            raw_batched: None,
        });
    }
    eprintln!("end-to-end latency, one event at a time ...");
    let e2e = super::e2e::measure(&client, "python3", E2E_EVENTS).await?;
    if e2e.lost > 0 {
        notes.push(format!(
            "{} events of the latency run did not reach the function within 10 s.",
            e2e.lost
        ));
    }
    notes.extend(server.stop().await);
    // After the server has stopped, so the two never share the cores.
    eprintln!("the store's raw insert rate ...");
    let store = TempStore::open("raw-events")?;
    for l in &mut levels {
        let (one, batched) = raw_inserts(&store, l.accept.concurrency, args.duration).await;
        eprintln!(
            "    c={}: {} events/s one per call{}",
            l.accept.concurrency,
            stats::per_sec(one.items_per_sec()),
            batched.as_ref().map_or(String::new(), |b| format!(
                ", {} events/s {} per call",
                stats::per_sec(b.items_per_sec()),
                l.accept.concurrency
            ))
        );
        for r in [Some(&one), batched.as_ref()].into_iter().flatten() {
            if r.failed() > 0 {
                notes.push(format!(
                    "Raw inserts at c={} failed: {}.",
                    l.accept.concurrency,
                    r.error_summary()
                ));
            }
        }
        l.raw = Some(one);
        l.raw_batched = batched;
    }
    drop(store);
    notes.push(format!(
        "The whole run took {:.0} s.",
        started.elapsed().as_secs_f64()
    ));

    let mut md = String::new();
    let _ = writeln!(
        md,
        "{}Event invokes of the python hello for {} per level; the store is SQLite in WAL mode with `synchronous=NORMAL` (a 202 means the event's transaction is committed to the WAL file, which survives the server process dying; the OS flushes it to the platter at checkpoints).\n",
        super::run_heading("Asynchronous invocation", interpreters),
        humantime::format_duration(args.duration),
    );
    let _ = writeln!(md, "| concurrency | function | accepted | accepts/s | accept p50 | accept p99 | failed | all done after | processed/s |");
    let _ = writeln!(md, "|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for l in &levels {
        let rows = [
            (
                "paused (accepts alone)",
                &l.paused,
                l.released_drain,
                "release",
            ),
            ("running", &l.accept, l.drained, "first accept"),
        ];
        for (mode, a, done, from) in rows {
            let (p50, p99) = stats::p50_p99_cells(a.latency().as_ref());
            let _ = writeln!(
                md,
                "| {} | {mode} | {} | {} | {p50} | {p99} | {} | {} | {} |",
                a.concurrency,
                a.ok,
                stats::per_sec(a.rate()),
                a.failures.total(),
                stats::or_dash(done, |d| format!(
                    "{:.1} s after the {from}",
                    d.as_secs_f64()
                )),
                stats::or_dash(done, |d| stats::per_sec(a.ok as f64 / d.as_secs_f64())),
            );
        }
    }
    let (a50, a99) = stats::p50_p99_cells(e2e.asynchronous.as_ref());
    let (s50, s99) = stats::p50_p99_cells(e2e.synchronous.as_ref());
    let _ = writeln!(
        md,
        "\nEnd to end, one at a time to a warm python function whose first act is an HTTP callback to the bench (sent → callback received; {E2E_EVENTS} of each after a warm-up):\n\n| invocation | p50 | p99 |\n|---|---:|---:|\n| `Event` (stored, then dispatched) | {a50} | {a99} |\n| `RequestResponse`, same function and callback | {s50} | {s99} |"
    );
    let _ = writeln!(
        md,
        "\nThe store alone (`Store::enqueue_async_events` in-process on a fresh database, after the server stopped):\n\n| concurrency | inserts/s, one event per call | inserts/s, c events per call |\n|---:|---:|---:|"
    );
    for l in &levels {
        let _ = writeln!(
            md,
            "| {} | {} | {} |",
            l.accept.concurrency,
            stats::or_dash(l.raw.as_ref(), |r| stats::per_sec(r.items_per_sec())),
            stats::or_dash(l.raw_batched.as_ref(), |r| stats::per_sec(
                r.items_per_sec()
            )),
        );
    }
    let best = levels
        .iter()
        .map(|l| l.paused.rate())
        .fold(0.0_f64, f64::max);
    let best_running = levels
        .iter()
        .map(|l| l.accept.rate())
        .fold(0.0_f64, f64::max);
    let raw_best = |f: fn(&Level) -> Option<&StepRun>| {
        levels
            .iter()
            .filter_map(|l| f(l).map(StepRun::items_per_sec))
            .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))))
    };
    let _ = writeln!(
        md,
        "\n| target | measured | verdict |\n|---|---:|---|\n| ≥ 20,000 durable async accepts/s (group commit), the accept path alone (function paused) | {}/s | {} |\n| the same while the function runs on the same two cores (for information; the python runtimes take most of the CPU) | {}/s | — |\n\nThe raw store inserts up to {}/s one event per call and {}/s batched.",
        stats::per_sec(best),
        if best >= 20_000.0 { "pass" } else { "**fail**" },
        stats::per_sec(best_running),
        stats::or_dash(raw_best(|l| l.raw.as_ref()), stats::per_sec),
        stats::or_dash(raw_best(|l| l.raw_batched.as_ref()), stats::per_sec),
    );
    for n in &notes {
        let _ = writeln!(md, "\n{n}");
    }
    Ok(md)
}
