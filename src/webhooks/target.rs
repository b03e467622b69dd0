//! Where a webhook may point. A portal names the URL, so by default a webhook may not reach
//! this machine or the data centre's private network (loopback, private, link-local addresses,
//! a cloud's metadata service): civicflow would otherwise post, on a portal's say-so, to
//! internal services, and tell it through `last_error` which internal ports answer.
//! `serve --allow-internal-webhooks` lifts this for a portal that runs inside the same network.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Whether webhooks may reach internal addresses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Targets {
    pub allow_internal: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error(
        "{host} is an internal address ({ip}): webhooks may not reach loopback, private or link-local addresses unless the server allows them (serve --allow-internal-webhooks)"
    )]
    Internal { host: String, ip: IpAddr },
}

/// Whether `ip` is internal: loopback, private (RFC 1918, RFC 4193), link-local (with the
/// metadata services at 169.254.169.254), carrier-grade NAT, unspecified, broadcast or
/// multicast; an IPv4 address written as IPv6 counts as itself.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => internal_v4(v4),
            None => internal_v6(v6),
        },
    }
}

fn internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
}

fn internal_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
}

impl Targets {
    /// Checks the addresses `host` resolves to (or is) before a webhook is registered. A host
    /// that does not resolve now is not refused: delivery checks again, at every connection.
    pub async fn check(&self, host: &str, port: u16) -> Result<(), TargetError> {
        if self.allow_internal {
            return Ok(());
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<IpAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => match tokio::net::lookup_host((bare, port)).await {
                Ok(found) => found.map(|a| a.ip()).collect(),
                Err(_) => Vec::new(),
            },
        };
        match addrs.into_iter().find(|ip| is_internal(*ip)) {
            Some(ip) => Err(TargetError::Internal {
                host: host.to_owned(),
                ip,
            }),
            None => Ok(()),
        }
    }

    /// Checks a URL's host, as delivery does before each post to a host written as an address
    /// (names go through [`PublicOnly`]).
    pub fn check_literal(&self, url: &reqwest::Url) -> Result<(), TargetError> {
        if self.allow_internal {
            return Ok(());
        }
        let host = url.host_str().unwrap_or_default();
        let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        else {
            return Ok(());
        };
        if is_internal(ip) {
            return Err(TargetError::Internal {
                host: url.host_str().unwrap_or_default().to_owned(),
                ip,
            });
        }
        Ok(())
    }
}

/// The deliverer's name resolution when internal targets are not allowed: a name resolves to
/// its public addresses only, at every connection, so a name that points inside (or is
/// changed to, after registration) is never connected to.
#[derive(Debug, Clone, Copy)]
pub struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| !is_internal(a.ip()))
                .collect();
            if public.is_empty() && !found.is_empty() {
                let err: Box<dyn std::error::Error + Send + Sync> =
                    Box::new(TargetError::Internal {
                        host,
                        ip: found[0].ip(),
                    });
                return Err(err);
            }
            let addrs: reqwest::dns::Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_known_in_both_families() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_internal(internal.parse().unwrap()), "{internal}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "172.32.0.1"] {
            assert!(!is_internal(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn a_name_or_address_inside_is_refused_unless_allowed() {
        let refuse = Targets::default();
        assert!(refuse.check("127.0.0.1", 80).await.is_err());
        assert!(refuse.check("[::1]", 80).await.is_err());
        assert!(refuse.check("localhost", 80).await.is_err());
        assert!(refuse.check("93.184.216.34", 443).await.is_ok());
        let allow = Targets {
            allow_internal: true,
        };
        assert!(allow.check("127.0.0.1", 80).await.is_ok());
    }
}
