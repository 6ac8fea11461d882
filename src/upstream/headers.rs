//! Header hygiene between client and upstream that belongs to the hop, not to the decision:
//! hop-by-hop removal (RFC 9110 §7.6.1) and `X-Forwarded-*`. The verified identity and the
//! upstream's `Authorization` are the decision's header edits ([`crate::gateway::Edits`]).

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

/// How many [`HOP_BY_HOP`] names there are.
const HOPS: usize = 9;

/// Headers that describe one connection, never forwarded (`Connection` first).
const HOP_BY_HOP: [HeaderName; HOPS] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages have none, and the rest one or two (an upstream's `Connection:
    // keep-alive`): one look at each name, then a removal only of the names present.
    let mut present = [false; HOPS];
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present[i] = true;
        }
    }
    if present[0] {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (name, here) in HOP_BY_HOP.iter().zip(present) {
        if here {
            headers.remove(name);
        }
    }
}

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// True when `ip` is one of the proxies whose forwarding headers are believed.
#[must_use]
pub fn is_trusted(trusted: &[IpNet], ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    };
    trusted.iter().any(|net| net.contains(&ip))
}

/// The client a trusted proxy names in `X-Forwarded-For`: the nearest address, from the
/// right, that is not itself in `trusted` (the leftmost when all are). `None` when there is
/// no `X-Forwarded-For`; `Some(None)` when an entry that would decide cannot be read, so a
/// filter on the address fails closed.
#[must_use]
pub fn forwarded_client(headers: &HeaderMap, trusted: &[IpNet]) -> Option<Option<IpAddr>> {
    let mut entries = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .flat_map(|v| v.to_str().map_or(vec![""], |s| s.split(',').collect()))
        .map(str::trim)
        .collect::<Vec<&str>>();
    if entries.is_empty() {
        return None;
    }
    let mut last = None;
    while let Some(entry) = entries.pop() {
        let ip = entry
            .parse::<IpAddr>()
            .ok()
            .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()));
        let Some(ip) = ip else {
            return Some(None);
        };
        if !is_trusted(trusted, ip) {
            return Some(Some(ip.to_canonical()));
        }
        last = Some(ip.to_canonical());
    }
    Some(last)
}

/// Sets `X-Forwarded-For/Proto/Host`. From a trusted proxy the incoming chain is extended and
/// its proto/host kept; from anyone else they are replaced, and `Forwarded` is dropped.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer: IpAddr,
    trusted: bool,
    proto: &'static str,
    host: Option<HeaderValue>,
) {
    let xff = if trusted {
        let previous: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if previous.is_empty() {
            Some(peer_value(peer))
        } else {
            HeaderValue::try_from(format!("{}, {peer}", previous.join(", "))).ok()
        }
    } else {
        headers.remove(FORWARDED);
        headers.remove(&X_FORWARDED_PROTO);
        headers.remove(&X_FORWARDED_HOST);
        Some(peer_value(peer))
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR, v);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !headers.contains_key(&X_FORWARDED_HOST)
        && let Some(host) = host
    {
        headers.insert(X_FORWARDED_HOST, host);
    }
}

/// `peer` as header text. A connection's requests, and a deployment's few load balancers,
/// repeat the same address, so each thread keeps the last one made: a repeat is a reference
/// count, not formatting and an allocation.
fn peer_value(peer: IpAddr) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(IpAddr, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some((ip, value)) if *ip == peer => value.clone(),
        _ => {
            let value = HeaderValue::try_from(peer.to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
            *last = Some((peer, value.clone()));
            value
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::ACCEPT));
    }

    /// Each hop-by-hop name alone, `Upgrade` among them, is removed (only what is present is).
    #[test]
    fn each_hop_by_hop_header_alone() {
        assert!(HOP_BY_HOP.contains(&header::UPGRADE));
        for name in &HOP_BY_HOP {
            let mut h = HeaderMap::new();
            h.insert(name.clone(), HeaderValue::from_static("x"));
            h.append(name.clone(), HeaderValue::from_static("y"));
            h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
            remove_hop_by_hop(&mut h);
            assert!(!h.contains_key(name), "{name}");
            assert_eq!(h.len(), 1, "{name}");
        }
    }

    #[test]
    fn forwarded_for_untrusted_and_trusted() {
        let peer: IpAddr = "10.1.2.3".parse().expect("ip");
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("6.6.6.6"));
        h.insert(X_FORWARDED_HOST, HeaderValue::from_static("evil"));
        h.insert(FORWARDED, HeaderValue::from_static("for=6.6.6.6"));
        set_forwarded(
            &mut h,
            peer,
            false,
            "http",
            Some(HeaderValue::from_static("api")),
        );
        assert_eq!(h[&X_FORWARDED_FOR], "10.1.2.3");
        assert_eq!(h[&X_FORWARDED_HOST], "api");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert!(!h.contains_key(FORWARDED));

        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        set_forwarded(
            &mut h,
            peer,
            true,
            "http",
            Some(HeaderValue::from_static("api")),
        );
        assert_eq!(h[&X_FORWARDED_FOR], "1.1.1.1, 10.1.2.3");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
    }

    #[test]
    fn the_forwarded_client_is_the_nearest_untrusted_address() {
        let nets: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let h = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(X_FORWARDED_FOR, HeaderValue::from_static(v));
            h
        };
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        assert_eq!(forwarded_client(&HeaderMap::new(), &nets), None);
        // A client may prepend anything; only what trusted proxies appended counts.
        assert_eq!(
            forwarded_client(&h("6.6.6.6, 203.0.113.9, 10.0.0.2"), &nets),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            forwarded_client(&h("10.0.0.3, 10.0.0.2"), &nets),
            Some(ip("10.0.0.3"))
        );
        assert_eq!(
            forwarded_client(&h("[2001:db8::1]:443, 198.51.100.4:5000"), &nets),
            Some(ip("198.51.100.4"))
        );
        assert_eq!(forwarded_client(&h("203.0.113.9, junk"), &nets), Some(None));
    }

    #[test]
    fn trusted_matches_mapped_v4() {
        let nets: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        assert!(is_trusted(&nets, "::ffff:10.0.0.1".parse().expect("ip")));
        assert!(!is_trusted(&nets, "11.0.0.1".parse().expect("ip")));
    }
}
