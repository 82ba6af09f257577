//! Finds out what isolation this host allows, once, at server start.

use std::fmt;
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::unistd::{geteuid, pipe2};

use crate::cgroup::{self, CgroupLayout, CgroupVersion, ControllerProbe};
use crate::{mountinfo, sys};

/// One isolation mechanism and whether this host lets us use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feature {
    /// What it is: "pid namespace", "memory cgroup", ...
    pub name: &'static str,
    pub enabled: bool,
    /// How it is provided ("CLONE_NEWPID") or why not ("not root (euid 1000)").
    pub detail: String,
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.enabled { "on" } else { "off" };
        write!(f, "{}: {state} ({})", self.name, self.detail)
    }
}

/// The result of [`probe`]: which isolation [`crate::spawn`] will apply.
#[derive(Debug, Clone)]
pub struct Isolation {
    features: Vec<Feature>,
    /// Namespaces, mounts and uid switching all work: run through the helper.
    pub(crate) sandbox: bool,
    /// Root with CAP_SETUID/CAP_SETGID: the program can run as the spec's uid even without
    /// namespaces.
    pub(crate) setuid: bool,
    pub(crate) cgroups: Option<CgroupLayout>,
}

impl Isolation {
    /// Every mechanism, on or off, with the reason; for `nimbus doctor` and the startup log.
    pub fn features(&self) -> Vec<Feature> {
        self.features.clone()
    }

    /// True when code is at /var/task inside a private mount namespace.
    pub fn mounts(&self) -> bool {
        self.sandbox
    }

    /// The cgroup interface in use, if any controller is usable.
    pub fn cgroup_version(&self) -> Option<CgroupVersion> {
        self.cgroups.as_ref().map(|c| c.version)
    }

    /// No isolation at all: programs run directly as the server's user, without cgroups.
    /// For `--no-sandbox` style switches and for tests of the fallback path.
    pub fn disabled() -> Self {
        Isolation {
            features: vec![Feature {
                name: "sandbox",
                enabled: false,
                detail: "disabled by configuration".into(),
            }],
            sandbox: false,
            setuid: false,
            cgroups: None,
        }
    }
}

const CAP_SETGID: u32 = 6;
const CAP_SETUID: u32 = 7;
const CAP_SYS_ADMIN: u32 = 21;

/// Checks what this host allows: root and capabilities, each namespace (tried in a forked
/// child), private mounts, uid switching, and which cgroup controllers are writable.
pub fn probe() -> Isolation {
    let mut features = Vec::new();
    let euid = geteuid().as_raw();
    let caps = effective_caps();
    let has = |cap: u32| caps.is_some_and(|c| c & (1u64 << cap) != 0);
    let root = euid == 0;
    features.push(Feature {
        name: "root",
        enabled: root,
        detail: if root {
            "euid 0".into()
        } else {
            format!("not root (euid {euid})")
        },
    });

    let not_root = || format!("not root (euid {euid})");
    let admin = root && has(CAP_SYS_ADMIN);
    let mut ns_ok = true;
    for (name, flag, flag_name) in [
        ("mount namespace", libc::CLONE_NEWNS, "CLONE_NEWNS"),
        ("pid namespace", libc::CLONE_NEWPID, "CLONE_NEWPID"),
        ("ipc namespace", libc::CLONE_NEWIPC, "CLONE_NEWIPC"),
        ("uts namespace", libc::CLONE_NEWUTS, "CLONE_NEWUTS"),
    ] {
        let result = if !root {
            Err(not_root())
        } else if !admin {
            Err("no CAP_SYS_ADMIN".into())
        } else {
            // SAFETY: unshare only changes the calling (forked, throwaway) process.
            in_child(|| unsafe { check(0, libc::unshare(flag)) })
                .map_err(|(_, e)| format!("unshare({flag_name}): {e}"))
        };
        ns_ok &= result.is_ok();
        features.push(feature(name, flag_name.into(), result));
    }

    let mounts = if !admin {
        Err(if root {
            "no CAP_SYS_ADMIN".into()
        } else {
            not_root()
        })
    } else {
        in_child(probe_mounts).map_err(|(step, e)| {
            let what = ["unshare(CLONE_NEWNS)", "mount / MS_PRIVATE", "mount tmpfs"];
            format!("{}: {e}", what[usize::from(step).min(2)])
        })
    };
    ns_ok &= mounts.is_ok();
    features.push(feature(
        "private mounts",
        "read-only bind mounts and tmpfs in a private mount namespace".into(),
        mounts,
    ));

    let setuid = if !root {
        Err(not_root())
    } else if !(has(CAP_SETUID) && has(CAP_SETGID)) {
        Err("no CAP_SETUID/CAP_SETGID".into())
    } else {
        in_child(probe_setuid).map_err(|(step, e)| {
            let what = ["setgroups", "setresgid", "setresuid"];
            format!("{}(65534): {e}", what[usize::from(step).min(2)])
        })
    };
    let setuid_ok = setuid.is_ok();
    features.push(feature(
        "setuid",
        "programs run as unprivileged uids".into(),
        setuid,
    ));

    let mounts_table = mountinfo::read_self().unwrap_or_default();
    let (cgroups, controller_probes) = cgroup::probe_layout(&cgroup::find_mounts(&mounts_table));
    for ControllerProbe {
        controller,
        enabled,
        detail,
    } in controller_probes
    {
        let name = match controller {
            cgroup::Controller::Memory => "memory cgroup",
            cgroup::Controller::Cpu => "cpu cgroup",
            cgroup::Controller::Pids => "pids cgroup",
        };
        features.push(Feature {
            name,
            enabled,
            detail,
        });
    }

    let sandbox = ns_ok && setuid_ok;
    features.push(Feature {
        name: "sandbox",
        enabled: sandbox,
        detail: if sandbox {
            "namespaces + pivot_root into a read-only root".into()
        } else {
            "programs run directly (own session, cleared environment)".into()
        },
    });
    Isolation {
        features,
        sandbox,
        setuid: setuid_ok,
        cgroups,
    }
}

fn feature(name: &'static str, how: String, result: Result<(), String>) -> Feature {
    match result {
        Ok(()) => Feature {
            name,
            enabled: true,
            detail: how,
        },
        Err(why) => Feature {
            name,
            enabled: false,
            detail: why,
        },
    }
}

fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Maps a raw syscall result to (step, errno) without allocating.
fn check(step: u8, r: libc::c_int) -> Result<(), (u8, i32)> {
    if r < 0 {
        Err((step, sys::errno()))
    } else {
        Ok(())
    }
}

fn probe_mounts() -> Result<(), (u8, i32)> {
    // SAFETY: these calls affect only the forked probe child and its private mount namespace;
    // the strings are static C strings.
    unsafe {
        check(0, libc::unshare(libc::CLONE_NEWNS))?;
        let none = std::ptr::null();
        check(
            1,
            libc::mount(
                none,
                c"/".as_ptr(),
                none,
                libc::MS_REC | libc::MS_PRIVATE,
                none.cast(),
            ),
        )?;
        check(
            2,
            libc::mount(
                c"tmpfs".as_ptr(),
                c"/".as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                c"size=4k".as_ptr().cast(),
            ),
        )
    }
}

fn probe_setuid() -> Result<(), (u8, i32)> {
    // Raw syscalls: glibc's wrappers synchronise every thread of the process, and the parent
    // that forked us may have had many.
    // SAFETY: these change only the credentials of the forked probe child.
    unsafe {
        let r = libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>());
        check(0, r as libc::c_int)?;
        let r = libc::syscall(libc::SYS_setresgid, 65534, 65534, 65534);
        check(1, r as libc::c_int)?;
        let r = libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534);
        check(2, r as libc::c_int)
    }
}

/// Runs `f` in a forked child and returns its result (step, errno as a name).
///
/// The caller may be multi-threaded, so `f` must only make raw system calls: no allocation,
/// no locks. The child reports through a pipe and leaves with `_exit`.
fn in_child(f: impl FnOnce() -> Result<(), (u8, i32)>) -> Result<(), (u8, Errno)> {
    let (r, w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| (0, e))?;
    // SAFETY: after fork the child runs only `f` (raw syscalls, see above), one write(2) and
    // _exit(2), all async-signal-safe, so the parent's other threads and locks do not matter.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err((0, Errno::last()));
    }
    if pid == 0 {
        let mut buf = [0u8; 5];
        if let Err((step, errno)) = f() {
            buf[0] = 1;
            buf[1] = step;
            buf[2..5].copy_from_slice(&errno.to_le_bytes()[..3]);
        }
        // SAFETY: writing a stack buffer to our pipe, then exiting without running atexit
        // handlers that belong to the parent.
        unsafe {
            libc::write(w.as_raw_fd(), buf.as_ptr().cast(), buf.len());
            libc::_exit(0);
        }
    }
    drop(w);
    let mut buf = [0u8; 5];
    let n = nix::unistd::read(&r, &mut buf).unwrap_or(0);
    let mut status = 0;
    // SAFETY: waiting for the child we just forked; `status` is a valid out-pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if n != buf.len() {
        return Err((0, Errno::ECHILD));
    }
    if buf[0] == 0 {
        Ok(())
    } else {
        Err((
            buf[1],
            Errno::from_raw(i32::from_le_bytes([buf[2], buf[3], buf[4], 0])),
        ))
    }
}
