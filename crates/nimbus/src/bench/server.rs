//! The Nimbus server under test: started from this very binary on a free loopback port with a
//! temporary data directory, and stopped by PID.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::procfs::{self, ExeId, Proc};

pub struct Server {
    child: tokio::process::Child,
    pub pid: u32,
    pub endpoint: String,
    /// The gateway listener's address.
    pub gateway: Option<std::net::SocketAddr>,
    /// The `nimbus` binary, to tell the platform's own processes from the functions'.
    pub exe: ExeId,
    dir: PathBuf,
    /// Every platform process seen while the server ran, checked once it has stopped.
    seen: std::collections::HashSet<Proc>,
}

impl Server {
    pub async fn start(max_instances: usize) -> anyhow::Result<Server> {
        let dir = std::env::temp_dir().join(format!("nimbus-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating data directory {}", dir.display()))?;
        let exe_path = std::env::current_exe().context("finding this executable")?;
        let exe =
            ExeId::of_path(&exe_path).with_context(|| format!("reading {}", exe_path.display()))?;
        let mut child = tokio::process::Command::new(&exe_path)
            .args([
                "up",
                "--api-addr",
                "127.0.0.1:0",
                "--gateway-addr",
                "127.0.0.1:0",
                "--max-instances",
            ])
            .arg(max_instances.to_string())
            .arg("--data-dir")
            .arg(&dir)
            .env(
                "NIMBUS_LOG",
                std::env::var("NIMBUS_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the server under test")?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("the server under test exited at once"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no stdout from the server under test"))?;
        let mut server = Server {
            child,
            pid,
            endpoint: String::new(),
            gateway: None,
            exe,
            dir,
            seen: Default::default(),
        };
        let mut lines = BufReader::new(stdout).lines();
        let mut gateway = None;
        let endpoint = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = line.strip_prefix("nimbus gateway listening on http://") {
                    gateway = url.trim().parse().ok();
                }
                if let Some(url) = line.strip_prefix("nimbus listening on ") {
                    return Ok::<_, anyhow::Error>(url.trim().to_string());
                }
            }
            bail!("the server under test exited before it listened")
        })
        .await
        .context("waiting for the server under test to listen")??;
        // Keep draining stdout so the server never blocks on a full pipe; with
        // NIMBUS_BENCH_LOG set (a log filter for the server), its log goes to stderr.
        let echo = std::env::var_os("NIMBUS_BENCH_LOG").is_some();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if echo {
                    eprintln!("server: {line}");
                }
            }
        });
        server.endpoint = endpoint;
        server.gateway = gateway;
        Ok(server)
    }

    /// Resident memory of the server process, in kB.
    pub fn rss_kb(&self) -> anyhow::Result<u64> {
        procfs::rss_kb(self.pid).with_context(|| format!("reading VmRSS of pid {}", self.pid))
    }

    /// The platform's own processes now: descendants running the `nimbus` binary.
    pub fn platform_processes(&mut self) -> Vec<Proc> {
        let procs = procfs::platform_processes(self.pid, &self.exe);
        self.seen.extend(procs.iter().copied());
        procs
    }

    /// Waits until no more than `baseline` platform processes are left (retired instances
    /// gone), at most `limit`. Returns whether that happened in time.
    pub async fn settle(&mut self, baseline: usize, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        loop {
            if self.platform_processes().len() <= baseline {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            // A scan reads all of /proc; polling faster would take CPU from the teardown.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// SIGTERM, then SIGKILL after 15 s; afterwards, any platform process seen during the run
    /// that outlived the server is killed by PID and reported.
    pub async fn stop(mut self) -> Vec<String> {
        let mut notes = Vec::new();
        self.platform_processes();
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            notes.push("the server under test ignored SIGTERM for 15 s and was killed".into());
            let _ = self.child.kill().await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let left: Vec<Proc> = self.seen.iter().filter(|p| p.alive()).copied().collect();
        if !left.is_empty() {
            notes.push(format!(
                "{} sandbox process(es) outlived the server under test and were killed by PID",
                left.len()
            ));
            for p in left {
                let _ = kill(Pid::from_raw(p.pid as i32), Signal::SIGKILL);
            }
        }
        notes
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Reached on an error or Ctrl-C mid-run too: the server must not outlive the bench.
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
