//! Mesh mTLS and MeshTrafficPermission resources: what is accepted, and
//! the field-named errors for what is not.

use koguma_api::{MtlsMode, Resource, parse_documents};

fn parse(yaml: &str) -> Result<Resource, String> {
    let v = parse_documents(yaml).map_err(|e| e.to_string())?.remove(0);
    let r = Resource::from_value(v).map_err(|e| e.to_string())?;
    r.validate().map_err(|e| e.to_string())?;
    Ok(r)
}

#[test]
fn a_builtin_ca_mesh_is_understood() {
    let r = parse(
        "type: Mesh
name: default
mtls:
  enabledBackend: ca-1
  backends:
  - name: ca-1
    type: builtin
    mode: Permissive
    dpCert: {rotation: {expiration: 1h}}
    conf: {caCert: {RSAbits: 2048, expiration: 10y}}
",
    )
    .unwrap();
    let b = r.as_mesh().unwrap().mtls_backend().unwrap();
    assert_eq!(b.mode(), MtlsMode::Permissive);
    assert_eq!(b.dp_cert_lifetime().as_secs(), 3600);
    assert_eq!(b.rsa_bits(), Some(2048));
    // Written back as Kuma writes it.
    assert_eq!(r.to_value()["mtls"]["backends"][0]["mode"], "PERMISSIVE");
}

#[test]
fn bad_mtls_settings_name_the_field() {
    let err = parse(
        "type: Mesh
name: default
mtls:
  enabledBackend: ca-2
  backends:
  - name: ca-1
    type: provided
    dpCert: {rotation: {expiration: soon}}
    conf: {caCert: {RSAbits: 1024}}
",
    )
    .unwrap_err();
    for part in [
        "mtls.backends[0].conf.cert: has to be defined",
        "mtls.backends[0].conf.key: has to be defined",
        "mtls.backends[0].conf.caCert: is for a builtin CA",
        "mtls.dpcert.rotation.expiration: has to be a valid format",
        "mtls.backends[0].conf.caCert.RSAbits: 1024 is not supported",
        "mtls.enabledBackend: has to be set to one of the backends in the mesh",
    ] {
        assert!(err.contains(part), "{part:?} not in {err}");
    }
    let err = parse(
        "type: Mesh\nname: m\nmtls:\n  backends:\n  - {name: a, type: builtin, mode: LOOSE}\n",
    )
    .unwrap_err();
    assert!(err.contains("unknown mode \"LOOSE\""), "{err}");
}

#[test]
fn traffic_permissions_are_checked() {
    let ok = parse(
        "type: MeshTrafficPermission
mesh: default
name: allow-web
spec:
  targetRef: {kind: MeshService, name: backend}
  from:
  - targetRef: {kind: MeshSubset, tags: {kuma.io/service: web, version: v1}}
    default: {action: AllowWithShadowDeny}
",
    );
    assert!(ok.is_ok(), "{ok:?}");
    let err = parse(
        "type: MeshTrafficPermission
mesh: default
name: bad
spec:
  targetRef: {kind: MeshService}
  from:
  - targetRef: {kind: MeshGateway, name: g}
    default: {action: Allow}
",
    )
    .unwrap_err();
    assert!(
        err.contains("spec.targetRef: name or labels must be set when kind is MeshService"),
        "{err}"
    );
    assert!(
        err.contains("spec.from[0].targetRef.kind: value 'MeshGateway' is not supported"),
        "{err}"
    );
    let err = parse(
        "type: MeshTrafficPermission\nmesh: default\nname: bad\nspec:\n  from:\n  - targetRef: {kind: Mesh}\n    default: {action: Maybe}\n",
    )
    .unwrap_err();
    assert!(err.contains("spec.from[0].default.action"), "{err}");
}
