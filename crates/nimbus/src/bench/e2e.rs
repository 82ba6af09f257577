//! End-to-end asynchronous latency: from sending an `Event` invoke to the function's code
//! running, timed by a callback the function makes to a listener in the bench as its first
//! act. One event at a time (the next is sent once the previous one has called back), so the
//! function stays warm and nothing queues. Beside it, the same function invoked synchronously
//! and timed the same way: the difference is what the durable path (commit, dispatcher
//! wake-up, claim) adds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use nimbus_client::Client;
use serde_json::json;
use tokio::sync::Notify;

use super::loadgen::ServerThread;
use super::stats::Latency;

const FUNCTION: &str = "bench-e2e";
/// How long one event may take to call back before the run gives up on it.
const CALLBACK_LIMIT: Duration = Duration::from_secs(10);

/// Arrival times of the callbacks, by the id the function was sent.
#[derive(Default)]
struct Arrivals {
    seen: Mutex<HashMap<u64, Instant>>,
    arrived: Notify,
}

pub struct E2e {
    pub asynchronous: Option<Latency>,
    pub synchronous: Option<Latency>,
    /// Events that did not call back within the limit.
    pub lost: usize,
}

fn handler(port: u16) -> String {
    format!(
        "import urllib.request\n\n\
         def handler(event, context):\n    \
             req = urllib.request.Request('http://127.0.0.1:{port}/', data=str(event['id']).encode(), method='POST')\n    \
             urllib.request.urlopen(req, timeout=10).read()\n    \
             return {{}}\n"
    )
}

async fn wait_for(arrivals: &Arrivals, id: u64) -> Option<Instant> {
    let deadline = tokio::time::Instant::now() + CALLBACK_LIMIT;
    loop {
        let notified = arrivals.arrived.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(at) = arrivals
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
        {
            return Some(*at);
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return None;
        }
    }
}

/// `n` events one after another, then `n` synchronous invokes, after a warm-up of each.
pub async fn measure(client: &Client, runtime: &str, n: usize) -> anyhow::Result<E2e> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("binding the callback listener")?;
    let port = listener.local_addr()?.port();
    let arrivals = Arc::new(Arrivals::default());
    let recorder = arrivals.clone();
    // The callback's arrival is the moment its body has been read.
    let _callbacks =
        ServerThread::start("bench-e2e-callbacks", vec![listener], move |_, _, req| {
            let arrivals = recorder.clone();
            async move {
                let body = req.into_body().collect().await.map(|b| b.to_bytes());
                let at = Instant::now();
                if let Some(id) = body
                    .ok()
                    .and_then(|b| std::str::from_utf8(&b).ok()?.trim().parse::<u64>().ok())
                {
                    arrivals
                        .seen
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id, at);
                    arrivals.arrived.notify_waiters();
                }
                let mut resp = Response::new(Full::new(Bytes::new()));
                *resp.status_mut() = StatusCode::NO_CONTENT;
                resp
            }
        })?;
    let code = handler(port);
    let zip = super::zip(&[("app.py", code.as_bytes(), 0o644)])?;
    client
        .create_function(
            FUNCTION,
            &zip,
            json!({ "Runtime": runtime, "Handler": "app.handler", "MemorySize": 256, "Timeout": 30 }),
        )
        .await
        .with_context(|| format!("creating {FUNCTION}"))?;
    let mut next_id = 0u64;
    let mut lost = 0;
    let mut run = |kind: &'static str| {
        let id = next_id;
        next_id += 1;
        (id, kind)
    };
    let mut measured: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for (slot, kind) in [(0, "Event"), (1, "RequestResponse")] {
        // Warm-up: the first calls start the instance and python's urllib.
        for i in 0..(n + 5) {
            let (id, kind) = run(kind);
            let payload = Bytes::from(json!({ "id": id }).to_string());
            let sent = Instant::now();
            client
                .invoke(FUNCTION, payload, None, kind, false)
                .await
                .with_context(|| format!("{kind} invoke of {FUNCTION}"))?;
            match wait_for(&arrivals, id).await {
                Some(at) if i >= 5 => measured[slot].push(at.saturating_duration_since(sent)),
                Some(_) => {}
                None => lost += 1,
            }
        }
    }
    let [mut asynchronous, mut synchronous] = measured;
    Ok(E2e {
        asynchronous: Latency::of(&mut asynchronous),
        synchronous: Latency::of(&mut synchronous),
        lost,
    })
}
