//! The API key the benchmark presents: `--token`, else `HERALD_BENCH_TOKEN`, else a `service_role`
//! HS256 token minted from `HERALD_JWT_SECRET`; and the per-client tokens with claims of their own
//! that the `pg` scenario mints from that secret.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// Environment variable holding a ready-made token.
pub const TOKEN_ENV: &str = "HERALD_BENCH_TOKEN";
/// Environment variable holding the server's HS256 secret.
pub const SECRET_ENV: &str = "HERALD_JWT_SECRET";
/// How long a minted token stays valid: longer than any run the tool allows.
const MINTED_LIFETIME_SECS: u64 = 2 * 24 * 3600;

/// No token could be found or made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Neither `--token`, `HERALD_BENCH_TOKEN` nor `HERALD_JWT_SECRET` was given.
    #[error("no token: pass --token, or set {TOKEN_ENV}, or set {SECRET_ENV} to mint one")]
    Missing,
    /// Signing failed.
    #[error("cannot mint a token: {0}")]
    Mint(#[from] jsonwebtoken::errors::Error),
}

/// Picks the token from the flag, then the environment.
pub fn resolve(flag: Option<&str>) -> Result<String, TokenError> {
    let env = std::env::var(TOKEN_ENV).ok().filter(|v| !v.is_empty());
    match (flag.filter(|t| !t.is_empty()), env, secret()) {
        (Some(t), _, _) => Ok(t.to_owned()),
        (None, Some(t), _) => Ok(t),
        (None, None, Some(secret)) => mint(&secret, "service_role", unix_now_secs(), json!({})),
        (None, None, None) => Err(TokenError::Missing),
    }
}

/// The server's HS256 secret from `HERALD_JWT_SECRET`, if set and not empty.
pub fn secret() -> Option<String> {
    std::env::var(SECRET_ENV).ok().filter(|v| !v.is_empty())
}

/// An HS256 token with the claims of the object `extra` and `role`, `iat` = `now` and `exp` two
/// days later.
pub fn mint(secret: &str, role: &str, now: u64, mut extra: Value) -> Result<String, TokenError> {
    let claims = json!({"role": role, "iat": now, "exp": now + MINTED_LIFETIME_SECS});
    if let (Some(extra), Value::Object(claims)) = (extra.as_object_mut(), claims.clone()) {
        extra.extend(claims);
    }
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    Ok(jsonwebtoken::encode(&header, &extra, &key)?)
}

/// Wall-clock seconds since 1970.
pub fn unix_now_secs() -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH);
    now.map_or(0, |d| d.as_secs())
}
