//! cgroup detection (v1 or v2), per-instance cgroup creation, limits, accounting and teardown.
//!
//! Layout: `<hierarchy>/<parent name>/<instance id>`. On v1 there is one such directory per
//! controller hierarchy (memory, cpu, pids); on v2 one directory holds every controller.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::mountinfo::MountEntry;
use crate::SandboxError;

/// Which cgroup interface the host offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Controller {
    Memory,
    Cpu,
    Pids,
}

impl Controller {
    pub const ALL: [Controller; 3] = [Controller::Memory, Controller::Cpu, Controller::Pids];

    pub fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Pids => "pids",
        }
    }
}

/// Where cgroup hierarchies are mounted, as read from mountinfo.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CgroupMounts {
    /// v1 hierarchies carrying one of the controllers we use.
    pub v1: Vec<(Controller, PathBuf)>,
    /// The cgroup2 mount, if any (on hybrid hosts it usually has no controllers).
    pub v2: Option<PathBuf>,
}

pub(crate) fn find_mounts(entries: &[MountEntry]) -> CgroupMounts {
    let mut mounts = CgroupMounts::default();
    for e in entries {
        match e.fs_type.as_str() {
            "cgroup" => {
                for c in Controller::ALL {
                    if e.has_super_option(c.name()) && !mounts.v1.iter().any(|(have, _)| *have == c)
                    {
                        mounts.v1.push((c, e.mount_point.clone()));
                    }
                }
            }
            "cgroup2" if mounts.v2.is_none() => mounts.v2 = Some(e.mount_point.clone()),
            _ => {}
        }
    }
    mounts
}

/// The controllers this host lets us use, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupLayout {
    pub version: CgroupVersion,
    /// v1: the hierarchy mount of each usable controller; v2: the cgroup2 mount for each.
    pub controllers: Vec<(Controller, PathBuf)>,
}

/// Outcome of probing one controller, for `features()`.
#[derive(Debug, Clone)]
pub(crate) struct ControllerProbe {
    pub controller: Controller,
    pub enabled: bool,
    pub detail: String,
}

/// Decides which cgroup interface to use. v1 wins when it carries any controller we need
/// (hybrid hosts mount an empty cgroup2 next to it); otherwise the cgroup2 mount is used and
/// its controllers are enabled for children of the root.
pub(crate) fn probe_layout(mounts: &CgroupMounts) -> (Option<CgroupLayout>, Vec<ControllerProbe>) {
    let mut probes = Vec::new();
    if !mounts.v1.is_empty() {
        let mut controllers = Vec::new();
        for c in Controller::ALL {
            match mounts.v1.iter().find(|(have, _)| *have == c) {
                Some((_, dir)) if writable(dir) => {
                    controllers.push((c, dir.clone()));
                    probes.push(ControllerProbe {
                        controller: c,
                        enabled: true,
                        detail: format!("v1 at {}", dir.display()),
                    });
                }
                Some((_, dir)) => probes.push(ControllerProbe {
                    controller: c,
                    enabled: false,
                    detail: format!("v1 hierarchy {} is not writable", dir.display()),
                }),
                None => probes.push(ControllerProbe {
                    controller: c,
                    enabled: false,
                    detail: "no v1 hierarchy carries it".to_string(),
                }),
            }
        }
        let layout = (!controllers.is_empty()).then_some(CgroupLayout {
            version: CgroupVersion::V1,
            controllers,
        });
        return (layout, probes);
    }
    let Some(root) = &mounts.v2 else {
        for c in Controller::ALL {
            probes.push(ControllerProbe {
                controller: c,
                enabled: false,
                detail: "no cgroup hierarchy mounted".to_string(),
            });
        }
        return (None, probes);
    };
    let available = fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    let root_writable = writable(root);
    let mut controllers = Vec::new();
    for c in Controller::ALL {
        let (enabled, detail) = if !available.split_whitespace().any(|a| a == c.name()) {
            (
                false,
                format!("not in {}/cgroup.controllers", root.display()),
            )
        } else if !root_writable {
            (false, format!("v2 root {} is not writable", root.display()))
        } else {
            match enable_subtree(root, c) {
                Ok(()) => (true, format!("v2 at {}", root.display())),
                Err(e) => (false, e.to_string()),
            }
        };
        if enabled {
            controllers.push((c, root.clone()));
        }
        probes.push(ControllerProbe {
            controller: c,
            enabled,
            detail,
        });
    }
    let layout = (!controllers.is_empty()).then_some(CgroupLayout {
        version: CgroupVersion::V2,
        controllers,
    });
    (layout, probes)
}

fn writable(dir: &Path) -> bool {
    nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_ok()
}

/// Enables a v2 controller for the children of `dir` (idempotent).
fn enable_subtree(dir: &Path, c: Controller) -> Result<(), SandboxError> {
    let file = dir.join("cgroup.subtree_control");
    let current = fs::read_to_string(&file).unwrap_or_default();
    if current.split_whitespace().any(|a| a == c.name()) {
        return Ok(());
    }
    write_file(&file, &format!("+{}", c.name()))
}

/// v1 `cpu.shares`: one vCPU (1024 shares) per 1769 MB, as Lambda allots CPU by memory.
pub(crate) fn cpu_shares_v1(memory_mb: u32) -> u64 {
    (u64::from(memory_mb) * 1024 / 1769).clamp(2, 262_144)
}

/// v2 `cpu.weight`: the same proportion, with the default weight 100 standing for one vCPU
/// (as 1024 shares do on v1), clamped to the kernel's 1..=10000.
pub(crate) fn cpu_weight_v2(memory_mb: u32) -> u64 {
    (u64::from(memory_mb) * 100 / 1769).clamp(1, 10_000)
}

/// `oom_kill N` from v1 `memory.oom_control` (kernels >= 4.13) or v2 `memory.events`.
pub(crate) fn parse_oom_kill(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some("oom_kill")).then(|| it.next()?.parse().ok())?
    })
}

/// Limits written into a fresh instance cgroup.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub memory_mb: u32,
    pub cpu_weight_mb: u32,
    pub pids_max: u32,
}

fn write_limits(
    version: CgroupVersion,
    c: Controller,
    dir: &Path,
    limits: Limits,
) -> Result<(), SandboxError> {
    let bytes = u64::from(limits.memory_mb) * 1024 * 1024;
    match (version, c) {
        (CgroupVersion::V1, Controller::Memory) => {
            // memory+swap may never be below memory: raise it first, lower it last.
            let mem = dir.join("memory.limit_in_bytes");
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            let has_memsw = memsw.exists();
            let raising = read_u64(&mem).is_some_and(|now| bytes > now);
            if has_memsw && raising {
                write_file(&memsw, &bytes.to_string())?;
            }
            write_file(&mem, &bytes.to_string())?;
            if has_memsw && !raising {
                write_file(&memsw, &bytes.to_string())?;
            }
        }
        (CgroupVersion::V2, Controller::Memory) => {
            write_file(&dir.join("memory.max"), &bytes.to_string())?;
            let swap = dir.join("memory.swap.max");
            if swap.exists() {
                write_file(&swap, "0")?;
            }
        }
        (CgroupVersion::V1, Controller::Cpu) => write_file(
            &dir.join("cpu.shares"),
            &cpu_shares_v1(limits.cpu_weight_mb).to_string(),
        )?,
        (CgroupVersion::V2, Controller::Cpu) => write_file(
            &dir.join("cpu.weight"),
            &cpu_weight_v2(limits.cpu_weight_mb).to_string(),
        )?,
        (_, Controller::Pids) => {
            write_file(&dir.join("pids.max"), &limits.pids_max.max(1).to_string())?
        }
    }
    Ok(())
}

/// An instance's memory peak window: reset before an invocation, read after it.
#[derive(Debug, Clone)]
pub struct PeakHandle {
    version: CgroupVersion,
    memory: PathBuf,
    peak: Arc<Mutex<PeakState>>,
}

impl PeakHandle {
    /// The file holding the peak: v1 `memory.max_usage_in_bytes`, v2 `memory.peak`. A write
    /// resets it (v2: for the fd written through, on kernels that support it).
    fn file_name(version: CgroupVersion) -> &'static str {
        match version {
            CgroupVersion::V1 => "memory.max_usage_in_bytes",
            CgroupVersion::V2 => "memory.peak",
        }
    }

    pub fn reset_peak(&self) {
        let path = self.memory.join(Self::file_name(self.version));
        let mut st = self.peak.lock().unwrap_or_else(|p| p.into_inner());
        let reset = st
            .file
            .as_ref()
            .is_some_and(|f| f.write_at(b"0\n", 0).is_ok());
        match self.version {
            CgroupVersion::V1 => {
                if !reset {
                    let _ = fs::write(path, "0");
                }
            }
            CgroupVersion::V2 => st.baseline = if reset { None } else { read_u64(&path) },
        }
    }

    pub fn peak_bytes(&self) -> Option<u64> {
        let st = self.peak.lock().unwrap_or_else(|p| p.into_inner());
        let peak = match &st.file {
            Some(f) => {
                let mut buf = [0u8; 32];
                let n = f.read_at(&mut buf, 0).ok()?;
                std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()?
            }
            None => read_u64(&self.memory.join(Self::file_name(self.version)))?,
        };
        match st.baseline {
            // v2 without a reset: the all-time peak has not moved since the reset we could not
            // do, so the window's peak is unknown but at least the current usage.
            Some(base) if peak <= base => read_u64(&self.memory.join("memory.current")),
            _ => Some(peak),
        }
    }
}

/// The cgroup directories of one instance.
#[derive(Debug)]
pub(crate) struct InstanceCgroups {
    version: CgroupVersion,
    /// Distinct directories (v1 controllers may share a hierarchy; v2 has one).
    dirs: Vec<PathBuf>,
    /// Each controller with the directory its files are in.
    controllers: Vec<(Controller, PathBuf)>,
    memory: Option<PathBuf>,
    peak: Arc<Mutex<PeakState>>,
    /// The limits last written (only this process writes them): an assignment rewrites only
    /// what differs, usually nothing but the memory of a function that is not the default's.
    written: Mutex<Limits>,
}

#[derive(Debug, Default)]
struct PeakState {
    /// v2: `memory.peak` opened read-write; a write resets the peak seen through this fd.
    file: Option<File>,
    /// v2 on kernels that cannot reset: the peak at the last reset.
    baseline: Option<u64>,
}

/// Removes this server's parent cgroup (`<hierarchy>/<parent>`) from every hierarchy, once no
/// instance is left in it; a parent that still has children stays. Returns whether none is
/// left.
pub fn remove_parent(layout: &CgroupLayout, parent: &str) -> bool {
    let mut gone = true;
    for (_, mount) in &layout.controllers {
        match fs::remove_dir(mount.join(parent)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(_) => gone = false,
        }
    }
    gone
}

/// Removes the parent cgroups, with their empty instance cgroups, that servers which are gone
/// left behind (`<prefix><pid>` with no such process: a server killed with SIGKILL). Returns
/// how many parents went.
pub fn remove_stale_parents(layout: &CgroupLayout, prefix: &str) -> usize {
    let mut removed = 0;
    for (_, mount) in &layout.controllers {
        let Ok(entries) = fs::read_dir(mount) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix(prefix))
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            // rmdir only removes a cgroup without processes: instances still running (their
            // server killed) keep theirs and the parent.
            if let Ok(children) = fs::read_dir(e.path()) {
                for c in children.flatten() {
                    if c.file_type().is_ok_and(|t| t.is_dir()) {
                        let _ = fs::remove_dir(c.path());
                    }
                }
            }
            if fs::remove_dir(e.path()).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

impl InstanceCgroups {
    pub fn create(
        layout: &CgroupLayout,
        parent: &str,
        id: &str,
        limits: Limits,
    ) -> Result<Self, SandboxError> {
        let mut cg = InstanceCgroups {
            version: layout.version,
            dirs: Vec::new(),
            controllers: Vec::new(),
            memory: None,
            peak: Arc::new(Mutex::new(PeakState::default())),
            written: Mutex::new(limits),
        };
        // On error `cg` is dropped here, which removes whatever was created.
        for (c, mount) in &layout.controllers {
            let parent_dir = mount.join(parent);
            let dir = parent_dir.join(id);
            if !cg.dirs.contains(&dir) {
                mkdir_exist_ok(&parent_dir)?;
                if layout.version == CgroupVersion::V2 {
                    for (c2, _) in &layout.controllers {
                        enable_subtree(mount, *c2)?;
                        enable_subtree(&parent_dir, *c2)?;
                    }
                }
                fs::create_dir(&dir).map_err(|e| SandboxError::io("mkdir", &dir, &e))?;
                cg.dirs.push(dir.clone());
            }
            cg.controllers.push((*c, dir.clone()));
            if *c == Controller::Memory {
                cg.memory = Some(dir.clone());
            }
            write_limits(cg.version, *c, &dir, limits)?;
        }
        // Kept open: the peak is reset and read around every invocation.
        if let Some(mem) = &cg.memory {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(mem.join(PeakHandle::file_name(cg.version)))
                .ok();
            cg.peak.lock().unwrap_or_else(|p| p.into_inner()).file = file;
        }
        Ok(cg)
    }

    /// New limits for an instance that changes hands (a spare assigned to a function).
    pub fn set_limits(&self, limits: Limits) -> Result<(), SandboxError> {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        for (c, dir) in &self.controllers {
            let (now, wanted) = match c {
                Controller::Memory => (&mut written.memory_mb, limits.memory_mb),
                Controller::Cpu => (&mut written.cpu_weight_mb, limits.cpu_weight_mb),
                Controller::Pids => (&mut written.pids_max, limits.pids_max),
            };
            if *now != wanted {
                write_limits(self.version, *c, dir, limits)?;
                *now = wanted;
            }
        }
        Ok(())
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// `cgroup.procs` of every directory, opened for writing; a child writes "0" to each to
    /// join (the kernel reads 0 as "the writing process").
    pub fn open_procs(&self) -> Result<Vec<OwnedFd>, SandboxError> {
        self.dirs
            .iter()
            .map(|d| {
                let p = d.join("cgroup.procs");
                OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(&p)
                    .map(OwnedFd::from)
                    .map_err(|e| SandboxError::io("open", &p, &e))
            })
            .collect()
    }

    pub fn pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for d in &self.dirs {
            if let Ok(text) = fs::read_to_string(d.join("cgroup.procs")) {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// SIGKILLs every process in the cgroups. Processes forked while we iterate are caught by
    /// the next round; the pids limit bounds how many there can be.
    pub fn kill_all(&self) {
        self.kill_all_except(None)
    }

    /// Like `kill_all`, sparing `spare` (the sandbox helper, which must live to reap ns-init).
    pub fn kill_all_except(&self, spare: Option<i32>) {
        if spare.is_none() {
            for d in &self.dirs {
                let k = d.join("cgroup.kill");
                if self.version == CgroupVersion::V2 && k.exists() {
                    let _ = fs::write(&k, "1");
                }
            }
        }
        for _ in 0..20 {
            let pids: Vec<i32> = self
                .pids()
                .into_iter()
                .filter(|p| Some(*p) != spare)
                .collect();
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                // A pid read from cgroup.procs belongs to this instance; reuse within the
                // microseconds between read and kill is the accepted residual risk.
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }

    /// Waits (blocking) until no process is left, up to `timeout`.
    pub fn wait_empty(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            if self.pids().is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(25));
        }
    }

    /// Kills what is left, waits for it and removes the directories. Blocking.
    pub fn destroy(&mut self) {
        if self.dirs.is_empty() {
            return;
        }
        self.kill_all();
        if !self.wait_empty(Duration::from_secs(5)) {
            tracing::warn!(dirs = ?self.dirs, "instance cgroup still has processes after SIGKILL");
        }
        for d in std::mem::take(&mut self.dirs) {
            let mut removed = false;
            // rmdir can report EBUSY for a moment after the last task has exited.
            for _ in 0..50 {
                match fs::remove_dir(&d) {
                    Ok(()) => {
                        removed = true;
                        break;
                    }
                    Err(e) if e.kind() == ErrorKind::NotFound => {
                        removed = true;
                        break;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            if !removed {
                tracing::warn!(dir = %d.display(), "could not remove instance cgroup");
            }
        }
    }

    /// The peak-memory window, shareable without the cgroups themselves.
    pub fn peak_handle(&self) -> Option<PeakHandle> {
        Some(PeakHandle {
            version: self.version,
            memory: self.memory.clone()?,
            peak: self.peak.clone(),
        })
    }

    pub fn reset_peak(&self) {
        if let Some(h) = self.peak_handle() {
            h.reset_peak();
        }
    }

    pub fn peak_bytes(&self) -> Option<u64> {
        self.peak_handle()?.peak_bytes()
    }

    /// Number of OOM kills in this instance's memory cgroup, if the kernel reports it.
    pub fn oom_kills(&self) -> Option<u64> {
        let mem = self.memory.as_ref()?;
        let file = match self.version {
            CgroupVersion::V1 => "memory.oom_control",
            CgroupVersion::V2 => "memory.events",
        };
        parse_oom_kill(&fs::read_to_string(mem.join(file)).ok()?)
    }

    /// v1 `memory.failcnt`: how often the limit was hit (for kernels without `oom_kill`).
    pub fn memory_failcnt(&self) -> Option<u64> {
        match (self.version, &self.memory) {
            (CgroupVersion::V1, Some(mem)) => read_u64(&mem.join("memory.failcnt")),
            _ => None,
        }
    }
}

impl Drop for InstanceCgroups {
    fn drop(&mut self) {
        self.destroy();
    }
}

fn read_u64(path: &Path) -> Option<u64> {
    let mut s = String::new();
    File::open(path).ok()?.read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

fn mkdir_exist_ok(dir: &Path) -> Result<(), SandboxError> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(SandboxError::io("mkdir", dir, &e)),
    }
}

fn write_file(path: &Path, value: &str) -> Result<(), SandboxError> {
    fs::write(path, value).map_err(|e| SandboxError::Syscall {
        syscall: "write".into(),
        path: format!("{} ({value})", path.display()),
        errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_limits_writes_only_what_differs_from_what_it_last_wrote() {
        // The controllers' files in a plain directory: what was written is what is read back.
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().to_path_buf();
        for f in ["memory.limit_in_bytes", "cpu.shares", "pids.max"] {
            fs::write(d.join(f), "untouched").expect("seed");
        }
        let spare = Limits {
            memory_mb: 128,
            cpu_weight_mb: 128,
            pids_max: 64,
        };
        let cg = InstanceCgroups {
            version: CgroupVersion::V1,
            dirs: Vec::new(),
            controllers: vec![
                (Controller::Memory, d.clone()),
                (Controller::Cpu, d.clone()),
                (Controller::Pids, d.clone()),
            ],
            memory: None,
            peak: Arc::new(Mutex::new(PeakState::default())),
            written: Mutex::new(spare),
        };
        let read = |f: &str| fs::read_to_string(d.join(f)).expect("read");
        // The spare's own limits: nothing to write.
        cg.set_limits(spare).expect("same limits");
        for f in ["memory.limit_in_bytes", "cpu.shares", "pids.max"] {
            assert_eq!(read(f), "untouched", "{f} rewritten");
        }
        // A function with more memory: memory and CPU change, pids stays.
        let function = Limits {
            memory_mb: 256,
            cpu_weight_mb: 256,
            pids_max: 64,
        };
        cg.set_limits(function).expect("function limits");
        assert_eq!(read("memory.limit_in_bytes"), "268435456");
        assert_eq!(read("cpu.shares"), cpu_shares_v1(256).to_string());
        assert_eq!(read("pids.max"), "untouched");
        // What was written is remembered: only the pids limit changes next.
        fs::write(d.join("memory.limit_in_bytes"), "untouched").expect("reseed");
        cg.set_limits(Limits {
            pids_max: 32,
            ..function
        })
        .expect("pids");
        assert_eq!(read("pids.max"), "32");
        assert_eq!(read("memory.limit_in_bytes"), "untouched");
    }
    use crate::mountinfo;

    #[test]
    fn cpu_shares_follow_memory() {
        assert_eq!(cpu_shares_v1(1769), 1024);
        assert_eq!(cpu_shares_v1(128), 74);
        assert_eq!(cpu_shares_v1(1), 2, "never below the kernel minimum");
        assert_eq!(cpu_shares_v1(10_240), 5927);
    }

    #[test]
    fn cpu_weight_follows_memory() {
        assert_eq!(cpu_weight_v2(1769), 100);
        assert_eq!(cpu_weight_v2(128), 7);
        assert_eq!(cpu_weight_v2(1), 1);
        assert_eq!(cpu_weight_v2(10_240), 578);
        assert_eq!(cpu_weight_v2(u32::MAX), 10_000);
    }

    #[test]
    fn parses_v1_oom_control() {
        let text = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(parse_oom_kill(text), Some(3));
        assert_eq!(parse_oom_kill("oom_kill_disable 0\nunder_oom 0\n"), None);
    }

    #[test]
    fn parses_v2_memory_events() {
        let text = "low 0\nhigh 0\nmax 17\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_oom_kill(text), Some(1));
        assert_eq!(parse_oom_kill("oom_kill x\n"), None);
    }

    #[test]
    fn detects_v1_hybrid() {
        let text = "\
31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";
        let m = find_mounts(&mountinfo::parse(text));
        assert_eq!(
            m.v1,
            vec![
                (Controller::Cpu, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")),
                (Controller::Memory, PathBuf::from("/sys/fs/cgroup/memory")),
                (Controller::Pids, PathBuf::from("/sys/fs/cgroup/pids")),
            ]
        );
        assert_eq!(m.v2, Some(PathBuf::from("/sys/fs/cgroup/unified")));
    }

    #[test]
    fn detects_v2_only() {
        let text = "\
27 1 254:0 / / rw - ext4 /dev/vda rw
30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec - cgroup2 cgroup2 rw,nsdelegate
";
        let m = find_mounts(&mountinfo::parse(text));
        assert!(m.v1.is_empty());
        assert_eq!(m.v2, Some(PathBuf::from("/sys/fs/cgroup")));
    }

    #[test]
    fn no_cgroups_means_no_layout() {
        let (layout, probes) = probe_layout(&CgroupMounts::default());
        assert!(layout.is_none());
        assert_eq!(probes.len(), 3);
        assert!(probes.iter().all(|p| !p.enabled));
    }
}
