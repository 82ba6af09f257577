//! The command line, as clap types.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "nimbus",
    version,
    about = "Nimbus: AWS Lambda-compatible functions on your own machine"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// The Nimbus server to talk to.
    #[arg(
        long,
        global = true,
        env = "NIMBUS_ENDPOINT",
        default_value = "http://127.0.0.1:9070"
    )]
    pub endpoint: String,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Credentials: `up` requires SigV4 signatures made with them; client commands sign with them.
    #[arg(
        long = "access-key",
        global = true,
        env = "NIMBUS_ACCESS_KEY",
        requires = "client_secret_key"
    )]
    pub client_access_key: Option<String>,
    #[arg(
        long = "secret-key",
        global = true,
        env = "NIMBUS_SECRET_KEY",
        requires = "client_access_key",
        hide_env_values = true
    )]
    pub client_secret_key: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start the platform (API on --api-addr, state in --data-dir).
    Up(Box<UpArgs>),
    /// Create a function from a directory or zip, or update it if it exists.
    Deploy(DeployArgs),
    /// Invoke a function and print its result.
    Invoke(InvokeArgs),
    /// List functions.
    Ls,
    /// Show one function's configuration, versions and aliases.
    Info { name: String },
    /// Delete a function with all its versions and aliases.
    Rm { name: String },
    /// Publish $LATEST as a new immutable version.
    Publish {
        name: String,
        #[arg(long)]
        description: Option<String>,
    },
    /// Manage aliases.
    #[command(subcommand)]
    Alias(AliasCommand),
    /// Show or set a function's reserved and provisioned concurrency.
    Concurrency(ConcurrencyArgs),
    /// Show a function's logs.
    Logs(LogsArgs),
    /// Show a function's metrics over a window, per minute, as a table with sparklines.
    Metrics(MetricsArgs),
    /// Schedules: EventBridge rate/cron expressions that invoke a function.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Manage HTTP APIs (the API gateway): routes, stages, deployments.
    #[command(subcommand)]
    Api(ApiCommand),
    /// Queues (SQS-compatible): create, inspect, send, receive, and attach them to functions.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Report which isolation features and runtimes this machine supports.
    Doctor(DoctorArgs),
    /// Measure cold starts, warm latency, throughput, bursts and memory on a private server,
    /// against serverless-offline and the interpreters' own start-up, in one table.
    Bench(BenchArgs),
}

/// With only NAME, shows the settings; each flag changes one.
#[derive(Args, Debug, Clone)]
pub struct ConcurrencyArgs {
    pub name: String,
    /// Reserve this many concurrent executions for the function (its maximum too).
    #[arg(long, conflicts_with = "no_reserved")]
    pub reserved: Option<u32>,
    /// Remove the reservation.
    #[arg(long)]
    pub no_reserved: bool,
    /// Keep this many instances of --qualifier initialised at all times.
    #[arg(long, requires = "qualifier", conflicts_with = "no_provisioned")]
    pub provisioned: Option<u32>,
    /// Remove the provisioned concurrency of --qualifier.
    #[arg(long, requires = "qualifier")]
    pub no_provisioned: bool,
    /// The version number or alias that --provisioned applies to.
    #[arg(long, short)]
    pub qualifier: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Forced cold starts to time per function (each one a new instance).
    #[arg(long, default_value_t = 200)]
    pub cold: usize,
    /// Time per closed-loop throughput run (e.g. 5s, 500ms).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Concurrency levels for the throughput runs; warm latency is read from the c=1 run.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 16, 64])]
    pub concurrency: Vec<usize>,
    /// Concurrent invokes fired at once at a function scaled to zero.
    #[arg(long, default_value_t = 200)]
    pub burst: usize,
    /// Warm instances held while measuring memory per instance.
    #[arg(long, default_value_t = 20)]
    pub memory_instances: usize,
    /// Runs of `python3 -c pass` and `node -e 0` for the interpreter floors.
    #[arg(long, default_value_t = 30)]
    pub floor_runs: usize,
    /// `--max-instances` of the server under test (raised to fit the burst and concurrency).
    #[arg(long, default_value_t = 256)]
    pub max_instances: usize,
    /// The peer to compare against, in the same run.
    #[arg(long, value_enum, default_value_t = BenchPeer::ServerlessOffline)]
    pub peer: BenchPeer,
    /// Measure Nimbus only.
    #[arg(long)]
    pub no_peer: bool,
    /// Measure the API gateway instead: gateway-added latency over the Invoke API, the mock
    /// integration's throughput beside nginx's, and serverless-offline's HTTP emulation.
    #[arg(long, conflicts_with_all = ["events", "queues"])]
    pub gateway: bool,
    /// Measure durable asynchronous invocation instead: Event accepts per second and how fast
    /// the accepted events are processed, beside the store's raw insert rate.
    #[arg(long, conflicts_with = "queues")]
    pub events: bool,
    /// Measure the queues instead: SendMessage, SendMessageBatch, receive + delete and a
    /// round over SQS's JSON protocol beside the same store operations made in-process, and an
    /// event source mapping draining a preloaded queue into the python hello.
    #[arg(long)]
    pub queues: bool,
    /// Only functions whose runtime is one of these (python, node, provided).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Record the result in this markdown file (between marker comments).
    #[arg(long)]
    pub write: Option<PathBuf>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchPeer {
    /// serverless-offline 13 on serverless v3, installed with npm under target/bench-peers.
    ServerlessOffline,
}

#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    /// Address of the management and Invoke API.
    #[arg(long, env = "NIMBUS_API_ADDR")]
    pub api_addr: Option<String>,
    /// Address of the API gateway listener (HTTP APIs); default 127.0.0.1:8080.
    #[arg(long, env = "NIMBUS_GATEWAY_ADDR")]
    pub gateway_addr: Option<String>,
    /// PEM certificate chain: the gateway listener serves HTTPS (with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Directory for all state (database, code, runtime files).
    #[arg(long, env = "NIMBUS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// A TOML config file; flags override it.
    #[arg(long, env = "NIMBUS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Deploy the bundled example functions.
    #[arg(long)]
    pub with_examples: bool,
    /// Node-wide limit on instances.
    #[arg(long)]
    pub max_instances: Option<usize>,
    /// Threads that serve requests (the async runtime's workers). Default: one fewer than the
    /// machine's CPUs, at least 1, leaving a CPU to the functions.
    #[arg(long, env = "NIMBUS_WORKERS")]
    pub workers: Option<usize>,
    /// How long a worker with nothing to do watches for new work before it sleeps, while the
    /// machine has no more runnable tasks than CPUs (e.g. 100us, at most 1ms); 0 turns it off.
    /// Waking a sleeping CPU costs tens of microseconds on a virtual machine. Default 100us.
    #[arg(long, env = "NIMBUS_IDLE_SPIN")]
    pub idle_spin: Option<String>,
    /// Spare sandboxes kept ready per kind (python, node, bare) so cold starts skip building
    /// one; 0 turns them off. Default 2.
    #[arg(long)]
    pub spares: Option<usize>,
    /// How long an invocation may wait for a free instance on a full node (a burst beyond
    /// --max-instances) before it is throttled with 429 (e.g. 10s); also the longest it waits
    /// in line for a CPU slot before it runs without one.
    #[arg(long)]
    pub queue_timeout: Option<String>,
    /// Invocations of computing functions that run at once; past it they wait in line for a
    /// slot (while the line moves, see --cpu-slot-wait) rather than each taking an instance. A
    /// function takes slots when the server measures that its runtime is on a CPU (or waiting
    /// for one) for at least half of an invocation, runs straight through it, or sleeps at most
    /// 1 ms in it. Default: four per CPU; 0 turns the limit off; at most 65536.
    #[arg(long, env = "NIMBUS_CPU_SLOTS")]
    pub cpu_slots: Option<usize>,
    /// How long the line for CPU slots may go without a slot being freed before the
    /// invocations waiting in it run without one (e.g. 20ms, at most 10s). Default 20ms.
    #[arg(long, env = "NIMBUS_CPU_SLOT_WAIT")]
    pub cpu_slot_wait: Option<String>,
    /// Reap instances idle this long (e.g. 300s, 5m).
    #[arg(long)]
    pub idle_timeout: Option<String>,
    /// The wait before an asynchronous invocation's first retry; each further retry waits twice
    /// as long (default 1s).
    #[arg(long)]
    pub async_retry_base: Option<String>,
    /// Keep logs this long (e.g. 7d).
    #[arg(long)]
    pub log_retention: Option<String>,
    /// Keep per-minute metrics this many hours (at least 24; default 48).
    #[arg(long)]
    pub metrics_retention_hours: Option<u64>,
    /// The python3 interpreter for the python3 runtime (default: python3 on PATH).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// The node interpreter for the nodejs runtime (default: node on PATH).
    #[arg(long)]
    pub node: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct DeployArgs {
    /// A directory (zipped for you) or a .zip file.
    pub path: PathBuf,
    #[arg(long)]
    pub name: String,
    /// python3, nodejs, provided (or AWS names such as python3.12, nodejs20.x, provided.al2023).
    #[arg(long)]
    pub runtime: String,
    /// MODULE.FUNCTION for python3/nodejs; anything (conventionally "bootstrap") for provided.
    #[arg(long)]
    pub handler: Option<String>,
    /// Memory in MB (128-10240).
    #[arg(long)]
    pub memory: Option<u32>,
    /// Timeout in seconds (1-900).
    #[arg(long)]
    pub timeout: Option<u32>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    #[arg(long)]
    pub description: Option<String>,
    /// Publish a version after deploying.
    #[arg(long)]
    pub publish: bool,
}

#[derive(Args, Debug, Clone)]
pub struct InvokeArgs {
    pub name: String,
    /// JSON payload, or @FILE to read it from a file.
    #[arg(long)]
    pub payload: Option<String>,
    /// Version number or alias.
    #[arg(long)]
    pub qualifier: Option<String>,
    /// Invoke asynchronously (InvocationType=Event).
    #[arg(long = "async")]
    pub is_async: bool,
    /// Validate only (InvocationType=DryRun).
    #[arg(long)]
    pub dry_run: bool,
    /// Print the log tail of the invocation to stderr.
    #[arg(long)]
    pub log: bool,
}

#[derive(Subcommand, Debug, Clone)]
pub enum AliasCommand {
    /// Create an alias: `alias create FUNCTION ALIAS --version 1 [--weight 2=0.1]`.
    Create(AliasArgs),
    /// Point an alias elsewhere or change its weights.
    Update(AliasArgs),
    /// Delete an alias.
    Rm { function: String, alias: String },
    /// List a function's aliases.
    Ls { function: String },
}

#[derive(Args, Debug, Clone)]
pub struct AliasArgs {
    pub function: String,
    pub alias: String,
    /// The version the alias points at.
    #[arg(long)]
    pub version: Option<String>,
    /// VERSION=WEIGHT: send this share (0.0-1.0) of invocations to a second version.
    #[arg(long)]
    pub weight: Option<String>,
    #[arg(long)]
    pub description: Option<String>,
}

#[derive(Subcommand, Debug, Clone)]
pub enum ApiCommand {
    /// Create an HTTP API with a `$default` stage that deploys every change.
    Create {
        name: String,
        #[arg(long)]
        description: Option<String>,
        /// CORS: allowed origin (repeatable; `*` for any).
        #[arg(long = "cors-origin", value_name = "ORIGIN")]
        cors_origins: Vec<String>,
        /// CORS: allowed methods (repeatable; `*` for any).
        #[arg(long = "cors-method", value_name = "METHOD")]
        cors_methods: Vec<String>,
        /// CORS: allowed request headers (repeatable).
        #[arg(long = "cors-header", value_name = "HEADER")]
        cors_headers: Vec<String>,
    },
    /// List APIs with their stages and invoke URLs.
    Ls,
    /// Delete an API (by id or name) with its routes, stages and deployments.
    Rm { api: String },
    /// Manage an API's routes.
    #[command(subcommand)]
    Route(RouteCommand),
    /// List an API's routes and what each is integrated with.
    Routes { api: String },
    /// Deploy the API's routes as they are now to a stage (created if new).
    Deploy {
        api: String,
        #[arg(long)]
        stage: String,
        #[arg(long)]
        description: Option<String>,
        /// Stage variable KEY=VALUE (repeatable; replaces the stage's variables).
        #[arg(long = "var", value_name = "KEY=VALUE")]
        vars: Vec<String>,
        /// Write access log lines for the stage in this format ($context variables), or
        /// `default` for Nimbus's JSON format.
        #[arg(long)]
        access_log_format: Option<String>,
    },
    /// List an API's stages: deployment, invoke URL.
    Stages { api: String },
    /// List an API's deployments, newest last.
    Deployments { api: String },
    /// Point a stage back at an earlier deployment.
    Rollback {
        api: String,
        #[arg(long)]
        stage: String,
        /// The deployment id to serve again.
        #[arg(long)]
        to: String,
    },
}

#[derive(Subcommand, Debug, Clone)]
pub enum ScheduleCommand {
    /// `schedule add NAME --expr 'rate(5 minutes)' --function F [--input JSON] [--tz ZONE]`.
    Add {
        name: String,
        /// `rate(N minute|minutes|hour|hours|day|days)` or `cron(min hour dom month dow year)`.
        #[arg(long)]
        expr: String,
        /// The function (NAME or NAME:QUALIFIER) to invoke asynchronously.
        #[arg(long)]
        function: String,
        /// A fixed event (JSON) instead of EventBridge's Scheduled Event.
        #[arg(long)]
        input: Option<String>,
        /// The IANA time zone cron expressions are read in (default UTC).
        #[arg(long)]
        tz: Option<String>,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// List schedules with their next fire times.
    Ls,
    /// Delete a schedule.
    Rm { name: String },
    /// Enable a schedule (it fires from the next period after now).
    Enable { name: String },
    /// Disable a schedule.
    Disable { name: String },
}

#[derive(Subcommand, Debug, Clone)]
pub enum QueueCommand {
    /// Create a queue (a NAME ending in .fifo makes a FIFO queue).
    Create {
        name: String,
        /// Queue attribute KEY=VALUE, e.g. VisibilityTimeout=60 (repeatable).
        #[arg(long = "attr", value_name = "KEY=VALUE")]
        attrs: Vec<String>,
        /// Tag KEY=VALUE (repeatable).
        #[arg(long = "tag", value_name = "KEY=VALUE")]
        tags: Vec<String>,
    },
    /// List queues (whose names start with PREFIX) with their message counts.
    Ls { prefix: Option<String> },
    /// Show every attribute of a queue, after setting those given with --set.
    Attrs {
        name: String,
        /// Set attribute KEY=VALUE first (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Delete a queue and its messages.
    Rm { name: String },
    /// Delete every message in a queue.
    Purge { name: String },
    /// Send a message and print its id.
    Send(QueueSendArgs),
    /// Receive messages and print each one's id, receive count and body.
    Receive(QueueReceiveArgs),
    /// Make a function consume a queue (CreateEventSourceMapping) and print the mapping's UUID.
    Attach(QueueAttachArgs),
    /// List event source mappings (of queue NAME).
    Mappings { name: Option<String> },
    /// Delete an event source mapping by its UUID.
    Detach { uuid: String },
}

#[derive(Args, Debug, Clone)]
pub struct QueueSendArgs {
    pub name: String,
    /// The message body; `-` reads it from standard input (as it is, newlines included).
    pub body: String,
    /// MessageGroupId (required by FIFO queues).
    #[arg(long)]
    pub group: Option<String>,
    /// MessageDeduplicationId (FIFO queues without content-based deduplication need one).
    #[arg(long)]
    pub dedup: Option<String>,
    /// Seconds before the message can be received (0-900).
    #[arg(long, value_name = "SECONDS")]
    pub delay: Option<u32>,
    /// String message attribute NAME=VALUE (repeatable).
    #[arg(long = "attr", value_name = "NAME=VALUE")]
    pub attrs: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct QueueReceiveArgs {
    pub name: String,
    /// At most this many messages (1-10).
    #[arg(long, default_value_t = 1)]
    pub max: u32,
    /// Wait up to this many seconds for a message to arrive (0-20; default: the queue's
    /// ReceiveMessageWaitTimeSeconds).
    #[arg(long, value_name = "SECONDS")]
    pub wait: Option<u32>,
    /// Hide the received messages from other receivers this long (0-43200; default: the
    /// queue's VisibilityTimeout).
    #[arg(long, value_name = "SECONDS")]
    pub visibility: Option<u32>,
    /// Delete the messages once printed.
    #[arg(long)]
    pub delete: bool,
}

#[derive(Args, Debug, Clone)]
pub struct QueueAttachArgs {
    /// The queue to consume.
    pub name: String,
    /// The function (NAME or NAME:QUALIFIER) to invoke with batches of messages.
    #[arg(long)]
    pub function: String,
    /// Messages per batch at most (default 10).
    #[arg(long)]
    pub batch_size: Option<u32>,
    /// Seconds to gather a batch before invoking (MaximumBatchingWindowInSeconds, 0-300).
    #[arg(long, value_name = "SECONDS")]
    pub window: Option<u32>,
    /// At most this many concurrent invocations for the queue (ScalingConfig, 2-1000).
    #[arg(long)]
    pub concurrency: Option<u32>,
    /// The function reports failed messages itself (ReportBatchItemFailures).
    #[arg(long)]
    pub report_failures: bool,
    /// Create the mapping disabled.
    #[arg(long)]
    pub disabled: bool,
}

#[derive(Subcommand, Debug, Clone)]
pub enum RouteCommand {
    /// Add a route: `route add API "GET /items/{id}" --function items[:alias]`.
    Add(RouteAddArgs),
    /// Remove a route by its key or id.
    Rm { api: String, route: String },
}

#[derive(Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("integration").required(true).multiple(false)))]
pub struct RouteAddArgs {
    /// The API's id or name.
    pub api: String,
    /// `METHOD /path` (`{param}`, a last `{proxy+}`, `ANY`) or `$default`.
    pub route_key: String,
    /// Integrate with a function: NAME or NAME:QUALIFIER.
    #[arg(long, group = "integration")]
    pub function: Option<String>,
    /// Integrate with an HTTP backend URL (may use `{param}` and `${stageVariables.x}`).
    #[arg(long, group = "integration")]
    pub http_url: Option<String>,
    /// Answer with a fixed response of this status.
    #[arg(long, group = "integration")]
    pub mock_status: Option<u16>,
    /// The fixed response's body (with --mock-status).
    #[arg(long, requires = "mock_status")]
    pub mock_body: Option<String>,
    /// The fixed response's content type (with --mock-status).
    #[arg(long, requires = "mock_status", default_value = "text/plain")]
    pub mock_content_type: String,
    /// Event payload format for --function: 2.0 (default) or 1.0.
    #[arg(long)]
    pub payload_format: Option<String>,
    /// Integration timeout in milliseconds (50-30000).
    #[arg(long)]
    pub timeout_ms: Option<u64>,
}

#[derive(Args, Debug, Clone)]
pub struct LogsArgs {
    pub name: String,
    /// Keep printing new lines as they arrive.
    #[arg(long, short)]
    pub follow: bool,
    /// Only lines newer than this (e.g. 10m, 2h, 1d).
    #[arg(long)]
    pub since: Option<String>,
    /// Only lines containing this text.
    #[arg(long)]
    pub filter: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct MetricsArgs {
    pub name: String,
    /// Start of the window: a duration before now (30m, 1h, 2d), an ISO-8601 time or epoch ms.
    #[arg(long, default_value = "1h")]
    pub since: String,
    /// End of the window, in the same forms (default: now).
    #[arg(long)]
    pub until: Option<String>,
    /// Only this version ($LATEST, 3) or provisioned-concurrency alias.
    #[arg(long)]
    pub version: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct DoctorArgs {
    #[arg(long)]
    pub python: Option<PathBuf>,
    #[arg(long)]
    pub node: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}
