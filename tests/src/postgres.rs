//! A throwaway PostgreSQL server for one test: `initdb` into a temporary
//! directory, `postgres` on a free loopback port with password
//! authentication, stopped when the handle drops. Debian's packages
//! provide the binaries (`.ci/run` installs them). Without them a test
//! skips, saying why, unless KOGUMA_REQUIRE_POSTGRES is set (CI): then it
//! fails.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::Process;

pub struct Postgres {
    pub port: u16,
    pub user: String,
    pub password: String,
    pub db: String,
    bin: PathBuf,
    // Stopped before its directory goes.
    _server: Process,
    _dir: tempfile::TempDir,
}

fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists() && p.join("postgres").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// PostgreSQL refuses to run as root: as root, its processes run as the
/// `postgres` user Debian's package made.
fn as_server_user(program: &Path) -> Command {
    if nix::unistd::geteuid().is_root() {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn skip_or_fail(reason: String) -> Option<Postgres> {
    if std::env::var_os("KOGUMA_REQUIRE_POSTGRES").is_some() {
        panic!("PostgreSQL is required here (KOGUMA_REQUIRE_POSTGRES) but {reason}");
    }
    eprintln!("SKIPPED: {reason} (install Debian's postgresql package to run this test)");
    None
}

impl Postgres {
    /// A running server, or `None` (after saying why) when there is none
    /// to be had on this machine.
    pub async fn start() -> Option<Postgres> {
        let Some(bin) = bin_dir() else {
            return skip_or_fail("no PostgreSQL server binaries under /usr/lib/postgresql".into());
        };
        let dir = tempfile::Builder::new()
            .prefix("koguma-pg")
            .tempdir()
            .expect("temp dir");
        let data = dir.path().join("data");
        let password = format!("pw-{}", std::process::id());
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, &password).expect("write password file");
        if nix::unistd::geteuid().is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status();
            if !status.is_ok_and(|s| s.success()) {
                return skip_or_fail("cannot hand a data directory to the postgres user".into());
            }
        }
        let init = as_server_user(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "koguma",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["--no-sync", "-E", "UTF8"])
            .output();
        match init {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                return skip_or_fail(format!(
                    "initdb failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Err(e) => return skip_or_fail(format!("cannot run initdb: {e}")),
        }
        let port = free_port();
        let mut cmd = as_server_user(&bin.join("postgres"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-k")
            .arg(dir.path())
            .args(["-c", "fsync=off", "-c", "max_connections=200"]);
        let server = Process::spawn("postgres", cmd, dir.path());
        let pg = Postgres {
            port,
            user: "koguma".into(),
            password,
            db: "postgres".into(),
            bin,
            _dir: dir,
            _server: server,
        };
        for _ in 0..200 {
            if pg.psql("SELECT 1").is_ok() {
                return Some(pg);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("PostgreSQL did not accept connections within 10s");
    }

    /// The `run`/`migrate` flags that point koguma-cp at this server.
    pub fn store_args(&self) -> Vec<String> {
        [
            ("--store", "postgres".to_string()),
            ("--postgres-host", "127.0.0.1".into()),
            ("--postgres-port", self.port.to_string()),
            ("--postgres-user", self.user.clone()),
            ("--postgres-password", self.password.clone()),
            ("--postgres-db-name", self.db.clone()),
        ]
        .into_iter()
        .flat_map(|(k, v)| [k.to_string(), v])
        .collect()
    }

    /// Runs `sql` with psql over TCP (as the CP connects); returns the
    /// unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args([
                "-U",
                &self.user,
                "-d",
                &self.db,
                "-AtX",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .args(["-c", sql])
            .env("PGPASSWORD", &self.password)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    }

    /// `koguma-cp migrate up` against this server; its output.
    pub fn migrate_up(&self) -> std::process::Output {
        Command::new(crate::binaries::path("koguma-cp"))
            .args(["migrate", "up"])
            .args(self.store_args())
            .output()
            .expect("run koguma-cp migrate up")
    }
}
