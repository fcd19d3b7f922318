//! Which browser pages may use Herald: `allowed_origins` (when set, a WebSocket upgrade or an SSE
//! request from any other origin is refused), and when a cookie may stand for the user (a request
//! from the same origin, from no browser page, or from an origin the node lists). A page of
//! another site therefore cannot open a stream with the user's cookie, whatever `cors_origins` says.

use axum::http::{HeaderMap, header};

use crate::config::ServerConfig;

/// The `Origin` header, if the request has one.
fn origin(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
}

/// True when `origin` (`scheme://host[:port]`) names the host the request was sent to.
fn same_origin(origin: &str, headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let bare = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .unwrap_or(origin);
    bare.eq_ignore_ascii_case(host)
}

/// Why a request's origin is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Origin not allowed: {0}")]
pub struct OriginRefused(pub String);

/// Checks the origin of a WebSocket upgrade or an SSE request against `allowed_origins`. Requests
/// without an `Origin` (not from a browser page) and same-origin ones always pass.
pub fn check(config: &ServerConfig, headers: &HeaderMap) -> Result<(), OriginRefused> {
    if config.allowed_origins.is_empty() {
        return Ok(());
    }
    match origin(headers) {
        None => Ok(()),
        Some(o) if same_origin(o, headers) || config.allowed_origins.iter().any(|a| a == o) => {
            Ok(())
        }
        Some(o) => Err(OriginRefused(o.to_owned())),
    }
}

/// True when a cookie on this request may be taken as the user's token: no `Origin` (the same
/// page or not a browser), the same origin, or an origin listed in `allowed_origins` or (by name,
/// not `*`) in `cors_origins`.
pub fn cookie_allowed(config: &ServerConfig, headers: &HeaderMap) -> bool {
    match origin(headers) {
        None => true,
        Some(o) => {
            same_origin(o, headers)
                || config.allowed_origins.iter().any(|a| a == o)
                || config.cors_origins.iter().any(|a| a != "*" && a == o)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn origins_and_cookies() {
        let mut c = ServerConfig::local("s");
        let evil = headers(&[("origin", "https://evil.example"), ("host", "rt.example")]);
        let app = headers(&[("origin", "https://app.example"), ("host", "rt.example")]);
        let same = headers(&[("origin", "https://rt.example"), ("host", "rt.example")]);
        let none = headers(&[("host", "rt.example")]);
        // No list: every origin may connect, but only some may use a cookie.
        assert!(check(&c, &evil).is_ok());
        assert!(!cookie_allowed(&c, &evil));
        assert!(cookie_allowed(&c, &same) && cookie_allowed(&c, &none));
        c.allowed_origins = vec!["https://app.example".into()];
        assert_eq!(
            check(&c, &evil),
            Err(OriginRefused("https://evil.example".into()))
        );
        assert!(check(&c, &app).is_ok() && check(&c, &same).is_ok() && check(&c, &none).is_ok());
        assert!(cookie_allowed(&c, &app));
        c.allowed_origins.clear();
        c.cors_origins = vec!["https://app.example".into()];
        assert!(cookie_allowed(&c, &app));
    }
}
