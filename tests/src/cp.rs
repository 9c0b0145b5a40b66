//! A `koguma-cp run` process and its command-line client.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::process::Process;
use crate::{binaries, client, eventually};

pub struct ControlPlane {
    pub ip: IpAddr,
    pub data_dir: PathBuf,
    log_dir: PathBuf,
    process: Process,
    restarts: u32,
    /// `run` flags beyond the defaults (a multi-zone role), kept for restarts.
    extra: Vec<String>,
}

impl ControlPlane {
    /// Starts a CP on `ip` (API on :5681, DP server on :5678) with its
    /// SQLite store in `dir/cp-data`, and waits until its API answers.
    pub async fn start(ip: IpAddr, dir: &Path) -> ControlPlane {
        let cp = Self::spawn_with(ip, dir, &[]);
        cp.wait_ready().await;
        cp
    }

    /// Starts a CP with extra `run` flags (`--mode global`, a zone's
    /// `--global-address` ...) without waiting for it: a zone the global
    /// refuses exits.
    pub fn spawn_with(ip: IpAddr, dir: &Path, extra: &[String]) -> ControlPlane {
        let data_dir = dir.join("cp-data");
        let process = Self::spawn(ip, &data_dir, dir, 0, extra);
        ControlPlane {
            ip,
            data_dir,
            log_dir: dir.to_path_buf(),
            process,
            restarts: 0,
            extra: extra.to_vec(),
        }
    }

    /// How the process ended, if it did within `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.process.wait(timeout).await
    }

    fn spawn(ip: IpAddr, data_dir: &Path, log_dir: &Path, n: u32, extra: &[String]) -> Process {
        let mut cmd = Command::new(binaries::path("koguma-cp"));
        cmd.args(["run", "--data-dir"])
            .arg(data_dir)
            .args([
                "--api-address",
                &format!("{ip}:5681"),
                "--dp-server-address",
                &format!("{ip}:5678"),
            ])
            .args(["--dp-deregistration-delay", "3s"])
            .args(extra);
        Process::spawn(&format!("koguma-cp-{n}"), cmd, log_dir)
    }

    pub fn api_url(&self) -> String {
        format!("http://{}:5681", self.ip)
    }

    pub fn dp_url(&self) -> String {
        format!("https://{}:5678", self.ip)
    }

    pub fn ca_file(&self) -> PathBuf {
        self.data_dir.join("tls/ca.crt")
    }

    pub async fn wait_ready(&self) {
        let url = format!("{}/", self.api_url());
        eventually(
            "koguma-cp API to answer",
            Duration::from_secs(20),
            || async {
                client::get(&url)
                    .await
                    .ok()
                    .filter(|r| r.status == 200)
                    .map(|_| ())
            },
        )
        .await;
    }

    /// SIGKILL: no goodbye to anyone.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    pub async fn restart(&mut self) {
        self.process.kill();
        self.restarts += 1;
        self.process = Self::spawn(
            self.ip,
            &self.data_dir,
            &self.log_dir,
            self.restarts,
            &self.extra,
        );
        self.wait_ready().await;
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Runs `koguma-cp <args> --api-url <this CP>`, with `stdin` piped in.
    pub async fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = tokio::process::Command::new(binaries::path("koguma-cp"));
        cmd.args(args).args(["--api-url", &self.api_url()]);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run koguma-cp CLI");
        let mut pipe = child.stdin.take().expect("stdin");
        if let Some(input) = stdin {
            pipe.write_all(input.as_bytes()).await.expect("write stdin");
        }
        drop(pipe);
        child
            .wait_with_output()
            .await
            .expect("koguma-cp CLI output")
    }

    /// `koguma-cp generate dataplane-token` for `name` (extra flags as
    /// given), written to `dir/<file>`. Blocking: it is called while
    /// starting a process, which blocks too.
    pub fn token_file(&self, name: &str, extra: &[&str], dir: &Path, file: &str) -> PathBuf {
        let out = Command::new(binaries::path("koguma-cp"))
            .args(["generate", "dataplane-token", "--name", name])
            .args(extra)
            .args(["--api-url", &self.api_url()])
            .output()
            .expect("run koguma-cp generate");
        assert!(
            out.status.success(),
            "generate dataplane-token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = dir.join(file);
        std::fs::write(&path, &out.stdout).expect("write token");
        path
    }

    /// `koguma-cp apply -f -`, asserting success.
    pub async fn apply(&self, yaml: &str) {
        let out = self.cli(&["apply", "-f", "-"], Some(yaml)).await;
        assert!(
            out.status.success(),
            "apply failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let r = client::get(&format!("{}{}", self.api_url(), path))
            .await
            .expect("CP API request");
        (
            r.status,
            serde_json::from_slice(&r.body).unwrap_or(Value::Null),
        )
    }

    /// The dataplane's insight as the CP reports it.
    pub async fn insight(&self, name: &str) -> Value {
        self.get_json(&format!("/meshes/default/dataplanes+insights/{name}"))
            .await
            .1["dataplaneInsight"]
            .clone()
    }
}
