//! What instances print: lines read from their stdout and stderr, tagged with the invocation they
//! belong to, capped per invocation, kept as a tail for `X-Amz-Log-Result`, and sent to the log
//! sink. One task per instance reads both pipes as data arrives; at an invocation's end the
//! invoker drains them itself ([`Capture::flush`]), so every line printed before the response
//! is accounted for before it writes END. Both read under the same lock, so no bytes can be
//! read by one and not yet tagged when the other looks.

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use nimbus_core::Limits;
use nimbus_telemetry::LogSink;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::process::{ChildStderr, ChildStdout};

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
    /// The instance's stdout and stderr with their read state; see [`Capture::flush`].
    pipes: Mutex<Pipes>,
}

struct Pipes {
    out: Reader<ChildStdout>,
    err: Reader<ChildStderr>,
}

/// One pipe (None once it closed), its read buffer and its partial line.
struct Reader<R> {
    pipe: Option<R>,
    buf: Vec<u8>,
    lines: LineBuf,
}

impl<R> Reader<R> {
    fn new(pipe: Option<R>) -> Self {
        Reader {
            pipe,
            buf: vec![0u8; READ_BUF_MIN],
            lines: LineBuf::default(),
        }
    }
}

/// Reads a pipe poll by poll at most this many times before letting other tasks run.
const READS_PER_POLL: usize = 16;
/// The most an end-of-invocation drain reads from one pipe: twice the largest pipe buffer an
/// unprivileged process can ask for (`/proc/sys/fs/pipe-max-size`, 1 MiB by default), so all
/// that was printed before the response is read, while a process that never stops printing
/// cannot hold the invoker.
const DRAIN_MAX_BYTES: usize = 2 * 1024 * 1024;

impl<R: AsyncRead + AsFd + Unpin> Reader<R> {
    /// Reads what tokio reports as ready; `Ready` once the pipe has closed.
    fn poll_lines(&mut self, cx: &mut Context<'_>, capture: &Capture) -> Poll<()> {
        for _ in 0..READS_PER_POLL {
            let Some(pipe) = self.pipe.as_mut() else {
                return Poll::Ready(());
            };
            let mut rb = ReadBuf::new(&mut self.buf);
            match Pin::new(pipe).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) if !rb.filled().is_empty() => {
                    let n = rb.filled().len();
                    self.lines.feed(&self.buf[..n], capture);
                    grow_if_filled(&mut self.buf, n);
                }
                // End of file, or a broken pipe: either way nothing more comes.
                Poll::Ready(_) => {
                    self.lines.flush(capture);
                    self.pipe = None;
                    return Poll::Ready(());
                }
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Reads what the pipe holds right now, and ends the partial line. This asks the kernel
    /// directly (the pipe is non-blocking) rather than tokio, whose readiness may lag behind
    /// data that is already there. Bounded by [`DRAIN_MAX_BYTES`].
    fn drain_now(&mut self, capture: &Capture) {
        let mut read = 0;
        while read < DRAIN_MAX_BYTES {
            let Some(pipe) = self.pipe.as_ref() else {
                break;
            };
            match nix::unistd::read(pipe.as_fd(), &mut self.buf) {
                // End of file: the pipe stays for the capture task, which tokio wakes for the
                // same end and which then lets it go.
                Ok(0) => break,
                Ok(n) => {
                    read += n;
                    self.lines.feed(&self.buf[..n], capture);
                    grow_if_filled(&mut self.buf, n);
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
        self.lines.flush(capture);
    }
}

impl Capture {
    pub(crate) fn new(
        names: StreamNames,
        sink: LogSink,
        stdout: Option<ChildStdout>,
        stderr: Option<ChildStderr>,
    ) -> Capture {
        Capture {
            names,
            sink,
            current: Mutex::new(None),
            init: InvocationLog::init(),
            pipes: Mutex::new(Pipes {
                out: Reader::new(stdout),
                err: Reader::new(stderr),
            }),
        }
    }

    fn pipes(&self) -> MutexGuard<'_, Pipes> {
        self.pipes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes sure every line printed so far has been read and tagged: drains both pipes and
    /// ends their partial lines. Called at the end of an invocation, before END.
    pub(crate) fn flush(&self) {
        let mut p = self.pipes();
        p.out.drain_now(self);
        p.err.drain_now(self);
    }

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

/// Reads both pipes as data arrives, until both close.
pub(crate) fn spawn_capture(capture: Arc<Capture>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(std::future::poll_fn(move |cx| {
        let mut p = capture.pipes();
        let out = p.out.poll_lines(cx, &capture);
        let err = p.err.poll_lines(cx, &capture);
        if out.is_ready() && err.is_ready() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }))
}
