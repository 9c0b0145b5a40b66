//! Files that hold what can mint identities (the store with mesh CA keys
//! and token signing keys, TLS keys, admin tokens): only the CP's user
//! may read them.

use std::fs::{DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` (and its parents) 0700; an existing one is left as it is.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Creates `file` 0600 unless it exists.
pub fn create_file(file: &Path) -> io::Result<()> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
    {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        r => r.map(drop),
    }
}

/// Writes `content` to `path`, created or truncated, with `mode` (0600 for
/// anything secret) even when the file existed with another; its
/// directory is created 0700 if missing.
pub fn write(path: &Path, content: &str, mode: u32) -> io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir(parent)?;
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(content.as_bytes())
}

/// Group or other bits on what holds the keys: said loudly, with the fix.
/// (Not changed behind the operator's back: they may share it on purpose.)
pub fn warn_if_open(path: &Path) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        let want = if meta.is_dir() { "700" } else { "600" };
        tracing::warn!(
            path = %path.display(),
            mode = format!("{mode:o}"),
            "holds mesh CA and token signing keys but others may read it: chmod {want} {}",
            path.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_store_is_created_private_and_an_existing_file_is_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        create_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let db = dir.join("koguma.db");
        create_file(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        std::fs::write(&db, b"kept").unwrap();
        create_file(&db).unwrap();
        assert_eq!(std::fs::read(&db).unwrap(), b"kept");
        // Rewritten private even when it was readable by others.
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        write(&db, "key", 0o600).unwrap();
        assert_eq!(mode(&db), 0o600);
    }
}
