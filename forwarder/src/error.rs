use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum ForwarderError {
    #[error("cannot listen on {addr} for {listener}: {source}")]
    Bind {
        listener: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{first} and {second} both listen on {addr}")]
    DuplicateListener {
        addr: SocketAddr,
        first: String,
        second: String,
    },
    #[error("{listener} is a transparent (VIP) outbound, but transparent proxying is off")]
    NotTransparent { listener: String },
    #[error("{listener}: server name {sni:?} is not a DNS name")]
    BadSni { listener: String, sni: String },
    #[error(
        "zone proxy route {route:?} terminates mesh mTLS in mesh {mesh:?}, but the config has no identity for that mesh"
    )]
    NoMeshIdentity { route: String, mesh: String },
    #[error("the forwarder is draining and takes no new config")]
    Draining,
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}
