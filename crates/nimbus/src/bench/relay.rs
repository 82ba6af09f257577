//! The Runtime API floor: the thinnest relay that keeps Lambda's contract, with the same
//! runtimes Nimbus runs (its python and node bootstraps, unsandboxed) behind it.
//!
//! A warm invoke under Lambda's contract is at least six loopback HTTP messages: the caller's
//! request, the runtime's pending `GET .../invocation/next` answered with the event, the
//! runtime's `POST .../response`, its 202, the answer to the caller, and the runtime's next
//! `GET .../next`. A runtime that pipelines its result and its next `GET .../next` gets the 202
//! with the next event, as Nimbus sends it (`nimbus_runtime::coalesce`). The relay does only
//! that, on one thread with no cross-thread wake-ups, no sandbox, no logs, no metrics and no
//! store, so what it reaches is what the runtime, the load generator and the kernel's loopback
//! path allow on this machine. The bench runs it with as many runtimes as Nimbus would keep busy
//! (one per concurrent request, up to the CPU slots; a job beyond them waits in the relay's
//! queue), so Nimbus cannot beat it by running fewer; a target the relay itself misses is out
//! of reach for that runtime here.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use nimbus_runtime::coalesce::{ConnState, NextGuard};
use tokio::sync::oneshot;

use super::loadgen::ServerThread;

/// One invocation on its way through the relay.
struct Job {
    id: String,
    /// `Lambda-Runtime-Trace-Id`: a new one for every invocation, as Lambda (and Nimbus) send.
    /// Runtimes that put it in their environment (the Rust `lambda_runtime` calls `setenv`) pay
    /// for a new value each time, so a constant one would make the floor cheaper than the
    /// contract allows.
    trace_id: String,
    payload: Bytes,
    reply: oneshot::Sender<Bytes>,
}

#[derive(Default)]
struct Shared {
    /// Invocations no runtime has taken yet.
    queue: Mutex<VecDeque<Job>>,
    /// Runtimes parked in `/next`; the most recently parked is served first, as Nimbus's pool
    /// reuses its most recently idle instance.
    parked: Mutex<Vec<oneshot::Sender<Job>>>,
    /// Taken invocations by request id, until their runtime posts the result.
    inflight: Mutex<HashMap<String, oneshot::Sender<Bytes>>>,
    seq: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Gives the job to a parked runtime, or queues it.
    fn dispatch(&self, mut job: Job) {
        loop {
            let Some(waiter) = lock(&self.parked).pop() else {
                break;
            };
            match waiter.send(job) {
                Ok(()) => return,
                // That runtime's connection went away: try the next one.
                Err(back) => job = back,
            }
        }
        lock(&self.queue).push_back(job);
    }

    /// The next job for a runtime asking `/next`.
    async fn next_job(&self) -> Option<Job> {
        let rx = {
            if let Some(job) = lock(&self.queue).pop_front() {
                return Some(job);
            }
            let (tx, rx) = oneshot::channel();
            lock(&self.parked).push(tx);
            rx
        };
        rx.await.ok()
    }

    fn parked(&self) -> usize {
        lock(&self.parked).len()
    }
}

/// An X-Ray trace header for the `seq`th invocation, in the form Lambda sends.
fn trace_id(seq: u64) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("Root=1-{secs:08x}-{seq:024x};Parent={seq:016x};Sampled=0")
}

type Body = Full<Bytes>;

fn reply(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r
}

async fn invoke(shared: Arc<Shared>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let payload = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(StatusCode::BAD_REQUEST, Bytes::new()),
    };
    let (tx, rx) = oneshot::channel();
    let seq = shared.seq.fetch_add(1, Ordering::Relaxed);
    shared.dispatch(Job {
        id: format!("floor-{seq}"),
        trace_id: trace_id(seq),
        payload,
        reply: tx,
    });
    match rx.await {
        Ok(body) => {
            let mut r = reply(StatusCode::OK, body);
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(_) => reply(StatusCode::BAD_GATEWAY, Bytes::new()),
    }
}

const NEXT: &str = "/2018-06-01/runtime/invocation/next";
const INVOCATION: &str = "/2018-06-01/runtime/invocation/";

async fn runtime_call(
    shared: Arc<Shared>,
    conn: &ConnState,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    if path == NEXT {
        let _answered = NextGuard(conn);
        let Some(job) = shared.next_job().await else {
            return reply(StatusCode::SERVICE_UNAVAILABLE, Bytes::new());
        };
        lock(&shared.inflight).insert(job.id.clone(), job.reply);
        let deadline = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64 + 30_000)
            .unwrap_or(0);
        return Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .header("lambda-runtime-aws-request-id", job.id)
            .header("lambda-runtime-deadline-ms", deadline.to_string())
            .header(
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:000000000000:function:floor",
            )
            .header("lambda-runtime-trace-id", job.trace_id)
            .body(Full::new(job.payload))
            .unwrap_or_else(|_| reply(StatusCode::INTERNAL_SERVER_ERROR, Bytes::new()));
    }
    if let Some(rest) = path.strip_prefix(INVOCATION) {
        if let Some((id, what)) = rest.split_once('/') {
            if what == "response" || what == "error" {
                let waiter = lock(&shared.inflight).remove(id);
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                if let Some(w) = waiter {
                    let _ = w.send(body);
                }
                // Sent with the next event if the runtime has already asked for it.
                conn.result_accepted();
                return reply(StatusCode::ACCEPTED, Bytes::from_static(b"{}"));
            }
        }
    }
    // Init errors and anything else: accepted and ignored (the floor's handlers do not fail).
    reply(StatusCode::ACCEPTED, Bytes::from_static(b"{}"))
}

/// The relay, its two ports, and the runtimes started against it.
pub struct Relay {
    /// Where the load generator invokes (`http://127.0.0.1:PORT`, Lambda's invoke path).
    pub endpoint: String,
    runtime_api: SocketAddr,
    shared: Arc<Shared>,
    runtimes: Vec<std::process::Child>,
    server: Option<ServerThread>,
}

impl Relay {
    pub fn start() -> anyhow::Result<Relay> {
        let invoke_l = std::net::TcpListener::bind("127.0.0.1:0")?;
        let runtime_l = std::net::TcpListener::bind("127.0.0.1:0")?;
        let endpoint = format!("http://{}", invoke_l.local_addr()?);
        let runtime_api = runtime_l.local_addr()?;
        let shared = Arc::new(Shared::default());
        let state = shared.clone();
        // Listener 0 takes invokes, listener 1 is the Runtime API.
        let server = ServerThread::start(
            "bench-relay",
            vec![invoke_l, runtime_l],
            move |i, conn, req| {
                let state = state.clone();
                let conn = conn.clone();
                if i == 1 && req.uri().path() == NEXT {
                    // As Nimbus does: from here a result's 202 held on this connection waits
                    // for this request's event.
                    conn.next_asked();
                }
                async move {
                    if i == 0 {
                        invoke(state, req).await
                    } else {
                        runtime_call(state, &conn, req).await
                    }
                }
            },
        )?;
        Ok(Relay {
            endpoint,
            runtime_api,
            shared,
            runtimes: Vec::new(),
            server: Some(server),
        })
    }

    /// Starts runtimes (`program args...` with Lambda's environment, the handler in
    /// `task_root`) until `n` are running, and waits until every one is parked in `/next`.
    pub async fn start_runtimes(
        &mut self,
        n: usize,
        program: &Path,
        args: &[std::path::PathBuf],
        task_root: &Path,
        handler: &str,
    ) -> anyhow::Result<()> {
        for _ in self.runtimes.len()..n {
            let child = std::process::Command::new(program)
                .args(args)
                .current_dir(task_root)
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("AWS_LAMBDA_RUNTIME_API", self.runtime_api.to_string())
                .env("_HANDLER", handler)
                .env("LAMBDA_TASK_ROOT", task_root)
                .env("AWS_LAMBDA_FUNCTION_NAME", "floor")
                .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
                .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
                .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/floor")
                .env("AWS_LAMBDA_LOG_STREAM_NAME", "floor")
                .env("AWS_REGION", "us-east-1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {}", program.display()))?;
            self.runtimes.push(child);
        }
        let until = Instant::now() + Duration::from_secs(30);
        while self.shared.parked() < self.runtimes.len() {
            if Instant::now() >= until {
                bail!(
                    "only {} of {} runtimes reached /next within 30 s",
                    self.shared.parked(),
                    self.runtimes.len()
                );
            }
            for c in &mut self.runtimes {
                if let Ok(Some(status)) = c.try_wait() {
                    bail!("a runtime exited before its first /next ({status})");
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // Every runtime started here, by its PID, then the relay itself.
        for c in &mut self.runtimes {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.server.take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_invocation_has_its_own_trace_id() {
        let (a, b) = (trace_id(1), trace_id(2));
        assert_ne!(a, b);
        for t in [&a, &b] {
            let root = t.strip_prefix("Root=1-").expect("a Root= field first");
            let (root, rest) = root.split_once(";Parent=").expect("a Parent= field");
            let (epoch, id) = root.split_once('-').expect("epoch-id");
            assert_eq!((epoch.len(), id.len()), (8, 24), "{t}");
            assert!(rest.ends_with(";Sampled=0") && rest.len() == 16 + 10, "{t}");
        }
    }

    #[tokio::test]
    async fn a_queued_job_goes_to_the_next_runtime_and_back() {
        let shared = Arc::new(Shared::default());
        let (tx, rx) = oneshot::channel();
        shared.dispatch(Job {
            id: "a".into(),
            trace_id: String::new(),
            payload: Bytes::from_static(b"{}"),
            reply: tx,
        });
        let job = shared.next_job().await.expect("the queued job");
        assert_eq!(job.id, "a");
        job.reply
            .send(Bytes::from_static(b"ok"))
            .expect("caller waits");
        assert_eq!(rx.await.expect("reply"), Bytes::from_static(b"ok"));
    }

    #[tokio::test]
    async fn a_parked_runtime_takes_the_job_and_a_gone_one_is_skipped() {
        let shared = Arc::new(Shared::default());
        let waiting = {
            let s = shared.clone();
            tokio::spawn(async move { s.next_job().await.map(|j| j.id) })
        };
        while shared.parked() < 1 {
            tokio::task::yield_now().await;
        }
        // A runtime that parked later and then went away is tried first, and skipped.
        let (gone_tx, gone_rx) = oneshot::channel();
        lock(&shared.parked).push(gone_tx);
        drop(gone_rx);
        let (tx, _rx) = oneshot::channel();
        shared.dispatch(Job {
            id: "b".into(),
            trace_id: String::new(),
            payload: Bytes::new(),
            reply: tx,
        });
        assert_eq!(waiting.await.expect("task"), Some("b".into()));
        assert!(lock(&shared.queue).is_empty());
        // With only the gone runtime left, a job is queued rather than lost.
        let (gone_tx, gone_rx) = oneshot::channel();
        lock(&shared.parked).push(gone_tx);
        drop(gone_rx);
        let (tx, _rx) = oneshot::channel();
        shared.dispatch(Job {
            id: "c".into(),
            trace_id: String::new(),
            payload: Bytes::new(),
            reply: tx,
        });
        assert_eq!(lock(&shared.queue).len(), 1);
    }
}
