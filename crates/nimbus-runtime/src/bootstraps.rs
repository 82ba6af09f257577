//! The built-in runtimes' bootstrap programs, embedded in the binary and written once at start-up
//! into a read-only directory that every instance sees at `/var/runtime`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const PYTHON: &str = include_str!("../bootstraps/python/bootstrap.py");
const NODE: &str = include_str!("../bootstraps/node/bootstrap.js");
const ZYGOTE: &str = include_str!("../bootstraps/python/zygote.py");

/// File names inside the runtime directory.
pub(crate) const PYTHON_FILE: &str = "bootstrap.py";
pub(crate) const NODE_FILE: &str = "bootstrap.js";
pub(crate) const ZYGOTE_FILE: &str = "zygote.py";

/// Writes the bootstraps into `dir` (replacing older copies) and makes them read-only.
pub fn install_bootstraps(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    for (name, text) in [
        (PYTHON_FILE, PYTHON),
        (NODE_FILE, NODE),
        (ZYGOTE_FILE, ZYGOTE),
    ] {
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
