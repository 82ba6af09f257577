//! Code archives on disk, content-addressed: `blobs/<sha256>.zip` holds the archive as uploaded,
//! `code/<sha256>/` its read-only unpacked tree. A tree is unpacked once, when the archive is
//! first stored, so every version with the same code shares one directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::code::{remove_unpacked, unpack_zip, CodeError, UnzipLimits};

/// Where code lives on disk.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
    limits: UnzipLimits,
    /// Keeps garbage collection from removing code that is stored but not yet referenced: an
    /// upload holds it shared from storing its archive until the version that refers to it is
    /// committed; a collection holds it exclusively while it reads what is referenced and
    /// removes the rest.
    gc_lock: Arc<tokio::sync::RwLock<()>>,
}

/// Held by an upload until the version referring to its code is committed.
pub type UploadGuard = tokio::sync::OwnedRwLockReadGuard<()>;
/// Held by a garbage collection from reading the referenced set until it has removed the rest.
pub type CollectGuard = tokio::sync::OwnedRwLockWriteGuard<()>;

/// A stored archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCode {
    /// Hex sha256 of the archive bytes.
    pub sha256: String,
    pub size: u64,
}

impl BlobStore {
    /// A blob store under `root` (created if needed).
    pub fn open(root: &Path, limits: UnzipLimits) -> std::io::Result<BlobStore> {
        std::fs::create_dir_all(root.join("blobs"))?;
        std::fs::create_dir_all(root.join("code"))?;
        Ok(BlobStore {
            root: root.to_path_buf(),
            limits,
            gc_lock: Arc::new(tokio::sync::RwLock::new(())),
        })
    }

    /// Take before [`BlobStore::put_zip`] and hold until the version that refers to the code
    /// is stored, so that a concurrent [`BlobStore::collect_garbage`] cannot remove it.
    pub async fn upload_guard(&self) -> UploadGuard {
        self.gc_lock.clone().read_owned().await
    }

    /// Take before reading the referenced set for [`BlobStore::collect_garbage`] and hold until
    /// it returns: uploads in progress finish first, new ones wait.
    pub async fn collect_guard(&self) -> CollectGuard {
        self.gc_lock.clone().write_owned().await
    }

    /// Validates and unpacks `zip`, then keeps the archive. Blocking: call from a blocking
    /// thread. A bad archive leaves nothing behind.
    pub fn put_zip(&self, zip: &[u8]) -> Result<StoredCode, CodeError> {
        let sha256 = hex::encode(Sha256::digest(zip));
        let dir = self.code_dir(&sha256);
        if !dir.exists() {
            match unpack_zip(zip, &dir, &self.limits) {
                Ok(_) => {}
                // Another request unpacked the same archive first: same bytes, same tree.
                Err(_) if dir.exists() => {}
                Err(e) => return Err(e),
            }
        }
        let blob = self.blob_path(&sha256);
        if !blob.exists() {
            let write = || -> std::io::Result<()> {
                let mut tmp = tempfile::NamedTempFile::new_in(self.root.join("blobs"))?;
                tmp.write_all(zip)?;
                tmp.as_file().sync_all()?;
                tmp.persist(&blob).map_err(|e| e.error)?;
                Ok(())
            };
            write().map_err(|source| CodeError::Io {
                action: "store",
                path: blob.clone(),
                source,
            })?;
        }
        Ok(StoredCode {
            sha256,
            size: zip.len() as u64,
        })
    }

    /// The archive bytes of `sha256`, if stored.
    pub fn get_zip(&self, sha256: &str) -> Option<Vec<u8>> {
        if !is_sha256_hex(sha256) {
            return None;
        }
        std::fs::read(self.blob_path(sha256)).ok()
    }

    /// The unpacked, read-only code tree of `sha256`.
    pub fn code_dir(&self, sha256: &str) -> PathBuf {
        self.code_root().join(sha256)
    }

    /// The directory holding every unpacked code tree, one per sha256.
    pub fn code_root(&self) -> PathBuf {
        self.root.join("code")
    }

    fn blob_path(&self, sha256: &str) -> PathBuf {
        self.root.join("blobs").join(format!("{sha256}.zip"))
    }

    /// Removes archives and trees no version refers to any more. Returns how many went.
    /// `referenced` must have been read under [`BlobStore::collect_guard`], still held.
    pub fn collect_garbage(&self, referenced: &[String]) -> usize {
        let keep: std::collections::HashSet<&str> = referenced.iter().map(String::as_str).collect();
        let mut removed = 0;
        if let Ok(entries) = std::fs::read_dir(self.root.join("blobs")) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                let Some(sha) = name.strip_suffix(".zip") else {
                    continue;
                };
                if is_sha256_hex(sha) && !keep.contains(sha) {
                    let _ = std::fs::remove_file(entry.path());
                    let _ = remove_unpacked(&self.code_dir(sha));
                    removed += 1;
                }
            }
        }
        removed
    }
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> BlobStore {
        let limits = UnzipLimits {
            max_entries: 100,
            max_total_bytes: 1 << 20,
        };
        BlobStore::open(dir, limits).unwrap()
    }

    fn empty_zip() -> Vec<u8> {
        let mut buf = std::io::Cursor::new(Vec::new());
        zip::ZipWriter::new(&mut buf).finish().unwrap();
        buf.into_inner()
    }

    #[tokio::test]
    async fn collection_waits_for_uploads_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = store(dir.path());
        let upload = blobs.upload_guard().await;
        let stored = blobs.put_zip(&empty_zip()).unwrap();
        let waiting = tokio::spawn({
            let blobs = blobs.clone();
            let stored = stored.clone();
            async move {
                let _guard = blobs.collect_guard().await;
                // What a collection reads now must include the committed upload.
                blobs.collect_garbage(std::slice::from_ref(&stored.sha256))
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "collection ran during an upload");
        drop(upload);
        assert_eq!(waiting.await.unwrap(), 0);
        assert!(blobs.get_zip(&stored.sha256).is_some());
    }

    #[test]
    fn garbage_is_what_nothing_refers_to() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = store(dir.path());
        let stored = blobs.put_zip(&empty_zip()).unwrap();
        assert!(blobs.code_dir(&stored.sha256).is_dir());
        assert_eq!(blobs.collect_garbage(&[]), 1);
        assert!(blobs.get_zip(&stored.sha256).is_none());
        assert!(!blobs.code_dir(&stored.sha256).exists());
    }
}
