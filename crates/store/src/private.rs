//! Owner-only data directories.
//!
//! A data directory holds private keys (Entra's token-signing key, every
//! managed identity's key, the CA key, the control key), so nobody but its
//! owner may enter it. sled creates its files with the process umask
//! (usually 0644), so directories are tightened after sled opens too.

use std::path::{Path, PathBuf};

/// Why a data directory cannot be made owner-only.
#[derive(Debug, thiserror::Error)]
pub enum PrivateDirError {
    /// The directory belongs to another user: refuse rather than share it.
    #[error(
        "data directory {path} is owned by uid {owner}, not by this process (uid {me}); refusing to keep keys where another user controls them"
    )]
    NotOwner {
        /// The directory.
        path: PathBuf,
        /// The uid that owns it.
        owner: u32,
        /// This process's effective uid.
        me: u32,
    },
    /// A directory or file could not be created or tightened.
    #[error("cannot make {path} owner-only: {source}")]
    Io {
        /// The directory or file that could not be made owner-only.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
}

/// Creates `dir` (and missing parents) with mode 0700 if needed, refuses it
/// if another user owns it, and makes everything under it owner-only:
/// directories 0700, files without group or other bits. Symlinks are left
/// alone, and so is anything on another filesystem (a mount inside the data
/// directory, such as compose's read-only CA volume, is not ours to change).
#[cfg(unix)]
pub fn private_dir(dir: &Path) -> Result<(), PrivateDirError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PrivateDirError::Io { path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))?;
    let meta = std::fs::metadata(dir).map_err(io(dir))?;
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(PrivateDirError::NotOwner {
            path: dir.to_path_buf(),
            owner: meta.uid(),
            me,
        });
    }
    tighten(dir, &meta, meta.dev())
}

/// Not unix: no modes to set.
#[cfg(not(unix))]
pub fn private_dir(dir: &Path) -> Result<(), PrivateDirError> {
    std::fs::create_dir_all(dir).map_err(|source| PrivateDirError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

#[cfg(unix)]
fn tighten(path: &Path, meta: &std::fs::Metadata, dev: u64) -> Result<(), PrivateDirError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let io = |source| PrivateDirError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Another process (a sibling service, sled itself) may remove a file
    // between listing and tightening it: gone is as private as it gets.
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let mode = meta.mode() & 0o7777;
    let want = if meta.is_dir() { 0o700 } else { mode & 0o700 };
    if mode != want
        && let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(want))
    {
        return if gone(&e) { Ok(()) } else { Err(io(e)) };
    }
    if !meta.is_dir() {
        return Ok(());
    }
    let entries = match std::fs::read_dir(path) {
        Ok(e) => e,
        Err(e) if gone(&e) => return Ok(()),
        Err(e) => return Err(io(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io)?;
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) if gone(&e) => continue,
            Err(e) => return Err(io(e)),
        };
        if meta.file_type().is_symlink() || meta.dev() != dev {
            continue;
        }
        tighten(&entry.path(), &meta, dev)?;
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn set(p: &Path, m: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }

    #[test]
    fn a_new_directory_is_created_owner_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&tmp.path().join("a")), 0o700);
    }

    #[test]
    fn an_existing_tree_is_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        std::fs::create_dir_all(dir.join("entra/blobs")).unwrap();
        std::fs::write(dir.join("entra/db"), "k").unwrap();
        std::fs::write(dir.join("misim.env"), "x").unwrap();
        set(&dir, 0o755);
        set(&dir.join("entra"), 0o777);
        set(&dir.join("entra/blobs"), 0o755);
        set(&dir.join("entra/db"), 0o644);
        set(&dir.join("misim.env"), 0o666);
        private_dir(&dir).unwrap();
        for d in ["", "entra", "entra/blobs"] {
            assert_eq!(mode(&dir.join(d)), 0o700, "{d}");
        }
        assert_eq!(mode(&dir.join("entra/db")), 0o600);
        assert_eq!(mode(&dir.join("misim.env")), 0o600);
    }

    #[test]
    fn symlinks_are_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, "x").unwrap();
        set(&outside, 0o644);
        let dir = tmp.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();
        private_dir(&dir).unwrap();
        assert_eq!(mode(&outside), 0o644);
    }
}
