//! What instances print: lines read from their stdout and stderr, tagged with the invocation they
//! belong to, capped per invocation, kept as a tail for `X-Amz-Log-Result`, and sent to the log
//! sink. One task per instance reads both pipes and answers flush requests, so the invoker can
//! be sure every line printed before the response is accounted for before it writes END.

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};

use nimbus_core::Limits;
use nimbus_telemetry::LogSink;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, oneshot};

/// Longest line kept whole; longer output is split into lines of this size.
const MAX_LINE: usize = 256 * 1024;

/// The log of one invocation (or of an instance's init phase): tagging, cap and tail.
pub(crate) struct InvocationLog {
    request_id: Option<Arc<str>>,
    /// Whether lines are kept for the tail: only when the caller asked for it (`LogType:
    /// Tail`), and always for an instance's init output, which leads a cold start's tail.
    keep_tail: bool,
    state: Mutex<LogState>,
}

#[derive(Default)]
struct LogState {
    output_bytes: usize,
    dropped_bytes: usize,
    tail: VecDeque<String>,
    tail_bytes: usize,
}

impl InvocationLog {
    /// The log of one invocation; `keep_tail` when its tail will be asked for.
    pub(crate) fn new(request_id: &str, keep_tail: bool) -> Arc<InvocationLog> {
        Arc::new(InvocationLog {
            request_id: Some(request_id.into()),
            keep_tail,
            state: Mutex::new(LogState::default()),
        })
    }

    /// The log of an instance's init phase: lines outside any invocation.
    pub(crate) fn init() -> Arc<InvocationLog> {
        Arc::new(InvocationLog {
            request_id: None,
            keep_tail: true,
            state: Mutex::new(LogState::default()),
        })
    }

    fn remember(&self, state: &mut LogState, line: &str) {
        if !self.keep_tail {
            return;
        }
        state.tail_bytes += line.len() + 1;
        state.tail.push_back(line.to_string());
        while state.tail_bytes > Limits::LOG_TAIL_BYTES && state.tail.len() > 1 {
            if let Some(old) = state.tail.pop_front() {
                state.tail_bytes -= old.len() + 1;
            }
        }
    }

    /// A line the platform writes (START, END, REPORT, errors): never capped.
    pub(crate) fn platform(&self, sink: &LogSink, names: &StreamNames, line: String) {
        if self.keep_tail {
            if let Ok(mut st) = self.state.lock() {
                self.remember(&mut st, &line);
            }
        }
        sink.emit(
            &names.function,
            &names.stream,
            self.request_id.as_ref(),
            nimbus_store::now_ms(),
            line,
        );
    }

    /// A line the function printed: counted against the per-invocation cap.
    fn output(&self, sink: &LogSink, names: &StreamNames, line: String) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        if st.output_bytes + line.len() > Limits::LOG_BYTES_PER_INVOCATION {
            st.dropped_bytes += line.len() + 1;
            return;
        }
        st.output_bytes += line.len() + 1;
        self.remember(&mut st, &line);
        drop(st);
        sink.emit(
            &names.function,
            &names.stream,
            self.request_id.as_ref(),
            nimbus_store::now_ms(),
            line,
        );
    }

    /// How many bytes of output were dropped by the cap.
    pub(crate) fn dropped_bytes(&self) -> usize {
        self.state.lock().map(|s| s.dropped_bytes).unwrap_or(0)
    }

    /// The last ~4 KB of this log, one line per line.
    pub(crate) fn tail(&self) -> String {
        Self::tail_of(&[self])
    }

    /// The last ~4 KB of several logs one after the other (an instance's init output, then its
    /// first invocation's), so a cold start's tail shows what the function printed at import.
    pub(crate) fn tail_of(logs: &[&InvocationLog]) -> String {
        let mut lines: Vec<String> = Vec::new();
        for log in logs {
            if let Ok(st) = log.state.lock() {
                lines.extend(st.tail.iter().cloned());
            }
        }
        let mut size = 0;
        let mut first = lines.len();
        while first > 0 && (size + lines[first - 1].len() < Limits::LOG_TAIL_BYTES || size == 0) {
            first -= 1;
            size += lines[first].len() + 1;
        }
        let mut out = String::with_capacity(size);
        for l in &lines[first..] {
            out.push_str(l);
            out.push('\n');
        }
        // A single huge last line can still exceed the limit: keep its end.
        if out.len() > Limits::LOG_TAIL_BYTES {
            let mut cut = out.len() - Limits::LOG_TAIL_BYTES;
            while !out.is_char_boundary(cut) {
                cut += 1;
            }
            out = out.split_off(cut);
        }
        out
    }
}

/// Which log stream an instance writes to.
pub(crate) struct StreamNames {
    pub function: Arc<str>,
    pub stream: Arc<str>,
}

/// Where an instance's output goes right now.
pub(crate) struct Capture {
    pub names: StreamNames,
    pub sink: LogSink,
    /// The invocation being served, if any; lines outside invocations go to `init`.
    pub current: Mutex<Option<Arc<InvocationLog>>>,
    pub init: Arc<InvocationLog>,
}

impl Capture {
    fn line(&self, bytes: &[u8]) {
        let mut text = String::from_utf8_lossy(bytes).into_owned();
        if text.ends_with('\r') {
            text.pop();
        }
        let log = self
            .current
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .unwrap_or_else(|| self.init.clone());
        log.output(&self.sink, &self.names, text);
    }
}

/// Splits a byte stream into lines.
#[derive(Default)]
struct LineBuf {
    buf: Vec<u8>,
}

impl LineBuf {
    fn feed(&mut self, data: &[u8], capture: &Capture) {
        self.buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(pos) = self.buf[start..].iter().position(|b| *b == b'\n') {
            capture.line(&self.buf[start..start + pos]);
            start += pos + 1;
        }
        self.buf.drain(..start);
        while self.buf.len() >= MAX_LINE {
            let rest = self.buf.split_off(MAX_LINE);
            capture.line(&self.buf);
            self.buf = rest;
        }
    }

    fn flush(&mut self, capture: &Capture) {
        if !self.buf.is_empty() {
            capture.line(&self.buf);
            self.buf.clear();
        }
    }
}

/// Each pipe's read buffer starts at this size: most instances print little, and an idle warm
/// instance should cost the server little memory (two 64 KB buffers were 128 KB of every
/// instance's ~170 KB).
const READ_BUF_MIN: usize = 1024;
/// ...and grows to this once a read fills it, for instances that print a lot.
const READ_BUF_MAX: usize = 64 * 1024;

/// Grows `buf` to [`READ_BUF_MAX`] when the read of `n` bytes filled it.
fn grow_if_filled(buf: &mut Vec<u8>, n: usize) {
    if n == buf.len() && buf.len() < READ_BUF_MAX {
        buf.resize(READ_BUF_MAX, 0);
    }
}

/// Requests to the capture task.
pub(crate) type FlushRequest = oneshot::Sender<()>;

/// Reads both pipes until they close. A flush request drains whatever is readable right now,
/// emits partial lines, then answers.
pub(crate) fn spawn_capture<O, E>(
    capture: Arc<Capture>,
    stdout: Option<O>,
    stderr: Option<E>,
    mut flushes: mpsc::UnboundedReceiver<FlushRequest>,
) -> tokio::task::JoinHandle<()>
where
    O: AsyncRead + AsFd + Unpin + Send + 'static,
    E: AsyncRead + AsFd + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut out = stdout;
        let mut err = stderr;
        let (mut lb_out, mut lb_err) = (LineBuf::default(), LineBuf::default());
        let mut b1 = vec![0u8; READ_BUF_MIN];
        let mut flushes_open = true;
        let mut b2 = vec![0u8; READ_BUF_MIN];
        loop {
            if out.is_none() && err.is_none() {
                break;
            }
            tokio::select! {
                r = read_opt(&mut out, &mut b1) => match r {
                    Some(n) if n > 0 => {
                        lb_out.feed(&b1[..n], &capture);
                        grow_if_filled(&mut b1, n);
                    }
                    _ => { lb_out.flush(&capture); out = None; }
                },
                r = read_opt(&mut err, &mut b2) => match r {
                    Some(n) if n > 0 => {
                        lb_err.feed(&b2[..n], &capture);
                        grow_if_filled(&mut b2, n);
                    }
                    _ => { lb_err.flush(&capture); err = None; }
                },
                req = flushes.recv(), if flushes_open => {
                    let Some(ack) = req else {
                        // The instance is gone; keep draining the pipes until they close.
                        flushes_open = false;
                        continue;
                    };
                    drain_now(&mut out, &mut b1, &mut lb_out, &capture);
                    drain_now(&mut err, &mut b2, &mut lb_err, &capture);
                    lb_out.flush(&capture);
                    lb_err.flush(&capture);
                    let _ = ack.send(());
                }
            }
        }
        // Pipes closed: answer flushes until the instance is dropped.
        while let Some(ack) = flushes.recv().await {
            let _ = ack.send(());
        }
    })
}

async fn read_opt<R: AsyncRead + Unpin>(r: &mut Option<R>, buf: &mut [u8]) -> Option<usize> {
    match r {
        Some(r) => r.read(buf).await.ok(),
        None => std::future::pending().await,
    }
}

/// Reads what the pipe holds right now. This asks the kernel directly (the pipe is
/// non-blocking) rather than tokio, whose readiness may lag behind data that is already there.
fn drain_now<R: AsFd>(r: &mut Option<R>, buf: &mut Vec<u8>, lb: &mut LineBuf, capture: &Capture) {
    let Some(reader) = r.as_ref() else { return };
    loop {
        match nix::unistd::read(reader.as_fd(), buf) {
            Ok(0) => {
                lb.flush(capture);
                *r = None;
                return;
            }
            Ok(n) => {
                lb.feed(&buf[..n], capture);
                grow_if_filled(buf, n);
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
    }
}
