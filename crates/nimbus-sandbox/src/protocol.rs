//! What the server and the helper say to each other over their two pipes.
//!
//! Spec pipe (server -> helper): a little-endian u32 length and the JSON [`Request`]. The server
//! then keeps its end open without writing: EOF tells the helper the server is gone ("lifeline").
//! Status pipe (helper -> server): one JSON [`Report`] per line; writes are far below
//! `PIPE_BUF`, so the helper and the namespace init can both write without interleaving.

use std::io::{self, Read, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Name of the one environment variable the helper is started with: "<spec fd>,<status fd>".
pub(crate) const FDS_ENV: &str = "NIMBUS_SANDBOX_FDS";

/// A program to start: path as seen inside the sandbox, `argv[1..]`, the complete environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Exec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// Everything the helper needs to build a sandbox that is not yet any function's (a spare);
/// paths are already canonical host paths.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Request {
    pub id: String,
    pub hostname: String,
    /// Empty host directory the new root's tmpfs is mounted on (inside the private mount ns).
    pub root_dir: PathBuf,
    /// Host directory holding every function's code, one subdirectory each; bound at a
    /// staging point until the assignment says which subdirectory becomes `/var/task`.
    pub code_root: PathBuf,
    pub runtime_dir: Option<PathBuf>,
    pub ro_paths: Vec<PathBuf>,
    pub mask_paths: Vec<PathBuf>,
    pub tmp_mb: u32,
    pub uid: u32,
    pub gid: u32,
    /// A program started before the assignment (an interpreter with its runtime loaded) that
    /// waits on fd 3 for the function's environment.
    pub prestart: Option<Exec>,
    /// No prestart: a process forked from outside (a zygote) joins the namespaces and is
    /// adopted at the assignment. ns-init makes the handoff pipe and reports its read end.
    #[serde(default)]
    pub adoptable: bool,
}

/// Sent over the spec pipe once the spare is `Prepared`: which function it now runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Assign {
    /// Subdirectory of `code_root` shown read-only at `/var/task`.
    pub code: String,
    /// `/tmp` (and `/dev/shm`) size for the function.
    pub tmp_mb: u32,
    pub start: Start,
    /// The program, when it was forked into the sandbox from outside: its pid in the sandbox's
    /// pid namespace (it must be a child of ns-init by now).
    #[serde(default)]
    pub adopted: Option<i32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub(crate) enum Start {
    /// The prestarted program gets this environment on fd 3 before the code is mounted
    /// (`KEY=value\0` entries and an empty one), then one NUL once it is, then EOF (see the
    /// helper's `handoff_block`).
    Handoff { env: Vec<(String, String)> },
    /// Exec this program (any prestarted one is killed first).
    Exec(Exec),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub(crate) enum Report {
    /// The helper forked ns-init; `init_pid` is its pid in the server's pid namespace.
    Started { init_pid: i32 },
    /// The root is built and the prestarted program (if any) runs: waiting for an `Assign`.
    /// For an adoptable spare, `handoff_fd` is ns-init's fd of the handoff pipe's read end and
    /// `exit_fd` its fd of the exit pipe's write end (on which the adopted program's parent
    /// writes "<code> <signal>\n" when it ends).
    Prepared {
        handoff_fd: Option<i32>,
        #[serde(default)]
        exit_fd: Option<i32>,
    },
    /// The function's program runs: exec succeeded, or (sent once the code is mounted, just
    /// before the byte that tells the prestarted program so) the prestarted one has its
    /// environment and is about to load the function.
    Ready,
    /// execve failed (or the program could not be reached as the unprivileged user).
    ExecFailed { program: PathBuf, errno: i32 },
    /// A setup syscall failed before execve.
    SetupFailed {
        syscall: String,
        path: String,
        errno: i32,
    },
    /// The program exited; the namespace is being torn down.
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
    },
}

impl Report {
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec());
        line.push(b'\n');
        line
    }
}

/// Writes one length-prefixed JSON message (a [`Request`] or an [`Assign`]).
pub(crate) fn write_message<T: Serialize>(mut w: impl Write, msg: &T) -> io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    let len = u32::try_from(body.len()).map_err(io::Error::other)?;
    let mut buf = Vec::with_capacity(body.len() + 4);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf)
}

/// Reads one message written by [`write_message`]; never reads past its end.
pub(crate) fn read_message<T: serde::de::DeserializeOwned>(mut r: impl Read) -> io::Result<T> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > 64 * 1024 * 1024 {
        return Err(io::Error::other("sandbox request larger than 64 MiB"));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    serde_json::from_slice(&body).map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips() {
        let req = Request {
            id: "abc-1".into(),
            hostname: "nimbus-abc-1".into(),
            root_dir: "/data/scratch".into(),
            code_root: "/data/code".into(),
            runtime_dir: None,
            ro_paths: vec![],
            mask_paths: vec!["/data".into()],
            tmp_mb: 512,
            uid: 65534,
            gid: 65534,
            prestart: Some(Exec {
                program: "/usr/bin/python3".into(),
                args: vec!["a".into()],
                env: vec![("K".into(), "V=1".into())],
            }),
            adoptable: false,
        };
        let assign = Assign {
            code: "abc".into(),
            tmp_mb: 64,
            start: Start::Handoff {
                env: vec![("A".into(), "b".into())],
            },
            adopted: None,
        };
        let mut buf = Vec::new();
        write_message(&mut buf, &req).unwrap();
        write_message(&mut buf, &assign).unwrap();
        let mut r = &buf[..];
        let back: Request = read_message(&mut r).unwrap();
        assert_eq!(back.prestart.unwrap().env, vec![("K".into(), "V=1".into())]);
        assert_eq!(back.mask_paths, req.mask_paths);
        // The second message is still there: the first read stopped at its end.
        let back: Assign = read_message(&mut r).unwrap();
        assert!(matches!(back.start, Start::Handoff { ref env } if env[0].0 == "A"));
    }

    #[test]
    fn reports_are_single_lines() {
        let r = Report::ExecFailed {
            program: "/var/task/boot\nstrap".into(),
            errno: 2,
        };
        let line = r.to_line();
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        let back: Report = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, r);
    }
}
