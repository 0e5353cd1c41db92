//! Repository rules that ARCHITECTURE.md promises, checked on every test run.
//!
//! Each test collects every offender and fails once with the whole list, so one run shows
//! all there is to fix. The rules read files and `cargo metadata`; they build nothing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (this crate lives at `crates/tidy`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/tidy sits two levels below the workspace root")
        .to_path_buf()
}

/// Files of the repository as `/`-separated paths relative to the root: tracked files plus
/// untracked ones git does not ignore (so a new file is checked before its first commit).
/// Without git (a source tarball), a walk that skips hidden directories and `target/`.
fn repo_files() -> Vec<String> {
    let root = root();
    let git = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(&root)
        .output();
    let mut files: Vec<String> = match git {
        Ok(out) if out.status.success() => String::from_utf8(out.stdout)
            .expect("git paths are UTF-8")
            .split('\0')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => {
            let mut found = Vec::new();
            walk(&root, &root, &mut found);
            found
        }
    };
    // `ls-files --cached` still lists files deleted in the working tree.
    files.retain(|p| root.join(p).is_file());
    files.sort();
    files.dedup();
    files
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if !name.starts_with('.') && name != "target" {
                walk(root, &path, out);
            }
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Fails with every offender listed, one per line, after `rule`.
fn report(rule: &str, offenders: &[String]) {
    assert!(
        offenders.is_empty(),
        "{rule}\n{} offender(s):\n  {}",
        offenders.len(),
        offenders.join("\n  ")
    );
}

/// Every Rust file under `crates/` (library, binary, build script, test, bench) opens with
/// a `//!` line saying what the module is for. Test and build files are included: a reader
/// opening `tests/e2e/flow.rs` needs the same one-line orientation as one opening `src/`.
#[test]
fn every_rust_file_opens_with_a_module_doc() {
    let offenders: Vec<String> = repo_files()
        .into_iter()
        .filter(|p| p.starts_with("crates/") && p.ends_with(".rs"))
        .filter(|p| !read(p).starts_with("//!"))
        .collect();
    report(
        "every .rs file under crates/ must open with a `//!` module doc line",
        &offenders,
    );
}

/// One workspace package and the names of the packages it depends on (normal, dev and
/// build dependencies alike), from `cargo metadata`.
struct Package {
    name: String,
    deps: BTreeSet<String>,
}

fn workspace_packages() -> Vec<Package> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let packages = meta["packages"].as_array().expect("packages is an array");
    packages
        .iter()
        .map(|p| Package {
            name: p["name"].as_str().expect("package name").to_owned(),
            // `name` is the package depended on, whatever it is renamed to locally.
            deps: p["dependencies"]
                .as_array()
                .expect("dependencies is an array")
                .iter()
                .map(|d| d["name"].as_str().expect("dependency name").to_owned())
                .collect(),
        })
        .collect()
}

const SERVICES: [&str; 4] = ["misim-entra", "misim-arm", "misim-imds", "misim-keyvault"];

#[test]
fn only_the_store_depends_on_sled() {
    let packages = workspace_packages();
    assert!(
        packages.iter().any(|p| p.name == "misim-store"),
        "misim-store not found in cargo metadata"
    );
    let offenders: Vec<String> = packages
        .iter()
        .filter(|p| p.name != "misim-store" && p.deps.contains("sled"))
        .map(|p| p.name.clone())
        .collect();
    report(
        "only misim-store may depend on sled (ARCHITECTURE.md: the only crate that knows sled)",
        &offenders,
    );
}

#[test]
fn service_crates_do_not_depend_on_each_other() {
    let packages = workspace_packages();
    let mut offenders = Vec::new();
    for service in SERVICES {
        let package = packages
            .iter()
            .find(|p| p.name == service)
            .unwrap_or_else(|| panic!("{service} not found in cargo metadata"));
        for dep in SERVICES.iter().filter(|d| package.deps.contains(**d)) {
            offenders.push(format!("{service} -> {dep}"));
        }
    }
    report(
        "service crates meet only through misim-proto clients, never as dependencies",
        &offenders,
    );
}

#[test]
fn dns_depends_on_no_service_crate() {
    let packages = workspace_packages();
    let dns = packages
        .iter()
        .find(|p| p.name == "misim-dns")
        .expect("misim-dns not found in cargo metadata");
    let offenders: Vec<String> = SERVICES
        .iter()
        .filter(|s| dns.deps.contains(**s))
        .map(|s| format!("misim-dns -> {s}"))
        .collect();
    report(
        "misim-dns answers from its configuration alone: it runs beside the services, not on them",
        &offenders,
    );
}

#[test]
fn tidy_depends_on_no_misim_crate() {
    let packages = workspace_packages();
    let tidy = packages
        .iter()
        .find(|p| p.name == "misim-tidy")
        .expect("misim-tidy in cargo metadata");
    let offenders: Vec<String> = tidy
        .deps
        .iter()
        .filter(|d| d.starts_with("misim-"))
        .cloned()
        .collect();
    report(
        "misim-tidy must stay fast: it depends on no misim crate",
        &offenders,
    );
}

/// Domain modules allowed to use generated proto types. Empty: ARM's peer
/// calls live in `arm/src/peers.rs` and doctor reports are converted in
/// `grpc_ops.rs`. This list may only shrink: a file here that no longer uses
/// `misim_proto` fails the test until it is removed from the list.
const DOMAIN_PROTO_ALLOWLIST: [&str; 0] = [];

/// Whether a file uses `misim_proto` outside comments.
fn uses_proto(source: &str) -> bool {
    source
        .lines()
        .map(str::trim_start)
        .filter(|l| !l.starts_with("//"))
        .any(|l| l.contains("misim_proto"))
}

#[test]
fn domain_modules_do_not_use_generated_proto_types() {
    let domain_files: Vec<String> = repo_files()
        .into_iter()
        .filter(|p| p.ends_with(".rs") && is_domain_file(p))
        .collect();
    let mut offenders = Vec::new();
    for file in &domain_files {
        let allowed = DOMAIN_PROTO_ALLOWLIST.contains(&file.as_str());
        match (uses_proto(&read(file)), allowed) {
            (true, false) => offenders.push(format!("{file}: uses misim_proto")),
            (false, true) => offenders.push(format!(
                "{file}: no longer uses misim_proto; remove it from DOMAIN_PROTO_ALLOWLIST"
            )),
            _ => {}
        }
    }
    for listed in DOMAIN_PROTO_ALLOWLIST {
        if !domain_files.iter().any(|f| f == listed) {
            offenders.push(format!(
                "{listed}: allowlisted but gone; remove it from DOMAIN_PROTO_ALLOWLIST"
            ));
        }
    }
    report(
        "generated proto types stay out of crates/*/src/domain/ (convert at the gRPC edge)",
        &offenders,
    );
}

/// `crates/<crate>/src/domain/...`
fn is_domain_file(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    parts.len() > 4 && parts[0] == "crates" && parts[2] == "src" && parts[3] == "domain"
}

/// The repository must stand alone: no citation of files outside it. The needles are
/// assembled at run time so this file does not match itself.
#[test]
fn no_citation_of_files_outside_the_repository() {
    let needles = [
        concat!("spec ", "§"),
        concat!("../", "shared"),
        concat!("azure-wire", "-protocol"),
        concat!("shared", " spec"),
        // The outside file's source tags: a parenthesised DOC tag, the bracketed CAP tag.
        concat!("(DOC", "-"),
        concat!("[CAP", "]"),
    ];
    let mut offenders = Vec::new();
    for file in repo_files() {
        if file.starts_with(".ci/") {
            continue;
        }
        // Binary files cannot hold a citation a reader would follow.
        let Ok(text) = std::fs::read_to_string(root().join(&file)) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            if needles.iter().any(|needle| line.contains(needle)) {
                offenders.push(format!("{file}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    report(
        "cite docs/azure-protocol.md or Azure's public documentation, not files outside the repository",
        &offenders,
    );
}

#[test]
fn domain_path_matching() {
    assert!(is_domain_file("crates/arm/src/domain/mod.rs"));
    assert!(is_domain_file("crates/arm/src/domain/rbac/eval.rs"));
    assert!(!is_domain_file("crates/arm/src/http/mod.rs"));
    assert!(!is_domain_file("crates/arm/tests/domain/mod.rs"));
    assert!(uses_proto("use misim_proto::entra::v1 as entra;\n"));
    assert!(!uses_proto(
        "// misim_proto types are converted at the edge\n"
    ));
}

/// Longest a non-test function may be, in lines from `fn` to its closing brace.
const MAX_FN_LINES: usize = 100;

/// Functions longer than [`MAX_FN_LINES`] today, one `path name` per line. The list may only
/// shrink: an entry whose function got shorter (or went away) fails the test until it is
/// removed. It lives in its own file so that branches shrinking it merge cleanly.
const LONG_FN_ALLOWLIST: &str = "crates/tidy/long-functions.txt";

/// Source files of shipped code: `src/` and build scripts, not tests, benches or examples.
fn is_non_test_source(path: &str) -> bool {
    path.starts_with("crates/")
        && path.ends_with(".rs")
        && (path.contains("/src/") || path.ends_with("/build.rs"))
}

#[test]
fn functions_stay_short_or_say_why() {
    let allowlist: BTreeSet<String> = read(LONG_FN_ALLOWLIST)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    let mut seen = BTreeSet::new();
    let mut offenders = Vec::new();
    for file in repo_files().into_iter().filter(|p| is_non_test_source(p)) {
        for f in misim_tidy::long_functions(&read(&file), MAX_FN_LINES) {
            let key = format!("{file} {}", f.name);
            if allowlist.contains(&key) {
                seen.insert(key);
            } else if !f.justified {
                offenders.push(format!(
                    "{file}:{}: fn {} is {} lines; split it, or say why on the line above (`// long: …`)",
                    f.line, f.name, f.lines
                ));
            }
        }
    }
    for stale in allowlist.difference(&seen) {
        offenders.push(format!(
            "{stale}: no longer over {MAX_FN_LINES} lines; remove it from {LONG_FN_ALLOWLIST}"
        ));
    }
    report(
        &format!(
            "non-test functions stay within {MAX_FN_LINES} lines unless a `// long:` comment above says why"
        ),
        &offenders,
    );
}
