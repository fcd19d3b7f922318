//! The HTTP client of the HTTP publishers (JSON POSTs) and of the reads of the server's `/metrics`
//! (GETs): hyper-util's client over keep-alive connections, each request bounded in time and its
//! response in size.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper_util::client::legacy::Client as Hyper;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::error::chain;
use crate::target::Target;

/// Longest one request may take, connecting included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest response body accepted.
const MAX_BODY: usize = 1 << 20;

/// A request that did not produce a response.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Connecting, writing or reading failed (the whole chain of causes).
    #[error("http: {0}")]
    Request(String),
    /// No complete response within [`REQUEST_TIMEOUT`].
    #[error("http request timed out after {} s: the server is not answering", REQUEST_TIMEOUT.as_secs())]
    Timeout,
}

/// A response: status and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Bytes,
}

impl Response {
    /// `HTTP <status> <start of the body>`, for failure reasons.
    pub fn summary(&self) -> String {
        let body: String = String::from_utf8_lossy(&self.body)
            .chars()
            .take(160)
            .collect();
        format!("HTTP {} {}", self.status, body.trim())
    }
}

/// Requests to the server over a pool of keep-alive connections (one, when used in turn).
#[derive(Debug, Clone)]
pub struct Client {
    hyper: Hyper<HttpConnector, Full<Bytes>>,
    base: String,
}

impl Client {
    /// A client of `target`'s server. Connects lazily.
    pub fn new(target: &Target) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self {
            hyper: Hyper::builder(TokioExecutor::new()).build(connector),
            base: format!("http://{}", target.host_header),
        }
    }

    /// POSTs `body` as JSON to `path` (with its query) with a bearer token.
    pub async fn post_json(
        &mut self,
        path: &str,
        bearer: &str,
        body: &[u8],
    ) -> Result<Response, HttpError> {
        let request = Request::post(format!("{}{path}", self.base))
            .header(AUTHORIZATION, format!("Bearer {bearer}"))
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::copy_from_slice(body)));
        self.send(request).await
    }

    /// GETs `path` (no credentials).
    pub async fn get(&mut self, path: &str) -> Result<Response, HttpError> {
        let request = Request::get(format!("{}{path}", self.base)).body(Full::default());
        self.send(request).await
    }

    async fn send(
        &self,
        request: Result<Request<Full<Bytes>>, hyper::http::Error>,
    ) -> Result<Response, HttpError> {
        let request = request.map_err(|e| HttpError::Request(e.to_string()))?;
        let exchange = async {
            let response = self
                .hyper
                .request(request)
                .await
                .map_err(|e| HttpError::Request(chain(&e)))?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| HttpError::Request(format!("reading the response: {e}")))?
                .to_bytes();
            Ok(Response { status, body })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .unwrap_or(Err(HttpError::Timeout))
    }
}
