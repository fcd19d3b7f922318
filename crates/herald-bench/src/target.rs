//! The server under test: parsing `--url` (with `hyper::Uri`), refusing anything that is not a
//! loopback address, the WebSocket, SSE and HTTP paths derived from it (for each `--protocol`), and
//! the rotation of client source addresses over 127.0.0.2, 127.0.0.3, ... that lets one machine
//! open more connections than one address has ports.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use hyper::Uri;

use crate::protocol::{App, Protocol};

/// Why a `--url` was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    /// Only plain `http://` and `ws://` are spoken.
    #[error("unsupported URL scheme in {0:?}: use http:// or ws:// (no TLS)")]
    Scheme(String),
    /// The host part is not an IP literal or `localhost`.
    #[error(
        "cannot read the host of {0:?}: use an IP literal such as 127.0.0.1, [::1] or localhost"
    )]
    Host(String),
    /// The port is not a number from 1 to 65535.
    #[error("bad port in {0:?}")]
    Port(String),
    /// The benchmark only sends traffic to this machine's loopback interface.
    #[error("{0} is not a loopback address: the benchmark only talks to 127.0.0.0/8 or ::1")]
    NotLoopback(IpAddr),
    /// Query strings and fragments have no meaning here.
    #[error("the URL must not carry a query or fragment: {0:?}")]
    Query(String),
}

/// Where the server listens and under which path prefix.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Target {
    pub addr: SocketAddr,
    pub host_header: String,
    pub base_path: String,
}

impl Target {
    /// Reads `http://HOST[:PORT][/PREFIX]` (or `ws://`), requiring a loopback host.
    pub fn parse(url: &str) -> Result<Self, TargetError> {
        let bad = |e: fn(String) -> TargetError| e(url.to_owned());
        if url.contains(['?', '#']) {
            return Err(bad(TargetError::Query));
        }
        let uri: Uri = url.parse().map_err(|_| bad(TargetError::Host))?;
        if !matches!(uri.scheme_str(), Some("http" | "ws")) {
            return Err(bad(TargetError::Scheme));
        }
        let host = uri.host().ok_or_else(|| bad(TargetError::Host))?;
        let ip = match host.trim_start_matches('[').trim_end_matches(']') {
            h if h.eq_ignore_ascii_case("localhost") => IpAddr::V4(Ipv4Addr::LOCALHOST),
            h => h.parse().map_err(|_| bad(TargetError::Host))?,
        };
        if !ip.is_loopback() {
            return Err(TargetError::NotLoopback(ip));
        }
        let port = uri.port_u16().unwrap_or(80);
        if port == 0 {
            return Err(bad(TargetError::Port));
        }
        let addr = SocketAddr::new(ip, port);
        Ok(Self {
            addr,
            host_header: addr.to_string(),
            base_path: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// The WebSocket URL a Phoenix v2 client connects to, with the API key in the query.
    pub fn ws_url(&self, token: &str) -> String {
        let path = match self.base_path.as_str() {
            "" => "/socket",
            base => base,
        };
        let key = percent_encode(token);
        format!(
            "ws://{}{path}/websocket?apikey={key}&vsn=2.0.0",
            self.host_header
        )
    }

    /// The WebSocket URL a client of `protocol` connects to (the API key goes only to Phoenix
    /// servers; a Pusher client names the app by its key).
    pub fn ws_url_for(&self, protocol: Protocol, token: &str, app: &App) -> String {
        match protocol {
            Protocol::Phoenix => self.ws_url(token),
            peer => format!(
                "ws://{}{}{}",
                self.host_header,
                self.base_path,
                peer.ws_path(app)
            ),
        }
    }

    /// Path of the HTTP publish endpoint of `protocol`'s server (Pusher: before signing).
    pub fn publish_path(&self, protocol: Protocol, app: &App) -> String {
        format!("{}{}", self.base_path, protocol.publish_path(app))
    }

    /// Path and query of a Server-Sent Events stream following channel `name`. Herald serves `/sse`
    /// at the root only, so the URL's path prefix does not apply.
    pub fn sse_path(&self, name: &str, token: &str) -> String {
        format!(
            "/sse?topic={}&apikey={}",
            percent_encode(name),
            percent_encode(token)
        )
    }

    /// The local address the connection with this global index binds to, if the server is reached
    /// over IPv4 (IPv6 has a single loopback address, so there is nothing to rotate over).
    pub fn source_for(&self, index: u64, per_address: u64) -> Option<IpAddr> {
        match self.addr {
            SocketAddr::V4(_) => Some(IpAddr::V4(source_addr(index, per_address))),
            SocketAddr::V6(_) => None,
        }
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (a JWT passes through unchanged).
pub fn percent_encode(s: &str) -> String {
    let keep = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
    let each = |b: u8| match keep(b) {
        true => char::from(b).to_string(),
        false => format!("%{b:02X}"),
    };
    s.bytes().map(each).collect()
}

/// Source address for connection `index` when each address carries `per_address` connections:
/// 127.0.0.2, 127.0.0.3, ..., 127.0.0.254, 127.0.1.1, ...; it skips 127.0.0.1 (where servers
/// usually listen) and host parts ending in .0 or .255, and stays inside 127.0.0.0/8.
pub fn source_addr(index: u64, per_address: u64) -> Ipv4Addr {
    const USABLE_PER_BLOCK: u64 = 254;
    // Slot 0 is 127.0.0.2, so count usable addresses from 127.0.0.1.
    let k = index / per_address.max(1) + 1;
    // 2^16 blocks of 254 addresses fit in 127.0.0.0/8; wrap rather than leave it.
    let block = (k / USABLE_PER_BLOCK) % 65_536;
    let host = k % USABLE_PER_BLOCK + 1;
    let offset = u32::try_from(block * 256 + host).unwrap_or(2);
    Ipv4Addr::from(0x7f00_0000 | offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_name_a_loopback_server() {
        let t = Target::parse("ws://localhost:9/realtime/v1/").unwrap();
        assert_eq!(
            (t.addr, t.base_path.as_str()),
            ("127.0.0.1:9".parse().unwrap(), "/realtime/v1")
        );
        let ws = "ws://127.0.0.1:9/realtime/v1/websocket?apikey=x%20y&vsn=2.0.0";
        assert_eq!(t.ws_url("x y"), ws);
        let v6 = Target::parse("http://[::1]:4000").unwrap();
        assert_eq!(v6.host_header, "[::1]:4000");
        assert_eq!(Target::parse("http://127.9.9.9").unwrap().addr.port(), 80);
        for (bad, says) in [
            ("https://127.0.0.1", "scheme"),
            ("http://example.com", "host"),
            ("http://127.0.0.1:0", "port"),
            ("http://127.0.0.1/?a", "query"),
            ("http://10.0.0.1:4000", "not a loopback address"),
        ] {
            let e = Target::parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn source_addresses_rotate_and_skip_reserved_octets() {
        let per = 20_000;
        assert_eq!(source_addr(0, per), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(source_addr(20_000, per), Ipv4Addr::new(127, 0, 0, 3));
        assert_eq!(source_addr(253 * per, per), Ipv4Addr::new(127, 0, 1, 1));
        assert!(
            (0..5_000)
                .map(|i| source_addr(i, 1).octets()[3])
                .all(|o| o != 0 && o != 255)
        );
    }
}
