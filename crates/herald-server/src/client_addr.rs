//! The client address a connection counts against (`max_connections_per_ip`): the peer's own, or,
//! when the peer is one of the configured `trusted_proxies`, the address it forwards in
//! `X-Forwarded-For`. A header from any other peer is ignored, so a client cannot pick its address.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The address of the client behind a connection from `peer`. `None` when `peer` is a trusted
/// proxy that forwarded no usable address: no per-address cap applies to it.
///
/// The forwarded address is the rightmost entry of `X-Forwarded-For` (over every such header, in
/// order) that is not itself a trusted proxy: entries to its left were written by the client and
/// prove nothing.
pub fn client_ip(trusted: &[IpNet], peer: SocketAddr, headers: &HeaderMap) -> Option<IpAddr> {
    let peer = canonical(peer.ip());
    if !is_trusted(trusted, peer) {
        return Some(peer);
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for entry in entries.iter().rev() {
        let ip = canonical(parse_entry(entry)?);
        if !is_trusted(trusted, ip) {
            return Some(ip);
        }
    }
    None
}

/// Reads one `trusted_proxies` entry: an address (`10.0.0.7`, `::1`) or a range (`10.0.0.0/8`).
pub fn parse_proxy(entry: &str) -> Result<IpNet, String> {
    let entry = entry.trim();
    entry
        .parse::<IpNet>()
        .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{entry}` is neither an IP address nor a CIDR range like 10.0.0.0/8"))
}

fn is_trusted(trusted: &[IpNet], ip: IpAddr) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// An IPv4 address mapped into IPv6 is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5678`, `[::1]:80`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| parse_proxy(s).unwrap()).collect()
    }

    #[test]
    fn proxies_are_addresses_or_ranges() {
        assert!(parse_proxy(" 10.0.0.0/8").is_ok());
        assert!(parse_proxy("::1").is_ok());
        assert!(parse_proxy("fd00::/8").is_ok());
        let e = parse_proxy("proxy.example").unwrap_err();
        assert!(e.contains("proxy.example"), "{e}");
        assert!(parse_proxy("10.0.0.0/33").is_err());
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40_000)
    }

    #[test]
    fn an_untrusted_peer_is_its_own_address_whatever_it_forwards() {
        let trusted = nets(&["10.0.0.0/8"]);
        let h = headers(&["203.0.113.9"]);
        assert_eq!(
            client_ip(&trusted, peer("192.0.2.1"), &h),
            Some("192.0.2.1".parse().unwrap())
        );
        assert_eq!(
            client_ip(&[], peer("127.0.0.1"), &h),
            Some("127.0.0.1".parse().unwrap())
        );
    }

    #[test]
    fn a_trusted_proxy_forwards_the_rightmost_untrusted_address() {
        let trusted = nets(&["10.0.0.0/8", "127.0.0.1"]);
        // The client wrote the first entry itself; the proxies appended the others.
        let h = headers(&["6.6.6.6, 198.51.100.7", "10.1.2.3"]);
        assert_eq!(
            client_ip(&trusted, peer("127.0.0.1"), &h),
            Some("198.51.100.7".parse().unwrap())
        );
        let h = headers(&["[2001:db8::5]:443"]);
        assert_eq!(
            client_ip(&trusted, peer("::ffff:127.0.0.1"), &h),
            Some("2001:db8::5".parse().unwrap())
        );
    }

    #[test]
    fn a_trusted_proxy_without_a_usable_address_is_not_capped() {
        let trusted = nets(&["127.0.0.1"]);
        assert_eq!(
            client_ip(&trusted, peer("127.0.0.1"), &HeaderMap::new()),
            None
        );
        assert_eq!(
            client_ip(&trusted, peer("127.0.0.1"), &headers(&["unknown"])),
            None
        );
        assert_eq!(
            client_ip(&trusted, peer("127.0.0.1"), &headers(&["127.0.0.1"])),
            None
        );
    }
}
