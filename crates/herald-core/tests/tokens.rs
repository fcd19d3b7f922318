//! Tokens signed with public keys (RS256, PS256, ES256, EdDSA), from a PEM file or a JWK set chosen
//! by `kid`; key rotation without a restart; `iss` and `aud` checks; and the attacks on the
//! algorithm a verifier must refuse. The keys in `tests/keys/` exist for these tests only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use herald_core::auth::{AuthError, Authenticator, TokenRules, unix_now};
use herald_core::keys::KeyRing;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const SECRET: &[u8] = b"shared-secret-shared-secret-0123";

fn key(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn private(alg: Algorithm, file: &str) -> EncodingKey {
    let pem = key(file);
    match alg {
        Algorithm::RS256 | Algorithm::PS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem).unwrap(),
        other => panic!("no test key for {other:?}"),
    }
}

fn claims() -> Value {
    json!({"role": "authenticated", "sub": "u1", "exp": unix_now() + 600})
}

fn sign(alg: Algorithm, file: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &private(alg, file)).unwrap()
}

/// A JWK set of the public halves of `keys` (algorithm, private key file, kid).
fn jwks(keys: &[(Algorithm, &str, &str)]) -> Vec<u8> {
    let set = JwkSet {
        keys: keys
            .iter()
            .map(|(alg, file, kid)| {
                let mut jwk = Jwk::from_encoding_key(&private(*alg, file), *alg).unwrap();
                jwk.common.key_id = Some((*kid).to_owned());
                jwk
            })
            .collect(),
    };
    serde_json::to_vec(&set).unwrap()
}

fn with_keys(keys: KeyRing) -> Authenticator {
    Authenticator::with_rules(
        SECRET,
        TokenRules {
            keys,
            ..TokenRules::default()
        },
    )
}

#[test]
fn public_key_algorithms_verify_with_a_pem_key() {
    for (alg, private_file, public_file) in [
        (Algorithm::RS256, "rsa.key", "rsa.pub"),
        (Algorithm::PS256, "rsa.key", "rsa.pub"),
        (Algorithm::ES256, "ec.key", "ec.pub"),
        (Algorithm::EdDSA, "ed.key", "ed.pub"),
    ] {
        let auth = with_keys(KeyRing::parse(&key(public_file)).unwrap());
        let c = auth
            .verify(&sign(alg, private_file, None, &claims()))
            .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(
            (c.role.as_str(), c.sub.as_deref()),
            ("authenticated", Some("u1"))
        );
        // Another key of the same kind does not verify it.
        if alg == Algorithm::RS256 {
            let forged = sign(alg, "rsa2.key", None, &claims());
            assert_eq!(auth.verify(&forged), Err(AuthError::BadSignature));
        }
        // The shared secret still works beside the key.
        assert!(auth.verify(&auth.mint("anon", None, 60).unwrap()).is_ok());
    }
}

#[test]
fn a_jwk_set_picks_the_key_by_kid() {
    let set = jwks(&[
        (Algorithm::RS256, "rsa.key", "r1"),
        (Algorithm::RS256, "rsa2.key", "r2"),
        (Algorithm::ES256, "ec.key", "e1"),
        (Algorithm::EdDSA, "ed.key", "d1"),
    ]);
    let auth = with_keys(KeyRing::parse(&set).unwrap());
    assert!(
        auth.verify(&sign(Algorithm::RS256, "rsa.key", Some("r1"), &claims()))
            .is_ok()
    );
    assert!(
        auth.verify(&sign(Algorithm::RS256, "rsa2.key", Some("r2"), &claims()))
            .is_ok()
    );
    assert!(
        auth.verify(&sign(Algorithm::ES256, "ec.key", Some("e1"), &claims()))
            .is_ok()
    );
    assert!(
        auth.verify(&sign(Algorithm::EdDSA, "ed.key", Some("d1"), &claims()))
            .is_ok()
    );
    // Signed by r2's key but naming r1: the signature does not verify.
    assert_eq!(
        auth.verify(&sign(Algorithm::RS256, "rsa2.key", Some("r1"), &claims())),
        Err(AuthError::BadSignature)
    );
    // Two RSA keys and no kid: which one is not guessed.
    assert!(matches!(
        auth.verify(&sign(Algorithm::RS256, "rsa.key", None, &claims())),
        Err(AuthError::UnknownKey { .. })
    ));
    // The key names RS256; the same key used with PS256 is refused.
    assert!(matches!(
        auth.verify(&sign(Algorithm::PS256, "rsa.key", Some("r1"), &claims())),
        Err(AuthError::UnknownKey { .. })
    ));
}

#[tokio::test]
async fn an_unknown_kid_asks_for_new_keys_and_rotation_needs_no_restart() {
    let auth = std::sync::Arc::new(with_keys(KeyRing::empty()));
    auth.set_remote_keys(&KeyRing::parse(&jwks(&[(Algorithm::RS256, "rsa.key", "old")])).unwrap());
    assert!(
        auth.verify(&sign(Algorithm::RS256, "rsa.key", Some("old"), &claims()))
            .is_ok()
    );
    let waiter = {
        let auth = auth.clone();
        tokio::spawn(async move { auth.unknown_kid().await })
    };
    tokio::task::yield_now().await;
    let rotated = sign(Algorithm::RS256, "rsa2.key", Some("new"), &claims());
    let e = auth.verify(&rotated).unwrap_err();
    assert_eq!(
        e,
        AuthError::UnknownKey {
            alg: "RS256".into(),
            kid: "new".into()
        }
    );
    assert_eq!(
        e.join_reason(),
        "JwtSignatureError: No key to verify the token signed with RS256 (kid: new)"
    );
    tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
        .await
        .expect("the key source is asked for new keys")
        .unwrap();
    auth.set_remote_keys(&KeyRing::parse(&jwks(&[(Algorithm::RS256, "rsa2.key", "new")])).unwrap());
    assert!(auth.verify(&rotated).is_ok());
    // The old key is gone with the old set.
    assert!(matches!(
        auth.verify(&sign(Algorithm::RS256, "rsa.key", Some("old"), &claims())),
        Err(AuthError::UnknownKey { .. })
    ));
}

#[test]
fn algorithm_confusion_and_alg_none_are_refused() {
    let public = key("rsa.pub");
    let auth = with_keys(KeyRing::parse(&public).unwrap());
    // HS256 "signed" with the RSA public key as the secret: verified with the real secret, refused.
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(&public),
    )
    .unwrap();
    assert_eq!(auth.verify(&confused), Err(AuthError::BadSignature));
    // An ES256 token where only an RSA key is configured.
    assert!(matches!(
        auth.verify(&sign(Algorithm::ES256, "ec.key", None, &claims())),
        Err(AuthError::UnknownKey { .. })
    ));
    // Without any public key, a public-key token is refused (not checked against the secret).
    let plain = Authenticator::new(SECRET);
    assert!(matches!(
        plain.verify(&sign(Algorithm::RS256, "rsa.key", None, &claims())),
        Err(AuthError::UnknownKey { .. })
    ));
    // `alg: none`, unsigned.
    use base64::Engine as _;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims())
    );
    assert_eq!(auth.verify(&none), Err(AuthError::Malformed));
}

#[test]
fn issuer_and_audience_are_checked_when_the_node_names_them() {
    let auth = Authenticator::with_rules(
        SECRET,
        TokenRules {
            issuer: Some("https://auth.example".into()),
            audience: vec!["authenticated".into(), "realtime".into()],
            ..TokenRules::default()
        },
    );
    let hs = |claims: Value| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    };
    let exp = unix_now() + 600;
    let ok =
        hs(json!({"role": "anon", "exp": exp, "iss": "https://auth.example", "aud": "realtime"}));
    assert!(auth.verify(&ok).is_ok());
    let listed = hs(
        json!({"role": "anon", "exp": exp, "iss": "https://auth.example", "aud": ["x", "authenticated"]}),
    );
    assert!(auth.verify(&listed).is_ok());
    let wrong_aud =
        hs(json!({"role": "anon", "exp": exp, "iss": "https://auth.example", "aud": "billing"}));
    assert_eq!(auth.verify(&wrong_aud), Err(AuthError::WrongAudience));
    let no_aud = hs(json!({"role": "anon", "exp": exp, "iss": "https://auth.example"}));
    assert_eq!(auth.verify(&no_aud), Err(AuthError::WrongAudience));
    let wrong_iss =
        hs(json!({"role": "anon", "exp": exp, "iss": "https://evil.example", "aud": "realtime"}));
    assert_eq!(auth.verify(&wrong_iss), Err(AuthError::WrongIssuer));
    assert_eq!(
        AuthError::WrongAudience.join_reason(),
        "InvalidJWTToken: The token's audience (aud) is not accepted here"
    );
}

#[test]
fn key_files_that_are_not_keys_say_so() {
    assert!(KeyRing::parse(b"hello").is_err());
    assert!(KeyRing::parse(b"{\"keys\": []}").is_err());
    let e = KeyRing::parse(b"{\"keys\": [{\"kty\": \"oct\", \"k\": \"c2VjcmV0\"}]}").unwrap_err();
    assert!(e.to_string().contains("no usable signing key"), "{e}");
    assert!(KeyRing::parse(b"{ not json").is_err());
}
