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

/// Kuma's list filters, on resources and overviews, with `next` links that
/// keep them; 404s under a mesh that does not exist; the labels Kuma
/// computes and `kri`; insights without nulls; refusals in Kuma's body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_filter_as_kumas_do_and_resources_carry_labels_and_kri() {
    let net = TestNet::new();
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(net.host(0), dir.path()).await;
    let dp = |name: &str, service: &str, version: &str, team: &str| {
        format!(
            "---\ntype: Dataplane\nmesh: default\nname: {name}\nlabels:\n  team: {team}\nnetworking:\n  address: 10.0.0.1\n  inbound:\n  - port: 8080\n    servicePort: 18080\n    tags:\n      kuma.io/service: {service}\n      version: {version}\n"
        )
    };
    let mut yaml = String::new();
    yaml.push_str(&dp("web-1", "web", "v1", "a"));
    yaml.push_str(&dp("web-22", "web", "v2", "b"));
    yaml.push_str(&dp("backend-333", "backend", "v1", "a"));
    cp.apply(&yaml).await;

    let list = |q: &str| {
        let path = format!("/meshes/default/dataplanes?{q}");
        let cp = &cp;
        async move {
            let (status, body) = cp.get_json(&path).await;
            assert_eq!(status, 200, "{path}: {body}");
            names(&body)
        }
    };
    assert_eq!(list("tag=kuma.io/service:web").await, ["web-1", "web-22"]);
    // Kuma's tag filter matches a part of the value.
    assert_eq!(list("tag=kuma.io/service:eb").await, ["web-1", "web-22"]);
    assert_eq!(
        list("tag=kuma.io/service:web&tag=version:v2").await,
        ["web-22"]
    );
    assert_eq!(
        list("filter%5Blabels.team%5D=a").await,
        ["backend-333", "web-1"]
    );
    assert_eq!(list("name=end").await, ["backend-333"]);
    assert_eq!(list("gateway=false").await.len(), 3);
    assert!(list("gateway=true").await.is_empty());

    // A filtered list pages with the filter kept in `next`.
    let (_, first) = cp
        .get_json("/meshes/default/dataplanes?tag=kuma.io/service:web&size=1")
        .await;
    assert_eq!(
        (names(&first), first["total"].as_u64()),
        (vec!["web-1".to_string()], Some(2))
    );
    let next = first["next"].as_str().expect("next").to_string();
    assert!(next.contains("tag=kuma.io/service:web"), "{next}");
    let path = &next[next.find("/meshes").unwrap()..];
    let (_, second) = cp.get_json(path).await;
    assert_eq!(names(&second), ["web-22"]);
    assert!(second["next"].is_null());

    // Overviews take the same filters, at both of Kuma's paths.
    for base in ["dataplanes/_overview", "dataplanes+insights"] {
        let (status, body) = cp
            .get_json(&format!("/meshes/default/{base}?tag=version:v2"))
            .await;
        assert_eq!(
            (status, names(&body)),
            (200, vec!["web-22".to_string()]),
            "{body}"
        );
    }
    let (status, one) = cp
        .get_json("/meshes/default/dataplanes/web-1/_overview")
        .await;
    assert_eq!(status, 200, "{one}");
    // Absent fields are left out, as Kuma's protobuf JSON does.
    let text = one.to_string();
    assert!(!text.contains("null"), "{text}");
    assert_eq!(one["dataplaneInsight"]["online"], false);

    // An unknown filter is a 400 naming the parameter.
    let (status, body) = cp
        .get_json("/meshes/default/dataplanes?filter%5Blabelds.team%5D=a")
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["title"], "Could not retrieve resources");
    assert_eq!(
        body["invalid_parameters"][0]["field"],
        "/meshes/{mesh}/dataplanes.filter[labelds.team]"
    );
    assert_eq!(
        body["causes"][0]["message"],
        "filters are only supported on labels"
    );

    // Under a mesh that does not exist: 404, for lists, items and overviews.
    for path in [
        "/meshes/nope/dataplanes",
        "/meshes/nope/dataplanes/web-1",
        "/meshes/nope/meshtrafficpermissions",
        "/meshes/nope/dataplanes+insights",
        "/meshes/nope/dataplanes/_overview",
    ] {
        let (status, body) = cp.get_json(path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["title"], "Failed to retrieve Mesh", "{path}");
    }

    // Kuma's computed labels, and kri.
    let (_, web) = cp.get_json("/meshes/default/dataplanes/web-1").await;
    for (k, v) in [
        ("kuma.io/mesh", "default"),
        ("kuma.io/origin", "zone"),
        ("kuma.io/env", "universal"),
        ("kuma.io/proxy-type", "sidecar"),
        ("team", "a"),
    ] {
        assert_eq!(web["labels"][k], v, "{k}: {web}");
    }
    assert_eq!(web["kri"], "kri_dp_default___web-1_");
    let (_, mesh) = cp.get_json("/meshes/default").await;
    assert_eq!(mesh["kri"], "kri_m____default_");

    // Label keys and values are checked, naming the label.
    let out = cp
        .cli(
            &["apply", "-f", "-"],
            Some("type: Mesh\nname: labelled\nlabels:\n  'bad key': x\n"),
        )
        .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(r#"labels["bad key"]"#), "{stderr}");

    // A body of another type than the URL's: refused whole, as Kuma does.
    let put = tokio::process::Command::new("curl")
        .args(["-sS", "-X", "PUT", "-H", "content-type: application/json"])
        .arg("--data")
        .arg(r#"{"type":"MeshTrafficPermission","mesh":"default","name":"x","spec":{"targetRef":{"kind":"Mesh"}}}"#)
        .arg(format!("{}/meshes/default/dataplanes/x", cp.api_url()))
        .output()
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&put.stdout).unwrap();
    assert_eq!(body["status"], 400, "{body}");
    assert_eq!(body["title"], "Could not process a resource");
    assert_eq!(body["details"], "Resource is not valid");
    assert_eq!(body["invalid_parameters"][0]["field"], "");
    assert_eq!(
        body["causes"][0]["message"],
        "type in body should be one of [Dataplane]"
    );
}
