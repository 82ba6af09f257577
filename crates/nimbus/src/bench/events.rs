//! `nimbus bench --events`: durable asynchronous invocation. At each concurrency level, the
//! load generator sends `InvocationType=Event` invokes of the python hello for `--duration`
//! (each answered 202 only once the event is committed), then the run waits until the
//! dispatcher has run every accepted event. Reported: accepts per second with their latency,
//! and the rate at which accepted events were processed end to end.

use std::fmt::Write;
use std::time::{Duration, Instant};

use nimbus_client::Client;

use super::loadgen::{self, LoadRun, Target};
use super::server::Server;
use super::{progress, stats, BenchArgs, Interpreters};

pub const BEGIN: &str = "<!-- nimbus bench events: begin -->";
pub const END: &str = "<!-- nimbus bench events: end -->";

/// How long the run waits for the dispatcher to finish a level's events.
const DRAIN_LIMIT: Duration = Duration::from_secs(600);

struct Level {
    accept: LoadRun,
    /// From the first accept to the last event done.
    drained: Option<Duration>,
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
        let t0 = Instant::now();
        let accept = loadgen::closed_loop(&target, c, 0, args.duration).await;
        eprintln!("    accept {}", progress(&accept));
        let until = Instant::now() + DRAIN_LIMIT;
        let mut drained = None;
        while Instant::now() < until {
            let pending = client.status().await?["asyncEventsPending"].as_u64();
            if pending == Some(0) {
                drained = Some(t0.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
        levels.push(Level { accept, drained });
    }
    notes.extend(server.stop().await);
    notes.push(format!(
        "The whole run took {:.0} s.",
        started.elapsed().as_secs_f64()
    ));

    let mut md = String::new();
    let _ = writeln!(
        md,
        "### Asynchronous invocation run of {} on {}\n\n`{}` — Event invokes of the python hello for {} per level; the store is SQLite in WAL mode with `synchronous=NORMAL` (a 202 means the event's transaction is committed to the WAL file, which survives the server process dying; the OS flushes it to the platter at checkpoints).\n",
        super::now_utc(),
        super::machine(interpreters),
        super::command_line(),
        humantime::format_duration(args.duration),
    );
    let _ = writeln!(md, "| concurrency | accepted | accepts/s | accept p50 | accept p99 | failed | all done after | processed/s |");
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---:|");
    for l in &levels {
        let a = &l.accept;
        let (p50, p99) = a.latency().map_or(("-".into(), "-".into()), |x| {
            (
                format!("{} µs", stats::us(x.p50)),
                format!("{} µs", stats::us(x.p99)),
            )
        });
        let _ = writeln!(
            md,
            "| {} | {} | {} | {p50} | {p99} | {} | {} | {} |",
            a.concurrency,
            a.ok,
            stats::per_sec(a.rate()),
            a.failures.total(),
            stats::or_dash(l.drained, |d| format!("{:.1} s", d.as_secs_f64())),
            stats::or_dash(l.drained, |d| stats::per_sec(a.ok as f64 / d.as_secs_f64())),
        );
    }
    let best = levels
        .iter()
        .map(|l| l.accept.rate())
        .fold(0.0_f64, f64::max);
    let _ = writeln!(
        md,
        "\n| target | measured | verdict |\n|---|---:|---|\n| ≥ 20,000 durable async accepts/s (group commit) | {}/s | {} |",
        stats::per_sec(best),
        if best >= 20_000.0 { "pass" } else { "**fail**" }
    );
    for n in &notes {
        let _ = writeln!(md, "\n{n}");
    }
    Ok(md)
}
