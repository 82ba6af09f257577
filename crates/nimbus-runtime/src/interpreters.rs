//! Finding the interpreters the built-in runtimes use, wherever they live, and what of the host
//! filesystem an instance must see read-only to run them.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A usable interpreter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpreter {
    /// The real executable (symlinks and shims resolved).
    pub executable: PathBuf,
    /// `major.minor[.patch]`.
    pub version: String,
    /// Host paths outside the always-visible system directories the interpreter needs.
    pub ro_paths: Vec<PathBuf>,
}

/// What `discover_interpreters` found; an `Err` says why a runtime cannot run.
#[derive(Debug, Clone)]
pub struct Interpreters {
    pub python: Result<Interpreter, String>,
    pub node: Result<Interpreter, String>,
}

const PY_PROBE: &str = "import os,sys;print(os.path.realpath(sys.executable));print(os.path.realpath(sys.base_prefix));print('%d.%d.%d'%sys.version_info[:3])";
const NODE_PROBE: &str =
    "console.log(require('fs').realpathSync(process.execPath));console.log(process.versions.node)";

/// Finds python3 (≥ 3.9) and node (≥ 18): the given paths, else `python3` and `node` on PATH.
/// Running them is the only reliable way through version-manager shims (pyenv, nvm, asdf).
pub fn discover_interpreters(python: Option<&Path>, node: Option<&Path>) -> Interpreters {
    Interpreters {
        python: discover_python(python.unwrap_or(Path::new("python3"))),
        node: discover_node(node.unwrap_or(Path::new("node"))),
    }
}

fn run_probe(cmd: &Path, args: &[&str]) -> Result<Vec<String>, String> {
    let out = Command::new(cmd)
        .args(args)
        .env_remove("PYTHONPATH")
        .env_remove("NODE_OPTIONS")
        .output()
        .map_err(|e| format!("could not run {}: {e}", cmd.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            cmd.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect())
}

fn version_at_least(version: &str, major: u32, minor: u32) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (ma, mi) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (ma, mi) >= (major, minor)
}

/// System directories every sandbox sees anyway.
fn always_visible(p: &Path) -> bool {
    p.starts_with("/usr")
        || p.starts_with("/bin")
        || p.starts_with("/lib")
        || p.starts_with("/lib64")
        || p.starts_with("/sbin")
}

fn discover_python(cmd: &Path) -> Result<Interpreter, String> {
    let lines = run_probe(cmd, &["-c", PY_PROBE])?;
    let [exe, prefix, version] = lines.as_slice() else {
        return Err(format!("{} printed something unexpected", cmd.display()));
    };
    if !version_at_least(version, 3, 9) {
        return Err(format!(
            "{} is Python {version}; the python3 runtime needs 3.9 or newer",
            cmd.display()
        ));
    }
    let exe = PathBuf::from(exe);
    let prefix = PathBuf::from(prefix);
    let mut ro_paths = Vec::new();
    if !always_visible(&prefix) {
        ro_paths.push(prefix.clone());
    }
    if !always_visible(&exe) && !exe.starts_with(&prefix) {
        if let Some(dir) = exe.parent() {
            ro_paths.push(dir.to_path_buf());
        }
    }
    Ok(Interpreter {
        executable: exe,
        version: version.clone(),
        ro_paths,
    })
}

fn discover_node(cmd: &Path) -> Result<Interpreter, String> {
    let lines = run_probe(cmd, &["-e", NODE_PROBE])?;
    let [exe, version] = lines.as_slice() else {
        return Err(format!("{} printed something unexpected", cmd.display()));
    };
    if !version_at_least(version, 18, 0) {
        return Err(format!(
            "{} is Node.js {version}; the nodejs runtime needs 18 or newer",
            cmd.display()
        ));
    }
    let exe = PathBuf::from(exe);
    let mut ro_paths = Vec::new();
    if !always_visible(&exe) {
        // node's prefix is the directory above bin/ (nvm, volta, tarball installs).
        let prefix = exe
            .parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new("/"));
        ro_paths.push(prefix.to_path_buf());
    }
    Ok(Interpreter {
        executable: exe,
        version: version.clone(),
        ro_paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert!(version_at_least("3.11.7", 3, 9));
        assert!(version_at_least("3.9.0", 3, 9));
        assert!(!version_at_least("3.8.10", 3, 9));
        assert!(version_at_least("20.20.2", 18, 0));
        assert!(!version_at_least("16.1.0", 18, 0));
    }
}
