//! Mesh mTLS between two identities of one mesh, in memory: which protocol
//! a connection ends up speaking, and that a second connection to the same
//! peer resumes its session instead of a full handshake.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType,
};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, HandshakeKind, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{ALPN_H2, ALPN_KUMA, MeshTls};
use crate::config::{MeshTlsConfig, MtlsMode, PrivateKey};

fn identity(issuer: &Issuer<'static, KeyPair>, ca_der: &[u8], service: &str) -> MeshTls {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    let uri = format!("spiffe://default/{service}");
    params.subject_alt_names = vec![SanType::URI(uri.as_str().try_into().expect("uri"))];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, issuer).expect("leaf");
    MeshTls::new(&MeshTlsConfig {
        mode: MtlsMode::Strict,
        ca_certs: vec![ca_der.to_vec()],
        cert_chain: vec![cert.der().to_vec()],
        key: PrivateKey(key.serialize_der()),
        peer_uri_prefix: "spiffe://default/".into(),
    })
    .expect("mesh identity")
}

fn pair() -> (MeshTls, MeshTls) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = params.self_signed(&key).expect("CA");
    let issuer = Issuer::new(params, key);
    (
        identity(&issuer, ca.der(), "web"),
        identity(&issuer, ca.der(), "backend"),
    )
}

struct Outcome {
    alpn: Option<Vec<u8>>,
    kind: Option<HandshakeKind>,
    /// The caller's URI SANs as the server saw them.
    caller: Vec<String>,
}

/// One connection, a few bytes each way (so that the client reads the
/// server's session tickets), then closed.
async fn connect(client: Arc<ClientConfig>, server: Arc<ServerConfig>) -> Outcome {
    let (c, s) = tokio::io::duplex(64 * 1024);
    let name = ServerName::IpAddress(std::net::Ipv4Addr::new(127, 0, 0, 2).into());
    let server = tokio::spawn(async move {
        let mut tls = tokio_rustls::TlsAcceptor::from(server)
            .accept(s)
            .await
            .expect("server handshake");
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.expect("server read");
        tls.write_all(b"pong").await.expect("server write");
        tls.flush().await.expect("server flush");
        let caller = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|leaf| super::verify::uri_sans(leaf))
            .unwrap_or_default();
        let _ = tls.shutdown().await;
        caller
    });
    let mut tls = tokio_rustls::TlsConnector::from(client)
        .connect(name, c)
        .await
        .expect("client handshake");
    tls.write_all(b"ping").await.expect("client write");
    let mut buf = [0u8; 4];
    tls.read_exact(&mut buf).await.expect("client read");
    let state = tls.get_ref().1;
    let (alpn, kind) = (
        state.alpn_protocol().map(<[u8]>::to_vec),
        state.handshake_kind(),
    );
    let _ = tls.shutdown().await;
    Outcome {
        alpn,
        kind,
        caller: server.await.expect("server task"),
    }
}

#[tokio::test]
async fn http_between_koguma_sidecars_is_h2_and_anything_else_stays_kuma() {
    let (web, backend) = pair();
    let to_backend = web.client_for("spiffe://default/backend").expect("client");
    let h2 = connect(to_backend.h2.clone(), backend.server_h2.clone()).await;
    assert_eq!(h2.alpn.as_deref(), Some(ALPN_H2));
    // A TCP inbound (or a peer that knows only `kuma`) keeps HTTP/1.1.
    let tcp = connect(to_backend.h2.clone(), backend.server.clone()).await;
    assert_eq!(tcp.alpn.as_deref(), Some(ALPN_KUMA));
    // Connections that must stay HTTP/1.1 (upgrades) never offer h2.
    let upgrade = connect(to_backend.kuma.clone(), backend.server_h2.clone()).await;
    assert_eq!(upgrade.alpn.as_deref(), Some(ALPN_KUMA));
}

#[tokio::test]
async fn a_second_connection_to_the_same_peer_resumes_and_keeps_the_callers_identity() {
    let (web, backend) = pair();
    let to_backend = web.client_for("spiffe://default/backend").expect("client");
    let first = connect(to_backend.kuma.clone(), backend.server.clone()).await;
    assert_eq!(first.kind, Some(HandshakeKind::Full));
    let second = connect(to_backend.kuma.clone(), backend.server.clone()).await;
    assert_eq!(second.kind, Some(HandshakeKind::Resumed));
    assert_eq!(second.caller, vec!["spiffe://default/web".to_string()]);
    // Both client configs share one session cache, as do both server
    // configs: the h2 side resumes what the kuma side began.
    let third = connect(to_backend.h2.clone(), backend.server_h2.clone()).await;
    assert_eq!(third.kind, Some(HandshakeKind::Resumed));
    assert_eq!(third.alpn.as_deref(), Some(ALPN_H2));
}

#[tokio::test]
async fn a_burst_of_new_connections_to_one_peer_resumes_beyond_rustls_default_eight() {
    let (web, backend) = pair();
    let to_backend = web.client_for("spiffe://default/backend").expect("client");
    // Sequential connections fill the cache: each uses a ticket and brings
    // two.
    for _ in 0..16 {
        connect(to_backend.kuma.clone(), backend.server.clone()).await;
    }
    let burst: Vec<_> = (0..16)
        .map(|_| tokio::spawn(connect(to_backend.kuma.clone(), backend.server.clone())))
        .collect();
    let mut resumed = 0;
    for c in burst {
        if c.await.expect("connection").kind == Some(HandshakeKind::Resumed) {
            resumed += 1;
        }
    }
    assert_eq!(resumed, 16, "of 16 connections at once");
}
