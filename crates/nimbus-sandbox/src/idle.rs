//! A short spin before the server's async worker goes to sleep.
//!
//! On a virtual machine a CPU with nothing to run halts, and waking it again (an interrupt sent
//! across CPUs, the hypervisor rescheduling the virtual CPU) costs tens of microseconds: more
//! than everything Nimbus does for a warm invocation. A warm invocation at low concurrency puts
//! two such sleeps on its critical path: the worker waits for the function's result, then for
//! the caller's next request, and each wait is usually shorter than the wake-up itself. So the
//! worker, about to sleep, first watches the async runtime's event queue (its epoll instance)
//! for up to a budget, yielding the CPU to anything else runnable on each turn. Events are only
//! watched (`poll` on the epoll descriptor reports that some are ready without taking them):
//! the runtime's own `epoll_wait` still collects them, at once, when the worker then parks.
//!
//! Spinning only pays while another CPU is free for everything else: a spinning CPU looks busy
//! to the kernel, which then queues other work (a function's runtime, a spare being started, a
//! cold start's helpers) on the remaining CPUs. So the worker spins only when the machine has
//! no more runnable tasks than CPUs, counting itself (`/proc/loadavg`'s running tasks).

use std::fs::File;
use std::os::fd::{BorrowedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// The process's first epoll instance: the async runtime's, which the server builds before
/// anything else that could make one. `None` when there is none.
fn runtime_epoll() -> Option<RawFd> {
    static FD: OnceLock<Option<RawFd>> = OnceLock::new();
    *FD.get_or_init(|| {
        std::fs::read_dir("/proc/self/fd")
            .ok()?
            .flatten()
            .filter(|e| {
                std::fs::read_link(e.path())
                    .is_ok_and(|t| t.as_os_str() == "anon_inode:[eventpoll]")
            })
            .filter_map(|e| e.file_name().to_str()?.parse::<RawFd>().ok())
            .min()
    })
}

/// Tasks runnable on the whole machine right now, the caller included: the running part of
/// `/proc/loadavg`'s fourth field ("running/total").
fn runnable() -> Option<usize> {
    static LOADAVG: OnceLock<Option<File>> = OnceLock::new();
    let file = LOADAVG
        .get_or_init(|| File::open("/proc/loadavg").ok())
        .as_ref()?;
    let mut buf = [0u8; 128];
    let n = file.read_at(&mut buf, 0).ok()?;
    parse_running(std::str::from_utf8(&buf[..n]).ok()?)
}

fn parse_running(loadavg: &str) -> Option<usize> {
    let field = loadavg.split_ascii_whitespace().nth(3)?;
    field.split_once('/')?.0.parse().ok()
}

/// Returns once the async runtime has an event ready, or after `budget`, whichever is first;
/// at once when more tasks are runnable than the machine's `cpus` (the caller included), or
/// when the runtime's epoll instance cannot be found or watched.
pub fn spin_until_ready(budget: Duration, cpus: usize) {
    let cpu_to_spare = || runnable().is_some_and(|r| r <= cpus);
    if !cpu_to_spare() {
        return;
    }
    let Some(raw) = runtime_epoll() else {
        return;
    };
    // SAFETY: `raw` is the async runtime's epoll descriptor, which stays open for as long as
    // the runtime whose worker thread calls this (it is closed only when that runtime is
    // dropped, after its workers have stopped); the borrow does not outlive this call.
    let fd = unsafe { BorrowedFd::borrow_raw(raw) };
    spin_on(fd, budget, cpu_to_spare);
}

/// Turns between two looks at whether the machine still has a CPU to spare (a look costs about
/// as much as a turn): other work that became runnable meanwhile waits at most this long for
/// the worker to give up its CPU.
const TURNS_PER_LOOK: u32 = 8;

/// Spins until `fd` is readable, `budget` has passed or `keep_going` says no (asked every
/// [`TURNS_PER_LOOK`] turns), yielding the CPU on each turn.
fn spin_on(fd: BorrowedFd<'_>, budget: Duration, keep_going: impl Fn() -> bool) {
    let start = Instant::now();
    let mut turns = 0u32;
    loop {
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(0) => {}
            // Ready, or an error that a wait would not mend: either way, stop spinning.
            _ => return,
        }
        if start.elapsed() >= budget {
            return;
        }
        turns += 1;
        if turns.is_multiple_of(TURNS_PER_LOOK) && !keep_going() {
            return;
        }
        // Anything else runnable on this CPU goes first.
        let _ = nix::sched::sched_yield();
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn spins_for_its_budget_unless_the_descriptor_becomes_ready() {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        // Nothing to read: the whole budget is spent.
        let t = Instant::now();
        spin_on(r.as_fd(), Duration::from_millis(20), || true);
        assert!(
            t.elapsed() >= Duration::from_millis(20),
            "{:?}",
            t.elapsed()
        );
        // Something to read: no spinning at all, however long the budget.
        nix::unistd::write(&w, b"x").expect("write");
        let t = Instant::now();
        spin_on(r.as_fd(), Duration::from_secs(600), || true);
        assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
        // Told to stop: it stops, with nothing to read and the budget far off.
        let (r, _w) = nix::unistd::pipe().expect("pipe");
        let t = Instant::now();
        spin_on(r.as_fd(), Duration::from_secs(600), || false);
        assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    }

    #[test]
    fn reads_the_running_tasks_of_loadavg() {
        assert_eq!(parse_running("0.02 0.04 0.01 3/123 4567\n"), Some(3));
        assert_eq!(parse_running("0.02 0.04 0.01 123 4567"), None);
        assert_eq!(parse_running(""), None);
        // This test's own thread is running.
        assert!(runnable().is_some_and(|r| r >= 1));
    }

    #[test]
    fn finds_an_epoll_instance_when_there_is_one() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("runtime");
        // The runtime exists, so some epoll instance does.
        assert!(runtime_epoll().is_some());
        drop(rt);
    }
}
