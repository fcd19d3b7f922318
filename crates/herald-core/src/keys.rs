//! Public keys tokens may be signed with (RSA, EC and Ed25519): read from a PEM file, a JWK or a JWK
//! set, and chosen for a token by its `kid` and algorithm. Parsing and verification are
//! `jsonwebtoken`'s; this module only keeps the keys and picks one.

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use thiserror::Error;

/// A kind of public key; an algorithm can only use keys of its own kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RS256/384/512, PS256/384/512.
    Rsa,
    /// ES256, ES384.
    Ec,
    /// EdDSA (Ed25519).
    Ed,
}

impl KeyKind {
    /// The kind of public key an algorithm verifies with; `None` for HMAC (the shared secret) and
    /// for any algorithm a later `jsonwebtoken` adds.
    pub fn of(alg: Algorithm) -> Option<KeyKind> {
        match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => None,
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => Some(KeyKind::Rsa),
            Algorithm::ES256 | Algorithm::ES384 => Some(KeyKind::Ec),
            Algorithm::EdDSA => Some(KeyKind::Ed),
            _ => None,
        }
    }
}

/// Reads a PEM public key of one kind.
type PemReader = fn(&[u8]) -> jsonwebtoken::errors::Result<DecodingKey>;

/// One public key.
#[derive(Clone)]
pub struct PublicKey {
    /// Its `kid`, if it has one.
    pub kid: Option<String>,
    /// The one algorithm it is for, when its JWK names one.
    pub alg: Option<Algorithm>,
    /// Its kind.
    pub kind: KeyKind,
    key: DecodingKey,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl PublicKey {
    /// The key, for `jsonwebtoken::decode`.
    pub fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }
}

/// Why keys could not be read.
#[derive(Debug, Error)]
pub enum KeyError {
    /// Neither a PEM public key nor JSON.
    #[error("not a PEM public key (RSA, EC or Ed25519), a JWK or a JWK set")]
    Unrecognised,
    /// JSON, but not a JWK or a JWK set.
    #[error("not a JWK or a JWK set: {0}")]
    Json(String),
    /// A JWK set without one key Herald can use.
    #[error("no usable signing key (RSA, EC P-256/P-384 or Ed25519) in the JWK set")]
    NoUsableKey,
}

/// A set of public keys.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    keys: Vec<PublicKey>,
}

impl KeyRing {
    /// No keys.
    pub fn empty() -> KeyRing {
        KeyRing::default()
    }

    /// Keys from the text of a file: a PEM public key, a JWK, or a JWK set.
    pub fn parse(text: &[u8]) -> Result<KeyRing, KeyError> {
        let trimmed = text.trim_ascii_start();
        if trimmed.starts_with(b"{") {
            return KeyRing::from_json(trimmed);
        }
        let attempts: [(KeyKind, PemReader); 3] = [
            (KeyKind::Rsa, DecodingKey::from_rsa_pem),
            (KeyKind::Ec, DecodingKey::from_ec_pem),
            (KeyKind::Ed, DecodingKey::from_ed_pem),
        ];
        for (kind, parse) in attempts {
            if let Ok(key) = parse(text) {
                return Ok(KeyRing {
                    keys: vec![PublicKey {
                        kid: None,
                        alg: None,
                        kind,
                        key,
                    }],
                });
            }
        }
        Err(KeyError::Unrecognised)
    }

    /// Keys from a JWK or a JWK set (`{"keys": [...]}`). Keys for encryption, symmetric keys and
    /// keys of an unsupported kind are left out; a set with no usable key is an error.
    pub fn from_json(text: &[u8]) -> Result<KeyRing, KeyError> {
        let value: serde_json::Value =
            serde_json::from_slice(text).map_err(|e| KeyError::Json(e.to_string()))?;
        let jwks: Vec<Jwk> = if value.get("keys").is_some() {
            serde_json::from_value::<JwkSet>(value)
                .map_err(|e| KeyError::Json(e.to_string()))?
                .keys
        } else {
            vec![serde_json::from_value::<Jwk>(value).map_err(|e| KeyError::Json(e.to_string()))?]
        };
        let keys: Vec<PublicKey> = jwks.iter().filter_map(from_jwk).collect();
        if keys.is_empty() {
            return Err(KeyError::NoUsableKey);
        }
        Ok(KeyRing { keys })
    }

    /// Both sets together.
    pub fn merged(&self, other: &KeyRing) -> KeyRing {
        KeyRing {
            keys: self.keys.iter().chain(&other.keys).cloned().collect(),
        }
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True without keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key for a token signed with `alg` and naming `kid`: one of the algorithm's kind (and, if
    /// the key names an algorithm, that one) whose `kid` matches. A token without a `kid` may use a
    /// key only when it is the one key of that kind.
    pub fn find(&self, alg: Algorithm, kid: Option<&str>) -> Option<&PublicKey> {
        let kind = KeyKind::of(alg)?;
        let mut fits = self
            .keys
            .iter()
            .filter(|k| k.kind == kind && k.alg.is_none_or(|a| a == alg));
        match kid {
            Some(kid) => fits.find(|k| k.kid.as_deref() == Some(kid)),
            None => {
                let first = fits.next()?;
                fits.next().is_none().then_some(first)
            }
        }
    }
}

fn from_jwk(jwk: &Jwk) -> Option<PublicKey> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyKind::Rsa,
        AlgorithmParameters::EllipticCurve(_) => KeyKind::Ec,
        AlgorithmParameters::OctetKeyPair(_) => KeyKind::Ed,
        _ => return None,
    };
    let alg = match jwk.common.key_algorithm {
        Some(a) => Some(Algorithm::try_from(a).ok()?),
        None => None,
    };
    if alg.is_some_and(|a| KeyKind::of(a) != Some(kind)) {
        return None;
    }
    Some(PublicKey {
        kid: jwk.common.key_id.clone(),
        alg,
        kind,
        key: DecodingKey::from_jwk(jwk).ok()?,
    })
}
