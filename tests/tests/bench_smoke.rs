//! The benchmark harness itself (bench/run.py): very short runs of two
//! scenarios (HTTP/1.1 in plaintext, gRPC over mesh mTLS) start both
//! proxies, carry traffic through them and produce figures. The full
//! benchmark is not part of the suite.

use std::path::Path;
use std::process::Command;

use koguma_e2e::binaries;

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

#[test]
fn a_short_benchmark_run_measures_koguma_and_envoy() {
    let root = binaries::workspace();
    let envoy = root.join("bench/.venv/bin/envoy");
    let mut missing: Vec<String> = ["wrk", "h2load", "curl", "python3"]
        .into_iter()
        .filter(|t| !on_path(t))
        .map(String::from)
        .collect();
    if !envoy.exists() {
        missing.push(envoy.display().to_string());
    }
    if !on_path("nginx") && !Path::new("/usr/sbin/nginx").exists() {
        missing.push("nginx".into());
    }
    if !missing.is_empty() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install the benchmark's tools (bash bench/setup.sh); missing: {missing:?}"
        );
        eprintln!(
            "SKIPPED: the benchmark smoke test needs {missing:?}; `bash bench/setup.sh` installs them"
        );
        return;
    }
    let bin_dir = binaries::path("koguma-loadgen")
        .parent()
        .expect("binary directory")
        .to_path_buf();
    let out = tempfile::tempdir().unwrap();
    let run = Command::new("python3")
        .arg(root.join("bench/run.py"))
        .args(["--smoke", "--bin-dir"])
        .arg(&bin_dir)
        .arg("--out-dir")
        .arg(out.path())
        .output()
        .expect("run bench/run.py");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "bench/run.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("results.json")).unwrap()).unwrap();
    for proxy in ["koguma", "envoy", "direct"] {
        let run = &results["results"][proxy]["http"][0];
        assert!(
            run["rps"].as_f64().unwrap_or(0.0) > 0.0,
            "{proxy} carried no traffic: {run}"
        );
        assert_eq!(run["errors"], 0, "{proxy} had errors: {run}");
        assert!(
            run["latency"]["p99_us"].as_u64().unwrap_or(0) > 0,
            "{proxy} has no latency figure: {run}"
        );
    }
    for proxy in ["koguma", "envoy", "direct"] {
        let run = &results["results"][proxy]["mtls-grpc"][0];
        assert!(
            run["rps"].as_f64().unwrap_or(0.0) > 0.0 && run["errors"] == 0,
            "{proxy}: gRPC over mesh mTLS: {run}"
        );
    }
    // The routes-and-resilience scenario: both proxies carried its traffic
    // through their route tables, and the report compares it with the
    // plain pair.
    for proxy in ["koguma", "envoy"] {
        let run = &results["results"][proxy]["http-routes"][0];
        assert!(
            run["rps"].as_f64().unwrap_or(0.0) > 0.0 && run["errors"] == 0,
            "{proxy}: HTTP with 20 route rules, a retry and a timeout: {run}"
        );
    }
    // The access log and rate limit scenario: traffic through both proxies,
    // none refused by the rate limit, a line in the file per request.
    for proxy in ["koguma", "envoy"] {
        let run = &results["results"][proxy]["http-observed"][0];
        let (requests, lines) = (
            run["requests"].as_u64().unwrap_or(0),
            run["log_lines"].as_u64().unwrap_or(0),
        );
        assert!(
            requests > 0 && run["errors"] == 0 && lines >= requests,
            "{proxy}: HTTP with an access log and a rate limit: {run}"
        );
    }
    for proxy in ["koguma", "envoy"] {
        let run = &results["results"][proxy]["http"][0];
        assert!(
            run["rss_peak_kib"].as_u64().unwrap_or(0) > 0
                && run["cpu_s_per_10k"].as_f64().unwrap_or(0.0) > 0.0,
            "{run}"
        );
    }
    let report = std::fs::read_to_string(out.path().join("RESULTS.md")).unwrap();
    assert!(
        report.contains("| max requests/s")
            && report.contains("Koguma/Envoy")
            && report.contains("Koguma with these policies"),
        "{report}"
    );
    assert!(
        std::fs::read_to_string(out.path().join("latency.svg"))
            .unwrap()
            .contains("<polyline")
    );
}
