//! Issue #10, item 1: keys on disk are the owner's alone. The data directory
//! holds Entra's token-signing key (`entra/`), every managed identity's
//! private key (`arm/`, `imds/`), the CA key and the control key: every
//! directory under it is 0700 and every file 0600, an older run's looser
//! tree is tightened at start, and a data directory another user owns is
//! refused.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use misim_sandbox::{Sandbox, SandboxConfig};

/// Every path under `root` (itself included) with its permission bits.
fn walk(root: &Path) -> Vec<(PathBuf, bool, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        if meta.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
        out.push((p, meta.is_dir(), mode));
    }
    out
}

fn assert_owner_only(root: &Path) {
    let tree = walk(root);
    let loose: Vec<String> = tree
        .iter()
        .filter(|(_, dir, mode)| *mode != if *dir { 0o700 } else { 0o600 })
        .map(|(p, _, mode)| format!("{} {mode:o}", p.display()))
        .collect();
    assert!(loose.is_empty(), "not owner-only: {loose:#?}");
    for must in [
        "entra/db",
        "arm/db",
        "imds/db",
        "control.key",
        "tls/ca-key.pem",
    ] {
        assert!(
            tree.iter().any(|(p, _, _)| p == &root.join(must)),
            "{must} missing"
        );
    }
}

/// A parent anyone may enter, so only the data directory's own modes protect it.
fn open_parent() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    tmp
}

fn is_root(tmp: &Path) -> bool {
    std::fs::metadata(tmp).unwrap().uid() == 0
}

#[tokio::test]
async fn every_path_under_the_data_dir_is_owner_only() {
    let tmp = open_parent();
    let data = tmp.path().join("data");
    let sb = Sandbox::start(SandboxConfig::new(&data)).await.unwrap();
    sb.write_env_file().unwrap();
    assert_owner_only(&data);
    sb.shutdown().await.unwrap();
    // Still so once sled has flushed and closed.
    assert_owner_only(&data);
}

#[tokio::test]
async fn a_loose_data_dir_from_an_older_run_is_tightened_at_start() {
    let tmp = open_parent();
    let data = tmp.path().join("data");
    {
        let sb = Sandbox::start(SandboxConfig::new(&data)).await.unwrap();
        sb.shutdown().await.unwrap();
    }
    // What an older misim left: world-readable directories and sled files.
    for (p, dir, _) in walk(&data) {
        let mode = if dir { 0o755 } else { 0o644 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    assert_eq!(
        std::fs::metadata(data.join("entra/db"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o644
    );
    let sb = Sandbox::start(SandboxConfig::new(&data)).await.unwrap();
    assert_owner_only(&data);
    sb.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_data_dir_owned_by_another_user_is_refused() {
    let tmp = open_parent();
    if !is_root(tmp.path()) {
        eprintln!("skipped: chowning a directory to another user needs root");
        return;
    }
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::os::unix::fs::chown(&data, Some(65534), Some(65534)).unwrap();
    let err = Sandbox::start(SandboxConfig::new(&data))
        .await
        .expect_err("started in another user's directory");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("is owned by uid 65534, not by this process (uid 0)"),
        "{msg}"
    );
    // Nothing was written there.
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 0);
}

#[tokio::test]
async fn another_user_cannot_read_the_signing_key() {
    use std::os::unix::process::CommandExt;
    let tmp = open_parent();
    if !is_root(tmp.path()) {
        eprintln!("skipped: running a command as another user needs root");
        return;
    }
    let data = tmp.path().join("data");
    let sb = Sandbox::start(SandboxConfig::new(&data)).await.unwrap();
    for secret in [
        "entra/db",
        "arm/db",
        "imds/db",
        "control.key",
        "tls/ca-key.pem",
    ] {
        let out = std::process::Command::new("cat")
            .arg(data.join(secret))
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        assert!(
            !out.status.success() && out.stdout.is_empty(),
            "uid 65534 read {secret}"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    sb.shutdown().await.unwrap();
}
