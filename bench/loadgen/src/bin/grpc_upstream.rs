//! `koguma-grpc-upstream`: the application behind the benchmark's gRPC
//! scenario. Answers every unary call on one HTTP/2 (h2c) port the way a
//! gRPC server does: `200`, `content-type: application/grpc`, one framed
//! message (a `grpc.health.v1.HealthCheckResponse{status: SERVING}`), then
//! the `grpc-status: 0` trailer, so that proxies carry trailers as they
//! would for a real service. One thread, like the benchmark's nginx.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(about = "A gRPC unary upstream for the benchmarks (h2c)")]
struct Args {
    /// HOST:PORT to listen on.
    #[arg(long)]
    listen: SocketAddr,
}

/// Length-prefixed message: not compressed, 2 bytes, field 1 = 1 (SERVING).
const SERVING: &[u8] = &[0, 0, 0, 0, 2, 0x08, 0x01];

async fn unary(req: Request<Incoming>) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
    // The request is read to its end, as a server decoding it would.
    let _ = req.into_body().collect().await;
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let frames = [
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(SERVING))),
        Ok(Frame::trailers(trailers)),
    ];
    let body = StreamBody::new(futures::stream::iter(frames));
    Ok(Response::builder()
        .header("content-type", "application/grpc")
        .body(BodyExt::boxed(body))
        .unwrap_or_default())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("--listen {}", args.listen))?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(unary);
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
