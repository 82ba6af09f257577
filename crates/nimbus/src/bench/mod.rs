//! `nimbus bench`: starts a private server, deploys hello functions (python, node, and the
//! compiled Rust hello as `provided`), and measures through the Invoke API with its own load
//! generator: forced cold starts, warm latency, throughput at several concurrency levels, a
//! burst from zero instances, and the server's memory. In the same run it measures the floors
//! (`python3 -c pass`, `node -e 0`), the load generator's own ceiling, and the peer,
//! serverless-offline, serving the same handlers. Prints one markdown block and, with `--write`,
//! records it in docs/benchmarks.md. Every process it starts is stopped by PID.

mod e2e;
mod events;
mod gateway;
mod loadgen;
mod peer;
mod procfs;
mod queues;
mod raw;
mod relay;
mod report;
mod server;
mod stats;
mod steps;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine;
use bytes::Bytes;
use nimbus_client::Client;
use serde_json::{json, Value};

use crate::cli::{BenchArgs, BenchPeer};
use loadgen::{Answer, Conn, Target};
use report::{Cold, Floor, Lang, Memory, PeerState, Report, Row, System};
use server::Server;
use stats::Latency;

/// The function that holds instances busy while memory is measured: it sleeps long enough for
/// all of a burst to be in flight at once.
const SLEEPER_PY: &str =
    "import time\n\n\ndef handler(event, context):\n    time.sleep(0.3)\n    return {}\n";
const SLEEPER: &str = "bench-sleep";

/// Unmeasured requests per worker before a throughput run, so the run sees warm instances.
const WARMUP_PER_WORKER: usize = 3;

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    // On Ctrl-C the bench future is dropped, and with it the server and the peer, whose Drop
    // stops them by PID: nothing started here outlives the bench.
    tokio::select! {
        r = bench(args) => r,
        _ = tokio::signal::ctrl_c() => bail!("interrupted; the processes the bench started are stopped"),
    }
}

/// Whether `--only` lets this runtime through.
fn selected(args: &BenchArgs, lang: Lang) -> bool {
    let key = match lang {
        Lang::Python => "python",
        Lang::Node => "node",
        Lang::Provided => "provided",
    };
    args.only.is_empty() || args.only.iter().any(|o| key.contains(o.as_str()))
}

async fn bench(mut args: BenchArgs) -> anyhow::Result<()> {
    // One column per level: a repeated level would only repeat a column.
    let mut seen = std::collections::HashSet::new();
    args.concurrency.retain(|c| seen.insert(*c));
    if args.concurrency.contains(&0) || args.burst == 0 || args.memory_instances == 0 {
        bail!("--concurrency levels, --burst and --memory-instances must be at least 1");
    }
    let started = Instant::now();
    let interpreters = Interpreters::find();
    if args.events {
        let md = events::run(&args, &interpreters).await?;
        outln!("{md}");
        if let Some(path) = &args.write {
            write_between(path, events::BEGIN, events::END, &md)?;
            eprintln!("wrote {}", path.display());
        }
        return Ok(());
    }
    if args.queues {
        let md = queues::run(&args, &interpreters).await?;
        outln!("{md}");
        if let Some(path) = &args.write {
            write_between(path, queues::BEGIN, queues::END, &md)?;
            eprintln!("wrote {}", path.display());
        }
        return Ok(());
    }
    if args.gateway {
        let md = gateway::run(&args, &interpreters).await?;
        outln!("{md}");
        if let Some(path) = &args.write {
            write_between(path, gateway::BEGIN, gateway::END, &md)?;
            eprintln!("wrote {}", path.display());
        }
        return Ok(());
    }
    let mut notes = interpreters.notes.clone();

    eprintln!("load generator ceiling ...");
    let ceiling = ceiling(&args).await?;

    eprintln!("interpreter floors ...");
    let floors = floors(&args, &interpreters).await;

    // The peer is installed first: its cold starts are measured in blocks between Nimbus's.
    let setup = if args.no_peer {
        None
    } else {
        match args.peer {
            BenchPeer::ServerlessOffline => Some(peer_setup(&interpreters).await),
        }
    };
    let mut peer_cold = Vec::new();
    let mut rows = Vec::new();
    eprintln!("nimbus ...");
    let NimbusRun { memory, cpu_slots } = measure_nimbus(
        &args,
        &mut rows,
        &mut notes,
        setup.as_ref().and_then(|s| s.as_ref().ok()),
        &mut peer_cold,
    )
    .await?;

    eprintln!("runtime API floor ...");
    measure_relay_floor(&args, &interpreters, cpu_slots, &mut rows, &mut notes).await;

    let peer = match setup {
        None => PeerState::Skipped,
        Some(Err(e)) => PeerState::Unavailable(e),
        Some(Ok(setup)) => {
            eprintln!("serverless-offline ...");
            measure_peer(&args, &setup, peer_cold, &mut rows, &mut notes).await
        }
    };

    notes.push(format!(
        "The whole run took {:.0} s.",
        started.elapsed().as_secs_f64()
    ));
    let report = Report {
        when: now_utc(),
        machine: machine(&interpreters),
        command: command_line(),
        cold_n: args.cold,
        duration: args.duration,
        concurrency: args.concurrency.clone(),
        burst_n: args.burst,
        rows,
        floors,
        memory,
        ceiling,
        peer,
        notes,
    };
    let md = report.markdown();
    outln!("{md}");
    if let Some(path) = &args.write {
        write_block(path, &md)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn write_block(path: &Path, block: &str) -> anyhow::Result<()> {
    write_between(path, report::BEGIN, report::END, block)
}

/// Records `block` in the file at `path` between the markers `begin` and `end` (appended,
/// framed by them, when the file has none).
fn write_between(path: &Path, begin: &str, end: &str, block: &str) -> anyhow::Result<()> {
    let existing = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    std::fs::write(path, report::replace_between(&existing, begin, end, block))
        .with_context(|| format!("writing {}", path.display()))
}

/// Creates the python hello on the server under test (256 MB, 30 s) and returns its name;
/// `suite` names the run that needs it, for the error when `--only` left it out.
async fn create_python_hello(
    client: &Client,
    args: &BenchArgs,
    notes: &mut Vec<String>,
    suite: &str,
) -> anyhow::Result<&'static str> {
    let functions = functions(args, notes)?;
    let python = functions
        .iter()
        .find(|f| f.lang == Lang::Python)
        .ok_or_else(|| {
            anyhow::anyhow!("the {suite} bench needs the python hello (--only python)")
        })?;
    client
        .create_function(
            python.name,
            &python.code,
            json!({ "Runtime": python.runtime, "Handler": python.handler, "MemorySize": 256, "Timeout": 30 }),
        )
        .await
        .with_context(|| format!("creating {}", python.name))?;
    Ok(python.name)
}

/// The load generator against a trivial local server, at c=1 and the top concurrency.
async fn ceiling(args: &BenchArgs) -> anyhow::Result<Vec<loadgen::LoadRun>> {
    let server = loadgen::TrivialServer::start().context("starting the trivial server")?;
    let target = Target::invoke(&format!("http://{}", server.addr), "ceiling")?;
    let top = args.concurrency.iter().copied().max().unwrap_or(1);
    let mut levels = vec![1];
    if top > 1 {
        levels.push(top);
    }
    let mut runs = Vec::new();
    for c in levels {
        runs.push(loadgen::closed_loop(&target, c, WARMUP_PER_WORKER, args.duration).await);
    }
    Ok(runs)
}

/// The host's interpreters as the runtimes use them: python3 resolved past shims (pyenv's
/// shim is a shell script that would add its own start-up to every figure), node from PATH.
struct Interpreters {
    python: Option<PathBuf>,
    node: Option<PathBuf>,
    python_version: String,
    node_version: String,
    notes: Vec<String>,
}

impl Interpreters {
    fn find() -> Interpreters {
        let out = |prog: &str, args: &[&str]| {
            std::process::Command::new(prog)
                .args(args)
                .stderr(std::process::Stdio::null())
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        };
        let python = out(
            "python3",
            &[
                "-c",
                "import sys, platform; print(sys.executable); print(platform.python_version())",
            ],
        );
        let (python, python_version) = match python.as_deref().map(|s| s.split_once('\n')) {
            Some(Some((exe, v))) => (Some(PathBuf::from(exe)), v.to_string()),
            _ => (None, String::new()),
        };
        let node_version = out("node", &["--version"]).unwrap_or_default();
        let node = (!node_version.is_empty()).then(|| PathBuf::from("node"));
        let mut notes = Vec::new();
        if python.is_none() {
            notes.push("python3 was not found: its floor and the python peer are missing.".into());
        }
        if node.is_none() {
            notes.push("node was not found: its floor and the peer are missing.".into());
        }
        Interpreters {
            python,
            node,
            python_version,
            node_version,
            notes,
        }
    }
}

/// Wall time of `program args` from spawn to exit, `runs` times after one untimed run.
async fn floor(command: &str, program: Option<&Path>, args: &[&str], runs: usize) -> Floor {
    let Some(program) = program.map(Path::to_path_buf) else {
        return Floor {
            command: command.into(),
            latency: Err("interpreter not found".into()),
        };
    };
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let timed = tokio::task::spawn_blocking(move || -> Result<Vec<Duration>, String> {
        let mut out = Vec::with_capacity(runs);
        for i in 0..=runs {
            let t = Instant::now();
            let status = std::process::Command::new(&program)
                .args(&args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .map_err(|e| format!("{}: {e}", program.display()))?;
            let d = t.elapsed();
            if !status.success() {
                return Err(format!("{} exited with {status}", program.display()));
            }
            if i > 0 {
                out.push(d);
            }
        }
        Ok(out)
    })
    .await;
    let latency = match timed {
        Ok(Ok(mut v)) => Latency::of(&mut v).ok_or_else(|| "no runs".to_string()),
        Ok(Err(e)) => Err(e),
        Err(e) => Err(format!("the timing thread failed: {e}")),
    };
    Floor {
        command: command.into(),
        latency,
    }
}

async fn floors(args: &BenchArgs, i: &Interpreters) -> Vec<Floor> {
    vec![
        floor(
            "python3 -c pass",
            i.python.as_deref(),
            &["-c", "pass"],
            args.floor_runs,
        )
        .await,
        floor(
            "node -e 0",
            i.node.as_deref(),
            &["-e", "0"],
            args.floor_runs,
        )
        .await,
    ]
}

/// The same python and node hello handlers, on the same bootstraps, behind the thinnest relay
/// that keeps the Runtime API contract (see `relay`): what the runtime, the load generator and
/// loopback allow here, with no platform in between.
async fn measure_relay_floor(
    args: &BenchArgs,
    interpreters: &Interpreters,
    cpu_slots: Option<usize>,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) {
    let dir = std::env::temp_dir().join(format!("nimbus-bench-floor-{}", std::process::id()));
    for (lang, program) in [
        (Lang::Python, interpreters.python.clone()),
        (Lang::Node, interpreters.node.clone()),
        (Lang::Provided, rust_bootstrap()),
    ] {
        if !selected(args, lang) {
            continue;
        }
        let Some(program) = program else {
            continue;
        };
        let mut row = Row::new(System::RelayFloor, lang);
        eprintln!("  {} ...", lang.label());
        if let Err(e) = relay_floor_runs(args, &dir, lang, &program, cpu_slots, &mut row).await {
            notes.push(format!(
                "The Runtime API floor for {}: {e:#}.",
                lang.label()
            ));
            row.error = Some(format!("{e:#}"));
        }
        rows.push(row);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The CPU slots of the server under test, as its `GET /nimbus/v1/status` reports them
/// (`None` if it cannot be read).
async fn server_cpu_slots(client: &Client) -> Option<usize> {
    let status = client.status().await.ok()?;
    let slots = status.get("cpuSlots")?.get("slots")?.as_u64()?;
    usize::try_from(slots).ok()
}

async fn relay_floor_runs(
    args: &BenchArgs,
    dir: &Path,
    lang: Lang,
    program: &Path,
    cpu_slots: Option<usize>,
    row: &mut Row,
) -> anyhow::Result<()> {
    let runtime_dir = dir.join(format!("runtime-{}", lang.label()));
    let task_root = dir.join(format!("task-{}", lang.label()));
    nimbus_runtime::install_bootstraps(&runtime_dir)
        .with_context(|| format!("writing the bootstraps to {}", runtime_dir.display()))?;
    std::fs::create_dir_all(&task_root)?;
    // The interpreters run the built-in bootstrap with the hello handler; the compiled Rust
    // hello is its own runtime.
    let bootstrap_args: Vec<PathBuf> = match lang {
        Lang::Node => {
            std::fs::write(task_root.join("hello.js"), peer::HELLO_JS)?;
            vec![runtime_dir.join("bootstrap.js")]
        }
        Lang::Python => {
            std::fs::write(task_root.join("hello.py"), peer::HELLO_PY)?;
            vec![runtime_dir.join("bootstrap.py")]
        }
        Lang::Provided => Vec::new(),
    };
    let mut relay = relay::Relay::start()?;
    let target = Target::invoke(&relay.endpoint, "floor")?;
    let mut levels = args.concurrency.clone();
    levels.sort_unstable();
    for c in levels {
        // As many runtimes as Nimbus runs these functions on at once: one per concurrent
        // request, up to the server's CPU slots (the hello functions are measured as computing,
        // so beyond that Nimbus queues them for a slot rather than start more). A server with
        // no slots, or one whose count could not be read, runs one per request.
        let runtimes = match cpu_slots {
            Some(slots) if slots > 0 => c.min(slots),
            _ => c,
        };
        relay
            .start_runtimes(
                runtimes,
                program,
                &bootstrap_args,
                &task_root,
                "hello.handler",
            )
            .await?;
        probe(&target).await.map_err(anyhow::Error::msg)?;
        let run = loadgen::closed_loop(&target, c, WARMUP_PER_WORKER, args.duration).await;
        eprintln!("    {}", progress(&run));
        row.warm.push(run);
    }
    drop(relay);
    Ok(())
}

fn zip(files: &[(&str, &[u8], u32)]) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data, mode) in files {
        w.start_file(
            *name,
            zip::write::SimpleFileOptions::default().unix_permissions(*mode),
        )?;
        w.write_all(data)?;
    }
    Ok(w.finish()?.into_inner())
}

/// The compiled Rust hello (examples/rust-hello) next to this executable, if built.
fn rust_bootstrap() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.join("bootstrap");
    p.is_file().then_some(p)
}

/// A Nimbus function the bench deploys.
struct Function {
    name: &'static str,
    lang: Lang,
    code: Vec<u8>,
    runtime: &'static str,
    handler: &'static str,
}

fn functions(args: &BenchArgs, notes: &mut Vec<String>) -> anyhow::Result<Vec<Function>> {
    let mut out = Vec::new();
    if selected(args, Lang::Python) {
        out.push(Function {
            name: "bench-python",
            lang: Lang::Python,
            code: zip(&[("hello.py", peer::HELLO_PY.as_bytes(), 0o644)])?,
            runtime: "python3",
            handler: "hello.handler",
        });
    }
    if selected(args, Lang::Node) {
        out.push(Function {
            name: "bench-node",
            lang: Lang::Node,
            code: zip(&[("hello.js", peer::HELLO_JS.as_bytes(), 0o644)])?,
            runtime: "nodejs",
            handler: "hello.handler",
        });
    }
    if selected(args, Lang::Provided) {
        match rust_bootstrap() {
            Some(path) => {
                let bin =
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                out.push(Function {
                    name: "bench-provided-rust",
                    lang: Lang::Provided,
                    code: zip(&[("bootstrap", &bin, 0o755)])?,
                    runtime: "provided",
                    handler: "bootstrap",
                });
            }
            None => {
                let msg = "examples/rust-hello is not built next to this binary \
                           (cargo build --release -p rust-hello): the provided function is missing";
                eprintln!("note: {msg}");
                notes.push(format!("{msg}."));
            }
        }
    }
    Ok(out)
}

/// One line on a finished run, for the progress output.
fn progress(run: &loadgen::LoadRun) -> String {
    let lat = run.latency().map_or_else(String::new, |l| {
        format!(", p50 {} µs, p99 {} µs", stats::us(l.p50), stats::us(l.p99))
    });
    let failed = match run.failures.total() {
        0 => String::new(),
        n => format!(", {n} failed ({})", run.failures.summary()),
    };
    format!(
        "c={}: {} inv/s{lat}{failed}",
        run.concurrency,
        stats::per_sec(run.rate())
    )
}

/// Retires every instance of `name` (a configuration change does that) and waits until the
/// platform processes are back to `baseline`.
async fn scale_to_zero(
    client: &Client,
    server: &mut Server,
    name: &str,
    tag: &str,
    baseline: usize,
    limit: Duration,
) -> anyhow::Result<bool> {
    client
        .update_configuration(
            name,
            &json!({ "Environment": { "Variables": { "BENCH_GENERATION": tag } } }),
        )
        .await
        .with_context(|| format!("updating {name}'s configuration"))?;
    Ok(server.settle(baseline, limit).await)
}

/// What the Nimbus part of a run hands on to the rest of it.
struct NimbusRun {
    memory: Result<Memory, String>,
    /// The server's CPU slots, which size the Runtime API floor.
    cpu_slots: Option<usize>,
}

async fn measure_nimbus(
    args: &BenchArgs,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
    setup: Option<&PeerSetup>,
    peer_cold: &mut Vec<(Lang, Result<Cold, String>)>,
) -> anyhow::Result<NimbusRun> {
    let top = args.concurrency.iter().copied().max().unwrap_or(1);
    let max_instances = args
        .max_instances
        .max(args.burst + 8)
        .max(top + 8)
        .max(args.memory_instances + 8);
    let mut server = Server::start(max_instances).await?;
    let client = Client::new(&server.endpoint);
    let cpu_slots = server_cpu_slots(&client).await;
    if cpu_slots.is_none() {
        notes.push(
            "The server under test did not report its CPU slots (`cpuSlots` in `GET /nimbus/v1/status`); the Runtime API floor ran one runtime per concurrent request.".into(),
        );
    }
    let functions = functions(args, notes)?;
    let config = |runtime: &str, handler: &str| json!({ "Runtime": runtime, "Handler": handler, "MemorySize": 256, "Timeout": 30 });
    for f in &functions {
        client
            .create_function(f.name, &f.code, config(f.runtime, f.handler))
            .await
            .with_context(|| format!("creating {}", f.name))?;
    }
    client
        .create_function(
            SLEEPER,
            &zip(&[("sleep.py", SLEEPER_PY.as_bytes(), 0o644)])?,
            config("python3", "sleep.handler"),
        )
        .await
        .with_context(|| format!("creating {SLEEPER}"))?;

    eprintln!("  memory ...");
    let memory = measure_memory(args, &client, &mut server)
        .await
        .map_err(|e| format!("{e:#}"));
    let baseline = server.platform_processes().len();

    for f in &functions {
        eprintln!("  {} ...", f.name);
        let mut row = Row::new(System::Nimbus, f.lang);
        // The peer serves the python and node hellos, not the Rust one.
        let partner = setup.filter(|_| f.lang != Lang::Provided && args.cold > 0);
        let measured = measure_function(
            args,
            &client,
            &mut server,
            f,
            baseline,
            &mut row,
            notes,
            partner,
            peer_cold,
        )
        .await;
        if let Err(e) = measured {
            eprintln!("  {}: {e:#}", f.name);
            row.error = Some(format!("{e:#}"));
        }
        rows.push(row);
        if !scale_to_zero(
            &client,
            &mut server,
            f.name,
            "done",
            baseline,
            Duration::from_secs(60),
        )
        .await?
        {
            notes.push(format!(
                "{}'s instances were still being stopped 60 s after it was retired.",
                f.name
            ));
        }
    }
    notes.extend(server.stop().await);
    Ok(NimbusRun { memory, cpu_slots })
}

/// What the python zygote holds only for itself (its bookkeeping per live runtime shows here;
/// the pages its runtimes share with it are theirs, not the platform's).
fn zygote_uss_kb(server: &Server) -> u64 {
    procfs::zygotes(server.pid)
        .into_iter()
        .filter_map(|p| procfs::uss_kb(p).ok())
        .sum()
}

/// Idle RSS, then RSS and helper PSS with `memory_instances` warm idle instances of the sleeper.
async fn measure_memory(
    args: &BenchArgs,
    client: &Client,
    server: &mut Server,
) -> anyhow::Result<Memory> {
    // Let start-up work (migrations, the first writes) finish before calling the server idle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss_kb = server.rss_kb()?;
    let base_procs = server.platform_processes();
    let base_pss = procfs::total_pss_kb(&base_procs) + zygote_uss_kb(server);

    let target = Target::invoke(&server.endpoint, SLEEPER)?;
    let n = args.memory_instances;
    let burst = loadgen::burst(&target, n).await;
    if burst.ok as usize != n {
        bail!(
            "only {} of {n} sleeper invokes were served ({})",
            burst.ok,
            burst.failures.summary()
        );
    }
    // Wait until every instance is back in the pool, idle.
    let until = Instant::now() + Duration::from_secs(10);
    let instances = loop {
        let s = client.status().await.context("reading /nimbus/v1/status")?;
        let count = |k: &str| s.get(k).and_then(Value::as_u64).unwrap_or(0) as usize;
        let (total, idle) = (count("instances"), count("idleInstances"));
        if total > 0 && total == idle {
            break total;
        }
        if Instant::now() >= until {
            bail!("instances did not go idle within 10 s ({idle} of {total} idle)");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Two seconds to settle: the server hands the burst's freed heap back to the kernel once it
    // has been quiet for a 250 ms tick, at most once a second (`Runtime::start_heap_trimmer`).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = server.rss_kb()?;
    let procs = server.platform_processes();
    let pss = procfs::total_pss_kb(&procs) + zygote_uss_kb(server);
    let n = instances as f64;
    let memory = Memory {
        idle_rss_kb,
        instances,
        rss_per_instance_kb: (rss as f64 - idle_rss_kb as f64) / n,
        helpers_pss_per_instance_kb: (pss as f64 - base_pss as f64) / n,
        helper_processes: procs.len().saturating_sub(base_procs.len()),
        function: format!("{SLEEPER} (python)"),
    };
    scale_to_zero(
        client,
        server,
        SLEEPER,
        "done",
        base_procs.len(),
        Duration::from_secs(30),
    )
    .await?;
    Ok(memory)
}

/// Whether a Nimbus invoke was a cold start: its REPORT line (in the log tail) has an Init
/// Duration, and the hello handler, where it says, saw a freshly loaded module.
fn nimbus_cold(answer: &Answer) -> bool {
    let tail = answer
        .headers
        .get("x-amz-log-result")
        .and_then(|v| {
            base64::engine::general_purpose::STANDARD
                .decode(v.as_bytes())
                .ok()
        })
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let reported = tail
        .lines()
        .any(|l| l.starts_with("REPORT ") && l.contains("Init Duration"));
    reported && handler_cold(&answer.body) != Some(false)
}

/// The hello handlers' own `cold` flag, if the body has one.
fn handler_cold(body: &Bytes) -> Option<bool> {
    serde_json::from_slice::<Value>(body)
        .ok()?
        .get("cold")?
        .as_bool()
}

/// One invoke of a cold-start series: timed, and counted only if `is_cold` says it was one.
async fn cold_invoke(
    conn: &mut Option<Conn>,
    target: &Target,
    cold: &mut Cold,
    samples: &mut Vec<Duration>,
    is_cold: fn(&Answer) -> bool,
) {
    let Some(c) = loadgen::connected(conn, target.addr, &mut cold.failures).await else {
        return;
    };
    let t = Instant::now();
    match c.call(target).await {
        Ok(answer) => {
            let took = t.elapsed();
            match loadgen::classify(answer.status, &answer.headers, Some(&answer.body)) {
                Ok(()) if is_cold(&answer) => {
                    cold.verified += 1;
                    samples.push(took);
                }
                Ok(()) => {}
                Err(f) => cold.failures.add(f),
            }
        }
        Err(e) => {
            cold.failures.add(e);
            *conn = None;
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn measure_function(
    args: &BenchArgs,
    client: &Client,
    server: &mut Server,
    f: &Function,
    baseline: usize,
    row: &mut Row,
    notes: &mut Vec<String>,
    partner: Option<&PeerSetup>,
    peer_cold: &mut Vec<(Lang, Result<Cold, String>)>,
) -> anyhow::Result<()> {
    let target = Target::invoke(&server.endpoint, f.name)?;

    // Cold starts: a configuration change retires every instance, so the next invoke starts a
    // new one. Only that invoke is timed, once the retired instance's processes are gone and
    // the spare pool is full again (the table's figure), and then again back to back. The
    // peer's cold starts of the same handler run in blocks between the paced series' blocks.
    let mut blocks = match partner {
        None => None,
        Some(setup) => {
            eprintln!(
                "    serverless-offline {} cold, in blocks between ours ...",
                f.lang.label()
            );
            match PeerBlocks::start(setup, f.lang, args.cold).await {
                Ok(b) => Some(b),
                Err(e) => {
                    peer_cold.push((f.lang, Err(format!("its cold-start mode: {e}"))));
                    None
                }
            }
        }
    };
    let spares = spare_counts(client).await;
    let paced = cold_series(
        args,
        client,
        server,
        f,
        baseline,
        Pacing::SparesFull(&spares),
        blocks.as_mut(),
    )
    .await;
    if let Some(b) = blocks {
        let (cold, note) = b.finish().await;
        peer_cold.push((f.lang, Ok(cold)));
        notes.extend(note);
    }
    let (paced, paced_note) = paced?;
    row.cold = Some(paced);
    notes.extend(paced_note);
    let (rushed, rushed_note) =
        cold_series(args, client, server, f, baseline, Pacing::BackToBack, None).await?;
    notes.extend(rushed_note);
    if let Some(l) = &rushed.latency {
        notes.push(format!(
            "{} back to back (each cold start as soon as the last instance is gone, without \
             waiting for the spare pool to refill): cold p50 {} ms, p99 {} ms over {} \
             verified cold starts",
            f.name,
            stats::ms(l.p50),
            stats::ms(l.p99),
            rushed.verified
        ));
    }

    for &c in &args.concurrency {
        let run = loadgen::closed_loop(&target, c, WARMUP_PER_WORKER, args.duration).await;
        let instances = client
            .status()
            .await
            .ok()
            .and_then(|s| s.get("instances").and_then(Value::as_u64))
            .map_or_else(|| "?".into(), |n| n.to_string());
        eprintln!("    {}; {instances} instances", progress(&run));
        row.warm.push(run);
    }

    eprintln!("    burst of {} ...", args.burst);
    scale_to_zero(
        client,
        server,
        f.name,
        "burst",
        baseline,
        Duration::from_secs(60),
    )
    .await?;
    row.burst = Some(loadgen::burst(&target, args.burst).await);
    Ok(())
}

/// How a cold series spaces its cold starts.
enum Pacing<'a> {
    /// Each waits (up to 500 ms) until the server's spare pool is back to these counts.
    SparesFull(&'a BTreeMap<String, u64>),
    /// Each starts as soon as the retired instance's processes are gone.
    BackToBack,
}

/// Ready spares per kind, from `GET /nimbus/v1/status` (empty if it cannot be read).
async fn spare_counts(client: &Client) -> BTreeMap<String, u64> {
    let Ok(status) = client.status().await else {
        return BTreeMap::new();
    };
    status
        .get("spares")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

/// Every kind has at least as many ready spares as in `full`.
fn refilled(now: &BTreeMap<String, u64>, full: &BTreeMap<String, u64>) -> bool {
    full.iter()
        .all(|(kind, n)| now.get(kind).copied().unwrap_or(0) >= *n)
}

/// `args.cold` forced cold starts of `f`, each timed alone; returns them and a note when the
/// pacing could not be kept. With `peer`, the series is cut into four blocks and the peer's
/// four blocks of cold starts run between them in the order ours, peer, peer, ours, ours,
/// peer, peer, ours: both systems' samples then sit at the same mean time in the run, so a
/// machine that speeds up or slows down steadily moves both alike.
async fn cold_series(
    args: &BenchArgs,
    client: &Client,
    server: &mut Server,
    f: &Function,
    baseline: usize,
    pacing: Pacing<'_>,
    mut peer: Option<&mut PeerBlocks>,
) -> anyhow::Result<(Cold, Option<String>)> {
    let ours = quarters(args.cold);
    // Where the peer's blocks go: two after our first block, two after our third.
    let breaks = [ours[0], ours[0] + ours[1] + ours[2]];
    let target = Target::invoke(&server.endpoint, f.name)?.with_log_tail();
    let mut cold = Cold {
        attempted: args.cold,
        ..Cold::default()
    };
    let mut samples = Vec::with_capacity(args.cold);
    let mut conn: Option<Conn> = None;
    let mut settle = true;
    let mut misses = 0;
    let mut note = None;
    for i in 0..args.cold {
        if let Some(p) = peer.as_deref_mut() {
            if breaks.contains(&i) {
                p.block().await;
                p.block().await;
            }
        }
        let limit = if settle {
            Duration::from_millis(500)
        } else {
            Duration::ZERO
        };
        let mut settled = scale_to_zero(
            client,
            server,
            f.name,
            &format!("cold-{i}"),
            baseline,
            limit,
        )
        .await?;
        if let (Pacing::SparesFull(full), true) = (&pacing, settle) {
            let until = Instant::now() + limit;
            while !refilled(&spare_counts(client).await, full) {
                if Instant::now() >= until {
                    settled = false;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        if settle && !settled {
            misses += 1;
            if misses == 3 {
                settle = false;
                let msg = format!(
                    "{}: the server did not settle (retired instances gone{}) within 500 ms three \
                     times, so the remaining cold starts did not wait for it",
                    f.name,
                    if matches!(pacing, Pacing::SparesFull(_)) {
                        ", spare pool full"
                    } else {
                        ""
                    }
                );
                eprintln!("  {msg}");
                note = Some(format!("{msg}."));
            }
        }
        cold_invoke(&mut conn, &target, &mut cold, &mut samples, nimbus_cold).await;
    }
    // A series too short for four blocks of ours still gives the peer all of its own.
    if let Some(p) = peer {
        while p.block().await {}
    }
    cold.latency = Latency::of(&mut samples);
    Ok((cold, note))
}

/// `n` split into four blocks as even as can be, the larger ones first.
fn quarters(n: usize) -> [usize; 4] {
    let mut q = [n / 4; 4];
    for b in q.iter_mut().take(n % 4) {
        *b += 1;
    }
    q
}

/// serverless-offline installed, with the PATH it runs under.
struct PeerSetup {
    dir: PathBuf,
    path: String,
}

/// Installs the peer (`npm ci`, once) and works out its PATH.
async fn peer_setup(interpreters: &Interpreters) -> Result<PeerSetup, String> {
    let dir = peer::install_dir();
    if let Err(e) = peer::install(&dir).await {
        return Err(format!("installing it failed: {e:#}"));
    }
    // serverless-offline runs `python3` from PATH: the same interpreter Nimbus runs, not the
    // pyenv shim in front of it.
    let mut path = std::env::var("PATH").unwrap_or_default();
    if let Some(dir) = interpreters.python.as_deref().and_then(Path::parent) {
        path = format!("{}:{path}", dir.display());
    }
    Ok(PeerSetup { dir, path })
}

/// The peer's forced cold starts of one handler, taken in blocks between Nimbus's (see
/// [`cold_series`]): serverless-offline in its cold-start mode (`--reloadHandler`), running
/// for the length of the series.
struct PeerBlocks {
    peer: peer::Peer,
    lang: Lang,
    target: Target,
    sizes: std::vec::IntoIter<usize>,
    cold: Cold,
    samples: Vec<Duration>,
    conn: Option<Conn>,
    /// Processes in its group once it had answered its first request.
    idle_group: usize,
    /// The most processes its group held at the end of a block.
    most: usize,
}

impl PeerBlocks {
    async fn start(setup: &PeerSetup, lang: Lang, n: usize) -> Result<PeerBlocks, String> {
        let peer = peer::Peer::start(&setup.dir, true, &setup.path)
            .await
            .map_err(|e| format!("{e:#}"))?;
        let target =
            Target::invoke(&peer.endpoint, &peer_function(lang)).map_err(|e| format!("{e:#}"))?;
        // The first request loads the peer's runner code itself; it is not a handler cold start.
        probe(&target).await?;
        let mut blocks = PeerBlocks {
            idle_group: 0,
            most: 0,
            peer,
            lang,
            target,
            sizes: quarters(n).to_vec().into_iter(),
            cold: Cold {
                attempted: n,
                ..Cold::default()
            },
            samples: Vec::with_capacity(n),
            conn: None,
        };
        blocks.settle().await;
        blocks.idle_group = blocks.peer.group_size();
        Ok(blocks)
    }

    /// The next block of cold starts; false when none was left.
    async fn block(&mut self) -> bool {
        let Some(n) = self.sizes.next() else {
            return false;
        };
        // A fresh connection per block: ours ran for seconds meanwhile, and serverless-offline
        // closes a keep-alive connection after 5 s idle. (The connect is not timed.)
        self.conn = None;
        for _ in 0..n {
            cold_invoke(
                &mut self.conn,
                &self.target,
                &mut self.cold,
                &mut self.samples,
                |a| handler_cold(&a.body) == Some(true),
            )
            .await;
        }
        self.most = self.most.max(self.peer.group_size());
        self.settle().await;
        true
    }

    /// Waits (up to 3 s) until the handler processes of the last block are cleaned up (it
    /// retires them after 1 s idle), so their ending does not fall into our next block.
    async fn settle(&self) {
        let until = Instant::now() + Duration::from_secs(3);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        while self.peer.group_size() > self.idle_group.max(1) && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the peer; the series and a note on its process group.
    async fn finish(mut self) -> (Cold, Vec<String>) {
        self.cold.latency = Latency::of(&mut self.samples);
        let mut notes = Vec::new();
        if self.most > 1 {
            notes.push(format!(
                "serverless-offline's process group held up to {} processes at the end of a block of {} cold starts.",
                self.most,
                self.lang.label()
            ));
        }
        drop(self.conn.take());
        notes.extend(self.peer.stop().await);
        (self.cold, notes)
    }
}

async fn measure_peer(
    args: &BenchArgs,
    setup: &PeerSetup,
    cold: Vec<(Lang, Result<Cold, String>)>,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> PeerState {
    let langs: Vec<Lang> = [Lang::Python, Lang::Node]
        .into_iter()
        .filter(|l| selected(args, *l))
        .collect();
    let mut peer_rows: Vec<Row> = langs
        .iter()
        .map(|l| Row::new(System::ServerlessOffline, *l))
        .collect();
    // Its cold starts were taken between Nimbus's (see `cold_series`).
    for (lang, result) in cold {
        if let Some(row) = peer_rows.iter_mut().find(|r| r.lang == lang) {
            match result {
                Ok(c) => row.cold = Some(c),
                Err(e) => row.stopped(e),
            }
        }
    }

    // Warm: the default mode keeps a handler instance per concurrent request and reuses it.
    let warm = match peer::Peer::start(&setup.dir, false, &setup.path).await {
        Ok(p) => p,
        Err(e) => return PeerState::Unavailable(format!("{e:#}")),
    };
    for row in &mut peer_rows {
        eprintln!("  {} warm ...", row.lang.label());
        let target = match Target::invoke(&warm.endpoint, &peer_function(row.lang)) {
            Ok(t) => t,
            Err(e) => {
                row.stopped(format!("{e:#}"));
                continue;
            }
        };
        if let Err(e) = probe(&target).await {
            row.stopped(e);
            continue;
        }
        for &c in &args.concurrency {
            let run = loadgen::closed_loop(&target, c, WARMUP_PER_WORKER, args.duration).await;
            eprintln!("    {}", progress(&run));
            row.warm.push(run);
        }
    }
    notes.extend(warm.stop().await);
    rows.extend(peer_rows);
    PeerState::Measured
}

fn peer_function(lang: Lang) -> String {
    peer::function_name(match lang {
        Lang::Python => "python",
        _ => "node",
    })
}

/// One invoke that must answer the hello: the peer serves the function at all.
async fn probe(target: &Target) -> Result<(), String> {
    let mut c = Conn::open(target.addr).await.map_err(|e| e.to_string())?;
    let a = c.call(target).await.map_err(|e| e.to_string())?;
    loadgen::classify(a.status, &a.headers, Some(&a.body)).map_err(|e| {
        format!(
            "the first invoke failed: {e}: {}",
            String::from_utf8_lossy(&a.body)
        )
    })?;
    if !a.body.windows(5).any(|w| w.eq_ignore_ascii_case(b"hello")) {
        return Err(format!(
            "the first invoke answered {}",
            String::from_utf8_lossy(&a.body)
        ));
    }
    Ok(())
}

fn now_utc() -> String {
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::now_utc()
        .format(&f)
        .unwrap_or_else(|_| "(unknown time)".into())
}

/// The opening of a `--events`/`--queues`/`--gateway` block: its heading (what ran, when, on
/// what machine) and the command line, with the dash the block's description follows.
fn run_heading(kind: &str, interpreters: &Interpreters) -> String {
    format!(
        "### {kind} run of {} on {}\n\n`{}` — ",
        now_utc(),
        machine(interpreters),
        command_line()
    )
}

/// `nimbus bench --write docs/benchmarks.md`, as this run was started.
fn command_line() -> String {
    let mut parts: Vec<String> = std::env::args().skip(1).collect();
    parts.insert(0, "nimbus".into());
    parts.join(" ")
}

/// CPU model, cores, memory, kernel and the interpreters, from /proc.
fn machine(i: &Interpreters) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_gb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| procfs::kb_field(&s, "MemTotal"))
        .map(|kb| kb as f64 / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mut out = format!("{cpu}, {cores} cores, {mem_gb:.0} GB, Linux {kernel}");
    if !i.python_version.is_empty() {
        out.push_str(&format!(", Python {}", i.python_version));
    }
    if !i.node_version.is_empty() {
        out.push_str(&format!(", Node {}", i.node_version));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue, StatusCode};

    #[test]
    fn the_spare_pool_is_refilled_when_every_kind_is_back_to_its_count() {
        let counts = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
            pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect()
        };
        let full = counts(&[("bare", 2), ("node", 2), ("python", 2)]);
        assert!(refilled(&full, &full));
        assert!(refilled(
            &counts(&[("bare", 2), ("node", 3), ("python", 2)]),
            &full
        ));
        assert!(!refilled(
            &counts(&[("bare", 2), ("node", 2), ("python", 1)]),
            &full
        ));
        // A kind missing from the status counts as none ready.
        assert!(!refilled(&counts(&[("bare", 2), ("node", 2)]), &full));
        // No spares to wait for (a host without sandboxes).
        assert!(refilled(&counts(&[]), &counts(&[])));
    }

    fn answer(tail: Option<&str>, body: &'static str) -> Answer {
        let mut headers = HeaderMap::new();
        if let Some(t) = tail {
            let enc = base64::engine::general_purpose::STANDARD.encode(t);
            headers.insert("x-amz-log-result", HeaderValue::from_str(&enc).unwrap());
        }
        Answer {
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    #[test]
    fn cold_is_read_from_the_report_and_the_handler() {
        let cold_report = "START RequestId: a\nEND RequestId: a\nREPORT RequestId: a\tDuration: 0.52 ms\tInit Duration: 116.08 ms\n";
        let warm_report =
            "START RequestId: a\nEND RequestId: a\nREPORT RequestId: a\tDuration: 0.52 ms\n";
        assert!(nimbus_cold(&answer(
            Some(cold_report),
            r#"{"hello": "world", "cold": true}"#
        )));
        // The Rust hello has no flag: the REPORT line decides.
        assert!(nimbus_cold(&answer(
            Some(cold_report),
            r#"{"message":"hi"}"#
        )));
        assert!(!nimbus_cold(&answer(
            Some(warm_report),
            r#"{"hello": "world", "cold": true}"#
        )));
        // The platform says cold, the handler says it had run before: not a cold start.
        assert!(!nimbus_cold(&answer(
            Some(cold_report),
            r#"{"hello":"world","cold":false}"#
        )));
        assert!(!nimbus_cold(&answer(None, r#"{"cold": true}"#)));
        // A function printing "Init Duration" is not a REPORT line.
        assert!(!nimbus_cold(&answer(
            Some("START\nInit Duration: 3 ms\nREPORT RequestId: a\tDuration: 1 ms\n"),
            "{}"
        )));
    }

    #[test]
    fn the_peer_serves_the_same_handlers() {
        assert!(peer::HELLO_PY.contains("def handler(event, context):"));
        assert!(peer::HELLO_JS.contains("exports.handler"));
        assert_eq!(peer::function_name("python"), "nimbus-bench-bench-python");
    }

    #[test]
    fn a_cold_series_splits_into_four_blocks_that_add_up() {
        assert_eq!(quarters(200), [50, 50, 50, 50]);
        assert_eq!(quarters(7), [2, 2, 2, 1]);
        assert_eq!(quarters(3), [1, 1, 1, 0]);
        assert_eq!(quarters(0), [0, 0, 0, 0]);
        for n in 0..50 {
            let q = quarters(n);
            assert_eq!(q.iter().sum::<usize>(), n);
            assert!(q.iter().max().unwrap_or(&0) - q.iter().min().unwrap_or(&0) <= 1);
        }
    }

    #[test]
    fn command_line_starts_with_nimbus() {
        assert!(command_line().starts_with("nimbus"));
    }
}
