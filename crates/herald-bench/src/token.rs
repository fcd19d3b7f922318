//! The API key the benchmark presents: `--token`, else `HERALD_BENCH_TOKEN`, else a `service_role`
//! HS256 token minted from `HERALD_JWT_SECRET`; and the per-client tokens with claims of their own
//! that the `pg` scenario mints from that secret.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

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

#[derive(Serialize)]
struct Claims<'a> {
    role: &'a str,
    iat: u64,
    exp: u64,
    #[serde(flatten)]
    extra: &'a serde_json::Map<String, serde_json::Value>,
}

/// Picks the token from the flag, then the environment.
pub fn resolve(flag: Option<&str>) -> Result<String, TokenError> {
    let env = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
    if let Some(t) = flag.filter(|t| !t.is_empty()) {
        return Ok(t.to_owned());
    }
    if let Some(t) = env(TOKEN_ENV) {
        return Ok(t);
    }
    match secret() {
        Some(secret) => mint(&secret, "service_role", unix_now_secs()),
        None => Err(TokenError::Missing),
    }
}

/// The server's HS256 secret from `HERALD_JWT_SECRET`, if set and not empty.
pub fn secret() -> Option<String> {
    std::env::var(SECRET_ENV).ok().filter(|v| !v.is_empty())
}

/// An HS256 token with claims `role`, `iat` = `now` and `exp` two days later.
pub fn mint(secret: &str, role: &str, now: u64) -> Result<String, TokenError> {
    mint_with(secret, role, now, &serde_json::Map::new())
}

/// Like [`mint`], with the claims of `extra` besides (`role`, `iat` and `exp` in `extra` are
/// ignored).
pub fn mint_with(
    secret: &str,
    role: &str,
    now: u64,
    extra: &serde_json::Map<String, serde_json::Value>,
) -> Result<String, TokenError> {
    let mut extra = extra.clone();
    for reserved in ["role", "iat", "exp"] {
        extra.remove(reserved);
    }
    let claims = Claims {
        role,
        iat: now,
        exp: now + MINTED_LIFETIME_SECS,
        extra: &extra,
    };
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    Ok(jsonwebtoken::encode(&header, &claims, &key)?)
}

/// Wall-clock seconds since 1970.
pub fn unix_now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_token_carries_extra_claims() {
        let mut extra = serde_json::Map::new();
        extra.insert("sub".into(), "bench-g3".into());
        extra.insert("grp".into(), 3.into());
        extra.insert("role".into(), "service_role".into());
        let token = mint_with("s3cret", "authenticated", 1_000, &extra).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["exp"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(b"s3cret"),
            &validation,
        )
        .unwrap();
        assert_eq!(data.claims["role"], "authenticated");
        assert_eq!(data.claims["sub"], "bench-g3");
        assert_eq!(data.claims["grp"], 3);
        assert_eq!(data.claims["iat"], 1_000);
    }

    #[test]
    fn flag_wins() {
        assert_eq!(resolve(Some("abc")).unwrap(), "abc");
    }
}
