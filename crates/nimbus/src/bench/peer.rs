//! The peer: serverless-offline (on serverless v3) serving the same hello handlers through its
//! Lambda Invoke endpoint. Its files live in `bench/peers/serverless-offline/` and are embedded
//! here; the harness installs them with `npm ci` into `target/bench-peers/serverless-offline/`
//! and starts `serverless offline start` in its own process group on free loopback ports.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

macro_rules! peer_file {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../bench/peers/serverless-offline/",
            $name
        ))
    };
}

/// The python hello handler, deployed to Nimbus and to the peer alike.
pub const HELLO_PY: &str = peer_file!("hello.py");
/// The node hello handler, deployed to Nimbus and to the peer alike.
pub const HELLO_JS: &str = peer_file!("hello.js");

const FILES: &[(&str, &str)] = &[
    ("package.json", peer_file!("package.json")),
    ("package-lock.json", peer_file!("package-lock.json")),
    ("serverless.yml", peer_file!("serverless.yml")),
    ("hello.py", HELLO_PY),
    ("hello.js", HELLO_JS),
];

/// Written after a successful `npm ci`: the lockfile it installed.
const STAMP: &str = ".nimbus-bench-installed-lock";

/// The peer's Invoke API name of a function (`<service>-<stage>-<function>` in serverless.yml).
pub fn function_name(runtime: &str) -> String {
    format!("nimbus-bench-bench-{runtime}")
}

/// Where the peer is installed: `target/bench-peers/serverless-offline` next to this binary's
/// `target/<profile>/`, else under the temporary directory.
pub fn install_dir() -> PathBuf {
    let target = std::env::current_exe().ok().and_then(|exe| {
        let t = exe.parent()?.parent()?.to_path_buf();
        (t.file_name()? == "target").then_some(t)
    });
    target
        .unwrap_or_else(std::env::temp_dir)
        .join("bench-peers")
        .join("serverless-offline")
}

/// Writes the peer's files and runs `npm ci` unless this lockfile is already installed.
pub async fn install(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in FILES {
        std::fs::write(dir.join(name), text)
            .with_context(|| format!("writing {}", dir.join(name).display()))?;
    }
    let lock = peer_file!("package-lock.json");
    let installed = std::fs::read_to_string(dir.join(STAMP)).unwrap_or_default();
    if installed == lock && dir.join("node_modules/.bin/serverless").exists() {
        return Ok(());
    }
    eprintln!("  npm ci in {} ...", dir.display());
    let mut child = tokio::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("running npm (is node installed?)")?;
    let mut stderr = child.stderr.take();
    let out = tokio::time::timeout(Duration::from_secs(600), async {
        let mut err = String::new();
        if let Some(s) = stderr.as_mut() {
            use tokio::io::AsyncReadExt;
            let _ = s.read_to_string(&mut err).await;
        }
        (child.wait().await, err)
    })
    .await;
    match out {
        Ok((Ok(status), _)) if status.success() => {}
        Ok((Ok(status), err)) => {
            let last = err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            bail!("npm ci failed ({status}): {last}")
        }
        Ok((Err(e), _)) => bail!("npm ci: {e}"),
        Err(_) => bail!("npm ci took longer than 10 minutes"),
    }
    std::fs::write(dir.join(STAMP), lock)?;
    Ok(())
}

/// A running `serverless offline start`, the leader of its own process group.
pub struct Peer {
    child: tokio::process::Child,
    pgid: i32,
    pub endpoint: String,
    /// Its HTTP API emulation (`GET /hello` runs the python handler behind an httpApi event).
    pub http: std::net::SocketAddr,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Peer {
    /// Starts serverless-offline in `dir`; `reload_handler` makes every request a new handler
    /// instance (its cold-start mode). `path` is PATH for it, with the real python first.
    pub async fn start(dir: &Path, reload_handler: bool, path: &str) -> anyhow::Result<Peer> {
        let ports = [free_port()?, free_port()?, free_port()?, free_port()?];
        let log_path = dir.join(if reload_handler {
            "offline-reload.log"
        } else {
            "offline.log"
        });
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut cmd = tokio::process::Command::new(dir.join("node_modules/.bin/serverless"));
        cmd.args(["offline", "start", "--host", "127.0.0.1", "--noSponsor"])
            .args(["--httpPort", &ports[0].to_string()])
            .args(["--lambdaPort", &ports[1].to_string()])
            .args(["--websocketPort", &ports[2].to_string()])
            .args(["--albPort", &ports[3].to_string()]);
        if reload_handler {
            // Retired handler instances are cleaned up after 1 s idle, not the default 60 s.
            cmd.args(["--reloadHandler", "--terminateIdleLambdaTime", "1"]);
        }
        let child = cmd
            .current_dir(dir)
            .env("PATH", path)
            .env("SLS_TELEMETRY_DISABLED", "1")
            .env("SLS_NOTIFICATIONS_MODE", "off")
            .env("SLS_DEPRECATION_DISABLE", "*")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("starting serverless offline")?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("serverless offline exited at once"))?;
        let mut peer = Peer {
            child,
            pgid: pid as i32,
            endpoint: format!("http://127.0.0.1:{}", ports[1]),
            http: std::net::SocketAddr::from(([127, 0, 0, 1], ports[0])),
        };
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], ports[1]));
        let until = Instant::now() + Duration::from_secs(90);
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(peer);
            }
            if let Ok(Some(status)) = peer.child.try_wait() {
                let text = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(5).collect();
                bail!(
                    "serverless offline exited ({status}) before listening: {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
                );
            }
            if Instant::now() >= until {
                bail!(
                    "serverless offline did not listen within 90 s (log: {})",
                    log_path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until its HTTP API emulation listens (it starts after the Lambda endpoint).
    pub async fn wait_http(&self, limit: Duration) -> anyhow::Result<()> {
        let until = Instant::now() + limit;
        while tokio::net::TcpStream::connect(self.http).await.is_err() {
            if Instant::now() >= until {
                bail!(
                    "its HTTP server did not listen on {} within {limit:?}",
                    self.http
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// How many live processes its group has (itself, shells, python handlers).
    pub fn group_size(&self) -> usize {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return 0;
        };
        dir.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                // Zombies are gone for this purpose: whoever adopted them reaps them.
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| {
                        let mut f = s[s.rfind(')')? + 1..].split_whitespace();
                        let state = f.next()?;
                        let pgrp = f.nth(1)?.parse::<i32>().ok()?;
                        Some(state != "Z" && pgrp == self.pgid)
                    })
                    .unwrap_or(false)
            })
            .count()
    }

    /// SIGTERM to the whole process group, SIGKILL to what is left after 10 s; waits until the
    /// group is empty. Returns a note when it had to force anything.
    pub async fn stop(mut self) -> Option<String> {
        let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGTERM);
        let mut note = None;
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            note = Some("serverless offline ignored SIGTERM for 10 s and was killed".to_string());
        }
        // Its handler processes share the group; some ignore or outlive the leader's SIGTERM.
        let until = Instant::now() + Duration::from_secs(5);
        while self.group_size() > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = self.group_size();
        if left > 0 {
            let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
            note = Some(format!(
                "{left} process(es) of serverless offline's group outlived SIGTERM and were killed"
            ));
        }
        let _ = self.child.wait().await;
        note
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // An error or Ctrl-C mid-run: the group must not outlive the bench.
        if kill(Pid::from_raw(self.pgid), None).is_ok() || self.group_size() > 0 {
            let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
        }
    }
}
