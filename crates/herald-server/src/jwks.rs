//! Keys from a JWKS URL, kept fresh: read at start, every `jwks_refresh`, and soon after a token
//! names a `kid` that no key has (at most once per [`MIN_GAP`], so a stream of forged `kid`s cannot
//! make Herald hammer the key server). Each read is bounded in time ([`FETCH_TIMEOUT`]) and size
//! ([`MAX_BYTES`]); a failed read keeps the keys Herald has.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use thiserror::Error;
use tracing::{info, warn};

use crate::state::AppState;

/// Longest wait for the key server's whole answer.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest key set read.
pub const MAX_BYTES: usize = 1024 * 1024;
/// Shortest time between two reads asked for by unknown `kid`s. Shorter than the wait of a
/// handshake for fresh keys (`FRESH_KEY_WAIT`), so that the first token of a rotated key gets in.
pub const MIN_GAP: Duration = Duration::from_secs(2);

/// Why a key set could not be read.
#[derive(Debug, Error)]
pub enum JwksError {
    /// Not an http(s) URL.
    #[error("{0} is not an http:// or https:// URL")]
    Url(String),
    /// The request failed.
    #[error("request failed: {0}")]
    Request(String),
    /// The server answered with another status than 200.
    #[error("the key server answered {0}")]
    Status(u16),
    /// No answer within [`FETCH_TIMEOUT`].
    #[error("no answer within {} s", FETCH_TIMEOUT.as_secs())]
    Timeout,
    /// The answer was not a usable key set.
    #[error(transparent)]
    Keys(#[from] herald_core::keys::KeyError),
}

/// Reads the key set at `url` once.
pub async fn fetch(url: &str) -> Result<herald_core::keys::KeyRing, JwksError> {
    let uri: hyper::Uri = url.parse().map_err(|_| JwksError::Url(url.to_owned()))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(JwksError::Url(url.to_owned()));
    }
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let request = hyper::Request::get(uri)
        .header(hyper::header::ACCEPT, "application/json")
        .body(Empty::new())
        .map_err(|e| JwksError::Request(e.to_string()))?;
    let body = tokio::time::timeout(FETCH_TIMEOUT, async {
        let response = client
            .request(request)
            .await
            .map_err(|e| JwksError::Request(e.to_string()))?;
        if response.status() != hyper::StatusCode::OK {
            return Err(JwksError::Status(response.status().as_u16()));
        }
        Limited::new(response.into_body(), MAX_BYTES)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| JwksError::Request(e.to_string()))
    })
    .await
    .map_err(|_| JwksError::Timeout)??;
    Ok(herald_core::keys::KeyRing::from_json(&body)?)
}

/// Keeps the node's remote keys fresh until shutdown.
pub async fn keep_fresh(app: Arc<AppState>, url: String, every: Duration) {
    let mut last_asked: Option<tokio::time::Instant> = None;
    loop {
        match fetch(&url).await {
            Ok(keys) => {
                info!(url = %url, keys = keys.len(), "jwks read");
                app.auth.set_remote_keys(&keys);
            }
            Err(e) => {
                warn!(url = %url, error = %e, "jwks read failed; keeping the keys there are");
                herald_core::stats::error("jwks_failed");
            }
        }
        let next = tokio::time::Instant::now() + every;
        tokio::select! {
            () = app.shutdown.cancelled() => return,
            () = tokio::time::sleep_until(next) => {}
            () = app.auth.unknown_kid() => {
                // Asked by a token: soon, but not more often than every MIN_GAP.
                let at = last_asked.map_or_else(tokio::time::Instant::now, |t| t + MIN_GAP);
                tokio::select! {
                    () = app.shutdown.cancelled() => return,
                    () = tokio::time::sleep_until(at.min(next)) => {}
                }
                last_asked = Some(tokio::time::Instant::now());
            }
        }
    }
}
