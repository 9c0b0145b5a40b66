//! Several control-plane instances on one PostgreSQL database: the schema
//! is migrated by `koguma-cp migrate up` and checked by `run`; a change made
//! through one instance reaches the sidecars of another; an instance killed
//! under load costs no request; concurrent writers get one winner.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use koguma_e2e::dp::DataplaneYaml;
use koguma_e2e::{ControlPlane, Dataplane, Postgres, TestNet, apps, client, eventually};

/// Two instances on one migrated database, each in a directory of its own.
struct TwoInstances {
    pg: Postgres,
    net: TestNet,
    dir: tempfile::TempDir,
    cps: Vec<ControlPlane>,
}

impl TwoInstances {
    async fn start(extra: &[&str]) -> Option<TwoInstances> {
        let pg = Postgres::start().await?;
        let out = pg.migrate_up();
        assert!(out.status.success(), "migrate up: {out:?}");
        let net = TestNet::new();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut args = pg.store_args();
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut cps = Vec::new();
        for i in 0..2u8 {
            let cp_dir = dir.path().join(format!("cp{}", i + 1));
            std::fs::create_dir_all(&cp_dir).expect("cp dir");
            let cp = ControlPlane::spawn_with(net.host(i), &cp_dir, &args);
            cp.wait_ready().await;
            cps.push(cp);
        }
        Some(TwoInstances { pg, net, dir, cps })
    }

    /// Both instances' DP servers, `first` first: the agent dials in turn.
    fn cp_addresses(&self, first: usize) -> String {
        let other = 1 - first;
        format!("{},{}", self.cps[first].dp_url(), self.cps[other].dp_url())
    }

    /// A sidecar registering `yaml`, told of both instances.
    fn sidecar(&self, yaml: &DataplaneYaml, first: usize) -> Dataplane {
        let dir = self.dir.path();
        let file = dir.join(format!("{}.yaml", yaml.name));
        std::fs::write(&file, yaml.to_yaml()).expect("write dataplane file");
        let args = [
            "--dataplane-file".to_string(),
            file.display().to_string(),
            "--cp-address".into(),
            self.cp_addresses(first),
        ];
        // The token comes from the other instance: signing keys are shared.
        Dataplane::start_with(&self.cps[1 - first], &yaml.name, &args, dir)
    }

    /// `web-1` calling `backend` (an app answering "b1"), both on instance
    /// `first`; returns them once web routes to backend.
    async fn web_and_backend(&self, first: usize) -> (Dataplane, Dataplane, apps::Server) {
        let (web_ip, backend_ip) = (self.net.host(2), self.net.host(3));
        let app = apps::http(SocketAddr::new(backend_ip, 18081), "b1").await;
        let backend = self.sidecar(
            &DataplaneYaml::new("backend-1", backend_ip).inbound(8081, 18081, "backend", "http"),
            first,
        );
        let web = self.sidecar(
            &DataplaneYaml::new("web-1", web_ip)
                .inbound(8080, 18080, "web", "http")
                .outbound(web_ip, 10001, "backend"),
            first,
        );
        web.wait_ready().await;
        web.wait_endpoints(&format!("outbound:{web_ip}:10001"), 1)
            .await;
        (web, backend, app)
    }

    fn url(&self) -> String {
        format!("http://{}:10001/", self.net.host(2))
    }

    /// The instance id serving `name`'s stream, as instance `i` reports it.
    async fn served_by(&self, i: usize, name: &str) -> Option<String> {
        let insight = self.cps[i].insight(name).await;
        (insight["online"] == true)
            .then(|| insight["subscriptions"][0]["controlPlaneInstanceId"].as_str())
            .flatten()
            .map(str::to_string)
    }
}

fn timeout_policy(name: &str, timeout: &str) -> String {
    format!(
        "type: MeshTimeout\nmesh: default\nname: {name}\nspec:\n  targetRef: {{kind: Mesh}}\n  to:\n  - targetRef: {{kind: Mesh}}\n    default: {{connectionTimeout: {timeout}}}\n"
    )
}

#[tokio::test]
async fn run_refuses_a_schema_it_was_not_built_for_and_migrate_up_brings_it() {
    let Some(pg) = Postgres::start().await else {
        return;
    };
    let net = TestNet::new();
    let dir = tempfile::tempdir().expect("temp dir");
    // `run` stops at once, saying `says`.
    let refuses = |sub: &'static str, says: &'static str| {
        let cp_dir = dir.path().join(sub);
        std::fs::create_dir_all(&cp_dir).expect("dir");
        let mut cp = ControlPlane::spawn_with(net.host(0), &cp_dir, &pg.store_args());
        async move {
            let status = cp.wait_exit(Duration::from_secs(20)).await;
            assert!(status.is_some_and(|s| !s.success()), "{}", cp.log());
            assert!(cp.log().contains(says), "{}", cp.log());
        }
    };

    // Never migrated: run stops, naming the command.
    refuses("never", "not migrated: run \"koguma-cp migrate up\"").await;

    let first = pg.migrate_up();
    let said = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success() && said.contains("from schema version 0 to 1"),
        "{first:?}"
    );
    let again = pg.migrate_up();
    let said = String::from_utf8_lossy(&again.stdout);
    assert!(
        again.status.success() && said.contains("already at schema version 1"),
        "{again:?}"
    );
    let tables = pg
        .psql("SELECT count(*) FROM information_schema.tables WHERE table_name IN ('resources', 'secrets', 'sessions', 'instances')")
        .expect("psql");
    assert_eq!(tables, "4");

    // Older than this koguma-cp needs: it says to migrate.
    pg.psql("UPDATE koguma_schema_migrations SET version = 0")
        .expect("psql");
    refuses(
        "older",
        "at version 0, this koguma-cp needs version 1: run \"koguma-cp migrate up\"",
    )
    .await;
    pg.psql("UPDATE koguma_schema_migrations SET version = 1")
        .expect("psql");

    // Migrated by a newer koguma-cp: this one neither runs nor migrates.
    pg.psql("UPDATE koguma_schema_migrations SET version = 99")
        .expect("psql");
    refuses("newer", "version 99, newer than this koguma-cp knows (1)").await;
    let newer = pg.migrate_up();
    assert!(!newer.status.success(), "{newer:?}");
    assert!(
        String::from_utf8_lossy(&newer.stderr).contains("newer than this koguma-cp knows"),
        "{newer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_applied_through_one_instance_reaches_a_sidecar_of_the_other() {
    // No periodic resync within the test: only the change feed can carry it.
    let Some(two) = TwoInstances::start(&["--store-resync-interval", "1h"]).await else {
        return;
    };
    let (web, _backend, _app) = two.web_and_backend(1).await;
    let instance_2 = two.served_by(1, "web-1").await.expect("web on instance 2");
    // Instance 1 knows where web is served, from the store.
    assert_eq!(
        two.served_by(0, "web-1").await.as_deref(),
        Some(instance_2.as_str())
    );

    let started = Instant::now();
    two.cps[0].apply(&timeout_policy("from-one", "7s")).await;
    web.wait_config("\"connectMs\":7000").await;
    let took = started.elapsed();
    eprintln!("applied through instance 1, in web's config (served by instance 2) after {took:?}");

    // Deleting works the same way.
    let started = Instant::now();
    let out = two.cps[0]
        .cli(&["delete", "meshtimeout", "from-one"], None)
        .await;
    assert!(out.status.success(), "{out:?}");
    eventually(
        "the deletion in web's config",
        Duration::from_secs(10),
        || async {
            (!web
                .config_dump()
                .await
                .to_string()
                .contains("\"connectMs\":7000"))
            .then_some(())
        },
    )
    .await;
    eprintln!(
        "deleted through instance 1, gone from web's config after {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_instance_sidecars_are_connected_to_loses_no_request() {
    let Some(mut two) = TwoInstances::start(&[]).await else {
        return;
    };
    let (web, _backend, _app) = two.web_and_backend(0).await;
    let instance_1 = two.served_by(0, "web-1").await.expect("web on instance 1");

    // Steady load through both sidecars, bounded in time and count.
    const MAX_TIME: Duration = Duration::from_secs(30);
    const MAX_REQUESTS: usize = 20_000;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..2 {
        let (stop, sent, url) = (stop.clone(), sent.clone(), two.url());
        workers.push(tokio::spawn(async move {
            let http = client::Http1::default();
            let started = Instant::now();
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed)
                && started.elapsed() < MAX_TIME
                && sent.fetch_add(1, Ordering::Relaxed) < MAX_REQUESTS
            {
                match http.get(&url).await {
                    Ok(r) if r.status == 200 && r.text().contains("b1") => {}
                    Ok(r) => failures.push(format!("{} {}", r.status, r.text())),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            failures
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    two.cps[0].kill();
    let killed = Instant::now();
    for name in ["web-1", "backend-1"] {
        let on = eventually(
            &format!("{name} to reconnect to instance 2"),
            Duration::from_secs(15),
            || async { two.served_by(1, name).await.filter(|i| *i != instance_1) },
        )
        .await;
        eprintln!(
            "{name} served by {on} {:?} after instance 1 was killed",
            killed.elapsed()
        );
    }

    // A change made now reaches them through the instance left.
    two.cps[1].apply(&timeout_policy("after-kill", "9s")).await;
    web.wait_config("\"connectMs\":9000").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for w in workers {
        failures.extend(w.await.expect("load worker"));
    }
    let total = sent.load(Ordering::Relaxed).min(MAX_REQUESTS);
    eprintln!("{total} requests through web and backend while instance 1 was killed");
    assert!(total > 100, "the load ran: {total} requests");
    assert!(
        failures.is_empty(),
        "{} of {total} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    // Still two dataplanes, both in rotation: none was deregistered.
    let (_, dps) = two.cps[1].get_json("/meshes/default/dataplanes").await;
    assert_eq!(dps["total"], 2, "{dps}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_instances_make_one_mesh_ca_and_one_of_two_updates_wins() {
    let Some(two) = TwoInstances::start(&[]).await else {
        return;
    };
    // The same mTLS mesh through both instances at once: each needs its CA.
    let mesh = "type: Mesh\nname: raced\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - name: ca-1\n    type: builtin\n";
    let (a, b) = tokio::join!(
        two.cps[0].cli(&["apply", "-f", "-"], Some(mesh)),
        two.cps[1].cli(&["apply", "-f", "-"], Some(mesh)),
    );
    // One may lose the race for the Mesh resource itself (a 409): the CA
    // is what must be one.
    let ok = [&a, &b].iter().filter(|o| o.status.success()).count();
    assert!(ok >= 1, "{a:?} {b:?}");
    let cas = two
        .pg
        .psql("SELECT count(*), count(DISTINCT data) FROM secrets WHERE mesh = 'raced' AND name LIKE 'raced.ca-builtin-cert-%'")
        .expect("psql");
    assert_eq!(cas, "1|1", "one CA certificate stored");
    // Both instances sign with that CA: certificates from each chain to it.
    let stored = two
        .pg
        .psql(
            "SELECT data FROM secrets WHERE mesh = 'raced' AND name = 'raced.ca-builtin-cert-ca-1'",
        )
        .expect("psql");
    for (i, cp) in two.cps.iter().enumerate() {
        let file = |what: &str| two.dir.path().join(format!("{what}-{i}.pem"));
        let out = cp
            .cli(
                &[
                    "generate",
                    "workload-certificate",
                    "--mesh",
                    "raced",
                    "--service",
                    "probe",
                    "--cert-file",
                    &file("cert").display().to_string(),
                    "--key-file",
                    &file("key").display().to_string(),
                    "--ca-file",
                    &file("ca").display().to_string(),
                ],
                None,
            )
            .await;
        assert!(out.status.success(), "{out:?}");
        let ca = std::fs::read_to_string(file("ca")).expect("CA file");
        assert_eq!(
            ca.trim(),
            stored.trim(),
            "{} signs with the stored CA",
            cp.api_url()
        );
    }

    // Two updates of one version: one wins, the other is told it lost.
    two.cps[0].apply(&timeout_policy("contested", "1s")).await;
    let url = |i: usize| {
        format!(
            "{}/meshes/default/meshtimeouts/contested",
            two.cps[i].api_url()
        )
    };
    let got = client::get(&url(0)).await.expect("GET");
    let etag = got
        .headers
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .expect("an ETag")
        .to_string();
    let body = |t: &str| {
        format!(
            r#"{{"type":"MeshTimeout","mesh":"default","name":"contested","spec":{{"targetRef":{{"kind":"Mesh"}},"to":[{{"targetRef":{{"kind":"Mesh"}},"default":{{"connectionTimeout":"{t}"}}}}]}}}}"#
        )
    };
    let (url_1, url_2) = (url(0), url(1));
    let (x, y) = tokio::join!(
        client::put_if_match(&url_1, &etag, body("2s")),
        client::put_if_match(&url_2, &etag, body("3s")),
    );
    let (x, y) = (x.expect("PUT 1"), y.expect("PUT 2"));
    let mut statuses = [x.status, y.status];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{} / {}", x.text(), y.text());
    let loser = if x.status == 409 { &x } else { &y };
    assert!(
        loser.text().contains("resource conflict"),
        "{}",
        loser.text()
    );
    let winner = if x.status == 200 { "2s" } else { "3s" };
    eventually(
        "both instances to show the winner",
        Duration::from_secs(5),
        || async {
            let mut seen = Vec::new();
            for i in 0..2 {
                seen.push(client::get(&url(i)).await.ok()?.text());
            }
            seen.iter().all(|t| t.contains(winner)).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leaders_work_moves_to_another_instance_when_it_dies() {
    let Some(mut two) = TwoInstances::start(&[]).await else {
        return;
    };
    let urls: Vec<String> = two
        .cps
        .iter()
        .map(|c| format!("{}/", c.api_url()))
        .collect();
    let leader = |i: usize| {
        let url = urls[i].clone();
        async move {
            let r = client::get(&url).await.ok()?;
            let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
            v["leader"].as_bool()
        }
    };
    // The first instance started leads; the other does not.
    eventually("instance 1 to lead", Duration::from_secs(10), || async {
        (leader(0).await == Some(true)).then_some(())
    })
    .await;
    assert_eq!(leader(1).await, Some(false));

    // A sidecar on instance 1, and then both die at once: nobody is left
    // to deregister it but the new leader.
    let (_web, mut backend, _app) = two.web_and_backend(0).await;
    backend.kill();
    two.cps[0].kill();
    let killed = Instant::now();
    eventually("instance 2 to lead", Duration::from_secs(10), || async {
        (leader(1).await == Some(true)).then_some(())
    })
    .await;
    eprintln!(
        "instance 2 leads {:?} after the leader was killed",
        killed.elapsed()
    );
    // web reconnected to instance 2; backend did not: the leader
    // deregisters it once the dead instance is silent and the
    // deregistration delay (3s here) has passed.
    eventually(
        "backend-1 deregistered by the new leader",
        Duration::from_secs(30),
        || async {
            let (_, dps) = two.cps[1].get_json("/meshes/default/dataplanes").await;
            let names: Vec<&str> = dps["items"]
                .as_array()?
                .iter()
                .filter_map(|d| d["name"].as_str())
                .collect();
            (names == ["web-1"]).then_some(())
        },
    )
    .await;
    eprintln!(
        "backend-1 deregistered {:?} after it and its instance were killed",
        killed.elapsed()
    );
}

#[tokio::test]
async fn the_store_connection_is_checked_as_kumas_tls_modes_say() {
    let Some(pg) = Postgres::start_tls().await else {
        return;
    };
    let ca = pg.tls_ca.clone().expect("the server's CA");
    let dir = tempfile::tempdir().expect("temp dir");
    let (other_ca, _) = koguma_e2e::mtls::self_signed(
        dir.path(),
        "other-ca",
        &["basicConstraints=critical,CA:TRUE"],
    );
    let migrate = |host: &str, mode: &str, ca: Option<&Path>| {
        let mut args = pg.store_args_via(host);
        args.extend(["--postgres-tls-mode".into(), mode.into()]);
        if let Some(ca) = ca {
            args.extend(["--postgres-tls-ca-path".into(), ca.display().to_string()]);
        }
        let out = pg.migrate_up_with(&args);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // The server takes TLS connections only.
    let (ok, err) = migrate("127.0.0.1", "disable", None);
    assert!(!ok && err.contains("no encryption"), "{err}");
    // A certificate from a CA other than the one given: refused.
    let (ok, err) = migrate("127.0.0.1", "verifyFull", Some(&other_ca));
    assert!(!ok && err.contains("certificate"), "{err}");
    // verifyCa and verifyFull need the CA.
    let (ok, err) = migrate("127.0.0.1", "verifyCa", None);
    assert!(
        !ok && err.contains("KUMA_STORE_POSTGRES_TLS_CA_PATH"),
        "{err}"
    );
    // The certificate names 127.0.0.1, not localhost: verifyFull refuses
    // it there; verifyCa checks the CA only.
    let (ok, err) = migrate("localhost", "verifyFull", Some(&ca));
    assert!(!ok && err.contains("certificate"), "{err}");
    let (ok, err) = migrate("localhost", "verifyCa", Some(&ca));
    assert!(ok, "{err}");
    let (ok, err) = migrate("127.0.0.1", "verifyFull", Some(&ca));
    assert!(ok, "{err}");
    let (ok, err) = migrate("127.0.0.1", "verifyNone", None);
    assert!(ok, "{err}");

    // A control plane on it: its connections are encrypted.
    let net = TestNet::new();
    let mut args = pg.store_args();
    args.extend([
        "--postgres-tls-mode".into(),
        "verifyFull".into(),
        "--postgres-tls-ca-path".into(),
        ca.display().to_string(),
    ]);
    let cp = ControlPlane::spawn_with(net.host(0), dir.path(), &args);
    cp.wait_ready().await;
    let encrypted = pg
        .psql("SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name LIKE 'koguma-cp %'")
        .expect("psql");
    let (tls, all) = encrypted.split_once('|').expect("two counts");
    assert!(all != "0" && tls == all, "encrypted|all: {encrypted}");
}
