//! Thin wrappers over system calls that nix does not offer (pidfds, close_range).

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

/// `pidfd_open(2)`: a handle that keeps naming this process even after its pid is reused.
/// `None` on kernels older than 5.3.
pub(crate) fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new fd or -1; no memory is shared.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    let fd = i32::try_from(fd).ok()?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `pidfd_send_signal(2)`.
pub(crate) fn pidfd_kill(pidfd: BorrowedFd<'_>, sig: i32) -> Result<(), Errno> {
    // SAFETY: a valid fd, a signal number, a null siginfo (allowed) and zero flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// Marks every fd from `first` up as close-on-exec, so the program inherits only 0, 1, 2.
pub(crate) fn cloexec_from(first: i32) {
    let first = u32::try_from(first).unwrap_or(3);
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on fds; it frees nothing.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return;
    }
    // Kernels before 5.11: walk the open fds instead.
    let fds: Vec<i32> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|fd| *fd >= first as i32)
            .collect(),
        Err(_) => (first as i32..4096).collect(),
    };
    for fd in fds {
        set_cloexec(fd, true);
    }
}

pub(crate) fn set_cloexec(fd: i32, on: bool) {
    let flags = if on { libc::FD_CLOEXEC } else { 0 };
    // SAFETY: F_SETFD on an arbitrary integer either changes that fd's flag or fails with EBADF.
    unsafe {
        libc::fcntl(fd, libc::F_SETFD, flags);
    }
}

/// Clears close-on-exec on `fds`, so a program about to be exec'd inherits them. Only fcntl(2):
/// safe between fork and exec in a copy of a multi-threaded process.
pub(crate) fn keep_across_exec(fds: &[i32]) -> std::io::Result<()> {
    for &fd in fds {
        // SAFETY: F_SETFD on an integer either changes that fd's flag or fails with EBADF.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `malloc_trim(0)` where the C library has it (glibc).
pub(crate) fn malloc_trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes an integer and only walks the allocator's own free lists,
        // under the allocator's locks; it touches no memory the program owns.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Last errno as a raw number, for code paths that must not allocate.
pub(crate) fn errno() -> i32 {
    Errno::last_raw()
}
