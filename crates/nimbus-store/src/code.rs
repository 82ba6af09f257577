//! Safe unpacking of function code zips into a read-only directory tree.
//!
//! A code zip is untrusted input. Unpacking refuses anything that could write outside the
//! code directory (`..`, absolute paths, drive prefixes, symlinks that point out, writes
//! through symlinks), stops zip bombs by counting the bytes actually decompressed, and is
//! atomic: the tree is built in a sibling temporary directory and renamed into place, so a
//! failure leaves nothing behind. This is blocking file I/O: async callers run it on
//! `spawn_blocking`.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Cursor, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zip::result::ZipError;
use zip::ZipArchive;

const S_IFMT: u32 = 0o170_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
/// Linux's PATH_MAX: no longer symlink target can be resolved anyway.
const MAX_SYMLINK_TARGET: u64 = 4096;
/// Linux's limit on symlinks followed while resolving one path (MAXSYMLINKS).
const MAX_SYMLINK_HOPS: usize = 40;
const COPY_BUFFER: usize = 64 * 1024;

/// Limits applied while unpacking; both are checked against what the archive really holds,
/// not what its headers claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnzipLimits {
    pub max_entries: usize,
    pub max_total_bytes: u64,
}

/// What was unpacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unpacked {
    /// Regular files and symlinks (directories are not counted).
    pub files: u64,
    /// Decompressed bytes: file contents plus symlink targets.
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    #[error("not a zip archive: {0}")]
    NotZip(#[source] ZipError),
    #[error("zip entry {name:?} is corrupt or uses an unsupported feature: {source}")]
    CorruptEntry {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("zip entry {name:?} escapes the code directory")]
    EscapesRoot { name: String },
    #[error(
        "zip entry {name:?} has an absolute path; entries must be relative to the code directory"
    )]
    AbsolutePath { name: String },
    #[error("zip entry {name:?} has an unusable name: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("zip entry {name:?} is a {kind}; only files, directories and symlinks are allowed")]
    UnsupportedType { name: String, kind: &'static str },
    #[error(
        "zip entry {name:?} is a symlink to {target:?}, which points outside the code directory"
    )]
    SymlinkEscapes { name: String, target: String },
    #[error("zip entry {name:?} is a symlink whose target {target:?} is invalid: {reason}")]
    InvalidSymlink {
        name: String,
        target: String,
        reason: &'static str,
    },
    #[error("zip entry {name:?} would be written through the symlink {link:?}")]
    ThroughSymlink { name: String, link: String },
    #[error("zip entry {name:?} clashes with an earlier entry: {reason}")]
    Conflict { name: String, reason: String },
    #[error("the archive has {count} entries, more than the limit of {max}")]
    TooManyEntries { count: usize, max: usize },
    #[error("the archive expands past {max} bytes (zip bomb?) at zip entry {name:?}")]
    TooLarge { max: u64, name: String },
    #[error("cannot unpack into {}: it already exists", path.display())]
    DestinationExists { path: PathBuf },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write zip entry {name:?}: {source}")]
    Write {
        name: String,
        #[source]
        source: io::Error,
    },
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CodeError + 'a {
    move |source| CodeError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Unpacks `zip` into `dest`, which must not exist yet, and leaves the tree read-only
/// (files 0444, or 0555 when the entry was executable; directories 0555).
pub fn unpack_zip(zip: &[u8], dest: &Path, limits: &UnzipLimits) -> Result<Unpacked, CodeError> {
    if dest.symlink_metadata().is_ok() {
        return Err(CodeError::DestinationExists {
            path: dest.to_owned(),
        });
    }
    let mut archive = ZipArchive::new(Cursor::new(zip)).map_err(CodeError::NotZip)?;
    if archive.len() > limits.max_entries {
        return Err(CodeError::TooManyEntries {
            count: archive.len(),
            max: limits.max_entries,
        });
    }

    let parent = match dest.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut prefix = OsString::from(".");
    prefix.push(dest.file_name().unwrap_or(OsStr::new("code")));
    prefix.push(".unpacking-");
    let staging = tempfile::Builder::new()
        .prefix(&prefix)
        .tempdir_in(parent)
        .map_err(io_error("create a temporary directory in", parent))?;

    // On any error `staging` is dropped and removes the partial tree; nothing is read-only
    // until every entry has been written and checked.
    let mut unpacker = Unpacker {
        root: staging.path(),
        limits,
        unpacked: Unpacked { files: 0, bytes: 0 },
        symlinks: Vec::new(),
        buffer: vec![0; COPY_BUFFER],
    };
    for index in 0..archive.len() {
        unpacker.entry(&mut archive, index)?;
    }
    unpacker.check_symlinks()?;
    let unpacked = unpacker.unpacked;

    // The root becomes 0555 before the rename too: renaming a directory within the same
    // parent does not need write access to it.
    make_read_only(staging.path())?;
    if let Err(source) = fs::rename(staging.path(), dest) {
        // Let `staging`'s drop remove the tree even when not running as root.
        let _ = make_writable(staging.path());
        return Err(CodeError::Io {
            action: "move the unpacked code to",
            path: dest.to_owned(),
            source,
        });
    }
    // The directory now lives at `dest`; there is nothing left for `staging` to remove.
    let _ = staging.keep();
    Ok(unpacked)
}

/// Removes a tree made by [`unpack_zip`], restoring write access to its directories first
/// so that this works without root.
pub fn remove_unpacked(dir: &Path) -> io::Result<()> {
    make_writable(dir)?;
    fs::remove_dir_all(dir)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File { executable: bool },
    Dir,
    Symlink,
}

struct Unpacker<'a> {
    root: &'a Path,
    limits: &'a UnzipLimits,
    unpacked: Unpacked,
    /// Each symlink made, as (entry name, path relative to the root, target).
    symlinks: Vec<(String, Vec<OsString>, OsString)>,
    buffer: Vec<u8>,
}

impl Unpacker<'_> {
    fn entry(
        &mut self,
        archive: &mut ZipArchive<Cursor<&[u8]>>,
        index: usize,
    ) -> Result<(), CodeError> {
        let listed_name = archive.name_for_index(index).unwrap_or_default().to_owned();
        let mut file = archive
            .by_index(index)
            .map_err(|e| CodeError::CorruptEntry {
                name: listed_name.clone(),
                source: e.into(),
            })?;
        let name = file.name().to_owned();
        let (components, ends_with_slash) = entry_components(&name)?;
        let kind = entry_kind(&name, file.unix_mode(), ends_with_slash)?;
        let Some((last, parents)) = components.split_last() else {
            // "./" and the like: the root itself.
            return match kind {
                Kind::Dir => Ok(()),
                _ => Err(CodeError::InvalidName {
                    name,
                    reason: "it names the code directory itself",
                }),
            };
        };
        let parent = self.ensure_dirs(&name, parents)?;
        let path = parent.join(last);
        match kind {
            Kind::Dir => {
                self.ensure_dirs(&name, &components)?;
            }
            Kind::File { executable } => {
                let mode = if executable { 0o755 } else { 0o644 };
                let mut out = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode)
                    .open(&path)
                    .map_err(|e| self.clash(&name, &components, e))?;
                self.copy(&name, &mut file, &mut out)?;
                self.unpacked.files += 1;
            }
            Kind::Symlink => {
                let target = self.symlink_target(&name, &mut file)?;
                check_symlink_lexically(&name, parents, &target)?;
                std::os::unix::fs::symlink(&target, &path)
                    .map_err(|e| self.clash(&name, &components, e))?;
                self.symlinks.push((name, components, target));
                self.unpacked.files += 1;
            }
        }
        Ok(())
    }

    /// Creates `components` below the root as real directories, refusing to pass through a
    /// symlink or a file. Returns the resulting path.
    fn ensure_dirs(&self, name: &str, components: &[OsString]) -> Result<PathBuf, CodeError> {
        let mut path = self.root.to_path_buf();
        for (depth, component) in components.iter().enumerate() {
            path.push(component);
            match path.symlink_metadata() {
                Ok(meta) if meta.is_dir() => {}
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(CodeError::ThroughSymlink {
                        name: name.to_owned(),
                        link: display(&components[..=depth]),
                    })
                }
                Ok(_) => {
                    return Err(CodeError::Conflict {
                        name: name.to_owned(),
                        reason: format!(
                            "{:?} is a file, not a directory",
                            display(&components[..=depth])
                        ),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&path).map_err(|source| CodeError::Write {
                        name: name.to_owned(),
                        source,
                    })?;
                }
                Err(source) => {
                    return Err(CodeError::Write {
                        name: name.to_owned(),
                        source,
                    })
                }
            }
        }
        Ok(path)
    }

    /// Explains why creating the entry at `components` failed.
    fn clash(&self, name: &str, components: &[OsString], error: io::Error) -> CodeError {
        if error.kind() != io::ErrorKind::AlreadyExists {
            return CodeError::Write {
                name: name.to_owned(),
                source: error,
            };
        }
        let existing = self.root.join(components.iter().collect::<PathBuf>());
        match existing.symlink_metadata() {
            Ok(meta) if meta.file_type().is_symlink() => CodeError::ThroughSymlink {
                name: name.to_owned(),
                link: display(components),
            },
            _ => CodeError::Conflict {
                name: name.to_owned(),
                reason: "the same path appears more than once in the archive".to_owned(),
            },
        }
    }

    /// Copies an entry's content, counting every decompressed byte against the limit and
    /// stopping as soon as it is crossed.
    fn copy(
        &mut self,
        name: &str,
        from: &mut impl Read,
        to: &mut impl Write,
    ) -> Result<(), CodeError> {
        loop {
            let read = match from.read(&mut self.buffer) {
                Ok(0) => return Ok(()),
                Ok(read) => read,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(CodeError::CorruptEntry {
                        name: name.to_owned(),
                        source,
                    })
                }
            };
            self.count(name, read as u64)?;
            to.write_all(&self.buffer[..read])
                .map_err(|source| CodeError::Write {
                    name: name.to_owned(),
                    source,
                })?;
        }
    }

    fn count(&mut self, name: &str, bytes: u64) -> Result<(), CodeError> {
        self.unpacked.bytes += bytes;
        if self.unpacked.bytes > self.limits.max_total_bytes {
            return Err(CodeError::TooLarge {
                max: self.limits.max_total_bytes,
                name: name.to_owned(),
            });
        }
        Ok(())
    }

    fn symlink_target(&mut self, name: &str, file: &mut impl Read) -> Result<OsString, CodeError> {
        let mut target = Vec::new();
        file.take(MAX_SYMLINK_TARGET + 1)
            .read_to_end(&mut target)
            .map_err(|source| CodeError::CorruptEntry {
                name: name.to_owned(),
                source,
            })?;
        self.count(name, target.len() as u64)?;
        let invalid = |reason| CodeError::InvalidSymlink {
            name: name.to_owned(),
            target: String::from_utf8_lossy(&target).into_owned(),
            reason,
        };
        if target.len() as u64 > MAX_SYMLINK_TARGET {
            return Err(invalid("it is longer than 4096 bytes"));
        }
        if target.is_empty() {
            return Err(invalid("it is empty"));
        }
        if target.contains(&0) {
            return Err(invalid("it contains a NUL byte"));
        }
        Ok(OsStr::from_bytes(&target).to_owned())
    }

    /// Resolves every symlink through the unpacked tree, following chains of links the way
    /// the kernel would, and refuses any that ends outside the root. The per-entry lexical
    /// check cannot see that e.g. `a/up -> ..` makes `a/x -> up/..` escape.
    fn check_symlinks(&self) -> Result<(), CodeError> {
        for (name, components, target) in &self.symlinks {
            let parents = &components[..components.len() - 1];
            match resolve(self.root, parents, target) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(CodeError::SymlinkEscapes {
                        name: name.clone(),
                        target: target.to_string_lossy().into_owned(),
                    })
                }
                Err(reason) => {
                    return Err(CodeError::InvalidSymlink {
                        name: name.clone(),
                        target: target.to_string_lossy().into_owned(),
                        reason,
                    })
                }
            }
        }
        Ok(())
    }
}

fn display(components: &[OsString]) -> String {
    components
        .iter()
        .map(|c| c.to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Splits an entry name into path components, refusing anything that is not a plain
/// relative path. Both `/` and `\` separate components, as zip tools on Windows write `\`.
fn entry_components(name: &str) -> Result<(Vec<OsString>, bool), CodeError> {
    let invalid = |reason| CodeError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.contains('\0') {
        return Err(invalid("it contains a NUL byte"));
    }
    let normalized = name.replace('\\', "/");
    let bytes = normalized.as_bytes();
    let drive_prefix = bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':';
    if normalized.starts_with('/') || drive_prefix {
        return Err(CodeError::AbsolutePath {
            name: name.to_owned(),
        });
    }
    let mut components = Vec::new();
    for component in normalized.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                return Err(CodeError::EscapesRoot {
                    name: name.to_owned(),
                })
            }
            _ => components.push(OsString::from(component)),
        }
    }
    Ok((components, normalized.ends_with('/')))
}

fn entry_kind(
    name: &str,
    unix_mode: Option<u32>,
    ends_with_slash: bool,
) -> Result<Kind, CodeError> {
    let Some(mode) = unix_mode else {
        // No Unix attributes (e.g. made on Windows): an ordinary, non-executable file.
        return Ok(if ends_with_slash {
            Kind::Dir
        } else {
            Kind::File { executable: false }
        });
    };
    match mode & S_IFMT {
        _ if ends_with_slash => Ok(Kind::Dir),
        S_IFDIR => Ok(Kind::Dir),
        S_IFLNK => Ok(Kind::Symlink),
        // Some tools write permission bits only, with no file type.
        S_IFREG | 0 => Ok(Kind::File {
            executable: mode & 0o111 != 0,
        }),
        other => Err(CodeError::UnsupportedType {
            name: name.to_owned(),
            kind: match other {
                0o010_000 => "FIFO",
                0o020_000 => "character device",
                0o060_000 => "block device",
                0o140_000 => "socket",
                _ => "file of unknown type",
            },
        }),
    }
}

/// The symlink at `parents/<link>` pointing to `target` must stay inside the root when read
/// as a path: not absolute, and no `..` climbing above the root.
fn check_symlink_lexically(
    name: &str,
    parents: &[OsString],
    target: &OsStr,
) -> Result<(), CodeError> {
    let escapes = || CodeError::SymlinkEscapes {
        name: name.to_owned(),
        target: target.to_string_lossy().into_owned(),
    };
    if target.as_bytes().starts_with(b"/") {
        return Err(escapes());
    }
    let mut depth = parents.len();
    for component in target.as_bytes().split(|b| *b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => depth = depth.checked_sub(1).ok_or_else(escapes)?,
            _ => depth += 1,
        }
    }
    Ok(())
}

/// Resolves `target` as seen from the directory `start` (relative to `root`), following
/// symlinks inside the tree. `Ok(false)` when the result is outside the root.
fn resolve(root: &Path, start: &[OsString], target: &OsStr) -> Result<bool, &'static str> {
    let mut resolved: Vec<OsString> = start.to_vec();
    let mut pending: Vec<OsString> = Vec::new();
    push_components(&mut pending, target);
    let mut hops = 0;
    while let Some(component) = pending.pop() {
        match component.as_bytes() {
            b"" | b"." => {}
            b".." => {
                if resolved.pop().is_none() {
                    return Ok(false);
                }
            }
            _ => {
                resolved.push(component);
                let path: PathBuf = root.join(resolved.iter().collect::<PathBuf>());
                let is_link = path
                    .symlink_metadata()
                    .is_ok_and(|m| m.file_type().is_symlink());
                if is_link {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err("it is part of a symlink loop");
                    }
                    let next = fs::read_link(&path).map_err(|_| "it cannot be read back")?;
                    resolved.pop();
                    if next.as_os_str().as_bytes().starts_with(b"/") {
                        return Ok(false);
                    }
                    push_components(&mut pending, next.as_os_str());
                }
                // A missing component is left as a name: nothing can create it later, as
                // the tree becomes read-only.
            }
        }
    }
    Ok(true)
}

/// Pushes the components of `path` so that popping yields them in order.
fn push_components(pending: &mut Vec<OsString>, path: &OsStr) {
    for component in path.as_bytes().split(|b| *b == b'/').rev() {
        pending.push(OsStr::from_bytes(component).to_owned());
    }
}

/// Files 0444 (0555 if any execute bit is set), directories 0555, symlinks untouched.
/// Children first, so the directories can still be entered while they are changed.
fn make_read_only(dir: &Path) -> Result<(), CodeError> {
    set_tree_modes(
        dir,
        0o555,
        |executable| if executable { 0o555 } else { 0o444 },
    )
}

/// Undoes [`make_read_only`] enough to delete the tree: directories 0755, files untouched.
fn make_writable(dir: &Path) -> io::Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            make_writable(&entry.path())?;
        }
    }
    Ok(())
}

fn set_tree_modes(dir: &Path, dir_mode: u32, file_mode: fn(bool) -> u32) -> Result<(), CodeError> {
    for entry in fs::read_dir(dir).map_err(io_error("list", dir))? {
        let entry = entry.map_err(io_error("list", dir))?;
        let path = entry.path();
        // `DirEntry::file_type` does not follow symlinks, so links are never chmod-ed
        // (which would change their targets).
        let file_type = entry.file_type().map_err(io_error("inspect", &path))?;
        if file_type.is_dir() {
            set_tree_modes(&path, dir_mode, file_mode)?;
        } else if file_type.is_file() {
            let mode = path
                .symlink_metadata()
                .map_err(io_error("inspect", &path))?
                .permissions()
                .mode();
            fs::set_permissions(
                &path,
                fs::Permissions::from_mode(file_mode(mode & 0o111 != 0)),
            )
            .map_err(io_error("set permissions on", &path))?;
        }
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(dir_mode))
        .map_err(io_error("set permissions on", dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use zip::write::SimpleFileOptions;
    use zip::{CompressionMethod, ZipWriter};

    const LIMITS: UnzipLimits = UnzipLimits {
        max_entries: 100,
        max_total_bytes: 10 * 1024 * 1024,
    };

    enum Entry<'a> {
        File(&'a str, &'a [u8], u32),
        Dir(&'a str),
        Symlink(&'a str, &'a str),
        /// A file whose options carry no Unix mode at all.
        PlainFile(&'a str, &'a [u8]),
    }

    fn build(entries: &[Entry]) -> Vec<u8> {
        let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
        for entry in entries {
            match entry {
                Entry::File(name, data, mode) => {
                    writer
                        .start_file(*name, options.unix_permissions(*mode))
                        .unwrap();
                    writer.write_all(data).unwrap();
                }
                Entry::PlainFile(name, data) => {
                    // Executable bits that `strip_unix_mode` then removes with the rest.
                    writer
                        .start_file(*name, options.unix_permissions(0o755))
                        .unwrap();
                    writer.write_all(data).unwrap();
                }
                Entry::Dir(name) => writer.add_directory(*name, options).unwrap(),
                Entry::Symlink(name, target) => {
                    writer.add_symlink(*name, *target, options).unwrap()
                }
            }
        }
        let mut zip = writer.finish().unwrap().into_inner();
        for entry in entries {
            if let Entry::PlainFile(name, _) = entry {
                strip_unix_mode(&mut zip, name);
            }
        }
        zip
    }

    /// Makes the central directory record of `name` look like one written on MS-DOS with no
    /// attributes, as Windows tools do: the reader then reports no Unix mode.
    fn strip_unix_mode(zip: &mut [u8], name: &str) {
        let mut at = 0;
        while let Some(found) = zip[at..].windows(4).position(|w| w == b"PK\x01\x02") {
            let header = at + found;
            let name_len = u16::from_le_bytes([zip[header + 28], zip[header + 29]]) as usize;
            if &zip[header + 46..header + 46 + name_len] == name.as_bytes() {
                zip[header + 5] = 0; // version made by: host system MS-DOS
                zip[header + 38..header + 42].fill(0); // external attributes
                return;
            }
            at = header + 4;
        }
        panic!("no central directory record for {name}");
    }

    /// A fresh parent directory; the code goes to `parent/code`.
    fn parent() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn mode(path: &Path) -> u32 {
        path.symlink_metadata().unwrap().permissions().mode() & 0o7777
    }

    /// Unpacks, expects failure, and checks that nothing was left behind.
    fn unpack_err(zip: &[u8], limits: &UnzipLimits) -> CodeError {
        let parent = parent();
        let dest = parent.path().join("code");
        let err = unpack_zip(zip, &dest, limits).expect_err("unpacking should fail");
        assert!(
            dest.symlink_metadata().is_err(),
            "{} exists after: {err}",
            dest.display()
        );
        let left: Vec<_> = fs::read_dir(parent.path()).unwrap().collect();
        assert!(left.is_empty(), "left behind after {err}: {left:?}");
        err
    }

    #[test]
    fn unpacks_a_tree_read_only_and_keeps_the_exec_bit() {
        let zip = build(&[
            Entry::File("bootstrap", b"#!/bin/sh\necho hi\n", 0o755),
            Entry::File("lib/deep/util.py", b"x = 1\n", 0o644),
            Entry::Dir("empty/"),
            Entry::PlainFile("windows.txt", b"made elsewhere"),
            Entry::Symlink("lib/current", "deep"),
            Entry::Symlink("lib/deep/back", "../../bootstrap"),
        ]);
        let parent = parent();
        let dest = parent.path().join("code");
        let unpacked = unpack_zip(&zip, &dest, &LIMITS).unwrap();
        assert_eq!(unpacked.files, 5);
        let contents = [
            "#!/bin/sh\necho hi\n",
            "x = 1\n",
            "made elsewhere",
            "deep",
            "../../bootstrap",
        ];
        assert_eq!(
            unpacked.bytes,
            contents.iter().map(|c| c.len() as u64).sum::<u64>()
        );
        assert_eq!(
            fs::read(dest.join("bootstrap")).unwrap(),
            b"#!/bin/sh\necho hi\n"
        );
        assert_eq!(mode(&dest.join("bootstrap")), 0o555);
        assert_eq!(mode(&dest.join("lib/deep/util.py")), 0o444);
        assert_eq!(mode(&dest.join("windows.txt")), 0o444);
        assert_eq!(mode(&dest), 0o555);
        assert_eq!(mode(&dest.join("lib")), 0o555);
        assert_eq!(mode(&dest.join("lib/deep")), 0o555);
        assert!(dest.join("empty").is_dir());
        assert_eq!(
            fs::read_link(dest.join("lib/current")).unwrap(),
            Path::new("deep")
        );
        assert_eq!(
            fs::read(dest.join("lib/current/util.py")).unwrap(),
            b"x = 1\n"
        );
        assert_eq!(
            fs::read(dest.join("lib/deep/back")).unwrap(),
            b"#!/bin/sh\necho hi\n"
        );
        // Only `code` is left in the parent: the staging directory was renamed, not copied.
        let names: Vec<_> = fs::read_dir(parent.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("code")]);
        remove_unpacked(&dest).unwrap();
        assert!(!dest.exists());
    }

    #[test]
    fn an_empty_archive_gives_an_empty_directory() {
        let parent = parent();
        let dest = parent.path().join("code");
        let unpacked = unpack_zip(&build(&[]), &dest, &LIMITS).unwrap();
        assert_eq!(unpacked, Unpacked { files: 0, bytes: 0 });
        assert!(dest.is_dir());
        remove_unpacked(&dest).unwrap();
    }

    #[test]
    fn refuses_an_existing_destination() {
        let parent = parent();
        let err = unpack_zip(&build(&[]), parent.path(), &LIMITS).unwrap_err();
        assert!(matches!(err, CodeError::DestinationExists { .. }), "{err}");
    }

    #[test]
    fn refuses_paths_outside_the_root() {
        let cases: &[(&str, &str)] = &[
            ("../x", "zip entry \"../x\" escapes the code directory"),
            (
                "a/../../x",
                "zip entry \"a/../../x\" escapes the code directory",
            ),
            ("a/../b", "zip entry \"a/../b\" escapes the code directory"),
            ("..\\x", "zip entry \"..\\\\x\" escapes the code directory"),
            ("/abs", "zip entry \"/abs\" has an absolute path"),
            ("\\abs", "zip entry \"\\\\abs\" has an absolute path"),
            (
                "C:/windows/x",
                "zip entry \"C:/windows/x\" has an absolute path",
            ),
            ("c:x", "zip entry \"c:x\" has an absolute path"),
        ];
        for (name, message) in cases {
            let zip = build(&[
                Entry::File("ok.txt", b"fine", 0o644),
                Entry::File(name, b"evil", 0o644),
            ]);
            let err = unpack_err(&zip, &LIMITS);
            assert!(err.to_string().starts_with(message), "{name}: {err}");
        }
    }

    #[test]
    fn refuses_symlinks_that_leave_the_root() {
        let cases: &[&[Entry]] = &[
            &[Entry::Symlink("passwd", "/etc/passwd")],
            &[Entry::Symlink("a/link", "../../x")],
            &[Entry::Symlink("link", "..")],
            // Each link alone stays inside; together `a/x` resolves to `a/up/..`, where
            // `a/up` is the root, so `..` climbs above it.
            &[Entry::Symlink("a/up", ".."), Entry::Symlink("a/x", "up/..")],
            // The same, with the chained link written first.
            &[
                Entry::Symlink("a/x", "up/../.."),
                Entry::Symlink("a/up", ".."),
            ],
        ];
        for entries in cases {
            let err = unpack_err(&build(entries), &LIMITS);
            assert!(
                matches!(&err, CodeError::SymlinkEscapes { .. })
                    && err
                        .to_string()
                        .contains("points outside the code directory"),
                "{err}"
            );
        }
        let err = unpack_err(&build(&[Entry::Symlink("passwd", "/etc/passwd")]), &LIMITS);
        assert_eq!(
            err.to_string(),
            "zip entry \"passwd\" is a symlink to \"/etc/passwd\", which points outside the code \
             directory"
        );
    }

    #[test]
    fn refuses_symlink_loops() {
        let err = unpack_err(
            &build(&[Entry::Symlink("a", "b"), Entry::Symlink("b", "a/x")]),
            &LIMITS,
        );
        assert!(err.to_string().contains("symlink loop"), "{err}");
    }

    #[test]
    fn refuses_writes_through_symlinks_and_duplicates() {
        // `lib -> sub` is allowed, but a later entry may not write into it.
        let through_dir = build(&[
            Entry::Dir("sub/"),
            Entry::Symlink("lib", "sub"),
            Entry::File("lib/x.py", b"x", 0o644),
        ]);
        let err = unpack_err(&through_dir, &LIMITS);
        assert!(
            matches!(&err, CodeError::ThroughSymlink { link, .. } if link == "lib"),
            "{err}"
        );

        // The zip crate keeps only the last of several entries with the very same name, so
        // duplicates reach us as different spellings of one path.
        // A duplicate whose first copy is a symlink would write to the link's target.
        let through_file = build(&[
            Entry::File("target.txt", b"original", 0o644),
            Entry::Symlink("f", "target.txt"),
            Entry::File("./f", b"overwrite", 0o644),
        ]);
        let err = unpack_err(&through_file, &LIMITS);
        assert!(matches!(err, CodeError::ThroughSymlink { .. }), "{err}");

        let duplicate = build(&[
            Entry::File("d/f", b"1", 0o644),
            Entry::File("d\\f", b"2", 0o644),
        ]);
        let err = unpack_err(&duplicate, &LIMITS);
        assert!(err.to_string().contains("more than once"), "{err}");

        let file_as_dir = build(&[
            Entry::File("f", b"1", 0o644),
            Entry::File("f/g", b"2", 0o644),
        ]);
        let err = unpack_err(&file_as_dir, &LIMITS);
        assert!(
            err.to_string().contains("is a file, not a directory"),
            "{err}"
        );
    }

    #[test]
    fn stops_a_zip_bomb_at_the_limit() {
        // 300 MB of zeros compresses to about 300 KB.
        let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .large_file(true);
        writer.start_file("zeros", options).unwrap();
        let chunk = vec![0u8; 1024 * 1024];
        for _ in 0..300 {
            writer.write_all(&chunk).unwrap();
        }
        let zip = writer.finish().unwrap().into_inner();
        assert!(zip.len() < 1024 * 1024);
        let err = unpack_err(&zip, &LIMITS);
        assert_eq!(
            err.to_string(),
            "the archive expands past 10485760 bytes (zip bomb?) at zip entry \"zeros\""
        );
    }

    #[test]
    fn counts_decompressed_bytes_not_header_sizes() {
        // 20 MB of zeros whose headers claim 100 bytes.
        let mut zip = build(&[Entry::File("liar", &vec![0u8; 20 * 1024 * 1024], 0o644)]);
        let local = 22; // uncompressed size in the local file header
        let central = find(&zip, b"PK\x01\x02") + 24; // ... and in the central directory
        for offset in [local, central] {
            zip[offset..offset + 4].copy_from_slice(&100u32.to_le_bytes());
        }
        let err = unpack_err(&zip, &LIMITS);
        assert!(matches!(err, CodeError::TooLarge { .. }), "{err}");
    }

    fn find(haystack: &[u8], needle: &[u8]) -> usize {
        haystack
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap()
    }

    #[test]
    fn refuses_too_many_entries() {
        let names: Vec<String> = (0..11).map(|i| format!("f{i}")).collect();
        let entries: Vec<Entry> = names.iter().map(|n| Entry::File(n, b"x", 0o644)).collect();
        let limits = UnzipLimits {
            max_entries: 10,
            ..LIMITS
        };
        let err = unpack_err(&build(&entries), &limits);
        assert_eq!(
            err.to_string(),
            "the archive has 11 entries, more than the limit of 10"
        );
        let limits = UnzipLimits {
            max_entries: 11,
            ..LIMITS
        };
        let parent = parent();
        let dest = parent.path().join("code");
        assert_eq!(
            unpack_zip(&build(&entries), &dest, &limits).unwrap().files,
            11
        );
        remove_unpacked(&dest).unwrap();
    }

    #[test]
    fn refuses_garbage_and_truncated_archives() {
        let err = unpack_err(b"this is not a zip file at all, just some bytes", &LIMITS);
        assert!(
            err.to_string()
                .starts_with("not a zip archive: invalid Zip archive"),
            "{err}"
        );

        let zip = build(&[
            Entry::File("a.txt", &[b'a'; 5000], 0o644),
            Entry::File("b.txt", b"bbb", 0o644),
        ]);
        let err = unpack_err(&zip[..zip.len() / 2], &LIMITS);
        assert!(err.to_string().starts_with("not a zip archive"), "{err}");

        // Intact directory, damaged data: the CRC (or inflate) catches it, naming the entry.
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut zip = build(&[Entry::File("a.txt", &data, 0o644)]);
        let body = 30 + "a.txt".len() + 40;
        zip[body] ^= 0xff;
        let err = unpack_err(&zip, &LIMITS);
        assert!(
            matches!(&err, CodeError::CorruptEntry { name, .. } if name == "a.txt"),
            "{err}"
        );
    }
}
