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
    /// With `start_tls`: the CA that signed the server's certificate (for
    /// 127.0.0.1 only); the server then takes TLS connections only.
    pub tls_ca: Option<PathBuf>,
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
        Self::start_with(false).await
    }

    /// A server that takes only TLS connections, with a certificate for
    /// 127.0.0.1 from a CA of its own (`tls_ca`).
    pub async fn start_tls() -> Option<Postgres> {
        Self::start_with(true).await
    }

    async fn start_with(tls: bool) -> Option<Postgres> {
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
        let tls_ca = if tls {
            let ca = server_certificate(dir.path(), &data);
            // TLS only: every host line becomes hostssl.
            let hba = data.join("pg_hba.conf");
            let rules = std::fs::read_to_string(&hba).expect("pg_hba.conf");
            let rules: String = rules
                .lines()
                .map(|l| match l.strip_prefix("host ") {
                    Some(rest) => format!("hostssl {rest}\n"),
                    None => format!("{l}\n"),
                })
                .collect();
            std::fs::write(&hba, rules).expect("write pg_hba.conf");
            Some(ca)
        } else {
            None
        };
        let port = free_port();
        let mut cmd = as_server_user(&bin.join("postgres"));
        if tls {
            cmd.args([
                "-c",
                "ssl=on",
                "-c",
                "ssl_cert_file=server.crt",
                "-c",
                "ssl_key_file=server.key",
            ]);
        }
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
            tls_ca,
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
        self.store_args_via("127.0.0.1")
    }

    /// As `store_args`, dialling the server by `host`.
    pub fn store_args_via(&self, host: &str) -> Vec<String> {
        [
            ("--store", "postgres".to_string()),
            ("--postgres-host", host.into()),
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
        self.migrate_up_with(&self.store_args())
    }

    /// `koguma-cp migrate up` with these store flags.
    pub fn migrate_up_with(&self, args: &[String]) -> std::process::Output {
        Command::new(crate::binaries::path("koguma-cp"))
            .args(["migrate", "up"])
            .args(args)
            .output()
            .expect("run koguma-cp migrate up")
    }
}

/// A CA in `dir` (returned) and a certificate it signed for 127.0.0.1,
/// installed in the server's data directory as server.crt and server.key
/// (the server's user's, 0600, as PostgreSQL insists).
fn server_certificate(dir: &Path, data: &Path) -> PathBuf {
    let (ca, crt, key) = crate::certs::ca_and_server(dir, "server", "IP:127.0.0.1");
    let (to_crt, to_key) = (data.join("server.crt"), data.join("server.key"));
    std::fs::copy(&crt, &to_crt).expect("install server.crt");
    std::fs::copy(&key, &to_key).expect("install server.key");
    if nix::unistd::geteuid().is_root() {
        let _ = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&to_key)
            .arg(&to_crt)
            .status();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&to_key, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
    ca
}
