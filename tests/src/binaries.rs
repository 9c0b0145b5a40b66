//! The binaries under test, built once per test process with the same
//! profile as the tests, so `cargo test` at the root is all it takes.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

fn target_dir() -> PathBuf {
    // .../target/<profile>/deps/<test binary>
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent().and_then(|p| p.parent()).expect("target/<profile> directory").to_path_buf()
}

fn build() -> PathBuf {
    let dir = target_dir();
    let release = dir.file_name().is_some_and(|n| n == "release");
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    // koguma-e2e is in the selection so that features unify exactly as in
    // `cargo test`: otherwise each build would undo the other's.
    cmd.current_dir(&workspace)
        .args(["build", "--quiet", "-p", "koguma-cp", "-p", "koguma-dp", "-p", "koguma-e2e", "--bins"]);
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo build");
    assert!(status.success(), "building koguma-cp and koguma-dp failed");
    dir
}

pub fn path(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(build).join(name)
}
