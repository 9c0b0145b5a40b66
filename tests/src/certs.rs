//! Certificates for servers outside the mesh, made with the openssl CLI: a
//! CA of their own and a certificate it signed.

use std::path::{Path, PathBuf};

/// `openssl <args>` in `dir`, asserting success.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// In `dir`: `<name>-ca.crt` (a CA of its own, P-256, a day long) and
/// `<name>.crt`/`<name>.key`, a server certificate it signed for `san`
/// (`DNS:ext.test`, `IP:127.0.0.1`). Returns their paths: CA, cert, key.
pub fn ca_and_server(dir: &Path, name: &str, san: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let (ca_key, ca_crt) = (format!("{name}-ca.key"), format!("{name}-ca.crt"));
    let (key, csr, crt, ext) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
        format!("{name}.ext"),
    );
    let ca_subject = format!("/CN={name}-ca");
    let ca_args = [
        &["req", "-x509"][..],
        &ec,
        &["-keyout", &ca_key, "-out", &ca_crt],
    ];
    let days = ["-subj", &ca_subject, "-days", "1"];
    openssl(dir, &[&ca_args.concat()[..], &days].concat());
    let subject = format!("/CN={name}");
    let req = [
        &["req"][..],
        &ec,
        &["-keyout", &key, "-out", &csr, "-subj", &subject],
    ];
    openssl(dir, &req.concat());
    std::fs::write(
        dir.join(&ext),
        format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"),
    )
    .expect("write extensions");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "1",
            "-extfile",
            &ext,
        ],
    );
    (dir.join(ca_crt), dir.join(crt), dir.join(key))
}
