//! The binaries under test, built once per test process with the same
//! profile as the tests, so `cargo test` at the root is all it takes.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

fn target_dir() -> PathBuf {
    // .../target/<profile>/deps/<test binary>
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(|p| p.parent())
        .expect("target/<profile> directory")
        .to_path_buf()
}

fn build() -> PathBuf {
    let dir = target_dir();
    let release = dir.file_name().is_some_and(|n| n == "release");
    let workspace = workspace();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    // koguma-e2e is in the selection so that features unify exactly as in
    // `cargo test`: otherwise each build would undo the other's.
    cmd.current_dir(&workspace).args([
        "build",
        "--quiet",
        "-p",
        "koguma-cp",
        "-p",
        "koguma-dp",
        "-p",
        "koguma-loadgen",
        "-p",
        "koguma-e2e",
        "--bins",
    ]);
    if release {
        cmd.arg("--release");
    }
    // Cargo gives a test process the variables of its own package
    // (CARGO_PKG_NAME, CARGO_MANIFEST_DIR, ...). Build scripts such as
    // ring's watch them, so passing them on would rebuild half the tree.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let per_package = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_TARGET_TMPDIR",
            "CARGO_PRIMARY_PACKAGE",
        ];
        if per_package.iter().any(|p| key.starts_with(p)) {
            cmd.env_remove(key.as_ref());
        }
    }
    let status = cmd.status().expect("run cargo build");
    assert!(
        status.success(),
        "building koguma-cp, koguma-dp and koguma-loadgen failed"
    );
    dir
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn path(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(build).join(name)
}
