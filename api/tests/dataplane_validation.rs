use koguma_api::{Resource, ResourceType, parse_documents};

fn parse(yaml: &str) -> Result<Resource, String> {
    let docs = parse_documents(yaml).map_err(|e| e.to_string())?;
    let r = Resource::from_value(docs.into_iter().next().unwrap()).map_err(|e| e.to_string())?;
    r.validate().map_err(|e| e.to_string())?;
    Ok(r)
}

const GOOD: &str = r#"
type: Dataplane
mesh: default
name: web-01
networking:
  address: 127.0.0.2
  inbound:
  - port: 8080
    servicePort: 18080
    tags:
      kuma.io/service: web
      kuma.io/protocol: http
  outbound:
  - port: 10001
    tags:
      kuma.io/service: backend
"#;

#[test]
fn kuma_universal_dataplane_parses_and_round_trips() {
    let r = parse(GOOD).unwrap();
    assert_eq!(r.resource_type(), ResourceType::Dataplane);
    assert_eq!(r.meta.name, "web-01");
    let v = r.to_value();
    assert_eq!(v["networking"]["inbound"][0]["servicePort"], 18080);
    assert_eq!(v["type"], "Dataplane");
    let again = Resource::from_value(v).unwrap();
    assert_eq!(again, r);
}

#[test]
fn missing_service_tag_names_the_field() {
    let bad = GOOD.replace("      kuma.io/service: web\n", "");
    let err = parse(&bad).unwrap_err();
    assert_eq!(
        err,
        r#"networking.inbound[0].tags["kuma.io/service"]: tag has to exist"#
    );
}

#[test]
fn unknown_field_is_reported_with_its_path() {
    let bad = GOOD.replace("servicePort: 18080", "servicePortt: 18080");
    let err = parse(&bad).unwrap_err();
    assert!(err.starts_with("networking.inbound[0]"), "{err}");
    assert!(err.contains("unknown field `servicePortt`"), "{err}");
}

#[test]
fn ports_addresses_and_collisions_are_checked() {
    let bad = GOOD
        .replace("port: 10001", "port: 8080\n    address: 127.0.0.2")
        .replace("servicePort: 18080", "servicePort: 70000");
    let err = parse(&bad).unwrap_err();
    assert!(
        err.contains(
            "networking.inbound[0].servicePort: port must be in the range [1, 65535] (got 70000)"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "networking.outbound[0]: 127.0.0.2:8080 is already used by networking.inbound[0]"
        ),
        "{err}"
    );

    let err = parse(&GOOD.replace("127.0.0.2", "0.0.0.0")).unwrap_err();
    assert!(err.starts_with("networking.address:"), "{err}");
    let err = parse(&GOOD.replace("name: web-01", "name: Web_01")).unwrap_err();
    assert!(err.starts_with("name:"), "{err}");
}

#[test]
fn kafka_is_carried_as_tcp() {
    let r = parse(&GOOD.replace("kuma.io/protocol: http", "kuma.io/protocol: kafka")).unwrap();
    let dp = r.as_dataplane().unwrap();
    assert_eq!(
        dp.networking().unwrap().inbound[0].protocol(),
        koguma_api::Protocol::Tcp
    );
}

#[test]
fn mesh_mtls_is_refused_until_enforced() {
    let err = parse("type: Mesh\nname: m\nmtls:\n  enabledBackend: ca-1\n").unwrap_err();
    assert!(err.starts_with("mtls.enabledBackend:"), "{err}");
    let ok =
        parse("type: Mesh\nname: m\nnetworking:\n  outbound:\n    passthrough: false\n").unwrap();
    assert!(!ok.as_mesh().unwrap().passthrough());
}

#[test]
fn several_documents() {
    let docs = parse_documents("type: Mesh\nname: a\n---\ntype: Mesh\nname: b\n---\n").unwrap();
    assert_eq!(docs.len(), 2);
    assert!(parse_documents("a: [").is_err());
}

#[test]
fn transparent_proxying_is_checked_and_frees_the_inbound_port() {
    let tp = |extra: &str| {
        format!(
            "type: Dataplane\nmesh: default\nname: web-01\nnetworking:\n  address: 10.0.0.2\n  inbound:\n  - port: 8080\n    tags:\n      kuma.io/service: web\n  transparentProxying:\n{extra}"
        )
    };
    // Under transparent proxying the inbound binds nothing: the application
    // listens on address:port itself.
    let r = parse(&tp(
        "    redirectPortInbound: 15006\n    redirectPortOutbound: 15001\n",
    ))
    .unwrap();
    let v = r.to_value();
    assert_eq!(
        v["networking"]["transparentProxying"]["redirectPortOutbound"],
        15001
    );
    let err = parse(&tp(
        "    redirectPortInbound: 15001\n    redirectPortOutbound: 15001\n",
    ))
    .unwrap_err();
    assert!(err.contains("networking.transparentProxying.redirectPortOutbound: port 15001 is also the inbound redirect port"), "{err}");
    let err = parse(&tp("    redirectPortInbound: 70000\n")).unwrap_err();
    assert!(
        err.contains("networking.transparentProxying.redirectPortInbound: port must be in the range [1, 65535] (got 70000)"),
        "{err}"
    );
    let err = parse(&tp("    ipFamilyMode: IPv5\n")).unwrap_err();
    assert!(err.contains("networking.transparentProxying.ipFamilyMode: \"IPv5\" is not one of DualStack, IPv4, UnSpecified"), "{err}");
    let err = parse(&tp("    directAccessServices: ['*']\n")).unwrap_err();
    assert!(err.contains("directAccessServices"), "{err}");
}
