//! The built-in runtimes' bootstrap programs, embedded in the binary and written once at start-up
//! into a read-only directory that every instance sees at `/var/runtime`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const PYTHON: &str = include_str!("../bootstraps/python/bootstrap.py");
const NODE: &str = include_str!("../bootstraps/node/bootstrap.js");
const NODE_WARM_UP: &str = include_str!("../bootstraps/node/nimbus-warm-up.js");
const ZYGOTE: &str = include_str!("../bootstraps/python/zygote.py");

/// File names inside the runtime directory.
pub(crate) const PYTHON_FILE: &str = "bootstrap.py";
pub(crate) const NODE_FILE: &str = "bootstrap.js";
/// The stand-in module a node spare loads while it waits (see the bootstrap's `warmUp`).
const NODE_WARM_UP_FILE: &str = "nimbus-warm-up.js";
pub(crate) const ZYGOTE_FILE: &str = "zygote.py";

/// Every file of the runtime directory, with its text.
const FILES: [(&str, &str); 4] = [
    (PYTHON_FILE, PYTHON),
    (NODE_FILE, NODE),
    (NODE_WARM_UP_FILE, NODE_WARM_UP),
    (ZYGOTE_FILE, ZYGOTE),
];

/// Writes the bootstraps into `dir` (replacing older copies) and makes them read-only.
pub fn install_bootstraps(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    for (name, text) in FILES {
        let path = dir.join(name);
        if std::fs::read_to_string(&path).ok().as_deref() == Some(text) {
            continue;
        }
        if path.exists() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        }
        std::fs::write(&path, text)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bootstrap_file_is_installed_read_only_and_reinstalling_keeps_it() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join("runtime");
        install_bootstraps(&dir).expect("first install");
        install_bootstraps(&dir).expect("second install over the read-only copies");
        for (name, text) in FILES {
            let path = dir.join(name);
            assert_eq!(std::fs::read_to_string(&path).expect(name), text, "{name}");
            let mode = std::fs::metadata(&path).expect(name).permissions().mode();
            assert_eq!(mode & 0o777, 0o444, "{name}");
        }
        // Let the temp dir be removed.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}
