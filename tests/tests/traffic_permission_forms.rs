//! MeshTrafficPermission in Kuma 2.12+'s forms, enforced by the sidecars:
//! `rules[]` with SPIFFE ID matches (Exact and Prefix), and a top-level
//! `targetRef` of kind `Dataplane` selecting by labels and `sectionName`.

use std::collections::BTreeMap;
use std::time::Duration;

use koguma_e2e::{WebToBackend, client, eventually, mtls};

/// What 20 GETs through web's outbound got: status → bodies.
async fn spread(m: &WebToBackend) -> BTreeMap<u16, Vec<String>> {
    let http = client::Http1::default();
    let mut seen: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for _ in 0..20 {
        if let Ok(r) = http.get(&m.url("/")).await {
            seen.entry(r.status).or_default().push(r.text());
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_and_dataplane_targets_are_enforced() {
    let m = WebToBackend::start(2).await;
    mtls::enable(&m.cp, "STRICT", "24h").await;

    // Rules form: only web's SPIFFE ID is let in.
    m.cp.apply(
        "type: MeshTrafficPermission
mesh: default
name: only-web
spec:
  targetRef:
    kind: Mesh
  rules:
  - default:
      allow:
      - spiffeID:
          type: Exact
          value: spiffe://default/web
",
    )
    .await;
    eventually(
        "web let in by the rules",
        Duration::from_secs(10),
        || async {
            let seen = spread(&m).await;
            (seen.keys().collect::<Vec<_>>() == [&200]).then_some(())
        },
    )
    .await;
    // Another identity of the mesh is not.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = mtls::workload_cert(&m.cp, "admin", dir.path()).await;
    let backend_1 = format!("https://{}:8081/", m.net.host(2));
    let (status, body) = mtls::curl_reply(&mtls::curl_tls(&backend_1, Some((&cert, &key))).await);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("spiffe://default/admin"), "{body}");
    // A Prefix match lets it in.
    m.cp.apply(
        "type: MeshTrafficPermission
mesh: default
name: admins
spec:
  targetRef:
    kind: Mesh
  rules:
  - default:
      allowWithShadowDeny:
      - spiffeID:
          type: Prefix
          value: spiffe://default/adm
",
    )
    .await;
    eventually(
        "admin let in by prefix",
        Duration::from_secs(10),
        || async {
            let out = mtls::curl_tls(&backend_1, Some((&cert, &key))).await;
            (mtls::curl_reply(&out).0 == 200).then_some(())
        },
    )
    .await;

    // A Dataplane target: backend-1 only (by its labels), its inbound on
    // 8081 (the sectionName of an unnamed inbound is its port), denies
    // web. backend-2 still answers.
    let labelled = m.backend_yaml(1).to_yaml().replacen(
        "networking:",
        "labels:\n  team: payments\nnetworking:",
        1,
    );
    m.cp.apply(&labelled).await;
    m.cp.apply(
        "type: MeshTrafficPermission
mesh: default
name: not-web-on-payments
spec:
  targetRef:
    kind: Dataplane
    labels:
      team: payments
    sectionName: '8081'
  rules:
  - default:
      deny:
      - spiffeID:
          type: Exact
          value: spiffe://default/web
",
    )
    .await;
    let seen = eventually(
        "backend-1 denying web, backend-2 not",
        Duration::from_secs(10),
        || async {
            let seen = spread(&m).await;
            let ok = seen.get(&200).is_some_and(|b| b.iter().all(|b| b == "b2"))
                && seen.contains_key(&403);
            ok.then_some(seen)
        },
    )
    .await;
    eprintln!(
        "web → backend: {} × 200 (b2), {} × 403 (backend-1)",
        seen[&200].len(),
        seen[&403].len()
    );
    // The policy names the caller it denies, not the other instance.
    let (status, _) = mtls::curl_reply(&mtls::curl_tls(&backend_1, Some((&cert, &key))).await);
    assert_eq!(status, 200, "admin is not denied on backend-1");
}
