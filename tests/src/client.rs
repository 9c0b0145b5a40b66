//! HTTP clients for tests: HTTP/1.1 with keep-alive, and HTTP/2 with prior
//! knowledge that can send and read trailers.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: HeaderMap,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub type Error = Box<dyn std::error::Error + Send + Sync>;

async fn read_reply(resp: http::Response<hyper::body::Incoming>) -> Result<Reply, Error> {
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    Ok(Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    })
}

/// A pooled HTTP/1.1 client, reused across requests like a real app's.
#[derive(Clone)]
pub struct Http1 {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Http1 {
    fn default() -> Self {
        Http1 {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }
}

impl Http1 {
    pub async fn get(&self, url: &str) -> Result<Reply, Error> {
        self.send(http::Method::GET, url, &[], Bytes::new()).await
    }

    /// Any request, with extra headers and a body.
    pub async fn send(
        &self,
        method: http::Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Reply, Error> {
        let mut req = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body))?;
        let resp =
            tokio::time::timeout(Duration::from_secs(10), self.client.request(req)).await??;
        read_reply(resp).await
    }
}

/// One-off PUT of a JSON body, replacing only the version `etag` names.
pub async fn put_if_match(url: &str, etag: &str, body: String) -> Result<Reply, Error> {
    Http1::default()
        .send(
            http::Method::PUT,
            url,
            &[("if-match", etag), ("content-type", "application/json")],
            Bytes::from(body),
        )
        .await
}

/// One-off GET over a fresh HTTP/1.1 client.
pub async fn get(url: &str) -> Result<Reply, Error> {
    Http1::default().get(url).await
}

/// POST over HTTP/2 (prior knowledge) with a body and request trailers.
pub async fn h2_post(url: &str, body: Bytes, trailers: HeaderMap) -> Result<Reply, Error> {
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> =
        vec![Ok(Frame::data(body)), Ok(Frame::trailers(trailers))];
    let req = Request::post(url).body(StreamBody::new(tokio_stream::iter(frames)))?;
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req)).await??;
    read_reply(resp).await
}

/// Sends `n` GETs one after another on one keep-alive client and counts the
/// answers by body (the answering app's id); failures count as
/// `"status <code>"` or `"error"`.
pub async fn tally(
    client: &Http1,
    url: &str,
    n: usize,
) -> std::collections::BTreeMap<String, usize> {
    tally_with(client, url, &[], n).await
}

/// `tally` with extra request headers.
pub async fn tally_with(
    client: &Http1,
    url: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..n {
        let key = match client
            .send(http::Method::GET, url, headers, Bytes::new())
            .await
        {
            Ok(r) if r.status == 200 => r.text(),
            Ok(r) => format!("status {}", r.status),
            Err(_) => "error".to_string(),
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}
