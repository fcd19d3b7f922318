//! Token verification and minting, and the error texts clients see. Tokens are signed with the
//! shared secret (HS256/384/512) or with a public key of the node's [`KeyRing`] (RS256/384/512,
//! PS256/384/512, ES256/384, EdDSA), chosen by the token's `kid`; the ring can be replaced while
//! the node runs (keys from a JWKS URL), and an unknown `kid` asks for a refresh.
//!
//! A token must carry `role` and `exp`; `exp` must be in the future, `nbf` (if any) not ahead by
//! more than the leeway, and `iss` and `aud` must match when the node names them. The texts of
//! [`AuthError`] are the ones `@supabase/realtime-js` users already know from Supabase Realtime.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;
use tokio::sync::Notify;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};
use thiserror::Error;

use crate::keys::KeyRing;

/// Roles with a meaning to Herald.
pub mod roles {
    /// The public, anonymous role.
    pub const ANON: &str = "anon";
    /// A signed-in user.
    pub const AUTHENTICATED: &str = "authenticated";
    /// The server's own role: may do anything.
    pub const SERVICE_ROLE: &str = "service_role";
}

/// Verified claims of a token.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    /// The `role` claim.
    pub role: String,
    /// The `exp` claim (seconds since the Unix epoch).
    pub exp: u64,
    /// The `sub` claim, when present.
    pub sub: Option<String>,
    /// Every claim, for policies.
    pub all: Map<String, Value>,
}

impl Claims {
    /// Seconds until the token expires (0 when already expired).
    pub fn seconds_left(&self, now: u64) -> u64 {
        self.exp.saturating_sub(now)
    }

    /// When a connection holding these claims must end, from `now` (monotonic) and `unix` (the
    /// wall clock). An `exp` beyond a century is held as a century: an `Instant` cannot reach as far
    /// as any `u64`.
    pub fn expiry(&self, now: tokio::time::Instant, unix: u64) -> tokio::time::Instant {
        const CENTURY_SECS: u64 = 100 * 365 * 24 * 3600;
        let left = std::time::Duration::from_secs(self.seconds_left(unix).min(CENTURY_SECS));
        now.checked_add(left).unwrap_or(now)
    }

    /// The claims Herald's policies use (role, exp, sub), without the full claim set: what a
    /// long-lived connection keeps.
    pub fn compact(mut self) -> Claims {
        self.all = Map::new();
        self
    }

    /// True for the service role, which passes every channel policy.
    pub fn is_service(&self) -> bool {
        self.role == roles::SERVICE_ROLE
    }
}

/// Why a token was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No token was given.
    #[error("API key is missing")]
    Missing,
    /// The token's `exp` has passed.
    #[error("Token has expired {ago} seconds ago")]
    Expired {
        /// How long ago it expired, in seconds.
        ago: u64,
    },
    /// `role` or `exp` is missing.
    #[error("Fields `role` and `exp` are required in JWT")]
    MissingClaims,
    /// Not a JWT at all.
    #[error("The token provided is not a valid JWT")]
    Malformed,
    /// The signature does not verify with the configured secret.
    #[error("Failed to validate JWT signature")]
    BadSignature,
    /// The token's `nbf` (not before) is still ahead, past the leeway.
    #[error("Token is not valid yet: nbf is {ahead} seconds from now")]
    NotYetValid {
        /// How far ahead `nbf` is, in seconds.
        ahead: u64,
    },
    /// The token is signed with a public-key algorithm, and no key of the node fits it.
    #[error("No key to verify the token signed with {alg} (kid: {kid})")]
    UnknownKey {
        /// The token's algorithm.
        alg: String,
        /// The token's `kid`, or `none`.
        kid: String,
    },
    /// The node names an audience and the token's `aud` does not include it.
    #[error("The token's audience (aud) is not accepted here")]
    WrongAudience,
    /// The node names an issuer and the token's `iss` is another.
    #[error("The token's issuer (iss) is not accepted here")]
    WrongIssuer,
}

/// Clock difference tolerated between the token's issuer and this node for `nbf`, in seconds, by
/// default.
pub const NBF_LEEWAY_SECS: u64 = 30;

impl AuthError {
    /// The `error` text of a refused WebSocket handshake (HTTP 401).
    pub fn handshake_message(&self) -> String {
        match self {
            AuthError::Expired { .. } => "Token has expired".to_owned(),
            other => other.to_string(),
        }
    }

    /// The `reason` of a refused join: `Code: message`.
    pub fn join_reason(&self) -> String {
        let code = match self {
            AuthError::Missing
            | AuthError::Expired { .. }
            | AuthError::MissingClaims
            | AuthError::NotYetValid { .. }
            | AuthError::WrongAudience
            | AuthError::WrongIssuer => "InvalidJWTToken",
            AuthError::Malformed => "MalformedJWT",
            AuthError::BadSignature | AuthError::UnknownKey { .. } => "JwtSignatureError",
        };
        format!("{code}: {self}")
    }

    /// A short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            AuthError::Missing => "token_missing",
            AuthError::Expired { .. } => "token_expired",
            AuthError::MissingClaims => "token_claims_missing",
            AuthError::Malformed => "token_malformed",
            AuthError::BadSignature => "token_bad_signature",
            AuthError::NotYetValid { .. } => "token_not_yet_valid",
            AuthError::UnknownKey { .. } => "token_unknown_key",
            AuthError::WrongAudience => "token_wrong_audience",
            AuthError::WrongIssuer => "token_wrong_issuer",
        }
    }
}

/// Errors minting a token.
#[derive(Debug, Error)]
pub enum MintError {
    /// The signing library refused.
    #[error("could not sign the token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// What a node accepts beyond its shared secret.
#[derive(Debug, Clone)]
pub struct TokenRules {
    /// Public keys from configuration (a PEM, JWK or JWKS file).
    pub keys: KeyRing,
    /// The `iss` every token must carry, if set.
    pub issuer: Option<String>,
    /// Audiences of which a token's `aud` must name one, if any are set.
    pub audience: Vec<String>,
    /// Seconds `nbf` may be ahead of this node's clock.
    pub leeway_secs: u64,
    /// Keys also come from a remote source (a JWKS URL) that [`Authenticator::set_remote_keys`]
    /// feeds: a token with an unknown `kid` may then wait for it in [`Authenticator::verify_fresh`].
    pub remote_keys: bool,
}

impl Default for TokenRules {
    fn default() -> Self {
        TokenRules {
            keys: KeyRing::empty(),
            issuer: None,
            audience: Vec::new(),
            leeway_secs: NBF_LEEWAY_SECS,
            remote_keys: false,
        }
    }
}

/// Verifies tokens (shared secret or public keys) and mints them (shared secret).
pub struct Authenticator {
    secret: DecodingKey,
    encoding: EncodingKey,
    rules: TokenRules,
    /// The configured keys and, once fetched, the remote ones.
    ring: RwLock<Arc<KeyRing>>,
    /// Notified when a token names a `kid` no key has (the key source may have rotated).
    unknown_kid: Notify,
    /// Notified (all waiters) when the remote keys are replaced.
    keys_changed: Notify,
    /// What `jsonwebtoken` checks itself, per family of algorithms (HMAC, RSA, EC, Ed): the
    /// signature, with the algorithm the token names. `exp`, `nbf`, `iss` and `aud` are checked
    /// here, with Supabase's texts. Built once: a verification allocates no rules.
    validations: [Validation; 4],
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A number claim (`exp`, `nbf`) as whole seconds; a fraction is cut, a negative one is 0.
fn seconds(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_f64().map(|f| f.max(0.0) as u64))
}

impl Authenticator {
    /// An authenticator for an HMAC secret alone.
    pub fn new(secret: &[u8]) -> Authenticator {
        Authenticator::with_rules(secret, TokenRules::default())
    }

    /// An authenticator for an HMAC secret and the given keys and checks.
    pub fn with_rules(secret: &[u8], rules: TokenRules) -> Authenticator {
        Authenticator {
            secret: DecodingKey::from_secret(secret),
            encoding: EncodingKey::from_secret(secret),
            ring: RwLock::new(Arc::new(rules.keys.clone())),
            rules,
            unknown_kid: Notify::new(),
            keys_changed: Notify::new(),
            validations: [
                vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
                vec![
                    Algorithm::RS256,
                    Algorithm::RS384,
                    Algorithm::RS512,
                    Algorithm::PS256,
                    Algorithm::PS384,
                    Algorithm::PS512,
                ],
                vec![Algorithm::ES256, Algorithm::ES384],
                vec![Algorithm::EdDSA],
            ]
            .map(|algorithms| {
                let mut v = Validation::new(algorithms[0]);
                v.algorithms = algorithms;
                v.validate_exp = false;
                v.validate_nbf = false;
                v.validate_aud = false;
                v.required_spec_claims = HashSet::new();
                v
            }),
        }
    }

    /// Replaces the remote keys (a fresh JWKS); the configured ones stay.
    pub fn set_remote_keys(&self, remote: &KeyRing) {
        *self.ring.write() = Arc::new(self.rules.keys.merged(remote));
        self.keys_changed.notify_waiters();
    }

    /// Verifies a token now; when it names a `kid` no key has and keys come from a remote source,
    /// waits (at most `wait`) for the source to be read again, then tries once more. For handshakes,
    /// so that the first client of a rotated key is not refused.
    pub async fn verify_fresh(
        &self,
        token: &str,
        wait: std::time::Duration,
    ) -> Result<Claims, AuthError> {
        let changed = self.keys_changed.notified();
        match self.verify(token) {
            Err(AuthError::UnknownKey { kid, .. }) if self.rules.remote_keys && kid != "none" => {
                let _ = tokio::time::timeout(wait, changed).await;
                self.verify(token)
            }
            other => other,
        }
    }

    /// Resolves when a token named a `kid` that no key has.
    pub async fn unknown_kid(&self) {
        self.unknown_kid.notified().await;
    }

    /// Verifies a token now.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify_at(token, unix_now())
    }

    /// Verifies a token as of `now` (seconds since the Unix epoch).
    pub fn verify_at(&self, token: &str, now: u64) -> Result<Claims, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        let alg = header.alg;
        let ring = self.ring.read().clone();
        let key = if alg.family() == AlgorithmFamily::Hmac {
            &self.secret
        } else {
            match ring.find(alg, header.kid.as_deref()) {
                Some(k) => k.decoding_key(),
                None => {
                    if header.kid.is_some() {
                        self.unknown_kid.notify_one();
                    }
                    return Err(AuthError::UnknownKey {
                        alg: format!("{alg:?}"),
                        kid: header.kid.unwrap_or_else(|| "none".to_owned()),
                    });
                }
            }
        };
        // The key was chosen by the token's algorithm above (the secret only for HMAC).
        let validation = match alg.family() {
            AlgorithmFamily::Hmac => &self.validations[0],
            AlgorithmFamily::Rsa => &self.validations[1],
            AlgorithmFamily::Ec => &self.validations[2],
            _ => &self.validations[3],
        };
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, validation).map_err(
            |e| match e.kind() {
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidAlgorithm
                | ErrorKind::InvalidKeyFormat
                | ErrorKind::InvalidEcdsaKey
                | ErrorKind::InvalidRsaKey(_) => AuthError::BadSignature,
                _ => AuthError::Malformed,
            },
        )?;
        let all = data.claims;
        let role = all.get("role").and_then(Value::as_str).map(str::to_owned);
        let exp = all.get("exp").and_then(seconds);
        let (Some(role), Some(exp)) = (role, exp) else {
            return Err(AuthError::MissingClaims);
        };
        if role.is_empty() {
            return Err(AuthError::MissingClaims);
        }
        if let Some(iat) = all.get("iat")
            && !iat.is_number()
        {
            return Err(AuthError::Malformed);
        }
        if exp <= now {
            return Err(AuthError::Expired { ago: now - exp });
        }
        if let Some(nbf) = all.get("nbf") {
            let nbf = seconds(nbf).ok_or(AuthError::Malformed)?;
            if nbf > now.saturating_add(self.rules.leeway_secs) {
                return Err(AuthError::NotYetValid { ahead: nbf - now });
            }
        }
        if let Some(issuer) = &self.rules.issuer
            && all.get("iss").and_then(Value::as_str) != Some(issuer.as_str())
        {
            return Err(AuthError::WrongIssuer);
        }
        if !self.rules.audience.is_empty() {
            let named = |a: &str| self.rules.audience.iter().any(|want| want == a);
            let ok = match all.get("aud") {
                Some(Value::String(a)) => named(a),
                Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(named),
                _ => false,
            };
            if !ok {
                return Err(AuthError::WrongAudience);
            }
        }
        let sub = all.get("sub").and_then(Value::as_str).map(str::to_owned);
        Ok(Claims {
            role,
            exp,
            sub,
            all,
        })
    }

    /// Mints an HS256 token for `role`, valid for `ttl_secs`.
    pub fn mint(&self, role: &str, sub: Option<&str>, ttl_secs: u64) -> Result<String, MintError> {
        let now = unix_now();
        let mut claims = Map::new();
        claims.insert("role".to_owned(), Value::from(role));
        claims.insert("iat".to_owned(), Value::from(now));
        claims.insert("exp".to_owned(), Value::from(now.saturating_add(ttl_secs)));
        claims.insert("iss".to_owned(), Value::from("herald"));
        if let Some(sub) = sub {
            claims.insert("sub".to_owned(), Value::from(sub));
        }
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sign(secret: &[u8], claims: Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    #[test]
    fn verifies_minted_tokens() {
        let a = Authenticator::new(b"secret-secret-secret-secret-1234");
        let t = a.mint("anon", Some("u1"), 60).unwrap();
        let c = a.verify(&t).unwrap();
        assert_eq!(c.role, "anon");
        assert_eq!(c.sub.as_deref(), Some("u1"));
    }

    #[test]
    fn nbf_in_the_future_is_refused_past_the_leeway_and_a_far_exp_is_held() {
        let a = Authenticator::new(b"k");
        let now = 1_800_000_000;
        let early = sign(
            b"k",
            json!({"role":"anon","exp": now + 600, "nbf": now + 120}),
        );
        assert_eq!(
            a.verify_at(&early, now),
            Err(AuthError::NotYetValid { ahead: 120 })
        );
        assert_eq!(
            a.verify_at(&early, now).unwrap_err().join_reason(),
            "InvalidJWTToken: Token is not valid yet: nbf is 120 seconds from now"
        );
        // Within the leeway, and once the time has come.
        assert!(a.verify_at(&early, now + 100).is_ok());
        assert!(a.verify_at(&early, now + 120).is_ok());
        let bad = sign(b"k", json!({"role":"anon","exp": now + 600, "nbf": "soon"}));
        assert_eq!(a.verify_at(&bad, now), Err(AuthError::Malformed));
        // An exp as far as u64 goes verifies, and its expiry is a reachable instant.
        let far = sign(b"k", json!({"role":"anon","exp": u64::MAX}));
        let claims = a.verify_at(&far, now).unwrap();
        let start = tokio::time::Instant::now();
        assert!(claims.expiry(start, now) > start + std::time::Duration::from_secs(3_000_000_000));
        let far_float = sign(b"k", json!({"role":"anon","exp": 1e300}));
        assert!(a.verify_at(&far_float, now).is_ok());
    }

    #[test]
    fn refusals_carry_the_known_texts() {
        let a = Authenticator::new(b"k");
        assert_eq!(a.verify(""), Err(AuthError::Missing));
        assert_eq!(a.verify("abc"), Err(AuthError::Malformed));
        let forged = sign(b"other", json!({"role":"anon","exp": unix_now() + 60}));
        assert_eq!(a.verify(&forged), Err(AuthError::BadSignature));
        let no_role = sign(b"k", json!({"exp": unix_now() + 60}));
        assert_eq!(a.verify(&no_role), Err(AuthError::MissingClaims));
        let expired = sign(b"k", json!({"role":"anon","exp": 1000}));
        assert_eq!(
            a.verify_at(&expired, 1010),
            Err(AuthError::Expired { ago: 10 })
        );
        assert_eq!(
            AuthError::Expired { ago: 10 }.join_reason(),
            "InvalidJWTToken: Token has expired 10 seconds ago"
        );
        assert_eq!(
            AuthError::Expired { ago: 10 }.handshake_message(),
            "Token has expired"
        );
        assert_eq!(
            AuthError::MissingClaims.join_reason(),
            "InvalidJWTToken: Fields `role` and `exp` are required in JWT"
        );
        assert_eq!(
            AuthError::Malformed.join_reason(),
            "MalformedJWT: The token provided is not a valid JWT"
        );
        assert_eq!(
            AuthError::BadSignature.join_reason(),
            "JwtSignatureError: Failed to validate JWT signature"
        );
    }
}
