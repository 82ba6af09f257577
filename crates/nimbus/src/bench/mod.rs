//! `nimbus bench`: starts a private server, deploys hello functions (python, node, provided),
//! and measures cold starts, warm latency and throughput through the Invoke API. Prints one
//! markdown table and, with `--write`, records it in docs/benchmarks.md.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use nimbus_client::Client;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::cli::BenchArgs;

const PY: &str = "def handler(event, context):\n    return {\"hello\": \"world\"}\n";
const NODE: &str = "exports.handler = async () => ({ hello: 'world' });\n";

struct Row {
    function: String,
    cold_p50: f64,
    cold_p99: f64,
    warm_p50: f64,
    warm_p99: f64,
    rps: Vec<(usize, f64)>,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
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

/// The server under test, stopped by PID when dropped.
struct Server {
    child: tokio::process::Child,
    endpoint: String,
    _dir: tempdir::Dir,
}

mod tempdir {
    /// A temporary directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

async fn start_server(max_instances: usize) -> anyhow::Result<Server> {
    let dir = std::env::temp_dir().join(format!("nimbus-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(exe)
        .args([
            "up",
            "--api-addr",
            "127.0.0.1:0",
            "--max-instances",
            &max_instances.to_string(),
            "--data-dir",
        ])
        .arg(&dir)
        .env("NIMBUS_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting the server under test")?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let endpoint = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(url) = line.strip_prefix("nimbus listening on ") {
                return Ok::<_, anyhow::Error>(url.trim().to_string());
            }
        }
        bail!("the server exited before it listened")
    })
    .await
    .context("waiting for the server")??;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Server {
        child,
        endpoint,
        _dir: tempdir::Dir(dir),
    })
}

impl Server {
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await;
    }
}

/// The compiled Rust hello (examples/rust-hello) next to this executable, if built.
fn rust_bootstrap() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.join("bootstrap");
    p.is_file().then_some(p)
}

async fn invoke_ok(client: &Client, name: &str) -> anyhow::Result<()> {
    let r = client
        .invoke(
            name,
            Bytes::from_static(b"{}"),
            None,
            "RequestResponse",
            false,
        )
        .await?;
    if let Some(e) = r.function_error {
        bail!(
            "{name} failed ({e}): {}",
            String::from_utf8_lossy(&r.payload)
        );
    }
    Ok(())
}

async fn measure(client: &Client, name: &str, args: &BenchArgs) -> anyhow::Result<Row> {
    // Cold starts: a configuration change retires every instance, so each timed invoke starts one.
    let mut cold = Vec::with_capacity(args.cold);
    for i in 0..args.cold {
        client
            .update_configuration(
                name,
                &json!({ "Environment": { "Variables": { "BENCH_COLD": i.to_string() } } }),
            )
            .await?;
        let t = Instant::now();
        invoke_ok(client, name).await?;
        cold.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    cold.sort_by(f64::total_cmp);

    invoke_ok(client, name).await?;
    let mut warm = Vec::with_capacity(args.warm);
    for _ in 0..args.warm {
        let t = Instant::now();
        invoke_ok(client, name).await?;
        warm.push(t.elapsed().as_secs_f64() * 1_000_000.0);
    }
    warm.sort_by(f64::total_cmp);

    let mut rps = Vec::new();
    for &c in &args.concurrency {
        // Warm c instances first so the measurement is of warm throughput.
        let warmup: Vec<_> = (0..c)
            .map(|_| {
                let client = client.clone();
                let name = name.to_string();
                tokio::spawn(async move { invoke_ok(&client, &name).await })
            })
            .collect();
        for w in warmup {
            w.await??;
        }
        let done = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let until = Instant::now() + Duration::from_secs(args.seconds);
        let started = Instant::now();
        let tasks: Vec<_> = (0..c)
            .map(|_| {
                let (client, name, done, errors) = (
                    client.clone(),
                    name.to_string(),
                    done.clone(),
                    errors.clone(),
                );
                tokio::spawn(async move {
                    while Instant::now() < until {
                        match invoke_ok(&client, &name).await {
                            Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                            Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
        let secs = started.elapsed().as_secs_f64();
        let e = errors.load(Ordering::Relaxed);
        if e > 0 {
            eprintln!("  {name} at concurrency {c}: {e} errors (throttled or failed)");
        }
        rps.push((c, done.load(Ordering::Relaxed) as f64 / secs));
    }
    Ok(Row {
        function: name.to_string(),
        cold_p50: pct(&cold, 0.5),
        cold_p99: pct(&cold, 0.99),
        warm_p50: pct(&warm, 0.5),
        warm_p99: pct(&warm, 0.99),
        rps,
    })
}

fn table(rows: &[Row], args: &BenchArgs) -> String {
    let mut out = String::new();
    out.push_str("| function | cold p50 (ms) | cold p99 (ms) | warm p50 (µs) | warm p99 (µs) |");
    for c in &args.concurrency {
        out.push_str(&format!(" inv/s c={c} |"));
    }
    out.push('\n');
    out.push_str("|---|---|---|---|---|");
    for _ in &args.concurrency {
        out.push_str("---|");
    }
    out.push('\n');
    for r in rows {
        out.push_str(&format!(
            "| {} | {:.1} | {:.1} | {:.0} | {:.0} |",
            r.function, r.cold_p50, r.cold_p99, r.warm_p50, r.warm_p99
        ));
        for (_, v) in &r.rps {
            out.push_str(&format!(" {v:.0} |"));
        }
        out.push('\n');
    }
    out
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let max_c = args.concurrency.iter().copied().max().unwrap_or(1);
    let server = start_server(max_c.max(8) * 2).await?;
    let client = Client::new(&server.endpoint);
    let mut functions: Vec<(String, Vec<u8>, &str, &str)> = vec![
        (
            "bench-python".into(),
            zip(&[("app.py", PY.as_bytes(), 0o644)])?,
            "python3",
            "app.handler",
        ),
        (
            "bench-node".into(),
            zip(&[("index.js", NODE.as_bytes(), 0o644)])?,
            "nodejs",
            "index.handler",
        ),
    ];
    match rust_bootstrap() {
        Some(path) => {
            let bin = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            functions.push(("bench-provided-rust".into(), zip(&[("bootstrap", &bin, 0o755)])?, "provided", "bootstrap"));
        }
        None => eprintln!("note: examples/rust-hello is not built next to this binary (cargo build --release -p rust-hello); skipping the provided function"),
    }
    let mut rows = Vec::new();
    for (name, code, runtime, handler) in &functions {
        if !args.only.is_empty() && !args.only.iter().any(|o| name.contains(o.as_str())) {
            continue;
        }
        eprintln!("measuring {name} ...");
        client
            .create_function(
                name,
                code,
                json!({ "Runtime": runtime, "Handler": handler, "MemorySize": 256 }),
            )
            .await?;
        rows.push(measure(&client, name, &args).await?);
    }
    server.stop().await;
    let t = table(&rows, &args);
    let meta = format!(
        "{} cold starts and {} warm invokes per function; throughput over {} s per concurrency level; client, server and functions share this machine's {} cores.",
        args.cold,
        args.warm,
        args.seconds,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    println!("{t}\n{meta}");
    if let Some(path) = &args.write {
        let existing = std::fs::read_to_string(path).unwrap_or_default();
        let begin = "<!-- nimbus bench: begin -->";
        let end = "<!-- nimbus bench: end -->";
        let block = format!("{begin}\n{t}\n{meta}\n{end}");
        let updated = match (existing.find(begin), existing.find(end)) {
            (Some(b), Some(e)) if e > b => {
                format!("{}{block}{}", &existing[..b], &existing[e + end.len()..])
            }
            _ => format!("{existing}\n{block}\n"),
        };
        std::fs::write(path, updated).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
