//! `koguma-cp apply|get|delete`: a thin client of the REST API.

pub mod apply;
pub mod delete;
pub mod generate;
pub mod get;
pub mod migrate;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub const DEFAULT_API_URL: &str = "http://127.0.0.1:5681";

/// Which control plane the CLI talks to, and as whom.
#[derive(clap::Args)]
pub struct ApiTarget {
    #[arg(long, global = true, default_value = DEFAULT_API_URL, env = "KOGUMA_API_URL")]
    pub api_url: String,
    /// A user token (koguma-cp generate user-token): needed to change
    /// anything from a host other than the control plane's.
    #[arg(long, global = true, env = "KOGUMA_API_TOKEN_FILE")]
    pub api_token_file: Option<std::path::PathBuf>,
}

pub struct ApiClient {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
    token: Option<String>,
}

impl ApiClient {
    pub fn new(target: &ApiTarget) -> anyhow::Result<ApiClient> {
        let base = &target.api_url;
        if !base.starts_with("http://") {
            bail!("--api-url {base:?}: only http:// URLs are supported");
        }
        let token = match &target.api_token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read --api-token-file {}", path.display()))?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        Ok(ApiClient {
            base: base.trim_end_matches('/').to_string(),
            client: Client::builder(TokioExecutor::new()).build_http(),
            token,
        })
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let (status, bytes) = self.call_raw(method, path, body).await?;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        Ok((status, value))
    }

    /// The response body as sent (for endpoints that answer plain text).
    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let url = format!("{}{}", self.base, path);
        let mut req = Request::builder()
            .method(method)
            .uri(&url)
            .header("content-type", "application/json");
        if let Some(token) = &self.token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let resp = self.client.request(req).await.with_context(|| {
            format!("cannot reach the control plane at {url} (is koguma-cp running? see --api-url)")
        })?;
        let status = resp.status();
        Ok((status, resp.into_body().collect().await?.to_bytes()))
    }
}

impl ApiClient {
    /// Every item of a list, page after page (the API serves at most 1000
    /// a page).
    pub async fn list_all(&self, path: &str) -> anyhow::Result<Vec<Value>> {
        let mut items = Vec::new();
        loop {
            let page = format!("{path}?size=1000&offset={}", items.len());
            let (status, body) = self.call(Method::GET, &page, None).await?;
            if !status.is_success() {
                bail!("{}", describe_error(status, &body));
            }
            let got = body["items"].as_array().cloned().unwrap_or_default();
            let done = got.is_empty() || body["next"].is_null();
            items.extend(got);
            if done {
                return Ok(items);
            }
        }
    }
}

/// An API error body as a person reads it: the detail, then one line per
/// invalid field.
pub fn describe_error(status: StatusCode, body: &Value) -> String {
    let mut out = body["detail"]
        .as_str()
        .map_or_else(|| format!("request failed with {status}"), str::to_string);
    if let Some(params) = body["invalid_parameters"].as_array() {
        for p in params {
            out.push_str(&format!(
                "\n  {}: {}",
                p["field"].as_str().unwrap_or("?"),
                p["reason"].as_str().unwrap_or("?")
            ));
        }
    }
    out
}

/// REST path of a resource.
pub fn resource_path(rtype: koguma_api::ResourceType, mesh: &str, name: &str) -> String {
    if rtype.is_mesh_scoped() {
        format!("/meshes/{mesh}/{}/{name}", rtype.plural())
    } else {
        format!("/{}/{name}", rtype.plural())
    }
}
