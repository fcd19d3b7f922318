//! Where an HTTP request carries its token: `Authorization: Bearer`, an `apikey` header, a query
//! parameter, or a cookie. One place, so every endpoint reads credentials the same way.

use axum::http::{HeaderMap, header};

/// The token of a request, looked up in this order: bearer header, `apikey` header, the given query
/// value, the named cookie. Empty values count as absent.
pub fn token(
    headers: &HeaderMap,
    query: Option<&str>,
    cookie_name: Option<&str>,
) -> Option<String> {
    bearer(headers)
        .or_else(|| headers.get("apikey").and_then(|v| v.to_str().ok()))
        .map(str::to_owned)
        .or_else(|| query.map(str::to_owned))
        .or_else(|| cookie_name.and_then(|name| cookie(headers, name)))
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
}

/// A cookie's value.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_of_sources() {
        let mut h = HeaderMap::new();
        h.insert("cookie", "a=1; herald_token=fromcookie".parse().unwrap());
        assert_eq!(
            token(&h, None, Some("herald_token")).as_deref(),
            Some("fromcookie")
        );
        assert_eq!(
            token(&h, Some("q"), Some("herald_token")).as_deref(),
            Some("q")
        );
        h.insert("apikey", "key".parse().unwrap());
        assert_eq!(token(&h, Some("q"), None).as_deref(), Some("key"));
        h.insert("authorization", "Bearer tok".parse().unwrap());
        assert_eq!(token(&h, Some("q"), None).as_deref(), Some("tok"));
        assert_eq!(token(&HeaderMap::new(), Some(""), None), None);
    }
}
