//! Tokens signed by an identity provider's keys, read from its JWKS URL: RS256, ES256 and EdDSA
//! tokens open sockets; when the provider rotates its key, the first token of the new key is
//! accepted without a restart (the unknown `kid` makes Herald read the JWKS again) and the old key
//! stops working; `nbf` ahead and a wrong `aud` are refused with their reasons.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use herald_server::ServerConfig;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use parking_lot::Mutex;
use serde_json::{Value, json};

fn private(alg: Algorithm, file: &str) -> EncodingKey {
    let path = format!(
        "{}/../herald-core/tests/keys/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let pem = std::fs::read(path).unwrap();
    match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem).unwrap(),
        _ => EncodingKey::from_rsa_pem(&pem).unwrap(),
    }
}

fn jwks(keys: &[(Algorithm, &str, &str)]) -> Vec<u8> {
    let keys = keys
        .iter()
        .map(|(alg, file, kid)| {
            let mut jwk = Jwk::from_encoding_key(&private(*alg, file), *alg).unwrap();
            jwk.common.key_id = Some((*kid).to_owned());
            jwk
        })
        .collect();
    serde_json::to_vec(&JwkSet { keys }).unwrap()
}

fn token(alg: Algorithm, file: &str, kid: &str, extra: Value) -> String {
    let mut claims =
        json!({"role": "authenticated", "sub": "u1", "aud": "realtime", "exp": now() + 600});
    if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, &claims, &private(alg, file)).unwrap()
}

/// An identity provider's key endpoint: serves whatever set it holds, counting reads.
struct Provider {
    url: String,
    set: Arc<Mutex<Vec<u8>>>,
    reads: Arc<AtomicUsize>,
}

async fn provider(initial: Vec<u8>) -> Provider {
    let set = Arc::new(Mutex::new(initial));
    let reads = Arc::new(AtomicUsize::new(0));
    let (s, r) = (set.clone(), reads.clone());
    let app = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let (s, r) = (s.clone(), r.clone());
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                let body = s.lock().clone();
                ([("content-type", "application/json")], body)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Provider {
        url: format!("http://{addr}/.well-known/jwks.json"),
        set,
        reads,
    }
}

async fn handshake(server: &Server, token: &str) -> Result<(), (u16, String)> {
    let url = server.url(token, "2.0.0");
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => Ok(()),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err((
            resp.status().as_u16(),
            resp.body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default(),
        )),
        Err(e) => panic!("handshake failed: {e}"),
    }
}

#[tokio::test]
async fn provider_keys_verify_tokens_and_a_rotation_needs_no_restart() {
    let idp = provider(jwks(&[
        (Algorithm::RS256, "rsa.key", "r1"),
        (Algorithm::ES256, "ec.key", "e1"),
        (Algorithm::EdDSA, "ed.key", "d1"),
    ]))
    .await;
    let mut config = ServerConfig::local(SECRET);
    config.jwks_url = Some(idp.url.clone());
    config.token_rules.remote_keys = true;
    config.token_rules.audience = vec!["realtime".into()];
    let server = Server::with_config(config, None).await;

    for (alg, file, kid) in [
        (Algorithm::RS256, "rsa.key", "r1"),
        (Algorithm::ES256, "ec.key", "e1"),
        (Algorithm::EdDSA, "ed.key", "d1"),
    ] {
        let t = token(alg, file, kid, json!({}));
        handshake(&server, &t)
            .await
            .unwrap_or_else(|e| panic!("{alg:?}: {e:?}"));
    }
    let reads = idp.reads.load(Ordering::SeqCst);
    assert!(reads >= 1);

    // The provider rotates to a new key: its first token gets in, without a restart.
    *idp.set.lock() = jwks(&[(Algorithm::RS256, "rsa2.key", "r2")]);
    let rotated = token(Algorithm::RS256, "rsa2.key", "r2", json!({}));
    handshake(&server, &rotated).await.unwrap();
    assert!(idp.reads.load(Ordering::SeqCst) > reads);
    // The old key is gone from the set, so its tokens no longer verify.
    let (status, body) = handshake(
        &server,
        &token(Algorithm::RS256, "rsa.key", "r1", json!({})),
    )
    .await
    .unwrap_err();
    assert_eq!(status, 401);
    assert!(body.contains("No key to verify the token"), "{body}");

    // A token not valid yet, and one for another audience.
    let early = token(
        Algorithm::RS256,
        "rsa2.key",
        "r2",
        json!({"nbf": now() + 3_600}),
    );
    let (status, body) = handshake(&server, &early).await.unwrap_err();
    assert_eq!(status, 401);
    assert!(body.contains("Token is not valid yet"), "{body}");
    let other = token(
        Algorithm::RS256,
        "rsa2.key",
        "r2",
        json!({"aud": "billing"}),
    );
    let (status, body) = handshake(&server, &other).await.unwrap_err();
    assert_eq!(status, 401);
    assert!(body.contains("audience"), "{body}");
    // Forged kids do not make Herald read the set more than once per gap.
    let before = idp.reads.load(Ordering::SeqCst);
    let start = std::time::Instant::now();
    let forged = (0..20).map(|i| {
        let t = token(
            Algorithm::RS256,
            "rsa2.key",
            &format!("forged-{i}"),
            json!({}),
        );
        let server = &server;
        async move { handshake(server, &t).await }
    });
    for refused in futures_util::future::join_all(forged).await {
        assert_eq!(refused.unwrap_err().0, 401);
    }
    let gaps = start.elapsed().as_secs_f64() / herald_server::jwks::MIN_GAP.as_secs_f64();
    let extra = idp.reads.load(Ordering::SeqCst) - before;
    assert!(
        (extra as f64) <= gaps.ceil() + 1.0,
        "{extra} reads in {gaps:.1} gaps"
    );
}
