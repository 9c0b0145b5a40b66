//! Hosts outside the mesh, as ExternalService tests reach them: a TLS
//! server with a CA of its own, and a raw HTTP/1.0 client.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// `openssl s_server -www` on `addr` with a certificate for `ext.test`
/// signed by a CA of its own; returns the server (killed when dropped)
/// and that CA (PEM).
pub fn external_tls_server(addr: SocketAddr, dir: &Path) -> (tokio::process::Child, Vec<u8>) {
    let (ca, _, _) = crate::certs::ca_and_server(dir, "ext", "DNS:ext.test");
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
    (child, std::fs::read(ca).expect("CA"))
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
