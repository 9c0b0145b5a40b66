//! Applications behind the sidecars, run in the test process: an HTTP
//! server (HTTP/1.1 and HTTP/2) that names itself and echoes bodies and
//! trailers, a TCP echo server, and a gRPC health service.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

type AppBody = http_body_util::Either<
    Full<Bytes>,
    StreamBody<tokio_stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>,
>;

/// Aborts the server task on drop.
pub struct Server {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
    /// HTTP only: what `GET /health` answers, and the status every other
    /// request gets when set (0: none, normal answers).
    pub health: Arc<AtomicU16>,
    pub fail_with: Arc<AtomicU16>,
    task: JoinHandle<()>,
    /// HTTP only: what `kill` and `freeze` do to the connections it has.
    fate: Option<watch::Sender<Fate>>,
}

/// What an HTTP app's open connections do.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fate {
    Serve,
    /// Accept and read requests, never answer: a frozen process.
    Freeze,
    /// Gone: connections closed, new ones refused.
    Dead,
}

impl Server {
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// What `GET /health` answers from now on (200 at first).
    pub fn set_health(&self, status: u16) {
        self.health.store(status, Ordering::Relaxed);
    }

    /// Every request but `/health` gets `status` (0: normal answers again).
    pub fn fail_with(&self, status: u16) {
        self.fail_with.store(status, Ordering::Relaxed);
    }

    /// The app dies as a killed process does: its listening socket and
    /// every connection close at once.
    pub fn kill(&mut self) {
        self.task.abort();
        if let Some(f) = &self.fate {
            let _ = f.send(Fate::Dead);
        }
    }

    /// The app hangs: connections are accepted and requests read, and no
    /// response ever comes (an HTTP app only).
    pub fn freeze(&self) {
        if let Some(f) = &self.fate {
            let _ = f.send(Fate::Freeze);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn bind(addr: SocketAddr) -> TcpListener {
    TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("app cannot listen on {addr}: {e}"))
}

/// `GET /...` answers the app's `id`; `GET /slow?ms=N` first waits N ms;
/// `/flaky` answers 500 to every other request the app gets and its id
/// (or, for a POST, the body it was sent) to the others; `GET /health`
/// answers what `set_health` said;
/// `GET /xfcc` answers the `x-forwarded-client-cert` it received;
/// `GET /headers` the request headers it received; `POST /upload` the size
/// of the body it read; `POST /echo` returns the body and trailers it was
/// sent, plus a trailer `x-app-id`. A gRPC health `Check` answers SERVING.
/// Every response says the authority and the path the request came with
/// (`x-seen-authority`, `x-seen-path`).
pub async fn http(addr: SocketAddr, id: &str) -> Server {
    let listener = bind(addr).await;
    let hits = Arc::new(AtomicU64::new(0));
    let health = Arc::new(AtomicU16::new(200));
    let fail_with = Arc::new(AtomicU16::new(0));
    let (fate, fate_rx) = watch::channel(Fate::Serve);
    let (id, counter) = (Arc::<str>::from(id), hits.clone());
    let state = (health.clone(), fail_with.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (id, counter, state) = (id.clone(), counter.clone(), state.clone());
            let mut conn_fate = fate_rx.clone();
            tokio::spawn(async move {
                let request_fate = conn_fate.clone();
                let svc = service_fn(move |req: Request<Incoming>| {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let (id, fate) = (id.clone(), *request_fate.borrow());
                    let health = state.0.load(Ordering::Relaxed);
                    let fail = state.1.load(Ordering::Relaxed);
                    async move {
                        if fate != Fate::Serve {
                            std::future::pending::<()>().await;
                        }
                        let path = req.uri().path();
                        if path == "/health" {
                            return Ok(status(health, &id));
                        }
                        if fail != 0 {
                            return Ok(status(fail, &id));
                        }
                        if path == "/flaky" && n % 2 == 0 {
                            return Ok(status(500, &id));
                        }
                        handle(id, req).await
                    }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection(TokioIo::new(stream), svc);
                tokio::select! {
                    _ = conn => {}
                    _ = conn_fate.wait_for(|f| *f == Fate::Dead) => {}
                }
            });
        }
    });
    Server {
        addr,
        hits,
        health,
        fail_with,
        task,
        fate: Some(fate),
    }
}

/// A response of `code` that names the app.
fn status(code: u16, id: &str) -> Response<AppBody> {
    Response::builder()
        .status(code)
        .header("x-app-id", id)
        .body(AppBody::Left(Full::new(Bytes::from(id.to_string()))))
        .unwrap()
}

async fn handle(id: Arc<str>, req: Request<Incoming>) -> Result<Response<AppBody>, Infallible> {
    let seen_authority = seen_authority(&req);
    let seen_path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let mut resp = route(id, req).await?;
    if let Ok(v) = HeaderValue::from_str(&seen_authority) {
        resp.headers_mut().insert("x-seen-authority", v);
    }
    if let Ok(v) = HeaderValue::from_str(&seen_path) {
        resp.headers_mut().insert("x-seen-path", v);
    }
    Ok(resp)
}

/// The authority the request arrived with: `:authority` (HTTP/2) or Host.
fn seen_authority<B>(req: &Request<B>) -> String {
    req.uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            req.headers()
                .get("host")
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default()
}

async fn route(id: Arc<str>, req: Request<Incoming>) -> Result<Response<AppBody>, Infallible> {
    let path = req.uri().path().to_string();
    let grpc = req
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc && path == "/grpc.health.v1.Health/Check" {
        // SERVING, whatever service was asked about: a HealthCheckResponse
        // {status: 1} in one gRPC frame, then grpc-status 0.
        let frame = Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, 0x01]);
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let frames = vec![Ok(Frame::data(frame)), Ok(Frame::trailers(trailers))];
        return Ok(Response::builder()
            .header("content-type", "application/grpc")
            .body(AppBody::Right(StreamBody::new(tokio_stream::iter(frames))))
            .unwrap());
    }
    if path == "/headers" {
        // The request headers as received, one `name: value` a line.
        let mut text = String::new();
        for (name, value) in req.headers() {
            text.push_str(&format!(
                "{name}: {}\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        return Ok(Response::new(AppBody::Left(Full::new(Bytes::from(text)))));
    }
    if path == "/upload" {
        // Reads the body as it comes, however slowly; answers its size.
        let mut body = req.into_body();
        let mut received = 0usize;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => received += f.data_ref().map_or(0, |d| d.len()),
                Err(_) => break,
            }
        }
        return Ok(Response::new(AppBody::Left(Full::new(Bytes::from(
            format!("received {received}"),
        )))));
    }
    if path == "/slow" {
        let ms: u64 = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("ms="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(500);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if path == "/bytes" {
        // `n` bytes of body (a large response to measure throughput on).
        let n: usize = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("n="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(1024);
        return Ok(Response::new(AppBody::Left(Full::new(Bytes::from(vec![
            b'x';
            n
        ])))));
    }
    if path == "/xfcc" {
        // Who the sidecar says called: the caller's verified identity.
        let xfcc = req
            .headers()
            .get("x-forwarded-client-cert")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        return Ok(Response::new(AppBody::Left(Full::new(Bytes::from(xfcc)))));
    }
    if path == "/flaky" && req.method() == http::Method::POST {
        let body = req
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        return Ok(Response::new(AppBody::Left(Full::new(body))));
    }
    if path == "/echo" {
        let collected = match req.into_body().collect().await {
            Ok(c) => c,
            Err(_) => {
                return Ok(Response::builder()
                    .status(400)
                    .body(AppBody::Left(Full::default()))
                    .unwrap());
            }
        };
        let mut trailers = collected.trailers().cloned().unwrap_or_default();
        trailers.insert("x-app-id", HeaderValue::from_str(&id).unwrap());
        let frames = vec![
            Ok(Frame::data(collected.to_bytes())),
            Ok(Frame::trailers(trailers)),
        ];
        let body = AppBody::Right(StreamBody::new(tokio_stream::iter(frames)));
        return Ok(Response::builder()
            .header("x-app-id", &*id)
            .body(body)
            .unwrap());
    }
    Ok(Response::builder()
        .header("x-app-id", &*id)
        .body(AppBody::Left(Full::new(Bytes::from(id.to_string()))))
        .unwrap())
}

/// Echoes every byte back.
pub async fn tcp_echo(addr: SocketAddr) -> Server {
    let listener = bind(addr).await;
    let hits = Arc::new(AtomicU64::new(0));
    let counter = hits.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            counter.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    Server {
        addr,
        hits,
        health: Arc::default(),
        fail_with: Arc::default(),
        task,
        fate: None,
    }
}

/// Whether an echo round trip works on `conn` (false once it is closed).
pub async fn echoes(conn: &mut tokio::net::TcpStream) -> bool {
    if conn.write_all(b"ping").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 4];
    matches!(
        tokio::time::timeout(Duration::from_secs(3), conn.read_exact(&mut buf)).await,
        Ok(Ok(_)) if &buf == b"ping"
    )
}

/// A gRPC server with the standard health service; `koguma.test` is SERVING.
pub async fn grpc_health(addr: SocketAddr) -> Server {
    let listener = bind(addr).await;
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("koguma.test", tonic_health::ServingStatus::Serving)
        .await;
    let task = tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming)
            .await;
        drop(reporter);
    });
    Server {
        addr,
        hits: Arc::new(AtomicU64::new(0)),
        health: Arc::default(),
        fail_with: Arc::default(),
        task,
        fate: None,
    }
}

/// Trailers as a plain map, for comparing.
pub fn trailer(map: &HeaderMap, name: &str) -> Option<String> {
    map.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}
