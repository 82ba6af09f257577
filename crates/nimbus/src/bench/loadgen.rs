//! The built-in load generator: one keep-alive HTTP/1.1 connection per concurrent worker (a raw
//! hyper client connection, no pool), one prebuilt request, per-request latency kept in a
//! vector. It drives Nimbus's Invoke API and the peer's alike, closed loop (each worker sends its
//! next request when the last one is answered) for a fixed time, or as one burst. A trivial local
//! server measures its own ceiling on this machine.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use nimbus_runtime::coalesce::{Coalesce, ConnState};
use tokio::net::TcpStream;
use tokio::sync::Barrier;
use tokio::task::JoinHandle;

use super::stats::{self, Latency};

/// Longer than any invoke the bench makes (function timeouts are 30 s): a request still
/// unanswered then is counted as failed rather than hanging the run.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// One prebuilt Lambda Invoke request: `POST /2015-03-31/functions/{name}/invocations`.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    method: Method,
}

impl Target {
    /// A synchronous invoke of `function` with the event `{}` on the server at `endpoint`
    /// (`http://127.0.0.1:PORT`).
    pub fn invoke(endpoint: &str, function: &str) -> anyhow::Result<Target> {
        let (host, addr) = host_and_addr(endpoint)?;
        if function.is_empty()
            || !function
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            anyhow::bail!("function name {function:?} needs encoding; the bench uses plain names");
        }
        let uri: Uri = format!("/2015-03-31/functions/{function}/invocations").parse()?;
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(host)?);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            HeaderName::from_static("x-amz-invocation-type"),
            HeaderValue::from_static("RequestResponse"),
        );
        Ok(Target {
            addr,
            uri,
            headers,
            body: Bytes::from_static(b"{}"),
            method: Method::POST,
        })
    }

    /// One SQS operation as botocore sends it over the AWS JSON 1.0 protocol: `POST /` with
    /// `X-Amz-Target: AmazonSQS.{operation}`, `Content-Type: application/x-amz-json-1.0` and
    /// `x-amzn-query-mode: true`, unsigned (the server under test has no credentials). The body
    /// is set per request (`with_body`).
    pub fn sqs(endpoint: &str, operation: &str) -> anyhow::Result<Target> {
        let (host, addr) = host_and_addr(endpoint)?;
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(host)?);
        headers.insert(
            HeaderName::from_static("x-amz-target"),
            HeaderValue::from_str(&format!("AmazonSQS.{operation}"))?,
        );
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-amz-json-1.0"),
        );
        headers.insert(
            HeaderName::from_static("x-amzn-query-mode"),
            HeaderValue::from_static("true"),
        );
        Ok(Target {
            addr,
            uri: Uri::from_static("/"),
            headers,
            body: Bytes::new(),
            method: Method::POST,
        })
    }

    /// `GET {path}` with `Host: {host}` to the server at `addr`: a gateway route, nginx, an
    /// HTTP emulation.
    pub fn get(addr: SocketAddr, host: &str, path: &str) -> anyhow::Result<Target> {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(host)?);
        Ok(Target {
            addr,
            uri: path.parse()?,
            headers,
            body: Bytes::new(),
            method: Method::GET,
        })
    }

    /// The same invoke made asynchronous (`X-Amz-Invocation-Type: Event`): answered 202 once the
    /// event is stored.
    pub fn event(mut self) -> Target {
        self.headers.insert(
            HeaderName::from_static("x-amz-invocation-type"),
            HeaderValue::from_static("Event"),
        );
        self
    }

    /// The same request with another body (an event).
    pub fn with_body(mut self, body: Bytes) -> Target {
        self.body = body;
        self
    }

    /// Asks for the log tail (`X-Amz-Log-Result`), where a cold start's REPORT line shows.
    pub fn with_log_tail(mut self) -> Target {
        self.headers.insert(
            HeaderName::from_static("x-amz-log-type"),
            HeaderValue::from_static("Tail"),
        );
        self
    }

    fn request(&self) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// `http://IP:PORT` as the Host header's value and the socket address.
fn host_and_addr(endpoint: &str) -> anyhow::Result<(&str, SocketAddr)> {
    let host = endpoint
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("endpoint {endpoint:?} is not http://HOST:PORT"))?
        .trim_end_matches('/');
    let addr: SocketAddr = host
        .parse()
        .with_context(|| format!("endpoint {endpoint:?} is not http://IP:PORT"))?;
    Ok((host, addr))
}

/// Why a request did not count as served.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Failure {
    /// An HTTP status other than 200 (a throttle, a platform error), with the error type the
    /// server named (`x-amzn-ErrorType`), if any.
    Status(u16, String),
    /// HTTP 200 with `X-Amz-Function-Error`: the function failed (crash, timeout, init error);
    /// the header's value and the body's `errorType`, if any.
    Function(String),
    /// The connection could not be made or broke.
    Transport(String),
    /// No answer within the request timeout.
    Timeout,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Status(s, kind) if kind.is_empty() => write!(f, "HTTP {s}"),
            Failure::Status(s, kind) => write!(f, "HTTP {s} {kind}"),
            Failure::Function(e) => write!(f, "function error {e}"),
            Failure::Transport(e) => write!(f, "connection: {e}"),
            Failure::Timeout => write!(f, "no answer in {} s", REQUEST_TIMEOUT.as_secs()),
        }
    }
}

/// Whether a response counts as served: status 200 and no function error. With the body, a
/// function error names its `errorType` too (`Unhandled: Sandbox.Timedout`).
pub fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: Option<&[u8]>,
) -> Result<(), Failure> {
    let text = |v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
    if !status.is_success() {
        let kind = headers
            .get("x-amzn-errortype")
            .map(text)
            .unwrap_or_default();
        return Err(Failure::Status(status.as_u16(), kind));
    }
    let Some(e) = headers.get("x-amz-function-error") else {
        return Ok(());
    };
    let error_type = body
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
        .and_then(|v| v.get("errorType")?.as_str().map(str::to_string));
    Err(Failure::Function(match error_type {
        Some(t) => format!("{}: {t}", text(e)),
        None => text(e),
    }))
}

/// Failures counted by kind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Failures(BTreeMap<Failure, u64>);

impl Failures {
    pub fn add(&mut self, f: Failure) {
        *self.0.entry(f).or_default() += 1;
    }

    pub fn merge(&mut self, other: Failures) {
        for (f, n) in other.0 {
            *self.0.entry(f).or_default() += n;
        }
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// `12× HTTP 429, 1× function error Unhandled`, most frequent first; empty when none.
    pub fn summary(&self) -> String {
        let mut v: Vec<_> = self.0.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        v.iter()
            .map(|(f, n)| format!("{n}× {f}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Aborts the connection's driver task when the connection is dropped.
struct Driver(JoinHandle<()>);

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    _driver: Driver,
}

/// A whole response: status, headers, body.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Result<Conn, Failure> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| Failure::Transport(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Failure::Transport(e.to_string()))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            sender,
            _driver: Driver(driver),
        })
    }

    async fn send(&mut self, target: &Target) -> Result<Response<hyper::body::Incoming>, Failure> {
        self.sender
            .ready()
            .await
            .map_err(|e| Failure::Transport(e.to_string()))?;
        self.sender
            .send_request(target.request())
            .await
            .map_err(|e| Failure::Transport(e.to_string()))
    }

    /// The hot path: send, read the body to its end, and classify.
    pub async fn hit(&mut self, target: &Target) -> Result<(), Failure> {
        let answered = async {
            let resp = self.send(target).await?;
            let verdict = classify(resp.status(), resp.headers(), None);
            let (parts, mut body) = resp.into_parts();
            if let Err(Failure::Function(_)) = verdict {
                // Rare: read the body for the error's type.
                let body = body
                    .collect()
                    .await
                    .map_err(|e| Failure::Transport(e.to_string()))?
                    .to_bytes();
                return classify(parts.status, &parts.headers, Some(&body));
            }
            while let Some(frame) = body.frame().await {
                frame.map_err(|e| Failure::Transport(e.to_string()))?;
            }
            verdict
        };
        tokio::time::timeout(REQUEST_TIMEOUT, answered)
            .await
            .unwrap_or(Err(Failure::Timeout))
    }

    /// Sends and keeps the whole response, for the checks a cold start needs.
    pub async fn call(&mut self, target: &Target) -> Result<Answer, Failure> {
        let answered = async {
            let resp = self.send(target).await?;
            let (parts, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| Failure::Transport(e.to_string()))?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, answered)
            .await
            .unwrap_or(Err(Failure::Timeout))
    }
}

/// The result of a closed-loop run.
#[derive(Debug, Clone)]
pub struct LoadRun {
    pub concurrency: usize,
    pub ok: u64,
    pub failures: Failures,
    pub elapsed: Duration,
    /// Latencies of the served requests, sorted.
    pub latencies: Vec<Duration>,
}

impl LoadRun {
    /// Served requests per second.
    pub fn rate(&self) -> f64 {
        stats::rate(self.ok, self.elapsed)
    }

    pub fn latency(&self) -> Option<Latency> {
        Some(Latency {
            samples: self.latencies.len(),
            p50: stats::percentile(&self.latencies, 0.50)?,
            p99: stats::percentile(&self.latencies, 0.99)?,
        })
    }
}

struct WorkerResult {
    ok: u64,
    failures: Failures,
    latencies: Vec<Duration>,
}

/// A connection, reopened if the last one broke; a failure to open is counted.
pub async fn connected<'a>(
    conn: &'a mut Option<Conn>,
    addr: SocketAddr,
    failures: &mut Failures,
) -> Option<&'a mut Conn> {
    if conn.is_none() {
        match Conn::open(addr).await {
            Ok(c) => *conn = Some(c),
            Err(f) => {
                failures.add(f);
                // Do not spin on a refused connection.
                tokio::time::sleep(Duration::from_millis(10)).await;
                return None;
            }
        }
    }
    conn.as_mut()
}

/// `concurrency` workers, each on its own connection, send `warmup` unmeasured requests, wait
/// for each other, then invoke in a closed loop for `duration`. Throughput is served requests
/// over the time from the common start until the last worker's last answer.
pub async fn closed_loop(
    target: &Target,
    concurrency: usize,
    warmup: usize,
    duration: Duration,
) -> LoadRun {
    let target = Arc::new(target.clone());
    let barrier = Arc::new(Barrier::new(concurrency + 1));
    // Room for ~20k requests/s without regrowing, spread over the workers.
    let per_worker = (duration.as_secs_f64() * 20_000.0 / concurrency.max(1) as f64) as usize;
    let workers: Vec<JoinHandle<WorkerResult>> = (0..concurrency)
        .map(|_| {
            let (target, barrier) = (target.clone(), barrier.clone());
            tokio::spawn(async move {
                let mut conn = None;
                let mut warm_failures = Failures::default();
                for _ in 0..warmup {
                    if let Some(c) = connected(&mut conn, target.addr, &mut warm_failures).await {
                        if let Err(Failure::Transport(_)) = c.hit(&target).await {
                            conn = None;
                        }
                    }
                }
                barrier.wait().await;
                let until = Instant::now() + duration;
                let mut r = WorkerResult {
                    ok: 0,
                    failures: Failures::default(),
                    latencies: Vec::with_capacity(per_worker),
                };
                while Instant::now() < until {
                    let Some(c) = connected(&mut conn, target.addr, &mut r.failures).await else {
                        continue;
                    };
                    let t = Instant::now();
                    match c.hit(&target).await {
                        Ok(()) => {
                            r.latencies.push(t.elapsed());
                            r.ok += 1;
                        }
                        Err(f) => {
                            if matches!(f, Failure::Transport(_) | Failure::Timeout) {
                                conn = None;
                            }
                            r.failures.add(f);
                        }
                    }
                }
                r
            })
        })
        .collect();
    barrier.wait().await;
    let started = Instant::now();
    let mut run = LoadRun {
        concurrency,
        ok: 0,
        failures: Failures::default(),
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    for w in workers {
        match w.await {
            Ok(r) => {
                run.ok += r.ok;
                run.failures.merge(r.failures);
                run.latencies.extend(r.latencies);
            }
            Err(e) => run
                .failures
                .add(Failure::Transport(format!("worker died: {e}"))),
        }
    }
    run.elapsed = started.elapsed();
    run.latencies.sort_unstable();
    run
}

/// The result of a burst.
#[derive(Debug, Clone)]
pub struct BurstRun {
    pub requests: usize,
    pub ok: u64,
    pub failures: Failures,
    /// From the first request sent until the last one answered (served or failed).
    pub all_answered: Duration,
}

/// Opens `n` connections, then sends one request on each at the same moment.
pub async fn burst(target: &Target, n: usize) -> BurstRun {
    let target = Arc::new(target.clone());
    let barrier = Arc::new(Barrier::new(n + 1));
    type Sent = Option<(Instant, Instant, Result<(), Failure>)>;
    let workers: Vec<JoinHandle<(Sent, Option<Failure>)>> = (0..n)
        .map(|_| {
            let (target, barrier) = (target.clone(), barrier.clone());
            tokio::spawn(async move {
                let conn = Conn::open(target.addr).await;
                barrier.wait().await;
                match conn {
                    Ok(mut c) => {
                        let start = Instant::now();
                        let r = c.hit(&target).await;
                        (Some((start, Instant::now(), r)), None)
                    }
                    Err(f) => (None, Some(f)),
                }
            })
        })
        .collect();
    barrier.wait().await;
    let mut out = BurstRun {
        requests: n,
        ok: 0,
        failures: Failures::default(),
        all_answered: Duration::ZERO,
    };
    let (mut first, mut last): (Option<Instant>, Option<Instant>) = (None, None);
    for w in workers {
        match w.await {
            Ok((Some((start, end, r)), _)) => {
                first = Some(first.map_or(start, |f| f.min(start)));
                last = Some(last.map_or(end, |l| l.max(end)));
                match r {
                    Ok(()) => out.ok += 1,
                    Err(f) => out.failures.add(f),
                }
            }
            Ok((None, Some(f))) => out.failures.add(f),
            Ok((None, None)) => {}
            Err(e) => out
                .failures
                .add(Failure::Transport(format!("worker died: {e}"))),
        }
    }
    if let (Some(f), Some(l)) = (first, last) {
        out.all_answered = l.duration_since(f);
    }
    out
}

/// HTTP/1.1 servers (hyper) on listeners of their own, run on one thread with a current-thread
/// runtime, so they take no worker from the load generator's runtime. A request on listener `i`
/// is answered by `handle(i, request)`. Dropping it stops the servers and joins the thread.
pub struct ServerThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerThread {
    pub fn start<H, F>(
        name: &str,
        listeners: Vec<std::net::TcpListener>,
        handle: H,
    ) -> anyhow::Result<ServerThread>
    where
        H: Fn(usize, &Arc<ConnState>, Request<hyper::body::Incoming>) -> F + Clone + Send + 'static,
        F: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        for l in &listeners {
            l.set_nonblocking(true)?;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                rt.block_on(async move {
                    for (i, l) in listeners.into_iter().enumerate() {
                        let Ok(listener) = tokio::net::TcpListener::from_std(l) else {
                            return;
                        };
                        let handle = handle.clone();
                        tokio::spawn(async move {
                            loop {
                                let Ok((stream, _)) = listener.accept().await else {
                                    continue;
                                };
                                let _ = stream.set_nodelay(true);
                                let handle = handle.clone();
                                tokio::spawn(async move {
                                    // Each connection as Nimbus's Runtime API serves it, so a
                                    // handler can hold a 202 for the next event the same way
                                    // (a connection whose handler never does is unchanged).
                                    let conn = Arc::new(ConnState::default());
                                    let io = Coalesce::new(stream, conn.clone());
                                    let service = hyper::service::service_fn(move |req| {
                                        let answer = handle(i, &conn, req);
                                        async move { Ok::<_, Infallible>(answer.await) }
                                    });
                                    let _ = hyper::server::conn::http1::Builder::new()
                                        .serve_connection(TokioIo::new(io), service)
                                        .await;
                                });
                            }
                        });
                    }
                    // The accept loops and connections end with the runtime, after this.
                    let _ = stopped.await;
                });
            })?;
        Ok(ServerThread {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A local HTTP server that answers every request with 200 `{}` at once, on its own thread, to
/// measure what the load generator itself can do here.
pub struct TrivialServer {
    pub addr: SocketAddr,
    _server: ServerThread,
}

impl TrivialServer {
    pub fn start() -> anyhow::Result<TrivialServer> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let server =
            ServerThread::start("bench-trivial-server", vec![listener], |_, _, req| async {
                let _ = req.into_body().collect().await;
                Response::new(Full::new(Bytes::from_static(b"{}")))
            })?;
        Ok(TrivialServer {
            addr,
            _server: server,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_invoke_requests() {
        let t = Target::invoke("http://127.0.0.1:9070/", "bench-python")
            .unwrap()
            .with_log_tail();
        let req = t.request();
        assert_eq!(req.method(), Method::POST);
        assert_eq!(
            req.uri().path(),
            "/2015-03-31/functions/bench-python/invocations"
        );
        assert_eq!(req.headers()["host"], "127.0.0.1:9070");
        assert_eq!(req.headers()["x-amz-log-type"], "Tail");
        assert!(Target::invoke("127.0.0.1:9070", "f").is_err());
        assert!(Target::invoke("http://localhost:9070", "f").is_err());
        assert!(Target::invoke("http://127.0.0.1:9070", "a/b").is_err());
    }

    #[test]
    fn sqs_targets_carry_botocores_headers() {
        let t = Target::sqs("http://127.0.0.1:9070", "SendMessage")
            .unwrap()
            .with_body(Bytes::from_static(b"{}"));
        let req = t.request();
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri().path(), "/");
        assert_eq!(req.headers()["x-amz-target"], "AmazonSQS.SendMessage");
        assert_eq!(req.headers()["content-type"], "application/x-amz-json-1.0");
        assert_eq!(req.headers()["x-amzn-query-mode"], "true");
        assert_eq!(req.headers()["host"], "127.0.0.1:9070");
        assert!(Target::sqs("127.0.0.1:9070", "SendMessage").is_err());
    }

    #[test]
    fn classification() {
        let mut h = HeaderMap::new();
        assert_eq!(classify(StatusCode::OK, &h, None), Ok(()));
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, &h, None),
            Err(Failure::Status(429, String::new()))
        );
        h.insert(
            "x-amzn-errortype",
            HeaderValue::from_static("TooManyRequestsException"),
        );
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, &h, None)
                .unwrap_err()
                .to_string(),
            "HTTP 429 TooManyRequestsException"
        );
        let mut h = HeaderMap::new();
        h.insert(
            "x-amz-function-error",
            HeaderValue::from_static("Unhandled"),
        );
        assert_eq!(
            classify(StatusCode::OK, &h, None),
            Err(Failure::Function("Unhandled".into()))
        );
        let body = br#"{"errorType": "Sandbox.Timedout", "errorMessage": "timed out"}"#;
        assert_eq!(
            classify(StatusCode::OK, &h, Some(body)),
            Err(Failure::Function("Unhandled: Sandbox.Timedout".into()))
        );
        assert_eq!(
            classify(StatusCode::OK, &h, Some(b"not json")),
            Err(Failure::Function("Unhandled".into()))
        );
    }

    #[test]
    fn failure_summaries() {
        let mut f = Failures::default();
        assert_eq!(f.summary(), "");
        f.add(Failure::Function("Unhandled".into()));
        f.add(Failure::Status(429, String::new()));
        f.add(Failure::Status(429, String::new()));
        let mut g = Failures::default();
        g.add(Failure::Timeout);
        f.merge(g);
        assert_eq!(f.total(), 4);
        assert_eq!(
            f.summary(),
            "2× HTTP 429, 1× function error Unhandled, 1× no answer in 60 s"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn drives_a_local_server() {
        let server = TrivialServer::start().unwrap();
        let t = Target::invoke(&format!("http://{}", server.addr), "f").unwrap();
        let run = closed_loop(&t, 4, 2, Duration::from_millis(200)).await;
        assert_eq!(run.failures.total(), 0, "{}", run.failures.summary());
        assert!(run.ok > 10, "only {} requests in 200 ms", run.ok);
        assert_eq!(run.latencies.len() as u64, run.ok);
        assert!(run.latency().unwrap().p50 <= run.latency().unwrap().p99);
        let b = burst(&t, 20).await;
        assert_eq!((b.ok, b.failures.total()), (20, 0));
        assert!(b.all_answered > Duration::ZERO);
        drop(server);
        // Nothing listens any more: every request fails, none hangs.
        let run = closed_loop(&t, 2, 0, Duration::from_millis(100)).await;
        assert_eq!(run.ok, 0);
        assert!(run.failures.total() > 0);
    }
}
