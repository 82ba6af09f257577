//! `nimbus bench --gateway`: the API gateway's figures. In one run, under the same load
//! generator: the python hello invoked directly through the Invoke API and through a gateway
//! route (the difference is what the gateway adds), the gateway answering a mock integration
//! (its own ceiling) beside nginx returning a fixed 200, and serverless-offline's HTTP API
//! emulation running the same python handler.

use std::fmt::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;

use super::loadgen::{self, LoadRun, Target};
use super::server::Server;
use super::{peer, probe, progress, stats, BenchArgs, Interpreters, WARMUP_PER_WORKER};
use nimbus_client::Client;

/// Returns the event it got: the bench reads the event the gateway builds from it.
const ECHO_PY: &str = "def handler(event, context):\n    return {\"echo\": event}\n";
const ECHO: &str = "bench-echo";

pub const BEGIN: &str = "<!-- nimbus bench gateway: begin -->";
pub const END: &str = "<!-- nimbus bench gateway: end -->";

/// One measured path: its runs per concurrency level, or why it could not be measured.
struct Measured {
    label: &'static str,
    runs: Vec<LoadRun>,
    error: Option<String>,
}

impl Measured {
    fn failed(label: &'static str, error: String) -> Measured {
        Measured {
            label,
            runs: Vec::new(),
            error: Some(error),
        }
    }

    fn at(&self, c: usize) -> Option<&LoadRun> {
        self.runs.iter().find(|r| r.concurrency == c)
    }
}

async fn measure(
    label: &'static str,
    target: anyhow::Result<Target>,
    args: &BenchArgs,
) -> Measured {
    let target = match target {
        Err(e) => return Measured::failed(label, format!("{e:#}")),
        Ok(t) => t,
    };
    let mut path = Measured {
        label,
        runs: Vec::new(),
        error: None,
    };
    eprintln!("  {label} ...");
    if let Err(e) = probe(&target).await {
        return Measured::failed(label, e);
    }
    for &c in &args.concurrency {
        let run = loadgen::closed_loop(&target, c, WARMUP_PER_WORKER, args.duration).await;
        eprintln!("    {}", progress(&run));
        path.runs.push(run);
    }
    path
}

pub async fn run(args: &BenchArgs, interpreters: &Interpreters) -> anyhow::Result<String> {
    let started = Instant::now();
    let mut notes: Vec<String> = Vec::new();
    let top = args.concurrency.iter().copied().max().unwrap_or(1);
    let server = Server::start(top + 8).await?;
    let gateway = server
        .gateway
        .ok_or_else(|| anyhow!("the server under test did not report its gateway address"))?;
    let client = Client::new(&server.endpoint);
    let python = super::create_python_hello(&client, args, &mut notes, "gateway").await?;
    client
        .create_function(
            ECHO,
            &super::zip(&[("echo.py", ECHO_PY.as_bytes(), 0o644)])?,
            json!({ "Runtime": "python3", "Handler": "echo.handler", "MemorySize": 256, "Timeout": 30 }),
        )
        .await
        .with_context(|| format!("creating {ECHO}"))?;
    let api = client
        .create_api(&json!({ "name": "bench", "protocolType": "HTTP" }))
        .await?;
    let api_id = api["apiId"]
        .as_str()
        .ok_or_else(|| anyhow!("CreateApi returned no apiId"))?
        .to_string();
    client
        .create_stage(
            &api_id,
            &json!({ "stageName": "$default", "autoDeploy": true }),
        )
        .await?;
    for (key, integration) in [
        (
            "GET /hello",
            json!({ "integrationType": "AWS_PROXY", "integrationUri": python, "payloadFormatVersion": "2.0" }),
        ),
        (
            "GET /hello/event",
            json!({ "integrationType": "AWS_PROXY", "integrationUri": ECHO, "payloadFormatVersion": "2.0" }),
        ),
        (
            "GET /mock",
            json!({ "integrationType": "MOCK", "mockStatusCode": 200, "mockHeaders": { "content-type": "text/plain" }, "mockBody": "hello" }),
        ),
    ] {
        let i = client.create_integration(&api_id, &integration).await?;
        let id = i["integrationId"].as_str().unwrap_or_default();
        client
            .create_route(
                &api_id,
                &json!({ "routeKey": key, "target": format!("integrations/{id}") }),
            )
            .await?;
    }
    let host = format!("{api_id}.execute-api.localhost");

    eprintln!("gateway ...");
    // The direct invoke carries the very event the gateway builds (the hello echoes it), so
    // both paths give the function the same work and the difference is the gateway's.
    let event = gateway_event(gateway, &host).await;
    let direct = measure(
        "Invoke API → python hello",
        event.and_then(|e| Ok(Target::invoke(&server.endpoint, python)?.with_body(e))),
        args,
    )
    .await;
    let through = measure(
        "gateway → python hello",
        Target::get(gateway, &host, "/hello"),
        args,
    )
    .await;
    let mock = measure(
        "gateway, mock integration",
        Target::get(gateway, &host, "/mock"),
        args,
    )
    .await;
    let rss_kb = server.rss_kb().ok();
    let cpu_slots = super::server_cpu_slots(&client).await;
    notes.extend(server.stop().await);

    eprintln!("runtime API floor ...");
    let floor = {
        let mut floor_args = args.clone();
        floor_args.only = vec!["python".into()];
        let mut rows = Vec::new();
        super::measure_relay_floor(&floor_args, interpreters, cpu_slots, &mut rows, &mut notes)
            .await;
        match rows.into_iter().next() {
            Some(r) => Measured {
                label: "floor: python hello behind a bare Runtime API relay",
                runs: r.warm,
                error: r.error,
            },
            None => Measured::failed(
                "floor: python hello behind a bare Runtime API relay",
                "no python interpreter".into(),
            ),
        }
    };

    eprintln!("nginx ...");
    let nginx = match Nginx::start() {
        Ok(n) => {
            let p = measure(
                "nginx, fixed 200",
                Target::get(n.addr, "127.0.0.1", "/"),
                args,
            )
            .await;
            n.stop();
            p
        }
        Err(e) => Measured::failed("nginx, fixed 200", format!("{e:#}")),
    };

    let offline = if args.no_peer {
        Measured::failed(
            "serverless-offline HTTP API → python hello",
            "skipped (--no-peer)".into(),
        )
    } else {
        eprintln!("serverless-offline ...");
        offline_http(args, interpreters, &mut notes).await
    };

    notes.push(format!(
        "The whole run took {:.0} s.",
        started.elapsed().as_secs_f64()
    ));
    Ok(markdown(
        args,
        interpreters,
        &direct,
        &through,
        &floor,
        &mock,
        &nginx,
        &offline,
        rss_kb,
        &notes,
    ))
}

/// The API Gateway event `GET /hello` produces, as the echoing hello function saw it.
async fn gateway_event(gateway: SocketAddr, host: &str) -> anyhow::Result<bytes::Bytes> {
    // `/hello/event` differs from `/hello` only in its last segment, so the events match in
    // size and shape.
    let target = Target::get(gateway, host, "/hello/event")?;
    let mut conn = loadgen::Conn::open(gateway)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let answer = conn.call(&target).await.map_err(|e| anyhow!("{e}"))?;
    let v: serde_json::Value = serde_json::from_slice(&answer.body).with_context(|| {
        format!(
            "the gateway answered {}",
            String::from_utf8_lossy(&answer.body)
        )
    })?;
    let event = v
        .get("echo")
        .ok_or_else(|| anyhow!("{ECHO} did not echo its event"))?;
    Ok(bytes::Bytes::from(serde_json::to_vec(event)?))
}

async fn offline_http(
    args: &BenchArgs,
    interpreters: &Interpreters,
    notes: &mut Vec<String>,
) -> Measured {
    let label = "serverless-offline HTTP API → python hello";
    let failed = |e: String| Measured::failed(label, e);
    let dir = peer::install_dir();
    if let Err(e) = peer::install(&dir).await {
        return failed(format!("installing it failed: {e:#}"));
    }
    let mut path = std::env::var("PATH").unwrap_or_default();
    if let Some(d) = interpreters.python.as_deref().and_then(Path::parent) {
        path = format!("{}:{path}", d.display());
    }
    let p = match peer::Peer::start(&dir, false, &path).await {
        Ok(p) => p,
        Err(e) => return failed(format!("{e:#}")),
    };
    if let Err(e) = p.wait_http(Duration::from_secs(60)).await {
        notes.extend(p.stop().await);
        return failed(format!("{e:#}"));
    }
    let measured = measure(label, Target::get(p.http, "127.0.0.1", "/hello"), args).await;
    notes.extend(p.stop().await);
    measured
}

/// nginx with a fixed `return 200`, one worker per CPU, access log off: the reference for
/// what a mature HTTP server does on this machine.
struct Nginx {
    child: std::process::Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Nginx {
    fn start() -> anyhow::Result<Nginx> {
        let exe = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or_else(|| anyhow!("nginx is not installed (apt-get install nginx)"))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = std::env::temp_dir().join(format!("nimbus-bench-nginx-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("logs"))?;
        let conf = format!(
            "daemon off;\nworker_processes auto;\npid {pid};\nerror_log stderr warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {tmp};\n  proxy_temp_path {tmp};\n  fastcgi_temp_path {tmp};\n  uwsgi_temp_path {tmp};\n  scgi_temp_path {tmp};\n  keepalive_requests 1000000;\n  server {{\n    listen 127.0.0.1:{port};\n    location / {{ default_type text/plain; return 200 \"hello\"; }}\n  }}\n}}\n",
            pid = dir.join("nginx.pid").display(),
            tmp = dir.display(),
        );
        std::fs::write(dir.join("nginx.conf"), conf)?;
        let child = std::process::Command::new(&exe)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut nginx = Nginx { child, addr, dir };
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                anyhow::bail!("nginx exited ({status}) before listening");
            }
            if Instant::now() >= until {
                nginx.stop_ref();
                anyhow::bail!("nginx did not listen within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(nginx)
    }

    fn stop_ref(&mut self) {
        // SIGQUIT: nginx's graceful stop; its workers follow the master.
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGQUIT);
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    fn stop(mut self) {
        self.stop_ref();
    }
}

#[allow(clippy::too_many_arguments)]
fn markdown(
    args: &BenchArgs,
    interpreters: &Interpreters,
    direct: &Measured,
    through: &Measured,
    floor: &Measured,
    mock: &Measured,
    nginx: &Measured,
    offline: &Measured,
    rss_kb: Option<u64>,
    notes: &[String],
) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "{}each path {} per concurrency level, after {} warm-up requests per connection.\n",
        super::run_heading("Gateway", interpreters),
        humantime::format_duration(args.duration),
        WARMUP_PER_WORKER,
    );
    let _ = writeln!(
        md,
        "| path | concurrency | p50 | p99 | requests/s | failed |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
    for p in [direct, through, floor, mock, nginx, offline] {
        if let Some(e) = &p.error {
            let _ = writeln!(md, "| {} | | | | | {} |", p.label, e.replace('|', "/"));
            continue;
        }
        for r in &p.runs {
            let (p50, p99) = stats::p50_p99_cells(r.latency().as_ref());
            let _ = writeln!(
                md,
                "| {} | {} | {p50} | {p99} | {} | {} |",
                p.label,
                r.concurrency,
                stats::per_sec(r.rate()),
                r.failures.total()
            );
        }
    }
    let top = args.concurrency.iter().copied().max().unwrap_or(1);
    let p50 = |p: &Measured, c: usize| p.at(c).and_then(|r| r.latency()).map(|l| l.p50);
    let rate = |p: &Measured, c: usize| p.at(c).map(|r| r.rate());
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => "pass",
        Some(false) => "**fail**",
        None => "not measured",
    };
    let _ = writeln!(md, "\n| target | measured | verdict |\n|---|---:|---|");
    // Under a closed loop the mean latency is concurrency / throughput: at saturation it says
    // whether the gateway costs CPU per request, where p50 also reflects queueing order.
    let mean_us =
        |p: &Measured, c: usize| rate(p, c).filter(|r| *r > 0.0).map(|r| c as f64 / r * 1e6);
    let mut levels = vec![1];
    if top > 1 {
        levels.push(top);
    }
    for c in levels {
        let added = p50(through, c)
            .zip(p50(direct, c))
            .map(|(g, d)| g.as_secs_f64() * 1e6 - d.as_secs_f64() * 1e6);
        let _ = writeln!(
            md,
            "| gateway-added latency p50 at c={c} ≤ 100 µs (p50 gateway {} vs Invoke API {}; mean {} vs {}) | {} | {} |",
            stats::or_dash(p50(through, c), stats::us_cell),
            stats::or_dash(p50(direct, c), stats::us_cell),
            stats::or_dash(mean_us(through, c), |m| format!("{m:.0} µs")),
            stats::or_dash(mean_us(direct, c), |m| format!("{m:.0} µs")),
            stats::or_dash(added, |a| format!("{a:.0} µs")),
            verdict(added.map(|a| a <= 100.0)),
        );
    }
    let mock_vs_nginx = rate(mock, top)
        .zip(rate(nginx, top))
        .and_then(|(m, n)| stats::ratio(m, n));
    let _ = writeln!(
        md,
        "| mock-integration throughput ≥ 50 % of nginx's, c={top} ({} vs {}) | {} | {} |",
        stats::or_dash(rate(mock, top), |r| format!("{}/s", stats::per_sec(r))),
        stats::or_dash(rate(nginx, top), |r| format!("{}/s", stats::per_sec(r))),
        stats::or_dash(mock_vs_nginx, |r| format!("{:.0} %", r * 100.0)),
        verdict(mock_vs_nginx.map(|r| r >= 0.5)),
    );
    let fn_vs_offline = rate(through, top)
        .zip(rate(offline, top))
        .and_then(|(g, o)| stats::ratio(g, o));
    let floor_vs_offline = rate(floor, top)
        .zip(rate(offline, top))
        .and_then(|(f, o)| stats::ratio(f, o));
    // When even the bare relay cannot reach 10x, no platform on this machine can.
    let out_of_reach = floor_vs_offline.is_some_and(|r| r < 10.0);
    let _ = writeln!(
        md,
        "| function-backed throughput ≥ 10× serverless-offline's, c={top} ({} vs {}; the Runtime API floor {}, {} the peer) | {} | {} |",
        stats::or_dash(rate(through, top), |r| format!("{}/s", stats::per_sec(r))),
        stats::or_dash(rate(offline, top), |r| format!("{}/s", stats::per_sec(r))),
        stats::or_dash(rate(floor, top), |r| format!("{}/s", stats::per_sec(r))),
        stats::or_dash(floor_vs_offline, stats::times),
        stats::or_dash(fn_vs_offline, stats::times),
        match fn_vs_offline.map(|r| r >= 10.0) {
            Some(false) if out_of_reach => "**fail**: out of reach here (the floor misses it)",
            other => verdict(other),
        },
    );
    if let Some(kb) = rss_kb {
        let _ = writeln!(
            md,
            "\nServer RSS after the gateway runs: {}.",
            stats::kb(kb as f64)
        );
    }
    for n in notes {
        let _ = writeln!(md, "\n{n}");
    }
    md
}
