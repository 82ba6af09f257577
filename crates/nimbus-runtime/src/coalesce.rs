//! A Runtime API connection that sends a result's 202 together with the runtime's next event
//! when the runtime has already asked for it.
//!
//! The built-in runtimes write their result and `GET /invocation/next` in one write (HTTP/1.1
//! pipelining). Sent on its own, the 202 wakes such a runtime only for it to read the 202 and
//! wait again: one needless wake-up per invocation, which on a virtual machine means an
//! interrupt to another CPU. [`Coalesce`] wraps the connection hyper serves and holds a result's
//! 202 back:
//!
//! - when the runtime's `GET /next` on the same connection is already waiting for an event, the
//!   202 stays held, and goes out in one write with the event (HTTP/1.1 answers in order, so
//!   nothing else can be written on the connection meanwhile, and the runtime, having asked for
//!   its next event, reads that next anyway);
//! - otherwise (a runtime that waits for the 202 before asking, as the official clients do) it
//!   is written as soon as hyper goes back to the socket for the next request: holding wakes
//!   the connection's task, and a connection with nothing left to answer reads. So the 202 is
//!   never held while the peer waits for it with nothing else coming. That costs the 202 a turn
//!   of the connection's task behind whatever else is ready on its worker, so a connection whose
//!   runtime was seen waiting gets its next [`RECHECK_AFTER`] 202s written at once, and is then
//!   looked at again.
//!
//! While a result's 202 is due or a `GET /next` waits, everything hyper writes is held (only
//! responses to requests before that `GET /next` can be written then), and held bytes always go
//! out before newer ones, by the next write made with neither flag set, by a read, or at
//! shutdown. A large result the runtime sends in several writes may let hyper read the socket
//! before the `GET /next` arrives: its 202 then goes out on its own, as before, and the
//! connection counts as one whose runtime waits until the recheck.
//!
//! hyper itself is not changed or configured for this (its `pipeline_flush` option would hold a
//! response as long as any unparsed byte is buffered, an empty line after a body included): it
//! writes its responses to this wrapper in order, as to any connection.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the handlers tell the connection, shared between them and [`Coalesce`].
#[derive(Debug, Default)]
pub struct ConnState {
    /// A `GET /next` on this connection has been received and is not answered yet.
    awaiting_next: AtomicBool,
    /// A result was just accepted: its 202 may wait for the event after it.
    result_accepted: AtomicBool,
    /// 202s still to write at once, because this connection's runtime was last seen waiting
    /// for its 202 before asking for the next event.
    answer_at_once: AtomicU32,
}

/// How many 202s a runtime seen waiting for its 202 gets at once before the connection holds
/// one again to see whether it still waits.
pub const RECHECK_AFTER: u32 = 16;

impl ConnState {
    /// A `GET /next` was received (called when hyper hands the request over, before it reads
    /// the socket again).
    pub fn next_asked(&self) {
        self.awaiting_next.store(true, Ordering::Relaxed);
    }

    /// The waiting `GET /next` has its answer: that answer, and whatever was held before it, go
    /// out now.
    pub fn next_answered(&self) {
        self.result_accepted.store(false, Ordering::Relaxed);
        self.awaiting_next.store(false, Ordering::Relaxed);
    }

    /// A posted result was accepted; the response written next is its 202.
    pub fn result_accepted(&self) {
        let at_once = self.answer_at_once.load(Ordering::Relaxed);
        if at_once > 0 {
            self.answer_at_once.store(at_once - 1, Ordering::Relaxed);
            return;
        }
        self.result_accepted.store(true, Ordering::Relaxed);
    }

    fn awaiting_next(&self) -> bool {
        self.awaiting_next.load(Ordering::Relaxed)
    }
}

/// Held by the `GET /next` handler: when it ends, [`ConnState::next_answered`] says so, so
/// its answer (and what was held before it) goes out at once.
pub struct NextGuard<'a>(pub &'a ConnState);

impl Drop for NextGuard<'_> {
    fn drop(&mut self) {
        self.0.next_answered();
    }
}

/// Buffers given to one vectored write: what is held, then hyper's (at most 64 at a time).
const MAX_IOVS: usize = 65;

/// The connection hyper serves a Runtime API client on; see the module documentation.
pub struct Coalesce<S> {
    io: S,
    state: Arc<ConnState>,
    /// Response bytes written by hyper and not yet sent.
    held: Vec<u8>,
}

impl<S> Coalesce<S> {
    pub fn new(io: S, state: Arc<ConnState>) -> Self {
        Coalesce {
            io,
            state,
            held: Vec::new(),
        }
    }
}

impl<S: AsyncWrite + Unpin> Coalesce<S> {
    /// Sends what is held; ready once nothing is.
    fn poll_send_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.held.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.held))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.held.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Coalesce<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // hyper wants more from the runtime. Unless a `GET /next` is waiting (then its event
        // carries what is held), the runtime may be waiting for the held 202 before it sends
        // anything: send it first.
        if !this.held.is_empty() && !this.state.awaiting_next() {
            if this.state.result_accepted.swap(false, Ordering::Relaxed) {
                // The runtime did not ask for its next event along with its result: it waits
                // for the 202, so give it its next ones at once.
                this.state
                    .answer_at_once
                    .store(RECHECK_AFTER, Ordering::Relaxed);
            }
            ready!(this.poll_send_held(cx))?;
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesce<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let awaiting = this.state.awaiting_next();
        if awaiting || this.state.result_accepted.load(Ordering::Relaxed) {
            let mut n = 0;
            for b in bufs {
                this.held.extend_from_slice(b);
                n += b.len();
            }
            if !awaiting {
                // Make sure hyper comes back to read (which sends this if no `GET /next` is
                // already here) instead of waiting on a socket the runtime may not write to
                // until it has its 202.
                cx.waker().wake_by_ref();
            }
            return Poll::Ready(Ok(n));
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        while !this.held.is_empty() {
            // What is held and this in one write: one wake-up for the runtime.
            let mut iovs = [IoSlice::new(&[]); MAX_IOVS];
            iovs[0] = IoSlice::new(&this.held);
            let len = 1 + bufs.len().min(MAX_IOVS - 1);
            iovs[1..len].copy_from_slice(&bufs[..len - 1]);
            let n = ready!(Pin::new(&mut this.io).poll_write_vectored(cx, &iovs[..len]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            if n < this.held.len() {
                this.held.drain(..n);
                continue;
            }
            let of_bufs = n - this.held.len();
            this.held.clear();
            if of_bufs > 0 || total == 0 {
                return Poll::Ready(Ok(of_bufs));
            }
        }
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // What is held is sent by the next write or read (see `poll_write_vectored`); a flush
        // does not force it out.
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_held(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::{Method, Request, Response};
    use hyper_util::rt::TokioIo;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::Notify;

    const POST: &[u8] = b"POST /result HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}";
    const NEXT: &[u8] = b"GET /next HTTP/1.1\r\nhost: x\r\n\r\n";

    /// The server's socket, counting the writes that send something.
    struct Counted {
        io: TcpStream,
        writes: Arc<AtomicU32>,
    }

    impl AsyncRead for Counted {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Counted {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let n = ready!(Pin::new(&mut this.io).poll_write_vectored(cx, bufs))?;
            if n > 0 {
                this.writes.fetch_add(1, Ordering::Relaxed);
            }
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().io).poll_flush(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
        }
    }

    /// A hyper server on loopback with the Runtime API's shape: `POST /result` answers 202
    /// once accepted, `GET /next` waits until `event` is notified. Returns the client socket
    /// and the count of the server's writes.
    async fn serve(event: Arc<Notify>) -> (TcpStream, Arc<AtomicU32>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let writes = Arc::new(AtomicU32::new(0));
        let counted = writes.clone();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let conn = Arc::new(ConnState::default());
            let stream = Counted {
                io: stream,
                writes: counted,
            };
            let io = Coalesce::new(stream, conn.clone());
            let service = hyper::service::service_fn(move |req: Request<_>| {
                let is_next = req.method() == Method::GET && req.uri().path() == "/next";
                if is_next {
                    conn.next_asked();
                }
                let conn = conn.clone();
                let event = event.clone();
                async move {
                    if is_next {
                        let _answered = NextGuard(&conn);
                        event.notified().await;
                        return Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                            b"EVENT",
                        ))));
                    }
                    conn.result_accepted();
                    let mut r = Response::new(Full::new(Bytes::from_static(b"ACCEPTED")));
                    *r.status_mut() = hyper::StatusCode::ACCEPTED;
                    Ok(r)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(io), service)
                .await;
        });
        let client = TcpStream::connect(addr).await.expect("connect");
        client.set_nodelay(true).expect("nodelay");
        (client, writes)
    }

    /// Lets the server task run until it has nothing left to do (one thread: it runs only
    /// while this task yields).
    async fn settle() {
        for _ in 0..200 {
            tokio::task::yield_now().await;
        }
    }

    /// Everything readable now, without waiting.
    fn readable_now(client: &TcpStream) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match client.try_read(&mut buf) {
                Ok(0) => return out,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return out,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Reads until all of `bodies` have been seen, or fails after a while (a 202 held with
    /// nothing to release it would hang here).
    async fn read_until(client: &TcpStream, bodies: &[&str]) -> String {
        let mut got = String::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while !bodies.iter().all(|b| got.contains(b)) {
            tokio::time::timeout_at(deadline, client.readable())
                .await
                .unwrap_or_else(|_| panic!("only {got:?} arrived"))
                .expect("readable");
            got.push_str(&String::from_utf8_lossy(&readable_now(client)));
        }
        got
    }

    /// Asks for the next event, lets it come, and returns what arrived (the event first).
    async fn next_event(client: &mut TcpStream, event: &Notify) -> String {
        client.write_all(NEXT).await.expect("next");
        settle().await;
        event.notify_one();
        let got = read_until(client, &["EVENT"]).await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        got
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_runtime_that_waits_for_the_202_gets_it_at_once() {
        let event = Arc::new(Notify::new());
        let (mut client, _) = serve(event.clone()).await;
        client.write_all(POST).await.expect("post");
        // Nothing else is sent until the 202 is in: held, it would never come.
        let got = read_until(&client, &["ACCEPTED"]).await;
        assert!(got.starts_with("HTTP/1.1 202"), "{got}");
        let got = next_event(&mut client, &event).await;
        assert!(!got.contains("ACCEPTED"), "{got}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_pipelined_next_gets_the_202_with_its_event() {
        let event = Arc::new(Notify::new());
        let (mut client, writes) = serve(event.clone()).await;
        next_event(&mut client, &event).await;
        for round in 0..3 {
            pipelined_round(&mut client, &writes, &event, round).await;
        }
    }

    /// A result and the next request in one write: nothing comes back until the event, and
    /// then the 202 and the event come in one write, the 202 first.
    async fn pipelined_round(
        client: &mut TcpStream,
        writes: &AtomicU32,
        event: &Notify,
        round: u32,
    ) {
        client
            .write_all(&[POST, NEXT].concat())
            .await
            .expect("post and next");
        settle().await;
        // The server has done all it can: the 202 is held, not sent.
        let early = readable_now(client);
        assert!(
            early.is_empty(),
            "round {round}: {:?}",
            String::from_utf8_lossy(&early)
        );
        let before = writes.load(Ordering::Relaxed);
        event.notify_one();
        let got = read_until(client, &["ACCEPTED", "EVENT"]).await;
        assert_eq!(
            writes.load(Ordering::Relaxed),
            before + 1,
            "round {round}: one write"
        );
        let accepted = got.find("HTTP/1.1 202").expect("202");
        let event_at = got.find("HTTP/1.1 200").expect("200");
        assert!(accepted < event_at, "the 202 comes first: {got}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_runtime_seen_waiting_is_answered_at_once_then_looked_at_again() {
        let event = Arc::new(Notify::new());
        let (mut client, writes) = serve(event.clone()).await;
        next_event(&mut client, &event).await;
        // It waits for its 202 once (held, then released by hyper's read) ...
        client.write_all(POST).await.expect("post");
        read_until(&client, &["ACCEPTED"]).await;
        next_event(&mut client, &event).await;
        // ... so its next RECHECK_AFTER 202s go out at once, even when it pipelines ...
        for round in 0..RECHECK_AFTER {
            client
                .write_all(&[POST, NEXT].concat())
                .await
                .expect("post and next");
            settle().await;
            let early = String::from_utf8_lossy(&readable_now(&client)).into_owned();
            assert!(
                early.starts_with("HTTP/1.1 202"),
                "round {round}: {early:?}"
            );
            event.notify_one();
            read_until(&client, &["EVENT"]).await;
        }
        // ... and after them the connection holds a 202 again.
        pipelined_round(&mut client, &writes, &event, RECHECK_AFTER).await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_next_sent_separately_after_the_post_does_not_hold_the_202() {
        // The result and the next request in two writes with a pause between: by the time the
        // second arrives the 202 has gone, because hyper read the socket for it.
        let event = Arc::new(Notify::new());
        let (mut client, _) = serve(event.clone()).await;
        client.write_all(POST).await.expect("post");
        settle().await;
        let got = String::from_utf8_lossy(&readable_now(&client)).into_owned();
        assert!(got.starts_with("HTTP/1.1 202"), "{got:?}");
        next_event(&mut client, &event).await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_client_that_follows_its_post_with_an_empty_line_still_gets_the_202() {
        // RFC 9112 asks servers to ignore an empty line before a request; a client that sends
        // one after its body must not be left without its 202.
        let event = Arc::new(Notify::new());
        let (mut client, _) = serve(event).await;
        client
            .write_all(&[POST, b"\r\n"].concat())
            .await
            .expect("post");
        let got = read_until(&client, &["ACCEPTED"]).await;
        assert!(got.starts_with("HTTP/1.1 202"), "{got}");
    }
}
