//! The server under test: parsing `--url`, refusing anything that is not a loopback address, the
//! WebSocket, SSE and HTTP paths derived from it (for each `--protocol`), and the rotation of client
//! source addresses over 127.0.0.2, 127.0.0.3, ... that lets one machine open more connections than
//! one address has ports.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::protocol::Protocol;
use crate::{plain, pusher, socketio};

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Socket address of the server.
    pub addr: SocketAddr,
    /// Value of the HTTP `Host` header.
    pub host_header: String,
    /// Path prefix without a trailing slash: empty, or for example `/realtime/v1`.
    pub base_path: String,
}

impl Target {
    /// Reads `http://HOST[:PORT][/PREFIX]` (or `ws://`), requiring a loopback host.
    pub fn parse(url: &str) -> Result<Self, TargetError> {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("ws://"))
            .ok_or_else(|| TargetError::Scheme(url.to_owned()))?;
        if rest.contains(['?', '#']) {
            return Err(TargetError::Query(url.to_owned()));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (host, port) =
            split_host_port(authority).ok_or_else(|| TargetError::Host(url.to_owned()))?;
        let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            host.parse()
                .map_err(|_| TargetError::Host(url.to_owned()))?
        };
        if !ip.is_loopback() {
            return Err(TargetError::NotLoopback(ip));
        }
        let port = match port {
            None => 80,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p != 0 => p,
                _ => return Err(TargetError::Port(url.to_owned())),
            },
        };
        let addr = SocketAddr::new(ip, port);
        Ok(Self {
            addr,
            host_header: addr.to_string(),
            base_path: path.trim_end_matches('/').to_owned(),
        })
    }

    /// The WebSocket URL a v2 client connects to, with the API key in the query.
    pub fn ws_url(&self, token: &str) -> String {
        let path = if self.base_path.is_empty() {
            "/socket/websocket".to_owned()
        } else {
            format!("{}/websocket", self.base_path)
        };
        format!(
            "ws://{}{}?apikey={}&vsn=2.0.0",
            self.host_header,
            path,
            percent_encode(token)
        )
    }

    /// The WebSocket URL a client of `protocol` connects to (the API key goes only to Phoenix
    /// servers; a Pusher client names the app by its key).
    pub fn ws_url_for(&self, protocol: Protocol, token: &str, app: &pusher::App) -> String {
        match protocol {
            Protocol::Phoenix => self.ws_url(token),
            Protocol::Pusher => format!(
                "ws://{}{}{}",
                self.host_header,
                self.base_path,
                app.ws_path()
            ),
            Protocol::Plain => format!(
                "ws://{}{}{}",
                self.host_header,
                self.base_path,
                plain::WS_PATH
            ),
            Protocol::Socketio => format!(
                "ws://{}{}{}",
                self.host_header,
                self.base_path,
                socketio::WS_PATH
            ),
        }
    }

    /// Path of the HTTP publish endpoint of `protocol`'s server (Pusher: of `app`, before the
    /// signed query each request adds).
    pub fn publish_path(&self, protocol: Protocol, app: &pusher::App) -> String {
        match protocol {
            Protocol::Phoenix => self.broadcast_path(),
            Protocol::Pusher => app.batch_events_path(&self.base_path),
            Protocol::Plain => format!("{}{}", self.base_path, plain::PUBLISH_PATH),
            Protocol::Socketio => format!("{}{}", self.base_path, socketio::PUBLISH_PATH),
        }
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

    /// Path of the batch HTTP broadcast endpoint.
    pub fn broadcast_path(&self) -> String {
        format!("{}/api/broadcast", self.base_path)
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

/// Splits `host[:port]` and `[v6][:port]`.
fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = &rest[..end];
        let after = &rest[end + 1..];
        return match after.strip_prefix(':') {
            Some(port) => Some((host, Some(port))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    if authority.is_empty() {
        return None;
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Some((host, Some(port))),
        Some(_) => None,
        None => Some((authority, None)),
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (a JWT passes through unchanged).
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Source address for connection `index` when each address carries `per_address` connections.
///
/// The sequence is 127.0.0.2, 127.0.0.3, ..., 127.0.0.254, 127.0.1.1, ...: it skips 127.0.0.1 (where
/// servers usually listen) and host parts ending in .0 or .255, and stays inside 127.0.0.0/8.
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
    fn parses_loopback_urls() {
        let t = Target::parse("http://127.0.0.1:4000").unwrap();
        assert_eq!(t.addr, "127.0.0.1:4000".parse().unwrap());
        assert_eq!(t.base_path, "");
        assert_eq!(
            t.ws_url("a.b-c_d"),
            "ws://127.0.0.1:4000/socket/websocket?apikey=a.b-c_d&vsn=2.0.0"
        );
        assert_eq!(t.broadcast_path(), "/api/broadcast");
        let app = pusher::App::default();
        assert_eq!(t.publish_path(Protocol::Phoenix, &app), "/api/broadcast");
        assert_eq!(t.publish_path(Protocol::Plain, &app), "/publish");
        assert_eq!(
            t.publish_path(Protocol::Pusher, &app),
            "/apps/herald-bench/batch_events"
        );
        assert_eq!(
            t.ws_url_for(Protocol::Plain, "k", &app),
            "ws://127.0.0.1:4000/ws"
        );
        assert_eq!(
            t.ws_url_for(Protocol::Socketio, "k", &app),
            "ws://127.0.0.1:4000/socket.io/?EIO=4&transport=websocket"
        );
        assert_eq!(t.ws_url_for(Protocol::Phoenix, "k", &app), t.ws_url("k"));
        assert_eq!(
            t.ws_url_for(Protocol::Pusher, "k", &app),
            "ws://127.0.0.1:4000/app/herald-bench-key?protocol=7&client=herald-bench&version=1.0"
        );

        let t = Target::parse("ws://localhost:9/realtime/v1/").unwrap();
        assert_eq!(t.addr, "127.0.0.1:9".parse().unwrap());
        assert_eq!(
            t.ws_url("x y"),
            "ws://127.0.0.1:9/realtime/v1/websocket?apikey=x%20y&vsn=2.0.0"
        );
        assert_eq!(t.broadcast_path(), "/realtime/v1/api/broadcast");
        assert_eq!(
            t.sse_path("bench-3", "a b"),
            "/sse?topic=bench-3&apikey=a%20b"
        );

        let t = Target::parse("http://[::1]:4000").unwrap();
        assert_eq!(t.host_header, "[::1]:4000");
        assert_eq!(t.source_for(5, 10), None);
        assert_eq!(Target::parse("http://127.9.9.9").unwrap().addr.port(), 80);
    }

    #[test]
    fn refuses_other_hosts_and_schemes() {
        assert!(matches!(
            Target::parse("http://10.0.0.1:4000"),
            Err(TargetError::NotLoopback(_))
        ));
        assert!(matches!(
            Target::parse("https://127.0.0.1"),
            Err(TargetError::Scheme(_))
        ));
        assert!(matches!(
            Target::parse("http://example.com"),
            Err(TargetError::Host(_))
        ));
        assert!(matches!(
            Target::parse("http://127.0.0.1:0"),
            Err(TargetError::Port(_))
        ));
        assert!(matches!(
            Target::parse("http://127.0.0.1:x"),
            Err(TargetError::Port(_))
        ));
        assert!(matches!(
            Target::parse("http://127.0.0.1/?a"),
            Err(TargetError::Query(_))
        ));
        assert!(matches!(
            Target::parse("http://:80"),
            Err(TargetError::Host(_))
        ));
    }

    #[test]
    fn source_addresses_rotate_and_skip_reserved_octets() {
        let per = 20_000;
        assert_eq!(source_addr(0, per), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(source_addr(19_999, per), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(source_addr(20_000, per), Ipv4Addr::new(127, 0, 0, 3));
        assert_eq!(source_addr(252 * per, per), Ipv4Addr::new(127, 0, 0, 254));
        assert_eq!(source_addr(253 * per, per), Ipv4Addr::new(127, 0, 1, 1));
        assert_eq!(source_addr(254 * per, per), Ipv4Addr::new(127, 0, 1, 2));
        // Never .0 or .255, never 127.0.0.1.
        for i in 0..5_000u64 {
            let a = source_addr(i, 1);
            let o = a.octets();
            assert_eq!(o[0], 127);
            assert!(o[3] != 0 && o[3] != 255, "{a}");
            assert_ne!(a, Ipv4Addr::LOCALHOST);
        }
        assert_eq!(source_addr(254 * 256 - 1, 1), Ipv4Addr::new(127, 1, 0, 1));
    }
}
