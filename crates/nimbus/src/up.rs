//! `nimbus up`: builds the typed configuration, opens the store, starts the runtime and serves
//! the API until SIGINT/SIGTERM, then shuts down in order.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use nimbus_api::{ApiInner, ApiState, Credentials};
use nimbus_gateway::{Gateway, PublicEndpoint};
use nimbus_runtime::peer::{PeerFilter, PeerRule};
use nimbus_runtime::pool::PoolConfig;
use nimbus_runtime::{
    discover_interpreters, install_bootstraps, CpuGateConfig, Runtime, RuntimeConfig,
};
use nimbus_sandbox::{Launcher, SandboxConfig};
use nimbus_store::{BlobStore, SqliteStore, Store, UnzipLimits};
use nimbus_telemetry::{LogSink, Metrics};
use serde::Deserialize;

use crate::cli::{Global, UpArgs};

/// The server's configuration: defaults, then the config file, then flags.
#[derive(Debug, Clone)]
pub struct Config {
    pub api_addr: String,
    /// The API gateway listener.
    pub gateway_addr: String,
    /// PEM certificate chain and key: the gateway serves HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub data_dir: PathBuf,
    pub with_examples: bool,
    pub max_instances: usize,
    /// The async runtime's worker threads (`--workers`).
    pub workers: usize,
    /// How long an idle worker watches for work before sleeping (`--idle-spin`); zero: never.
    pub idle_spin: Duration,
    /// Spare sandboxes kept ready per kind (python, node, bare); 0 turns them off.
    pub spares: usize,
    /// How long an invocation may wait for capacity on a full node before a 429.
    pub queue_timeout: Duration,
    /// Invocations of CPU-bound functions running at once (0: no limit), and the longest
    /// one waits for a slot.
    pub cpu_slots: usize,
    pub cpu_slot_wait: Duration,
    pub idle_timeout: Duration,
    pub log_retention: Duration,
    /// How long per-minute metrics are kept (at least 24 hours).
    pub metrics_retention: Duration,
    pub python: Option<PathBuf>,
    pub node: Option<PathBuf>,
    pub credentials: Vec<Credentials>,
    /// How long in-flight invocations may run on after SIGTERM.
    pub shutdown_grace: Duration,
    /// The wait before an asynchronous invocation's first retry (doubling after).
    pub async_retry_base: Duration,
}

/// The config file's shape (every key optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    api_addr: Option<String>,
    gateway_addr: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    max_instances: Option<usize>,
    workers: Option<usize>,
    idle_spin: Option<String>,
    spares: Option<usize>,
    queue_timeout: Option<String>,
    cpu_slots: Option<usize>,
    cpu_slot_wait: Option<String>,
    idle_timeout: Option<String>,
    log_retention: Option<String>,
    // The snake_case spelling is accepted too: it is how the setting is often written.
    #[serde(alias = "metrics_retention_hours")]
    metrics_retention_hours: Option<u64>,
    python: Option<PathBuf>,
    node: Option<PathBuf>,
    access_key: Option<String>,
    secret_key: Option<String>,
    shutdown_grace: Option<String>,
    async_retry_base: Option<String>,
}

/// A spin is only worth it for waits shorter than a sleeping CPU's wake-up; past a few of
/// those it only burns the CPU.
const MAX_IDLE_SPIN: Duration = Duration::from_millis(1);

/// A CPU slot is worth waiting for while invocations hand them on; a line that has not moved
/// for longer than this has stalled, and its waiters are better off running at once.
const MAX_CPU_SLOT_WAIT: Duration = Duration::from_secs(10);

/// More CPU slots than this is no limit at all (and a semaphore has a ceiling).
const MAX_CPU_SLOTS: usize = 65_536;

/// Per-minute metrics are promised for at least a day.
const MIN_METRICS_RETENTION_HOURS: u64 = 24;

fn duration(what: &str, s: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(s)
        .with_context(|| format!("{what} {s:?} is not a duration such as 30s, 5m or 7d"))
}

/// A duration setting with a ceiling: `flag`'s value (or `default`), refused when longer than
/// `max`, "the most `limit`".
fn bounded_duration(
    flag: &str,
    value: Option<&str>,
    default: &str,
    max: Duration,
    limit: &str,
) -> anyhow::Result<Duration> {
    let d = duration(flag, value.unwrap_or(default))?;
    if d > max {
        bail!(
            "{flag} {} is longer than the most {limit} ({})",
            humantime::format_duration(d),
            humantime::format_duration(max)
        );
    }
    Ok(d)
}

impl Config {
    pub fn build(args: &UpArgs, global: &Global) -> anyhow::Result<Config> {
        let file: FileConfig = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let access = global.client_access_key.clone().or(file.access_key);
        let secret = global.client_secret_key.clone().or(file.secret_key);
        let credentials = match (access, secret) {
            (Some(a), Some(s)) => vec![Credentials {
                access_key_id: a,
                secret_access_key: s,
            }],
            (None, None) => vec![],
            _ => bail!("an access key needs a secret key and the other way round"),
        };
        let max_instances = args.max_instances.or(file.max_instances).unwrap_or(64);
        if max_instances == 0 {
            bail!("--max-instances must be at least 1");
        }
        let workers = args
            .workers
            .or(file.workers)
            .unwrap_or_else(default_workers);
        if workers == 0 {
            bail!("--workers must be at least 1");
        }
        let idle_spin = bounded_duration(
            "--idle-spin",
            args.idle_spin.as_deref().or(file.idle_spin.as_deref()),
            "100us",
            MAX_IDLE_SPIN,
            "a worker may spin",
        )?;
        let cpu_slot_wait = bounded_duration(
            "--cpu-slot-wait",
            args.cpu_slot_wait
                .as_deref()
                .or(file.cpu_slot_wait.as_deref()),
            "20ms",
            MAX_CPU_SLOT_WAIT,
            "the line for CPU slots may stall",
        )?;
        let cpu_slots = args
            .cpu_slots
            .or(file.cpu_slots)
            .unwrap_or_else(CpuGateConfig::default_slots);
        if cpu_slots > MAX_CPU_SLOTS {
            bail!("--cpu-slots {cpu_slots} is more than {MAX_CPU_SLOTS}; 0 turns the limit off");
        }
        let metrics_retention_hours = args
            .metrics_retention_hours
            .or(file.metrics_retention_hours)
            .unwrap_or(48);
        if metrics_retention_hours < MIN_METRICS_RETENTION_HOURS {
            bail!(
                "--metrics-retention-hours must be at least {MIN_METRICS_RETENTION_HOURS} (got {metrics_retention_hours})"
            );
        }
        let tls = match (
            args.tls_cert.clone().or(file.tls_cert),
            args.tls_key.clone().or(file.tls_key),
        ) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => bail!("--tls-cert and --tls-key go together"),
        };
        Ok(Config {
            gateway_addr: args
                .gateway_addr
                .clone()
                .or(file.gateway_addr)
                .unwrap_or_else(|| "127.0.0.1:8080".into()),
            tls,
            api_addr: args
                .api_addr
                .clone()
                .or(file.api_addr)
                .unwrap_or_else(|| "127.0.0.1:9070".into()),
            data_dir: args
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(".nimbus")),
            with_examples: args.with_examples,
            max_instances,
            workers,
            idle_spin,
            spares: args.spares.or(file.spares).unwrap_or(2),
            queue_timeout: duration(
                "--queue-timeout",
                args.queue_timeout
                    .as_deref()
                    .or(file.queue_timeout.as_deref())
                    .unwrap_or("10s"),
            )?,
            cpu_slots,
            cpu_slot_wait,
            idle_timeout: duration(
                "--idle-timeout",
                args.idle_timeout
                    .as_deref()
                    .or(file.idle_timeout.as_deref())
                    .unwrap_or("300s"),
            )?,
            log_retention: duration(
                "--log-retention",
                args.log_retention
                    .as_deref()
                    .or(file.log_retention.as_deref())
                    .unwrap_or("7d"),
            )?,
            metrics_retention: Duration::from_secs(metrics_retention_hours.saturating_mul(3600)),
            python: args.python.clone().or(file.python),
            node: args.node.clone().or(file.node),
            credentials,
            shutdown_grace: duration(
                "shutdown-grace",
                file.shutdown_grace.as_deref().unwrap_or("10s"),
            )?,
            async_retry_base: duration(
                "--async-retry-base",
                args.async_retry_base
                    .as_deref()
                    .or(file.async_retry_base.as_deref())
                    .unwrap_or("1s"),
            )?,
        })
    }
}

/// One worker per CPU but one, and at least one. The functions run on the same CPUs: on a
/// two-CPU machine a second worker mostly wakes up to find nothing to steal, and each of those
/// cross-CPU wake-ups costs more than the work (docs/benchmarks.md, eleventh session).
fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get().saturating_sub(1))
        .unwrap_or(1)
        .max(1)
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NIMBUS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}

/// Serves until SIGINT/SIGTERM, on the runtime `main` built with `cfg.workers` workers.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    init_tracing();
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&cfg.data_dir)
        .with_context(|| format!("resolving {}", cfg.data_dir.display()))?;

    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&data_dir.join("nimbus.db")).context("opening the database")?);
    let blobs = BlobStore::open(
        &data_dir,
        UnzipLimits {
            max_entries: nimbus_core::Limits::ZIP_ENTRIES,
            max_total_bytes: nimbus_core::Limits::UNZIPPED_BYTES,
        },
    )
    .context("opening the code store")?;
    let runtime_dir = data_dir.join("runtime");
    install_bootstraps(&runtime_dir)
        .with_context(|| format!("installing runtime bootstraps in {}", runtime_dir.display()))?;

    let isolation = nimbus_sandbox::probe();
    let missing: Vec<String> = isolation
        .features()
        .into_iter()
        .filter(|f| !f.enabled)
        .map(|f| format!("{} ({})", f.name, f.detail))
        .collect();
    if missing.is_empty() {
        tracing::info!("sandbox: every isolation feature is on");
    } else {
        tracing::warn!(
            "sandbox: running without {}; see `nimbus doctor`",
            missing.join(", ")
        );
    }
    let interpreters = discover_interpreters(cfg.python.as_deref(), cfg.node.as_deref());
    match &interpreters.python {
        Ok(i) => {
            tracing::info!(python = %i.executable.display(), version = %i.version, "python3 runtime ready")
        }
        Err(e) => tracing::warn!("python3 runtime unavailable: {e}"),
    }
    match &interpreters.node {
        Ok(i) => {
            tracing::info!(node = %i.executable.display(), version = %i.version, "nodejs runtime ready")
        }
        Err(e) => tracing::warn!("nodejs runtime unavailable: {e}"),
    }
    let scratch = data_dir.join("sandbox");
    std::fs::create_dir_all(&scratch)?;
    let helper_exe = std::env::current_exe().context("finding the nimbus executable")?;
    // Helpers are forked from one launcher process when the host allows sandboxes.
    let launcher = if isolation.mounts() {
        match Launcher::start(&helper_exe, &[crate::SANDBOX_LAUNCHER_ARG.to_string()]) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(error = %e, "sandbox launcher unavailable; each sandbox helper will be executed afresh");
                None
            }
        }
    } else {
        None
    };
    let sandbox = SandboxConfig {
        helper_exe,
        helper_args: vec![crate::SANDBOX_HELPER_ARG.to_string()],
        scratch_dir: scratch,
        cgroup_name: format!("nimbus-{}", std::process::id()),
        isolation,
        launcher,
    };
    let stale = sandbox.remove_stale_cgroups("nimbus-");
    if stale > 0 {
        tracing::info!(
            directories = stale,
            "removed empty cgroups left by servers that are gone"
        );
    }
    let (logs, log_writer) = LogSink::start(store.clone(), cfg.log_retention);
    let metrics = Metrics::new();
    let metrics_rollup = metrics.start_rollup(store.clone(), cfg.metrics_retention);
    let runtime = Runtime::new(
        RuntimeConfig {
            runtime_dir,
            mask_paths: vec![data_dir.clone()],
            pool: PoolConfig {
                max_instances: cfg.max_instances,
                idle_timeout: cfg.idle_timeout,
                spares_per_kind: cfg.spares,
                queue_timeout: cfg.queue_timeout,
                uid_base: 200_000,
            },
            cpu_gate: CpuGateConfig {
                slots: cfg.cpu_slots,
                max_wait: cfg.cpu_slot_wait,
                max_line: cfg.queue_timeout,
            },
        },
        sandbox,
        interpreters,
        blobs.clone(),
        logs.clone(),
        metrics.clone(),
    );
    runtime.start_reaper();
    runtime.start_heap_trimmer();
    let gateway = Gateway::new(
        store.clone(),
        runtime.clone(),
        data_dir.join("gateway-logs"),
    );
    metrics.register(gateway.metrics.clone());
    // Bound before the management API so the invoke URLs it reports carry the real port.
    let gateway_listener = tokio::net::TcpListener::bind(&cfg.gateway_addr)
        .await
        .with_context(|| format!("listening on {} (the gateway)", cfg.gateway_addr))?;
    let gateway_addr = gateway_listener.local_addr()?;
    let tls = match &cfg.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key)?),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    gateway.set_endpoint(PublicEndpoint {
        scheme,
        port: gateway_addr.port(),
    });
    let queues = nimbus_events::queues::Queues::start(store.clone());
    metrics.register(queues.metrics());
    let async_metrics = Arc::new(nimbus_events::AsyncMetrics::default());
    metrics.register(async_metrics.clone());
    let events = nimbus_events::AsyncEvents::start(
        store.clone(),
        runtime.clone(),
        async_metrics,
        queues.clone(),
        nimbus_events::AsyncConfig {
            retry_base: cfg.async_retry_base,
            ..Default::default()
        },
    )
    .await
    .context("starting asynchronous invocation")?;
    let mappings =
        nimbus_events::mappings::Mappings::start(store.clone(), runtime.clone(), queues.clone())
            .await
            .context("starting event source mappings")?;
    let state = ApiState::new(ApiInner {
        store: store.clone(),
        blobs: blobs.clone(),
        runtime: runtime.clone(),
        scheduler: nimbus_events::Scheduler::start(store.clone(), events.clone()),
        events: events.clone(),
        metrics: metrics.clone(),
        credentials: cfg.credentials.clone(),
        gateway: gateway.clone(),
        queues: queues.clone(),
        mappings,
    });
    if cfg.with_examples {
        crate::examples::deploy(&store, &blobs)
            .await
            .context("deploying the bundled examples")?;
        crate::examples::deploy_api(&store)
            .await
            .context("creating the example HTTP API")?;
    }
    gateway
        .reload()
        .await
        .context("loading the gateway's APIs")?;
    // Provisioned concurrency configured before a restart is provisioned again.
    nimbus_api::provisioned::sync(&state, None).await;
    let listener = tokio::net::TcpListener::bind(&cfg.api_addr)
        .await
        .with_context(|| format!("listening on {}", cfg.api_addr))?;
    let addr = listener.local_addr()?;
    // Functions share the host's loopback. Without credentials the API has no other way to tell
    // a function from the operator, so sandboxed instances may not connect to it at all; with
    // credentials, SigV4 decides, and a function given keys may call it like any client.
    let rule = match (cfg.credentials.is_empty(), runtime.instance_uids()) {
        (true, Some(uids)) => PeerRule::NotFrom(uids),
        _ => PeerRule::Anyone,
    };
    let listener = PeerFilter::new(listener, rule, "management API");
    tracing::info!(%addr, data_dir = %data_dir.display(), auth = !cfg.credentials.is_empty(), workers = cfg.workers, idle_spin = ?cfg.idle_spin, cpu_slots = cfg.cpu_slots, cpu_slot_wait = ?cfg.cpu_slot_wait, "nimbus API listening");
    tracing::info!(addr = %gateway_addr, tls = cfg.tls.is_some(), "nimbus gateway listening");
    // Lines tests and scripts can wait for (the API's comes last).
    println!("nimbus gateway listening on {scheme}://{gateway_addr}");
    println!("nimbus listening on http://{addr}");

    let app = nimbus_api::service(state);
    // On a signal: stop accepting connections, let running invocations finish within the grace
    // period (the rest are killed and their callers told), then store the metrics minutes held
    // in memory and every pending log line.
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    let (gateway_stop_tx, gateway_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let rt = runtime.clone();
    let grace = cfg.shutdown_grace;
    let drain = tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight invocations (up to {grace:?})");
        let _ = stopped_tx.send(());
        let _ = gateway_stop_tx.send(());
        rt.shutdown(grace).await;
    });
    let gateway_server = tokio::spawn(gateway.clone().serve(gateway_listener, tls, async move {
        let _ = gateway_stop_rx.await;
    }));
    let server = tokio::spawn(async move {
        axum::serve(listener, axum::ServiceExt::into_make_service(app))
            .with_graceful_shutdown(async move {
                let _ = stopped_rx.await;
            })
            .await
    });
    let _ = drain.await;
    // Every invocation has ended; a client connection that still will not close (a stalled
    // upload) gets a few seconds, not forever.
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(e.into()),
        Ok(Err(e)) => tracing::warn!(error = %e, "the API server task failed"),
        Err(_) => tracing::warn!("closing client connections that did not finish within 5 s"),
    }
    if tokio::time::timeout(Duration::from_secs(5), gateway_server)
        .await
        .is_err()
    {
        tracing::warn!("closing gateway connections that did not finish within 5 s");
    }
    // After the last invocation: the minute in progress is stored too, so a restart keeps it.
    metrics_rollup.shutdown().await;
    logs.flush().await;
    drop(log_writer);
    tracing::info!("stopped");
    Ok(())
}

/// The gateway's TLS configuration from PEM files: HTTP/2 and HTTP/1.1 offered by ALPN.
fn tls_acceptor(cert: &Path, key: &Path) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading TLS certificate {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("TLS certificate {} is not PEM", cert.display()))?;
    if certs.is_empty() {
        bail!("TLS certificate {} holds no certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading TLS private key {} (PEM)", key.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("setting up TLS")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not go together")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
