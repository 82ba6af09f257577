//! The python zygote (`bootstraps/python/zygote.py`): one interpreter with the bootstrap
//! loaded, started once, that forks each python spare's runtime into the spare's sandbox
//! instead of starting an interpreter there. A fork costs about a millisecond where starting
//! python costs tens, which is what keeps python spares coming during a burst; the forked
//! runtimes also share the zygote's pages.
//!
//! The server talks to it over a socket (the zygote's stdin): one JSON line per request, one
//! per answer, one request at a time.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nimbus_sandbox::Adoption;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};

/// How long one fork may take before the zygote is considered stuck (and replaced).
const FORK_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct Zygote {
    conn: BufReader<UnixStream>,
    child: Child,
}

#[derive(Deserialize)]
struct Reply {
    pid: Option<i32>,
    error: Option<String>,
}

impl Zygote {
    /// Starts `python zygote.py` from `runtime_dir` with `env`.
    pub fn start(
        python: &Path,
        runtime_dir: &Path,
        env: &[(String, String)],
    ) -> Result<Zygote, String> {
        let (ours, theirs) =
            std::os::unix::net::UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
        ours.set_nonblocking(true)
            .map_err(|e| format!("socketpair: {e}"))?;
        let child = Command::new(python)
            .arg(runtime_dir.join(crate::bootstraps::ZYGOTE_FILE))
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir("/")
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", python.display()))?;
        let conn = UnixStream::from_std(ours).map_err(|e| format!("zygote socket: {e}"))?;
        Ok(Zygote {
            conn: BufReader::new(conn),
            child,
        })
    }

    /// Forks a runtime into the adoptable spare described by `a`, running as `uid`/`gid` with
    /// `env` until its function's environment arrives. Returns the runtime's pid inside the
    /// spare's pid namespace.
    pub async fn fork(
        &mut self,
        a: &Adoption,
        uid: u32,
        env: &[(String, String)],
    ) -> Result<i32, String> {
        let req = serde_json::json!({
            "init_pid": a.init_pid,
            "handoff_fd": a.handoff_fd,
            "exit_fd": a.exit_fd,
            "procs": a.cgroup_procs,
            "uid": uid,
            "gid": uid,
            "env": env,
        });
        let mut line = req.to_string();
        line.push('\n');
        let exchange = async {
            self.conn.get_mut().write_all(line.as_bytes()).await?;
            let mut answer = String::new();
            self.conn.read_line(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        };
        let answer = match tokio::time::timeout(FORK_TIMEOUT, exchange).await {
            Ok(Ok(a)) if !a.is_empty() => a,
            Ok(Ok(_)) => return Err("the python zygote exited".into()),
            Ok(Err(e)) => return Err(format!("talking to the python zygote: {e}")),
            Err(_) => return Err("the python zygote did not answer in time".into()),
        };
        let reply: Reply = serde_json::from_str(&answer)
            .map_err(|e| format!("the python zygote answered {answer:?}: {e}"))?;
        match (reply.pid, reply.error) {
            (Some(host_pid), None) => ns_pid(host_pid).ok_or_else(|| {
                format!("the runtime forked by the zygote (pid {host_pid}) is already gone")
            }),
            (_, Some(e)) => Err(format!("the python zygote could not fork: {e}")),
            (None, None) => Err("the python zygote answered neither a pid nor an error".into()),
        }
    }

    /// Kills the zygote and waits for it (its forked children go with their sandboxes).
    pub async fn stop(&mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }

    /// Still running.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// The innermost pid of a process (its pid in its own pid namespace), from `NSpid:`.
fn ns_pid(host_pid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(PathBuf::from(format!("/proc/{host_pid}/status"))).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_ns_pid_is_our_pid() {
        assert_eq!(
            ns_pid(std::process::id() as i32),
            Some(std::process::id() as i32)
        );
    }
}
