//! `nimbus bench --queues`: the built-in queues over SQS's JSON protocol, beside the store they
//! run on. At each concurrency level, with the exact JSON bodies boto3 sends: SendMessage,
//! SendMessageBatch of 10, ReceiveMessage (10, no wait) followed by a DeleteMessageBatch of what
//! came back, and a send + receive + delete round. In turns with each, the same operations as
//! `Store::queue_ops` calls on a `SqliteStore` in-process — one op per call from as many tokio
//! tasks, and the ops of that many callers in one call (what the engine's group commit makes of
//! them) — and the event source mapping's rate: a python function draining a preloaded queue.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use nimbus_client::Client;
use nimbus_store::{
    now_ms, HandleOutcome, NewMessage, QueueOp, QueueOpResult, QueueRecord, SqliteStore, Store,
};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Deserialize;
use serde_json::{json, Value};

use super::loadgen::{Conn, Failure, Target};
use super::raw::{self, TempStore};
use super::server::Server;
use super::stats;
use super::steps::{self, Bounds, Moved, Step, StepRun};
use super::{BenchArgs, Interpreters};

pub const BEGIN: &str = "<!-- nimbus bench queues: begin -->";
pub const END: &str = "<!-- nimbus bench queues: end -->";

/// Every message's body: a small JSON document, as queues commonly carry.
const BODY: &str = r#"{"orderId": 12345, "item": "widget", "quantity": 3, "note": "bench"}"#;
/// A run also stops after this many messages, so a fast path writes a bounded number of rows.
const MAX_MESSAGES: u64 = 200_000;
/// Messages preloaded for each event source mapping run.
const ESM_MESSAGES: u64 = 20_000;
/// How long an event source mapping run may take to drain its queue.
const ESM_LIMIT: Duration = Duration::from_secs(300);
/// The queues' retention as the store sees it (SQS's default, four days).
const RETENTION_MS: i64 = 4 * 24 * 3600 * 1000;
/// The visibility timeout a receive sets (SQS's default).
const VISIBILITY_MS: i64 = 30_000;

/// The operations measured, in table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Send,
    SendBatch,
    Consume,
    Round,
}

impl Op {
    const ALL: [Op; 4] = [Op::Send, Op::SendBatch, Op::Consume, Op::Round];

    fn label(self) -> &'static str {
        match self {
            Op::Send => "SendMessage",
            Op::SendBatch => "SendMessageBatch of 10",
            Op::Consume => "ReceiveMessage (10, no wait) + DeleteMessageBatch",
            Op::Round => "round: SendMessage + ReceiveMessage + DeleteMessageBatch",
        }
    }

    /// HTTP calls one step makes, and the messages it moves when it does (a consume moves up
    /// to 10), for the floor arithmetic at c=1.
    fn calls_and_items(self) -> (f64, f64) {
        match self {
            Op::Send => (1.0, 1.0),
            Op::SendBatch => (1.0, 10.0),
            Op::Consume => (2.0, 10.0),
            Op::Round => (3.0, 1.0),
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Op::Send | Op::SendBatch => "messages sent",
            Op::Consume => "messages consumed",
            Op::Round => "rounds",
        }
    }
}

/// One operation at one concurrency level, over HTTP and on the raw store.
struct Row {
    op: Op,
    concurrency: usize,
    http: StepRun,
    raw: StepRun,
    /// The ops of all callers in one `queue_ops` call; only above c=1.
    batched: Option<StepRun>,
}

impl Row {
    /// How many times the raw store's one-op-per-call rate the HTTP rate is below.
    fn raw_over_http(&self) -> Option<f64> {
        stats::ratio(self.raw.items_per_sec(), self.http.items_per_sec())
    }
}

/// One event source mapping run.
struct Mapping {
    pollers: u32,
    /// `None` when the queue did not drain within the limit.
    drained: Option<Duration>,
}

pub async fn run(args: &BenchArgs, interpreters: &Interpreters) -> anyhow::Result<String> {
    let started = Instant::now();
    let mut notes = Vec::new();
    let bounds = Bounds {
        duration: args.duration,
        max_items: MAX_MESSAGES,
    };
    let top = args.concurrency.iter().copied().max().unwrap_or(1);

    let server = Server::start(top + 8).await?;
    let client = Client::new(&server.endpoint);
    // The raw store is called while the server sits idle (no function, no mapping yet), so
    // the two never run at once.
    let store = TempStore::open("raw-queues")?;
    let mut rows = Vec::new();
    let mut floors = Vec::new();
    for &c in &args.concurrency {
        eprintln!("queues over HTTP, c={c} ...");
        let url = create_queue(&client, &format!("bench-c{c}")).await?;
        // The HTTP floor: a call that reads the cached queue and writes nothing.
        let floor = Target::sqs(&server.endpoint, "GetQueueUrl")?.with_body(Bytes::from(
            format!("{{\"QueueName\": \"bench-c{c}\"}}").into_bytes(),
        ));
        let floor = super::loadgen::closed_loop(&floor, c, 0, args.duration).await;
        eprintln!(
            "    GetQueueUrl (the HTTP floor): {}",
            super::progress(&floor)
        );
        floors.push(floor);
        let round_url = create_queue(&client, &format!("bench-round-c{c}")).await?;
        for op in Op::ALL {
            let queue = if op == Op::Round { &round_url } else { &url };
            // HTTP and the raw store take turns, ROUNDS times each, seconds apart, so a
            // slow spell of the machine's (a neighbour on the host) falls on both sides
            // rather than on one of them; each side keeps its best run.
            let (mut https, mut raws) = (Vec::new(), Vec::new());
            for round in 1..=ROUNDS {
                let workers = (0..c)
                    .map(|_| HttpStep::new(&server.endpoint, queue, op))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let run = steps::closed_loop(workers, bounds).await;
                eprintln!("    {} ({round}/{ROUNDS}): {}", op.label(), progress(&run));
                https.push(run);
                let raw = raw_run(&store.store, op, c, 1, bounds).await?;
                eprintln!("    raw store, one op per call: {}", progress(&raw));
                raws.push(raw);
            }
            let batched = if c > 1 {
                let b = raw_run(&store.store, op, 1, c, bounds).await?;
                eprintln!("    raw store, {c} ops per call: {}", progress(&b));
                Some(b)
            } else {
                None
            };
            rows.push(Row {
                op,
                concurrency: c,
                http: best(https),
                raw: best(raws),
                batched,
            });
        }
    }

    let python = super::create_python_hello(&client, args, &mut notes, "queues").await?;
    let mut mappings = Vec::new();
    let mut pollers = vec![nimbus_events::mappings::DEFAULT_CONCURRENCY];
    // Lambda's MaximumConcurrency is at least 2.
    if top as u32 > pollers[0] {
        pollers.push(top as u32);
    }
    for p in pollers {
        eprintln!("event source mapping, {p} pollers ...");
        let drained = drain_by_mapping(&client, python, p).await?;
        match drained {
            Some(d) => eprintln!(
                "    {ESM_MESSAGES} messages done in {:.1} s",
                d.as_secs_f64()
            ),
            None => notes.push(format!(
                "With {p} pollers the mapping did not empty the queue within {} s.",
                ESM_LIMIT.as_secs()
            )),
        }
        mappings.push(Mapping {
            pollers: p,
            drained,
        });
    }
    notes.extend(server.stop().await);
    drop(store);
    notes.push(format!(
        "The whole run took {:.0} s.",
        started.elapsed().as_secs_f64()
    ));
    Ok(markdown(
        args,
        interpreters,
        &rows,
        &floors,
        &mappings,
        &notes,
    ))
}

fn progress(r: &StepRun) -> String {
    let mut s = format!(
        "{} items/s ({} in {:.1} s, {} steps)",
        stats::per_sec(r.items_per_sec()),
        r.items,
        r.elapsed.as_secs_f64(),
        r.steps
    );
    if r.failed() > 0 {
        s.push_str(&format!("; failed: {}", r.error_summary()));
    }
    s
}

async fn create_queue(client: &Client, name: &str) -> anyhow::Result<String> {
    let v = client
        .sqs("CreateQueue", &json!({ "QueueName": name }))
        .await
        .with_context(|| format!("creating queue {name}"))?;
    v.get("QueueUrl")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| anyhow!("CreateQueue {name} answered without a QueueUrl: {v}"))
}

// ---- the request bodies, as botocore writes them ----
//
// botocore serialises AWS JSON 1.0 input with Python's `json.dumps` defaults: members in the
// order given, `", "` between items and `": "` after keys. The strings are JSON-escaped with
// serde_json (the bench's are ASCII, where the two escape alike).

fn js(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

fn send_body(url: &str) -> String {
    format!(
        r#"{{"QueueUrl": {}, "MessageBody": {}}}"#,
        js(url),
        js(BODY)
    )
}

fn send_batch_body(url: &str) -> String {
    let entries: Vec<String> = (0..10)
        .map(|i| format!(r#"{{"Id": "{i}", "MessageBody": {}}}"#, js(BODY)))
        .collect();
    format!(
        r#"{{"QueueUrl": {}, "Entries": [{}]}}"#,
        js(url),
        entries.join(", ")
    )
}

fn receive_body(url: &str) -> String {
    format!(
        r#"{{"QueueUrl": {}, "MaxNumberOfMessages": 10, "WaitTimeSeconds": 0}}"#,
        js(url)
    )
}

fn delete_batch_body(url: &str, handles: &[String]) -> String {
    let entries: Vec<String> = handles
        .iter()
        .enumerate()
        .map(|(i, h)| format!(r#"{{"Id": "{i}", "ReceiptHandle": {}}}"#, js(h)))
        .collect();
    format!(
        r#"{{"QueueUrl": {}, "Entries": [{}]}}"#,
        js(url),
        entries.join(", ")
    )
}

// ---- over HTTP ----

/// One worker's connection and prebuilt requests.
struct HttpStep {
    op: Op,
    addr: std::net::SocketAddr,
    conn: Option<Conn>,
    url: String,
    send: Target,
    send_batch: Target,
    receive: Target,
    delete_batch: Target,
}

impl HttpStep {
    fn new(endpoint: &str, url: &str, op: Op) -> anyhow::Result<HttpStep> {
        let body = |s: String| Bytes::from(s.into_bytes());
        let send = Target::sqs(endpoint, "SendMessage")?.with_body(body(send_body(url)));
        Ok(HttpStep {
            op,
            addr: send.addr,
            conn: None,
            url: url.to_string(),
            send,
            send_batch: Target::sqs(endpoint, "SendMessageBatch")?
                .with_body(body(send_batch_body(url))),
            receive: Target::sqs(endpoint, "ReceiveMessage")?.with_body(body(receive_body(url))),
            delete_batch: Target::sqs(endpoint, "DeleteMessageBatch")?,
        })
    }

    /// One request on this worker's connection (reopened when it broke): the answer read as
    /// `T` when the status is 200. Only the fields the step needs are read, as a lean SDK
    /// would, so the load generator's own work stays small beside the server's.
    async fn call<T: DeserializeOwned>(&mut self, target: &Target) -> Result<T, String> {
        if self.conn.is_none() {
            self.conn = Some(Conn::open(self.addr).await.map_err(|e| e.to_string())?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err("no connection".into());
        };
        let answer = match conn.call(target).await {
            Ok(a) => a,
            Err(e) => {
                if matches!(e, Failure::Transport(_) | Failure::Timeout) {
                    self.conn = None;
                }
                return Err(e.to_string());
            }
        };
        if !answer.status.is_success() {
            let v: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
            let kind = v.get("__type").and_then(Value::as_str).unwrap_or("");
            return Err(format!("HTTP {} {kind}", answer.status.as_u16()));
        }
        serde_json::from_slice(&answer.body)
            .map_err(|e| format!("an answer that is not the operation's JSON: {e}"))
    }

    async fn send_one(&mut self) -> Result<(), String> {
        let target = self.send.clone();
        let sent: SendAnswer = self.call(&target).await?;
        if sent.message_id.is_none() {
            return Err("SendMessage answered without a MessageId".into());
        }
        Ok(())
    }

    /// Receives up to 10 and deletes them in one batch: how many were deleted, `None` when the
    /// receive came back empty.
    async fn consume(&mut self) -> Result<Option<u64>, String> {
        let target = self.receive.clone();
        let got: ReceiveAnswer = self.call(&target).await?;
        let handles: Vec<String> = got.messages.into_iter().map(|m| m.receipt_handle).collect();
        if handles.is_empty() {
            return Ok(None);
        }
        let body = delete_batch_body(&self.url, &handles);
        let target = self
            .delete_batch
            .clone()
            .with_body(Bytes::from(body.into_bytes()));
        let v: BatchAnswer = self.call(&target).await?;
        v.outcome("DeleteMessageBatch").map(Some)
    }
}

/// SendMessage's answer, as far as the bench reads it.
#[derive(Deserialize)]
struct SendAnswer {
    #[serde(rename = "MessageId")]
    message_id: Option<String>,
}

/// ReceiveMessage's answer: only the receipt handles.
#[derive(Deserialize)]
struct ReceiveAnswer {
    #[serde(rename = "Messages", default)]
    messages: Vec<ReceivedHandle>,
}

#[derive(Deserialize)]
struct ReceivedHandle {
    #[serde(rename = "ReceiptHandle")]
    receipt_handle: String,
}

/// A batch operation's answer: how many entries succeeded and failed.
#[derive(Deserialize)]
struct BatchAnswer {
    #[serde(rename = "Successful", default)]
    successful: Vec<IgnoredAny>,
    #[serde(rename = "Failed", default)]
    failed: Vec<IgnoredAny>,
}

impl BatchAnswer {
    /// The Successful count; an error when any entry Failed.
    fn outcome(&self, op: &str) -> Result<u64, String> {
        match self.failed.len() {
            0 => Ok(self.successful.len() as u64),
            n => Err(format!("{op}: {n} entries failed")),
        }
    }
}

impl Step for HttpStep {
    async fn step(&mut self) -> Result<Moved, String> {
        match self.op {
            Op::Send => {
                self.send_one().await?;
                Ok(Moved::Items(1))
            }
            Op::SendBatch => {
                let target = self.send_batch.clone();
                let v: BatchAnswer = self.call(&target).await?;
                match v.outcome("SendMessageBatch")? {
                    10 => Ok(Moved::Items(10)),
                    n => Err(format!("SendMessageBatch stored {n} of 10")),
                }
            }
            Op::Consume => Ok(match self.consume().await? {
                Some(n) => Moved::Items(n),
                None => Moved::Exhausted,
            }),
            Op::Round => {
                self.send_one().await?;
                // Another worker may have taken every message meanwhile: still a round.
                self.consume().await?;
                Ok(Moved::Items(1))
            }
        }
    }
}

/// Runs of one row made in turns: how many per side.
const ROUNDS: usize = 3;

/// The fastest of `runs`, carrying every run's failures (a failure in any round counts).
fn best(runs: Vec<StepRun>) -> StepRun {
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for r in &runs {
        for (e, n) in &r.errors {
            *errors.entry(e.clone()).or_default() += n;
        }
    }
    let mut best = runs
        .into_iter()
        .max_by(|a, b| a.items_per_sec().total_cmp(&b.items_per_sec()))
        .unwrap_or_default();
    best.errors = errors;
    best
}

// ---- on the raw store ----

/// `Store::queue_ops` made directly: each step is the op's calls with `per_call` ops each (the
/// ops of that many callers in one transaction).
struct RawStep {
    store: Arc<SqliteStore>,
    queue: String,
    op: Op,
    per_call: usize,
    md5: String,
    worker: u64,
    next: u64,
}

impl RawStep {
    fn messages(&mut self, n: usize, now: i64) -> Vec<NewMessage> {
        (0..n)
            .map(|_| {
                self.next += 1;
                NewMessage {
                    message_id: raw::id(self.worker << 40 | self.next),
                    body: BODY.to_string(),
                    attributes: None,
                    system_attributes: None,
                    md5_body: self.md5.clone(),
                    md5_attributes: None,
                    sent_ms: now,
                    visible_ms: now,
                    expires_ms: now + RETENTION_MS,
                    group_id: None,
                    dedup: None,
                }
            })
            .collect()
    }

    async fn apply(&self, ops: Vec<QueueOp>) -> Result<Vec<QueueOpResult>, String> {
        let results = self.store.queue_ops(ops).await.map_err(|e| e.to_string())?;
        results
            .into_iter()
            .map(|r| r.map_err(|e| e.to_string()))
            .collect()
    }

    /// `per_call` sends of `each` messages in one call.
    async fn send(&mut self, each: usize) -> Result<u64, String> {
        let now = now_ms();
        let ops = (0..self.per_call)
            .map(|_| QueueOp::Send {
                queue: self.queue.clone(),
                messages: self.messages(each, now),
            })
            .collect();
        self.apply(ops).await?;
        Ok((self.per_call * each) as u64)
    }

    /// `per_call` receives of up to 10 in one call, then the deletes of what came back in
    /// another: how many were deleted, `None` when nothing came back.
    async fn consume(&mut self) -> Result<Option<u64>, String> {
        let now = now_ms();
        let ops = (0..self.per_call)
            .map(|_| {
                self.next += 1;
                QueueOp::Receive {
                    queue: self.queue.clone(),
                    max: 10,
                    now_ms: now,
                    visible_until_ms: now + VISIBILITY_MS,
                    fifo: false,
                    redrive: None,
                    receipt: (self.worker << 40 | self.next) as i64,
                }
            })
            .collect();
        let mut deletes = Vec::new();
        for r in self.apply(ops).await? {
            let QueueOpResult::Received { messages, .. } = r else {
                return Err(format!("a receive answered {r:?}"));
            };
            if !messages.is_empty() {
                deletes.push(QueueOp::Delete {
                    queue: self.queue.clone(),
                    handles: messages.iter().map(|m| (m.seq, m.receipt)).collect(),
                });
            }
        }
        if deletes.is_empty() {
            return Ok(None);
        }
        let mut done = 0;
        for r in self.apply(deletes).await? {
            let QueueOpResult::Handles(outcomes) = r else {
                return Err(format!("a delete answered {r:?}"));
            };
            for o in outcomes {
                match o {
                    HandleOutcome::Done => done += 1,
                    other => return Err(format!("a delete found the message {other:?}")),
                }
            }
        }
        Ok(Some(done))
    }
}

impl Step for RawStep {
    async fn step(&mut self) -> Result<Moved, String> {
        match self.op {
            Op::Send => Ok(Moved::Items(self.send(1).await?)),
            Op::SendBatch => Ok(Moved::Items(self.send(10).await?)),
            Op::Consume => Ok(match self.consume().await? {
                Some(n) => Moved::Items(n),
                None => Moved::Exhausted,
            }),
            Op::Round => {
                self.send(1).await?;
                self.consume().await?;
                Ok(Moved::Items(self.per_call as u64))
            }
        }
    }
}

/// One raw run of `op`: `workers` tasks, each putting `per_call` ops in every call, on a queue
/// of its own per (op kind, shape) so each starts where the HTTP run did: the sends fill a
/// queue the consume run then drains.
async fn raw_run(
    store: &Arc<SqliteStore>,
    op: Op,
    workers: usize,
    per_call: usize,
    bounds: Bounds,
) -> anyhow::Result<StepRun> {
    let kind = if op == Op::Round { "round" } else { "main" };
    let queue = format!("raw-{kind}-c{workers}-b{per_call}");
    if store.get_queue(&queue).await.is_err() {
        let now = now_ms();
        store
            .create_queue(QueueRecord {
                name: queue.clone(),
                attributes: "{}".into(),
                tags: Default::default(),
                created_ms: now,
                modified_ms: now,
            })
            .await
            .with_context(|| format!("creating raw queue {queue}"))?;
    }
    let md5 = nimbus_core::sqs::md5_hex(BODY.as_bytes());
    let steps = (0..workers)
        .map(|w| RawStep {
            store: store.clone(),
            queue: queue.clone(),
            op,
            per_call,
            md5: md5.clone(),
            worker: w as u64,
            next: 0,
        })
        .collect();
    Ok(steps::closed_loop(steps, bounds).await)
}

// ---- event source mappings ----

/// Preloads a queue, maps the python hello to it with `pollers` concurrent batches of 10, and
/// times from the mapping's creation until the queue holds nothing, visible or in flight.
async fn drain_by_mapping(
    client: &Client,
    function: &str,
    pollers: u32,
) -> anyhow::Result<Option<Duration>> {
    let name = format!("bench-esm-{pollers}");
    let url = create_queue(client, &name).await?;
    let entries: Vec<Value> = (0..10)
        .map(|i| json!({ "Id": i.to_string(), "MessageBody": BODY }))
        .collect();
    for _ in 0..ESM_MESSAGES / 10 {
        let v = client
            .sqs(
                "SendMessageBatch",
                &json!({ "QueueUrl": url, "Entries": entries }),
            )
            .await
            .context("preloading the mapped queue")?;
        let v: BatchAnswer =
            serde_json::from_value(v).context("reading SendMessageBatch's answer")?;
        v.outcome("SendMessageBatch").map_err(anyhow::Error::msg)?;
    }
    let arn = client
        .sqs(
            "GetQueueAttributes",
            &json!({ "QueueUrl": url, "AttributeNames": ["QueueArn"] }),
        )
        .await?["Attributes"]["QueueArn"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("GetQueueAttributes gave no QueueArn for {name}"))?;
    let t0 = Instant::now();
    let mapping = client
        .create_event_source_mapping(&json!({
            "FunctionName": function,
            "EventSourceArn": arn,
            "BatchSize": 10,
            "ScalingConfig": { "MaximumConcurrency": pollers },
        }))
        .await
        .context("creating the event source mapping")?;
    let uuid = mapping["UUID"]
        .as_str()
        .ok_or_else(|| anyhow!("the new mapping has no UUID: {mapping}"))?
        .to_string();
    let mut drained = None;
    while t0.elapsed() < ESM_LIMIT {
        let v = client
            .sqs(
                "GetQueueAttributes",
                &json!({
                    "QueueUrl": url,
                    "AttributeNames": ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
                }),
            )
            .await?;
        let count = |k: &str| {
            v["Attributes"][k]
                .as_str()
                .and_then(|s| s.parse::<u64>().ok())
        };
        match (
            count("ApproximateNumberOfMessages"),
            count("ApproximateNumberOfMessagesNotVisible"),
        ) {
            (Some(0), Some(0)) => {
                drained = Some(t0.elapsed());
                break;
            }
            (Some(_), Some(_)) => {}
            _ => bail!("GetQueueAttributes gave no message counts: {v}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    client
        .delete_event_source_mapping(&uuid)
        .await
        .context("deleting the event source mapping")?;
    Ok(drained)
}

// ---- the report ----

fn markdown(
    args: &BenchArgs,
    interpreters: &Interpreters,
    rows: &[Row],
    floors: &[super::loadgen::LoadRun],
    mappings: &[Mapping],
    notes: &[String],
) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "{}each operation for {} per concurrency level or until {} messages (a consume run also ends when its queue is empty); HTTP and the raw store one op per call take turns, {} runs each, and each keeps its fastest (failures count from every run). Durability: the store is SQLite in WAL mode with `synchronous=NORMAL`: a send is answered once its transaction is committed to the WAL file, which survives the server process dying; an OS crash or power loss can lose the last commits (the WAL is fsynced at checkpoints, not at every commit).\n",
        super::run_heading("Queue", interpreters),
        humantime::format_duration(args.duration),
        stats::per_sec(MAX_MESSAGES as f64),
        ROUNDS,
    );
    let _ = writeln!(
        md,
        "| operation | unit | c | HTTP /s | HTTP p50 | HTTP p99 | raw store, one op per call /s | raw store, c ops per call /s | raw ÷ HTTP | failed |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let (p50, p99) = stats::p50_p99_cells(r.http.latency().as_ref());
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {p50} | {p99} | {} | {} | {} | {} |",
            r.op.label(),
            r.op.unit(),
            r.concurrency,
            stats::per_sec(r.http.items_per_sec()),
            stats::per_sec(r.raw.items_per_sec()),
            stats::or_dash(r.batched.as_ref(), |b| stats::per_sec(b.items_per_sec())),
            stats::or_dash(r.raw_over_http(), stats::times),
            r.http.failed() + r.raw.failed() + r.batched.as_ref().map_or(0, StepRun::failed),
        );
    }
    if !floors.is_empty() {
        let _ = writeln!(
            md,
            "\n| the HTTP floor: GetQueueUrl (reads the cached queue, writes nothing) | c | calls/s | p50 | p99 |\n|---|---:|---:|---:|---:|"
        );
        for f in floors {
            let (p50, p99) = stats::p50_p99_cells(f.latency().as_ref());
            let _ = writeln!(
                md,
                "| | {} | {} | {p50} | {p99} |",
                f.concurrency,
                stats::per_sec(f.rate())
            );
        }
    }
    if !mappings.is_empty() {
        let _ = writeln!(
            md,
            "\n| event source mapping → python hello | messages | batch size | queue empty after | messages/s |\n|---|---:|---:|---:|---:|"
        );
        for m in mappings {
            let _ = writeln!(
                md,
                "| MaximumConcurrency {} | {ESM_MESSAGES} | 10 | {} | {} |",
                m.pollers,
                stats::or_dash(m.drained, |d| format!("{:.1} s", d.as_secs_f64())),
                stats::or_dash(m.drained, |d| stats::per_sec(
                    ESM_MESSAGES as f64 / d.as_secs_f64()
                )),
            );
        }
    }
    // One verdict per concurrency level: at c=1 each call's fixed costs are on the critical
    // path (a latency measure); above it, requests overlap (a throughput measure).
    let mut levels: Vec<usize> = rows.iter().map(|r| r.concurrency).collect();
    levels.dedup();
    let _ = writeln!(md, "\n| target | measured | verdict |\n|---|---:|---|");
    for c in levels {
        let worst = rows
            .iter()
            .filter(|r| r.concurrency == c)
            .filter_map(|r| r.raw_over_http().map(|x| (x, r)))
            .max_by(|a, b| a.0.total_cmp(&b.0));
        if let Some((x, r)) = worst {
            let _ = writeln!(
                md,
                "| queue throughput within 2× of the raw store (one op per call) at c={c}; worst row: {} | {} | {} |",
                r.op.label(),
                stats::times(x),
                if x <= 2.0 { "pass" } else { "**fail**" }
            );
        }
    }
    // At c=1 every step pays the HTTP floor once per call on top of the store's own time: the
    // best HTTP can do is raw time + calls × floor time, whatever the server does.
    let floor1 = floors
        .iter()
        .find(|f| f.concurrency == 1)
        .filter(|f| f.rate() > 0.0);
    for r in rows.iter().filter(|r| r.concurrency == 1) {
        let (Some(f), Some(x)) = (floor1, r.raw_over_http()) else {
            continue;
        };
        let raw = r.raw.items_per_sec();
        if x <= 2.0 || raw <= 0.0 {
            continue;
        }
        let (calls, items) = r.op.calls_and_items();
        let best = 1.0 / (1.0 / raw + calls / items / f.rate());
        let bound = raw / best;
        let _ = writeln!(
            md,
            "\nAt c=1 a {} step makes {calls} HTTP call(s) for {items} message(s): with the floor's {}/s and the store's {}/s, no server could come closer than {} of the raw rate, so within 2× is {}.",
            r.op.label(),
            stats::per_sec(f.rate()),
            stats::per_sec(raw),
            stats::times(bound),
            if bound > 2.0 { "out of reach at c=1 on this machine" } else { "reachable: the gap is the server's" }
        );
    }
    for r in rows {
        for (what, run) in [
            ("HTTP", Some(&r.http)),
            ("raw", Some(&r.raw)),
            ("raw batched", r.batched.as_ref()),
        ] {
            if let Some(run) = run.filter(|x| x.failed() > 0) {
                let _ = writeln!(
                    md,
                    "\n{} at c={}, {what}: {}.",
                    r.op.label(),
                    r.concurrency,
                    run.error_summary()
                );
            }
        }
    }
    for n in notes {
        let _ = writeln!(md, "\n{n}");
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "http://127.0.0.1:9/000000000000/bench-queue";

    /// The bodies botocore 1.43 wrote for these calls (captured from `before-send`), with the
    /// bench's message body in place of "hello".
    #[test]
    fn bodies_are_botocores() {
        let b = js(BODY);
        assert_eq!(
            send_body(URL),
            format!(
                r#"{{"QueueUrl": "http://127.0.0.1:9/000000000000/bench-queue", "MessageBody": {b}}}"#
            )
        );
        assert_eq!(
            receive_body(URL),
            r#"{"QueueUrl": "http://127.0.0.1:9/000000000000/bench-queue", "MaxNumberOfMessages": 10, "WaitTimeSeconds": 0}"#
        );
        assert_eq!(
            delete_batch_body(URL, &["h0".into(), "h1".into()]),
            r#"{"QueueUrl": "http://127.0.0.1:9/000000000000/bench-queue", "Entries": [{"Id": "0", "ReceiptHandle": "h0"}, {"Id": "1", "ReceiptHandle": "h1"}]}"#
        );
        let batch = send_batch_body(URL);
        assert!(batch.starts_with(
            r#"{"QueueUrl": "http://127.0.0.1:9/000000000000/bench-queue", "Entries": [{"Id": "0", "MessageBody": "{\"orderId\""#
        ));
        assert!(batch.ends_with(r#"{"Id": "9", "MessageBody": "{\"orderId\": 12345, \"item\": \"widget\", \"quantity\": 3, \"note\": \"bench\"}"}]}"#));
        // Every body is JSON the server can read.
        for body in [send_body(URL), receive_body(URL), batch] {
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["QueueUrl"], URL);
        }
    }

    #[test]
    fn batch_answers_count_successes_and_refuse_failures() {
        let read = |s: &str| serde_json::from_str::<BatchAnswer>(s).unwrap();
        let ok = read(r#"{"Successful": [{"Id": "0"}, {"Id": "1"}], "Failed": []}"#);
        assert_eq!(ok.outcome("X"), Ok(2));
        // SQS leaves out an empty list.
        assert_eq!(read(r#"{"Successful": [{"Id": "0"}]}"#).outcome("X"), Ok(1));
        let bad = read(r#"{"Successful": [{"Id": "0"}], "Failed": [{"Id": "1"}]}"#);
        assert_eq!(
            bad.outcome("DeleteMessageBatch"),
            Err("DeleteMessageBatch: 1 entries failed".into())
        );
    }

    fn raw_bounds() -> Bounds {
        Bounds {
            duration: Duration::from_secs(30),
            max_items: 300,
        }
    }

    /// The raw steps move what they say: the consume run deletes exactly what the sends stored
    /// and then finds the queue empty.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn raw_sends_are_consumed_to_the_last_message() {
        let t = TempStore::open("raw-queues-test").unwrap();
        let send = raw_run(&t.store, Op::Send, 2, 1, raw_bounds())
            .await
            .unwrap();
        let batch = raw_run(&t.store, Op::SendBatch, 2, 1, raw_bounds())
            .await
            .unwrap();
        assert_eq!(send.failed() + batch.failed(), 0);
        assert_eq!(batch.items % 10, 0);
        let stored = send.items + batch.items;
        let counts = t
            .store
            .queue_counts("raw-main-c2-b1", now_ms())
            .await
            .unwrap();
        assert_eq!(counts.visible, stored);
        let unbounded = Bounds {
            duration: Duration::from_secs(30),
            max_items: u64::MAX,
        };
        let consume = raw_run(&t.store, Op::Consume, 2, 1, unbounded)
            .await
            .unwrap();
        assert_eq!(consume.failed(), 0, "{}", consume.error_summary());
        assert_eq!(consume.items, stored);
        let counts = t
            .store
            .queue_counts("raw-main-c2-b1", now_ms())
            .await
            .unwrap();
        assert_eq!((counts.visible, counts.in_flight), (0, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batched_raw_rounds_leave_nothing_behind() {
        let t = TempStore::open("raw-rounds-test").unwrap();
        let run = raw_run(&t.store, Op::Round, 1, 8, raw_bounds())
            .await
            .unwrap();
        assert_eq!(run.failed(), 0, "{}", run.error_summary());
        assert_eq!(run.items, run.steps * 8);
        // Each round's receives (10 each) take every message its sends stored.
        let counts = t
            .store
            .queue_counts("raw-round-c1-b8", now_ms())
            .await
            .unwrap();
        assert_eq!((counts.visible, counts.in_flight), (0, 0));
    }
}
