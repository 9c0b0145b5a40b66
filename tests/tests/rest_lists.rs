//! Every resource type answers at Kuma's paths through one set of handlers:
//! lists come in pages (100 unless asked, at most 1000) with a `next` link,
//! mesh-scoped types also list across meshes, and a path of the wrong
//! scope or an unknown type is refused with the way to the right one.

use koguma_e2e::{ControlPlane, TestNet};
use serde_json::Value;

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| i["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_are_paginated_and_every_type_has_the_same_paths() {
    let net = TestNet::new();
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(net.host(0), dir.path()).await;
    let mut yaml = String::from("type: Mesh\nname: other\n");
    for i in 0..250 {
        yaml.push_str(&format!(
            "---\ntype: Dataplane\nmesh: default\nname: dp-{i:03}\nnetworking:\n  address: 10.0.0.1\n  inbound:\n  - port: {}\n    servicePort: 18080\n    tags:\n      kuma.io/service: svc-{}\n",
            10000 + i,
            i % 7
        ));
    }
    yaml.push_str("---\ntype: Dataplane\nmesh: other\nname: elsewhere\nnetworking:\n  address: 10.0.0.2\n  inbound:\n  - port: 8080\n    servicePort: 18080\n    tags:\n      kuma.io/service: x\n");
    cp.apply(&yaml).await;

    // Default page: 100, in name order, with the link to the next one.
    let (status, first) = cp.get_json("/meshes/default/dataplanes").await;
    assert_eq!(status, 200);
    assert_eq!(first["total"], 250);
    let got = names(&first);
    assert_eq!(
        (got.len(), got[0].as_str(), got[99].as_str()),
        (100, "dp-000", "dp-099")
    );
    let next = first["next"].as_str().expect("a next link");
    assert!(
        next.ends_with("/meshes/default/dataplanes?offset=100&size=100"),
        "{next}"
    );
    let (_, last) = cp
        .get_json("/meshes/default/dataplanes?offset=200&size=100")
        .await;
    assert_eq!(names(&last).len(), 50);
    assert!(last["next"].is_null());
    // Overviews page the same way.
    let (_, overviews) = cp
        .get_json("/meshes/default/dataplanes+insights?size=10&offset=245")
        .await;
    assert_eq!(
        names(&overviews),
        ["dp-245", "dp-246", "dp-247", "dp-248", "dp-249"]
    );

    // Page sizes Kuma refuses, naming the field.
    for bad in ["size=1001", "size=0", "size=ten", "offset=-1"] {
        let (status, body) = cp
            .get_json(&format!("/meshes/default/dataplanes?{bad}"))
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        let field = bad.split('=').next().unwrap();
        assert_eq!(body["invalid_parameters"][0]["field"], field, "{body}");
    }

    // A mesh-scoped type across every mesh; a global one at the top.
    let (_, all) = cp.get_json("/dataplanes?size=1000").await;
    assert_eq!(all["total"], 251);
    assert!(names(&all).contains(&"elsewhere".to_string()));
    let (status, mesh) = cp.get_json("/meshes/other").await;
    assert_eq!((status, mesh["name"].as_str()), (200, Some("other")));
    let (_, meshes) = cp.get_json("/meshes").await;
    assert_eq!(names(&meshes), ["default", "other"]);

    // Wrong scope, unknown type: 404 with the way to the right path.
    let (status, body) = cp.get_json("/dataplanes/dp-001").await;
    assert_eq!(status, 404);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("/meshes/{mesh}/dataplanes/{name}"),
        "{body}"
    );
    let (status, body) = cp.get_json("/meshes/default/meshes").await;
    assert_eq!(status, 404);
    assert!(
        body["detail"].as_str().unwrap().contains("not mesh-scoped"),
        "{body}"
    );
    let (status, body) = cp.get_json("/meshes/default/trafficroutes").await;
    assert_eq!(status, 404);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("dataplanes, meshtrafficpermissions, external-services"),
        "{body}"
    );

    // The CLI walks every page.
    let out = cp.cli(&["get", "dataplanes", "-o", "json"], None).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(names(&listed).len(), 250);
    let table = cp.cli(&["get", "dataplanes"], None).await;
    assert_eq!(String::from_utf8_lossy(&table.stdout).lines().count(), 251);
}
