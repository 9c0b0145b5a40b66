//! Hosts outside the mesh, as ExternalService tests reach them: a TLS
//! server with a CA of its own, and a raw HTTP/1.0 client.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// `openssl s_server -www` on `addr` with a certificate for `ext.test`
/// signed by a CA of its own; returns the server (killed when dropped)
/// and that CA (PEM).
pub fn external_tls_server(addr: SocketAddr, dir: &Path) -> (tokio::process::Child, Vec<u8>) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ext-ca.key",
            "-out",
            "ext-ca.crt",
            "-subj",
            "/CN=ext-ca",
            "-days",
            "1",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "ext.key",
            "-out",
            "ext.csr",
            "-subj",
            "/CN=ext.test",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("ext.ext"),
        "subjectAltName=DNS:ext.test\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "ext.csr",
        "-CA",
        "ext-ca.crt",
        "-CAkey",
        "ext-ca.key",
        "-CAcreateserial",
        "-out",
        "ext.crt",
        "-days",
        "1",
        "-extfile",
        "ext.ext",
    ]);
    let child = tokio::process::Command::new("openssl")
        .args([
            "s_server",
            "-accept",
            &addr.to_string(),
            "-cert",
            "ext.crt",
            "-key",
            "ext.key",
            "-www",
            "-quiet",
        ])
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("openssl s_server");
    (child, std::fs::read(dir.join("ext-ca.crt")).expect("CA"))
}

/// `GET /` over a plain TCP connection, the whole answer as text.
pub async fn raw_http_get(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(Ok(mut s)) =
        tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr)).await
    else {
        return String::new();
    };
    if s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.is_err() {
        return String::new();
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
