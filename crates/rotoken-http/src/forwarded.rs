//! The client's address behind trusted reverse proxies: `Forwarded`
//! (RFC 7239) or `X-Forwarded-For` is read only when the peer is one of
//! the configured proxies, from the right, skipping trusted hops. Anyone
//! else's header is ignored: the peer is the client.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

/// The address failed authentications are counted under: the peer, or,
/// when the peer is a trusted proxy, the nearest untrusted address it
/// forwarded for. `None` if the adapter gave no peer.
///
/// ```
/// use http::HeaderMap;
/// use rotoken_http::client_address;
///
/// let trusted = ["10.0.0.0/8".parse().unwrap()];
/// let mut headers = HeaderMap::new();
/// headers.insert("x-forwarded-for", "198.51.100.7, 10.0.0.2".parse().unwrap());
/// let proxy = Some("10.0.0.1".parse().unwrap());
/// assert_eq!(client_address(proxy, &headers, &trusted), Some("198.51.100.7".parse().unwrap()));
/// let stranger = Some("192.0.2.9".parse().unwrap());
/// assert_eq!(client_address(stranger, &headers, &trusted), stranger);
/// ```
pub fn client_address(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let hops = forwarded_for(headers).or_else(|| x_forwarded_for(headers));
    let Some(hops) = hops else {
        return Some(peer);
    };
    let mut nearest = peer;
    for hop in hops.iter().rev() {
        match hop {
            // An unknown or obfuscated hop: the last trusted one is all we know.
            None => return Some(nearest),
            Some(ip) if is_trusted(ip) => nearest = *ip,
            Some(ip) => return Some(*ip),
        }
    }
    Some(nearest)
}

/// The `for=` addresses of every `Forwarded` element, in order; `None`
/// without the header.
fn forwarded_for(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let mut values = headers.get_all(http::header::FORWARDED).iter().peekable();
    values.peek()?;
    let mut hops = Vec::new();
    for value in values {
        let Ok(text) = value.to_str() else {
            hops.push(None);
            continue;
        };
        for element in text.split(',') {
            let node = element.split(';').find_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                name.trim().eq_ignore_ascii_case("for").then(|| value.trim())
            });
            hops.push(node.and_then(parse_node));
        }
    }
    Some(hops)
}

/// The addresses of every `X-Forwarded-For` entry, in order; `None`
/// without the header.
fn x_forwarded_for(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let mut values = headers.get_all("x-forwarded-for").iter().peekable();
    values.peek()?;
    let mut hops = Vec::new();
    for value in values {
        match value.to_str() {
            Ok(text) => hops.extend(text.split(',').map(|s| parse_node(s.trim()))),
            Err(_) => hops.push(None),
        }
    }
    Some(hops)
}

/// `192.0.2.1`, `"192.0.2.1:4711"`, `"[2001:db8::1]:4711"`, `[2001:db8::1]`
/// or `2001:db8::1`; `None` for `unknown`, `_hidden` and anything else.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim_matches('"');
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = node.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    node.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_trusted_peers_are_believed_and_trusted_hops_are_skipped() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "2001:db8::/32".parse().unwrap()];
        let proxy = Some("10.1.2.3".parse().unwrap());
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<IpAddr>);
        let cases: [Case<'_>; 8] = [
            (&[], proxy),
            (&[("x-forwarded-for", "203.0.113.5")], ip("203.0.113.5")),
            (
                &[("x-forwarded-for", "1.1.1.1, 203.0.113.5, 10.0.0.9")],
                ip("203.0.113.5"),
            ),
            (
                &[("x-forwarded-for", "1.1.1.1"), ("x-forwarded-for", "10.0.0.9")],
                ip("1.1.1.1"),
            ),
            (&[("x-forwarded-for", "garbage, 10.0.0.9")], ip("10.0.0.9")),
            (
                &[("forwarded", "for=192.0.2.60;proto=http;by=203.0.113.43")],
                ip("192.0.2.60"),
            ),
            (
                &[("forwarded", "for=\"[2001:db8:cafe::17]:4711\", for=198.51.100.17")],
                ip("198.51.100.17"),
            ),
            // Forwarded wins over X-Forwarded-For.
            (
                &[("forwarded", "for=unknown"), ("x-forwarded-for", "203.0.113.5")],
                proxy,
            ),
        ];
        for (pairs, expected) in cases {
            assert_eq!(client_address(proxy, &headers(pairs), &trusted), expected, "{pairs:?}");
        }
        let stranger = ip("192.0.2.1");
        let spoofed = headers(&[("x-forwarded-for", "203.0.113.5")]);
        assert_eq!(client_address(stranger, &spoofed, &trusted), stranger);
        assert_eq!(client_address(None, &spoofed, &trusted), None);
        assert_eq!(client_address(proxy, &spoofed, &[]), proxy, "no proxies configured");
    }
}
