//! Harness for end-to-end tests: real `koguma-cp` and `koguma-dp` processes
//! on loopback addresses of their own, with in-process applications behind
//! them. Every process is killed when its handle drops, and its log is
//! printed if the test failed.

pub mod apps;
pub mod binaries;
pub mod certs;
pub mod client;
pub mod cp;
pub mod dp;
pub mod external;
pub mod mesh;
pub mod mtls;
pub mod multizone;
pub mod net;
pub mod netns;
pub mod postgres;
pub mod process;

pub use cp::ControlPlane;
pub use dp::Dataplane;
pub use mesh::WebToBackend;
pub use net::TestNet;
pub use postgres::Postgres;

use std::future::Future;
use std::time::Duration;

/// Polls `check` every 50 ms until it returns `Some`, or panics after
/// `timeout` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
