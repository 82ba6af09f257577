//! Zipping a function's directory for `nimbus deploy DIR`, deterministically: the same tree
//! always gives the same bytes (and so the same CodeSha256), whatever the file times, the
//! order the filesystem lists entries in, or the umask the files were made under.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Cursor};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

/// Directory names never worth shipping, wherever they appear.
const SKIPPED_DIRS: &[&str] = &[".git", "__pycache__", ".nimbus"];

/// Zips `dir` recursively. Entries are sorted by path, every timestamp is 1980-01-01, files
/// are 0755 when any execute bit is set and 0644 otherwise, directories 0755, and symlinks
/// are stored as symlinks (not followed). Skips `.git`, `__pycache__`, `.nimbus` and
/// `node_modules/.cache`.
pub fn zip_dir(dir: &Path) -> io::Result<Vec<u8>> {
    let meta = fs::metadata(dir).map_err(|e| context(dir, e))?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a directory", dir.display()),
        ));
    }
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    add_dir(&mut writer, dir, "")?;
    let cursor = writer.finish().map_err(|e| context(dir, e.into()))?;
    Ok(cursor.into_inner())
}

fn options() -> SimpleFileOptions {
    // Set explicitly: with the zip crate's `time` feature the default is "now".
    SimpleFileOptions::default()
        .last_modified_time(DateTime::default())
        .compression_method(CompressionMethod::Deflated)
}

/// Adds the contents of `dir`, whose entry name is `prefix` ("" for the root, else ending
/// in `/`).
fn add_dir(writer: &mut ZipWriter<Cursor<Vec<u8>>>, dir: &Path, prefix: &str) -> io::Result<()> {
    let mut entries = fs::read_dir(dir)
        .map_err(|e| context(dir, e))?
        .map(|entry| entry.map_err(|e| context(dir, e)))
        .collect::<io::Result<Vec<_>>>()?;
    entries.sort_by_key(|entry| entry.file_name());

    for entry in entries {
        let path = entry.path();
        let file_name = entry.file_name();
        let name = file_name.to_str().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: the file name is not UTF-8, which zip entry names must be",
                    path.display()
                ),
            )
        })?;
        let entry_name = format!("{prefix}{name}");
        // `DirEntry::file_type` does not follow symlinks.
        let file_type = entry.file_type().map_err(|e| context(&path, e))?;
        let zip_error = |e: zip::result::ZipError| context(&path, e.into());

        if file_type.is_symlink() {
            let target = fs::read_link(&path).map_err(|e| context(&path, e))?;
            let target = target.to_str().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: the symlink target is not UTF-8", path.display()),
                )
            })?;
            writer
                .add_symlink(entry_name, target, options().unix_permissions(0o777))
                .map_err(zip_error)?;
        } else if file_type.is_dir() {
            if is_skipped_dir(prefix, &file_name) {
                continue;
            }
            let dir_name = format!("{entry_name}/");
            writer
                .add_directory(dir_name.as_str(), options().unix_permissions(0o755))
                .map_err(zip_error)?;
            add_dir(writer, &path, &dir_name)?;
        } else if file_type.is_file() {
            let meta = entry.metadata().map_err(|e| context(&path, e))?;
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            let options = options()
                .unix_permissions(mode)
                .large_file(meta.len() >= u64::from(u32::MAX));
            writer.start_file(entry_name, options).map_err(zip_error)?;
            let mut file = fs::File::open(&path).map_err(|e| context(&path, e))?;
            io::copy(&mut file, writer).map_err(|e| context(&path, e))?;
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: not a file, directory or symlink (a socket or device?); remove it or \
                     move it out of the function directory",
                    path.display()
                ),
            ));
        }
    }
    Ok(())
}

fn is_skipped_dir(prefix: &str, name: &OsStr) -> bool {
    let in_node_modules = prefix == "node_modules/" || prefix.ends_with("/node_modules/");
    SKIPPED_DIRS.iter().any(|skipped| name == *skipped) || (in_node_modules && name == ".cache")
}

/// Prefixes an error with the path it concerns, keeping its kind.
fn context(path: &Path, error: io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;
    use std::time::{Duration, SystemTime};
    use zip::ZipArchive;

    fn write(path: &Path, data: &[u8], mode: u32) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A function directory, written in the order given.
    fn sample(root: &Path, reverse: bool) {
        let mut files: Vec<(&str, &[u8], u32)> = vec![
            ("bootstrap", b"#!/bin/sh\nexec ./handler\n", 0o755),
            (
                "src/handler.py",
                b"def handler(e, c):\n    return e\n",
                0o644,
            ),
            ("src/data.json", b"{}", 0o600),
            ("node_modules/pkg/index.js", b"module.exports = 1;\n", 0o644),
            ("node_modules/.cache/babel/x", b"cache", 0o644),
            (".git/config", b"[core]\n", 0o644),
            (
                "src/__pycache__/handler.cpython-312.pyc",
                b"\x00\x01",
                0o644,
            ),
            (".nimbus/state.json", b"{}", 0o644),
            ("bin/tool", b"\x7fELF", 0o700),
        ];
        if reverse {
            files.reverse();
        }
        for (name, data, mode) in files {
            write(&root.join(name), data, mode);
        }
        fs::create_dir(root.join("empty")).unwrap();
        symlink("src", root.join("lib")).unwrap();
    }

    struct ReadEntry {
        name: String,
        mode: u32,
        data: Vec<u8>,
    }

    fn read_back(zip: &[u8]) -> Vec<ReadEntry> {
        let mut archive = ZipArchive::new(Cursor::new(zip)).unwrap();
        (0..archive.len())
            .map(|index| {
                let mut file = archive.by_index(index).unwrap();
                let mut data = Vec::new();
                file.read_to_end(&mut data).unwrap();
                assert_eq!(
                    file.last_modified(),
                    Some(DateTime::default()),
                    "{}",
                    file.name()
                );
                ReadEntry {
                    name: file.name().to_owned(),
                    mode: file.unix_mode().unwrap(),
                    data,
                }
            })
            .collect()
    }

    #[test]
    fn round_trip_keeps_modes_and_symlinks_and_skips_junk() {
        let dir = tempfile::tempdir().unwrap();
        sample(dir.path(), false);
        let entries = read_back(&zip_dir(dir.path()).unwrap());
        let listing: Vec<(&str, u32)> = entries.iter().map(|e| (e.name.as_str(), e.mode)).collect();
        assert_eq!(
            listing,
            [
                ("bin/", 0o040755),
                ("bin/tool", 0o100755),
                ("bootstrap", 0o100755),
                ("empty/", 0o040755),
                ("lib", 0o120777),
                ("node_modules/", 0o040755),
                ("node_modules/pkg/", 0o040755),
                ("node_modules/pkg/index.js", 0o100644),
                ("src/", 0o040755),
                ("src/data.json", 0o100644),
                ("src/handler.py", 0o100644),
            ]
        );
        let data = |name: &str| &entries.iter().find(|e| e.name == name).unwrap().data;
        assert_eq!(data("bootstrap"), b"#!/bin/sh\nexec ./handler\n");
        assert_eq!(
            data("src/handler.py"),
            b"def handler(e, c):\n    return e\n"
        );
        assert_eq!(data("lib"), b"src");
    }

    #[test]
    fn same_tree_gives_same_bytes() {
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        sample(first.path(), false);
        sample(second.path(), true);
        // Different modification times must not matter either.
        let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        fs::File::options()
            .write(true)
            .open(second.path().join("bootstrap"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let zip = zip_dir(first.path()).unwrap();
        assert_eq!(zip, zip_dir(first.path()).unwrap());
        assert_eq!(zip, zip_dir(second.path()).unwrap());

        // ... while a changed exec bit does.
        fs::set_permissions(
            second.path().join("src/handler.py"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        assert_ne!(zip, zip_dir(second.path()).unwrap());
    }

    #[test]
    fn errors_name_the_file() {
        let missing = Path::new("/nonexistent/nimbus-function");
        let err = zip_dir(missing).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/nonexistent/nimbus-function: "),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        let bad = dir
            .path()
            .join(<OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(
                b"bad\xffname",
            ));
        fs::write(&bad, b"x").unwrap();
        let err = zip_dir(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("bad") && err.to_string().contains("not UTF-8"),
            "{err}"
        );

        let file = dir.path().join("plain");
        fs::write(&file, b"x").unwrap();
        let err = zip_dir(&file).unwrap_err();
        assert!(
            err.to_string().ends_with("plain is not a directory"),
            "{err}"
        );
    }
}
