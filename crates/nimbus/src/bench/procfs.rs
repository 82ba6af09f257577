//! What /proc says about the processes under test: resident and proportional memory, and the
//! server's descendants (the sandbox helpers re-exec the `nimbus` binary, so they are found by
//! their executable).

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A value in kB from a `/proc/<pid>/status` or `smaps_rollup` style text (`Key:   123 kB`).
pub fn kb_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The parent pid from the text of `/proc/<pid>/stat`. The command name may contain spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn stat_ppid(stat: &str) -> Option<u32> {
    let after = &stat[stat.rfind(')')? + 1..];
    // After the name: state, ppid, ...
    after.split_whitespace().nth(1)?.parse().ok()
}

/// The start time (clock ticks since boot) from `/proc/<pid>/stat`: with the pid, it names one
/// process even if the pid is reused later.
pub fn stat_start_time(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // Field 22 of stat; the first field after the name is field 3.
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Resident set size of a process, in kB.
pub fn rss_kb(pid: u32) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    kb_field(&text, "VmRSS").ok_or_else(|| io::Error::other(format!("no VmRSS for pid {pid}")))
}

/// Proportional set size of a process (shared pages split among their users), in kB.
pub fn pss_kb(pid: u32) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    kb_field(&text, "Pss").ok_or_else(|| io::Error::other(format!("no Pss for pid {pid}")))
}

/// Unique set size (pages only this process maps: Private_Clean + Private_Dirty), in kB.
pub fn uss_kb(pid: u32) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    match (
        kb_field(&text, "Private_Clean"),
        kb_field(&text, "Private_Dirty"),
    ) {
        (Some(c), Some(d)) => Ok(c + d),
        _ => Err(io::Error::other(format!("no Private_* for pid {pid}"))),
    }
}

/// The server's direct children that run the python zygote (`... zygote.py`).
pub fn zygotes(server: u32) -> Vec<u32> {
    descendants(server)
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{}/stat", p.pid))
                .ok()
                .and_then(|s| stat_ppid(&s))
                == Some(server)
                && std::fs::read(format!("/proc/{}/cmdline", p.pid))
                    .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a.ends_with(b"zygote.py")))
        })
        .map(|p| p.pid)
        .collect()
}

/// One process, told apart from a later one that reuses its pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Proc {
    pub pid: u32,
    pub start_time: u64,
}

impl Proc {
    /// Whether this very process still exists (a zombie counts until it is reaped).
    pub fn alive(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .ok()
            .and_then(|s| stat_start_time(&s))
            == Some(self.start_time)
    }
}

/// Every live process that descends from `root` (not `root` itself).
pub fn descendants(root: u32) -> Vec<Proc> {
    let mut children: HashMap<u32, Vec<Proc>> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // Processes come and go while we read: a vanished one is simply not there.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let (Some(ppid), Some(start_time)) = (stat_ppid(&stat), stat_start_time(&stat)) {
            children
                .entry(ppid)
                .or_default()
                .push(Proc { pid, start_time });
        }
    }
    let mut out = Vec::new();
    let mut queue = vec![root];
    while let Some(p) = queue.pop() {
        if let Some(kids) = children.get(&p) {
            for k in kids {
                out.push(*k);
                queue.push(k.pid);
            }
        }
    }
    out
}

/// An executable file, by device and inode (paths differ inside a sandbox's mount namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExeId {
    dev: u64,
    ino: u64,
}

impl ExeId {
    pub fn of_path(path: &Path) -> io::Result<ExeId> {
        let m = std::fs::metadata(path)?;
        Ok(ExeId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }

    /// Whether `pid` runs this executable (following `/proc/<pid>/exe`).
    pub fn runs_in(&self, pid: u32) -> bool {
        ExeId::of_path(Path::new(&format!("/proc/{pid}/exe"))).is_ok_and(|e| e == *self)
    }
}

/// The server's descendants that run the `nimbus` binary: the platform's own per-instance
/// processes (the sandbox helper and the namespace's init), not the functions.
pub fn platform_processes(server: u32, exe: &ExeId) -> Vec<Proc> {
    descendants(server)
        .into_iter()
        .filter(|p| exe.runs_in(p.pid))
        .collect()
}

/// Summed PSS of these processes in kB; processes gone meanwhile count as nothing.
pub fn total_pss_kb(procs: &[Proc]) -> u64 {
    procs.iter().filter_map(|p| pss_kb(p.pid).ok()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kb_fields() {
        let status =
            "Name:\tnimbus\nVmPeak:\t  123456 kB\nVmRSS:\t   23456 kB\nRssAnon:\t 100 kB\n";
        assert_eq!(kb_field(status, "VmRSS"), Some(23456));
        assert_eq!(kb_field(status, "VmPeak"), Some(123456));
        assert_eq!(
            kb_field(status, "Rss"),
            None,
            "a prefix of another key is not that key"
        );
        assert_eq!(kb_field(status, "VmSwap"), None);
        let rollup = "55d0-7ffd ---p 00000000 00:00 0  [rollup]\nRss:  9000 kB\nPss:  812 kB\nPss_Anon: 700 kB\n";
        assert_eq!(kb_field(rollup, "Pss"), Some(812));
    }

    #[test]
    fn stat_fields_survive_odd_names() {
        let stat = "4242 (we (ird) name) S 17 4242 17 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200";
        assert_eq!(stat_ppid(stat), Some(17));
        assert_eq!(stat_start_time(stat), Some(987654));
        assert_eq!(stat_ppid("garbage"), None);
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(rss_kb(me).unwrap() > 0);
        let stat = std::fs::read_to_string(format!("/proc/{me}/stat")).unwrap();
        let ppid = stat_ppid(&stat).unwrap();
        assert!(descendants(ppid).iter().any(|p| p.pid == me));
        let exe = ExeId::of_path(&std::env::current_exe().unwrap()).unwrap();
        assert!(exe.runs_in(me));
    }

    #[test]
    fn finds_a_child_and_sees_it_go() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let found = descendants(std::process::id())
            .into_iter()
            .find(|p| p.pid == child.id())
            .expect("the child is a descendant");
        assert!(found.alive());
        let exe = ExeId::of_path(&std::env::current_exe().unwrap()).unwrap();
        assert!(!exe.runs_in(child.id()), "sleep is not this test binary");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!found.alive());
    }
}
