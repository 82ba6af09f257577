//! Runs one function instance as a process tree in a sandbox: private mount, pid, ipc and uts
//! namespaces with a read-only root built from bind mounts, per-instance cgroups (v1 or v2),
//! and an unprivileged uid. When the host allows none of that, the program runs directly in
//! its own session with a cleared environment.
//!
//! The server is multi-threaded, so it never does namespace or mount work after `fork`: it
//! re-executes its own binary as a single-threaded helper ([`helper_main`]), which builds the
//! sandbox, starts the program and reports over a status pipe.
//!
//! This is the only crate in Nimbus with `unsafe`; every block says why it holds.

mod cgroup;
mod helper;
pub mod idle;
mod instance;
mod launcher;
mod mountinfo;
mod probe;
mod protocol;
mod sys;

use std::path::{Path, PathBuf};

use nix::errno::Errno;

pub use cgroup::CgroupVersion;
pub use instance::{
    prepare_spare, spawn, Adoption, AssignError, ExitInfo, Instance, MemoryProbe, Spare,
};
pub use launcher::Launcher;
pub use probe::{probe, Feature, Isolation};

/// Where the sandbox puts the function code, the runtime and the writable scratch space.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The executable re-executed as the sandbox helper (the nimbus binary).
    pub helper_exe: PathBuf,
    /// Arguments that make `helper_exe` call [`helper_main`], e.g. `["__sandbox-init"]`.
    pub helper_args: Vec<String>,
    /// A private directory under the data dir: mount point of each sandbox's root (inside its
    /// own mount namespace) and, without namespaces, home of the per-instance tmp dirs.
    pub scratch_dir: PathBuf,
    /// Parent cgroup name: instances live at `<hierarchy>/<cgroup_name>/<instance id>`.
    pub cgroup_name: String,
    /// What [`probe`] found this host allows.
    pub isolation: Isolation,
    /// The fork server that starts helpers ([`Launcher::start`]); without one every helper
    /// is `helper_exe` executed afresh.
    pub launcher: Option<Launcher>,
}

/// Path of the code inside the sandbox.
const TASK_ROOT: &str = "/var/task";
/// Path of the runtime (bootstrap and libraries) inside the sandbox.
const RUNTIME_ROOT: &str = "/var/runtime";

impl SandboxConfig {
    /// Removes this server's parent cgroup from every hierarchy (at shutdown, once every
    /// instance is gone). Returns whether it is gone (true without cgroups).
    pub fn remove_parent_cgroup(&self) -> bool {
        match &self.isolation.cgroups {
            Some(layout) => cgroup::remove_parent(layout, &self.cgroup_name),
            None => true,
        }
    }

    /// Removes empty parent cgroups named `<prefix><pid>` whose server is gone (at start-up);
    /// returns how many directories went.
    pub fn remove_stale_cgroups(&self, prefix: &str) -> usize {
        match &self.isolation.cgroups {
            Some(layout) => cgroup::remove_stale_parents(layout, prefix),
            None => 0,
        }
    }

    /// Where the program sees `code_dir`: `/var/task` with mounts, else `code_dir` itself.
    pub fn task_root(&self, code_dir: &Path) -> PathBuf {
        if self.isolation.mounts() {
            PathBuf::from(TASK_ROOT)
        } else {
            code_dir.to_path_buf()
        }
    }

    /// Where the program sees `runtime_dir`: `/var/runtime` with mounts, else `runtime_dir`.
    pub fn runtime_root(&self, runtime_dir: &Path) -> PathBuf {
        if self.isolation.mounts() {
            PathBuf::from(RUNTIME_ROOT)
        } else {
            runtime_dir.to_path_buf()
        }
    }

    /// The program's writable temp dir: `/tmp` with mounts, else a per-instance directory
    /// under `scratch_dir` that [`spawn`] creates and the instance's drop removes.
    pub fn tmp_dir(&self, instance_id: &str) -> PathBuf {
        if self.isolation.mounts() {
            PathBuf::from("/tmp")
        } else {
            self.scratch_dir.join("tmp").join(instance_id)
        }
    }
}

/// What to run and with which limits.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    /// Unique, `[a-z0-9-]{1,64}`; names the cgroup directory and the hostname.
    pub id: String,
    /// Absolute path as seen inside the sandbox (e.g. `/var/task/bootstrap`).
    pub program: PathBuf,
    /// `argv[1..]`.
    pub args: Vec<String>,
    /// The complete environment; nothing of the server's environment is inherited.
    pub env: Vec<(String, String)>,
    /// Host directory shown read-only at `/var/task`; also the working directory.
    pub code_dir: PathBuf,
    /// Host directory shown read-only at `/var/runtime`.
    pub runtime_dir: Option<PathBuf>,
    /// Extra host paths shown read-only at the same path (interpreter prefixes). Paths that do
    /// not exist are skipped.
    pub ro_paths: Vec<PathBuf>,
    /// Host paths that must look empty even when under a bound path (the data dir).
    pub mask_paths: Vec<PathBuf>,
    /// Memory limit (also the swap limit: the instance gets no swap).
    pub memory_mb: u32,
    /// CPU share as a memory size: 1769 MB is one vCPU's worth. No quota is set.
    pub cpu_weight_mb: u32,
    /// Maximum number of tasks (processes and threads) in the instance.
    pub pids_max: u32,
    /// Size of the private tmpfs at `/tmp` (and of `/dev/shm`).
    pub tmp_mb: u32,
    /// Unprivileged ids the program runs as.
    pub uid: u32,
    pub gid: u32,
}

/// A program to run inside a sandbox.
#[derive(Debug, Clone)]
pub struct Program {
    /// Absolute path as seen inside the sandbox.
    pub program: PathBuf,
    /// `argv[1..]`.
    pub args: Vec<String>,
    /// The complete environment; nothing of the server's environment is inherited.
    pub env: Vec<(String, String)>,
}

/// A sandbox built before it is needed: everything of an [`InstanceSpec`] except which
/// function's code it shows and what it runs. See [`prepare_spare`].
#[derive(Debug, Clone)]
pub struct SpareSpec {
    /// Unique, `[a-z0-9-]{1,64}`; names the cgroup directory and the hostname.
    pub id: String,
    /// Host directory holding one subdirectory of code per function version; the assignment
    /// names the one shown at `/var/task`.
    pub code_root: PathBuf,
    pub runtime_dir: Option<PathBuf>,
    pub ro_paths: Vec<PathBuf>,
    pub mask_paths: Vec<PathBuf>,
    /// Limits until the assignment sets the function's.
    pub memory_mb: u32,
    pub cpu_weight_mb: u32,
    pub pids_max: u32,
    pub tmp_mb: u32,
    pub uid: u32,
    pub gid: u32,
    /// Started now, as `uid`, in `/`, with fd 3 open: a runtime that loads itself and then
    /// waits on fd 3 for its function's environment (`KEY=value\0` entries, then EOF).
    pub prestart: Option<Program>,
    /// Without `prestart`: leave room for a program forked into the sandbox from outside (a
    /// zygote that joins its namespaces, see [`Spare::adoption`]) and adopted on assignment.
    pub adoptable: bool,
}

/// What a spare becomes.
#[derive(Debug, Clone)]
pub struct Assignment {
    /// Name of the subdirectory of [`SpareSpec::code_root`] to show at `/var/task`.
    pub code: String,
    pub memory_mb: u32,
    pub cpu_weight_mb: u32,
    pub pids_max: u32,
    pub tmp_mb: u32,
    pub start: AssignStart,
}

/// How the function's program starts in an assigned spare.
#[derive(Debug, Clone)]
pub enum AssignStart {
    /// The prestarted program receives this environment and carries on as the function.
    Handoff { env: Vec<(String, String)> },
    /// This program is exec'd (a prestarted one, if any, is killed first).
    Exec(Program),
}

/// Everything that can go wrong while setting up or starting an instance.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A system call failed; `path` names what it was applied to.
    #[error("{syscall} {path}: {errno}")]
    Syscall {
        syscall: String,
        path: String,
        errno: Errno,
    },
    /// The program could not be executed (missing, not executable, bad interpreter, ...).
    /// Lambda calls this `Runtime.InvalidEntrypoint`.
    #[error("fork/exec {}: {}", program.display(), errno_sentence(*errno))]
    Exec { program: PathBuf, errno: Errno },
    /// The spec cannot be run as given.
    #[error("invalid instance spec: {0}")]
    InvalidSpec(String),
    /// The helper process could not be started or failed outside a system call.
    #[error("sandbox helper {}: {reason}", exe.display())]
    Helper { exe: PathBuf, reason: String },
}

impl SandboxError {
    /// True when the program itself could not be executed (as opposed to a sandbox failure).
    pub fn is_exec_error(&self) -> bool {
        matches!(self, SandboxError::Exec { .. })
    }

    pub(crate) fn io(syscall: &str, path: &Path, err: &std::io::Error) -> Self {
        SandboxError::Syscall {
            syscall: syscall.to_string(),
            path: path.display().to_string(),
            errno: Errno::from_raw(err.raw_os_error().unwrap_or(libc::EIO)),
        }
    }
}

/// "No such file or directory" -> "no such file or directory", as Go's `fork/exec` prints it.
fn errno_sentence(errno: Errno) -> String {
    let desc = errno.desc();
    let mut chars = desc.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => format!("{errno:?}"),
    }
}

/// Entry point of the helper process. Call it first thing in `main` when the binary is
/// started with [`SandboxConfig::helper_args`], before any thread (or tokio runtime) exists.
pub fn helper_main() -> ! {
    helper::main()
}

/// Hands the allocator's free memory back to the kernel (glibc's `malloc_trim(0)`). glibc keeps
/// the chunks freed after a burst resident in every arena; a server that has gone quiet calls
/// this so its RSS is what it holds, not what it once held. Returns whether memory was released
/// (always false on other C libraries).
pub fn release_free_heap() -> bool {
    sys::malloc_trim()
}

/// Entry point of the launcher process (see [`Launcher`]). Call it first thing in `main` when
/// the binary is started with the arguments given to [`Launcher::start`], before any thread
/// exists.
pub fn launcher_main() -> ! {
    launcher::main()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_heap_in_the_middle_of_an_arena_goes_back_to_the_kernel() {
        // 16 MB in 4 KB chunks, then one chunk after them that stays: the freed ones are not at
        // the top of the heap, so free() alone cannot return them; malloc_trim can.
        let chunks: Vec<Vec<u8>> = (0..4096).map(|i| vec![(i % 251) as u8; 4096]).collect();
        let pin = vec![1u8; 4096];
        drop(chunks);
        assert!(release_free_heap(), "nothing was released");
        assert_eq!(pin[4095], 1);
    }

    #[test]
    fn exec_error_reads_like_go() {
        let e = SandboxError::Exec {
            program: "/var/task/bootstrap".into(),
            errno: Errno::ENOENT,
        };
        assert_eq!(
            e.to_string(),
            "fork/exec /var/task/bootstrap: no such file or directory"
        );
        assert!(e.is_exec_error());
    }

    #[test]
    fn syscall_error_names_path_and_errno() {
        let e = SandboxError::Syscall {
            syscall: "mount".into(),
            path: "/var/task (bind /data/code/ab12)".into(),
            errno: Errno::EPERM,
        };
        assert_eq!(
            e.to_string(),
            "mount /var/task (bind /data/code/ab12): EPERM: Operation not permitted"
        );
    }
}
