//! Where the panel may connect on a user's behalf: the guard against
//! server-side request forgery for every location someone types in (HTTP
//! inventories, git project URLs, webhooks, the ACME directory).
//!
//! An address is reachable when it lies in `outbound.allow` (default: any
//! address) and, if it is loopback, link-local (the cloud metadata address
//! 169.254.169.254 among them), unspecified or IPv6's metadata address,
//! also in `outbound.allow_internal` (default: none). Names are checked
//! after DNS resolution, every address they resolve to, and the connection
//! goes to the address that was checked ([`Outbound::client`]'s resolver;
//! `git` gets it pinned with `http.curloptResolve`), so a name that
//! resolves differently the second time (DNS rebinding) gains nothing.
//! Redirects are checked hop by hop the same way. Imports only `config`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

use crate::config::OutboundConfig;

/// Why a location was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    #[error("{host} ({addr}) is a {class} address, which the panel does not connect to (outbound.allow_internal)")]
    Internal {
        host: String,
        addr: IpAddr,
        class: &'static str,
    },
    #[error("{host} ({addr}) is outside outbound.allow")]
    NotAllowed { host: String, addr: IpAddr },
    #[error("{host} does not resolve: {reason}")]
    Resolve { host: String, reason: String },
    #[error("{0:?} names no host")]
    NoHost(String),
}

/// The policy, built once from the configuration.
#[derive(Debug, Clone)]
pub struct Outbound {
    allow: Arc<Vec<IpNet>>,
    allow_internal: Arc<Vec<IpNet>>,
}

/// The address classes refused unless `allow_internal` names them.
fn internal_class(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            if v4 == Ipv4Addr::new(169, 254, 169, 254) {
                Some("cloud metadata")
            } else if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if v4.octets()[0] == 0 {
                // 0.0.0.0/8 reaches the local host on Linux.
                Some("unspecified")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return internal_class(IpAddr::V4(v4));
            }
            if v6 == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254) {
                Some("cloud metadata")
            } else if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if (v6.segments()[0] & 0xffc0) == 0xfe80 {
                Some("link-local")
            } else {
                None
            }
        }
    }
}

/// `::ffff:a.b.c.d` is `a.b.c.d` for the allow lists too.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl Outbound {
    pub fn new(cfg: &OutboundConfig) -> Outbound {
        Outbound {
            allow: Arc::new(cfg.allow.clone()),
            allow_internal: Arc::new(cfg.allow_internal.clone()),
        }
    }

    /// Whether the panel may connect to `addr` (named `host` in errors).
    pub fn check_addr(&self, host: &str, addr: IpAddr) -> Result<(), OutboundError> {
        let ip = canonical(addr);
        let err = |class| OutboundError::Internal {
            host: host.to_string(),
            addr: ip,
            class,
        };
        if !self.allow.iter().any(|n| n.contains(&ip)) {
            return Err(OutboundError::NotAllowed {
                host: host.to_string(),
                addr: ip,
            });
        }
        match internal_class(ip) {
            Some(class) if !self.allow_internal.iter().any(|n| n.contains(&ip)) => Err(err(class)),
            _ => Ok(()),
        }
    }

    /// Resolves `host` and checks every address it has; the checked
    /// addresses, to connect to.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, OutboundError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            self.check_addr(host, ip)?;
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| OutboundError::Resolve {
                host: host.to_string(),
                reason: e.to_string(),
            })?
            .collect();
        if addrs.is_empty() {
            return Err(OutboundError::Resolve {
                host: host.to_string(),
                reason: "no addresses".into(),
            });
        }
        // Every address, not just the first: the client may pick any.
        for a in &addrs {
            self.check_addr(host, a.ip())?;
        }
        Ok(addrs)
    }

    /// Checks an `http(s)://` URL's host (after resolution).
    pub async fn check_url(&self, url: &str) -> Result<Vec<SocketAddr>, OutboundError> {
        let u = reqwest::Url::parse(url).map_err(|_| OutboundError::NoHost(url.to_string()))?;
        let host = u
            .host_str()
            .ok_or_else(|| OutboundError::NoHost(url.to_string()))?;
        let port = u.port_or_known_default().unwrap_or(80);
        self.resolve(host, port).await
    }

    /// An HTTP client that connects only where the policy allows: names go
    /// through a resolver that refuses (all of) a name whose addresses are
    /// not allowed, and up to `max_redirects` redirects are followed, each
    /// hop checked (a literal address here, a name by the resolver). The
    /// first URL's literal address is the caller's to check
    /// ([`Outbound::check_literal`]): the resolver never sees one.
    pub fn client(
        &self,
        timeout: std::time::Duration,
        max_redirects: usize,
    ) -> reqwest::Result<reqwest::Client> {
        let guard = self.clone();
        let redirects = self.clone();
        reqwest::Client::builder()
            .timeout(timeout)
            // A proxy would resolve the name itself, past the guard.
            .no_proxy()
            .dns_resolver(Arc::new(Resolver(guard)))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() > max_redirects {
                    return attempt.error(format!("more than {max_redirects} redirects"));
                }
                match literal_host(attempt.url()) {
                    Some((host, ip)) => match redirects.check_addr(&host, ip) {
                        Ok(()) => attempt.follow(),
                        Err(e) => attempt.error(e),
                    },
                    // A name: the resolver checks it when connecting.
                    None => attempt.follow(),
                }
            }))
            .build()
    }

    /// Checks a URL before the first request of [`Outbound::client`]: the
    /// resolver never sees a literal address, so it is checked here.
    pub fn check_literal(&self, url: &str) -> Result<(), OutboundError> {
        let u = reqwest::Url::parse(url).map_err(|_| OutboundError::NoHost(url.to_string()))?;
        match literal_host(&u) {
            Some((host, ip)) => self.check_addr(&host, ip),
            None if u.host_str().is_some() => Ok(()),
            None => Err(OutboundError::NoHost(url.to_string())),
        }
    }
}

/// The guard's refusal inside an HTTP client's error, if that is what
/// stopped it (the resolver's or the redirect policy's).
pub fn refusal(e: &(dyn std::error::Error + 'static)) -> Option<OutboundError> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<OutboundError>() {
            return Some(r.clone());
        }
        cur = err.source();
    }
    None
}

fn literal_host(u: &reqwest::Url) -> Option<(String, IpAddr)> {
    match u.host()? {
        url::Host::Ipv4(v4) => Some((v4.to_string(), IpAddr::V4(v4))),
        url::Host::Ipv6(v6) => Some((v6.to_string(), IpAddr::V6(v6))),
        url::Host::Domain(_) => None,
    }
}

/// reqwest's resolver hook: resolve, check every address, hand back only
/// checked ones.
struct Resolver(Outbound);

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let addrs = policy
                .resolve(name.as_str(), 0)
                .await
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })?;
            let iter: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(iter)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str], internal: &[&str]) -> Outbound {
        Outbound::new(&OutboundConfig {
            allow: allow.iter().map(|s| s.parse().unwrap()).collect(),
            allow_internal: internal.iter().map(|s| s.parse().unwrap()).collect(),
        })
    }

    #[test]
    fn defaults_refuse_loopback_link_local_and_metadata() {
        let p = Outbound::new(&OutboundConfig::default());
        for bad in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "169.254.169.254",
            "169.254.1.1",
            "::1",
            "::",
            "fe80::1",
            "febf::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "fd00:ec2::254",
        ] {
            let ip: IpAddr = bad.parse().unwrap();
            assert!(p.check_addr("h", ip).is_err(), "{bad} allowed");
        }
        for good in ["192.0.2.1", "10.1.2.3", "2001:db8::1", "fec0::1"] {
            let ip: IpAddr = good.parse().unwrap();
            assert_eq!(p.check_addr("h", ip), Ok(()), "{good}");
        }
    }

    #[test]
    fn allow_lists_narrow_and_open() {
        let p = policy(&["192.0.2.0/24"], &["127.0.0.0/8"]);
        assert!(p.check_addr("h", "192.0.2.7".parse().unwrap()).is_ok());
        assert!(matches!(
            p.check_addr("h", "198.51.100.1".parse().unwrap()),
            Err(OutboundError::NotAllowed { .. })
        ));
        // Internal addresses need both lists.
        assert!(p.check_addr("h", "127.0.0.1".parse().unwrap()).is_err());
        let p = policy(&["0.0.0.0/0", "::/0"], &["127.0.0.0/8"]);
        assert!(p.check_addr("h", "127.0.0.1".parse().unwrap()).is_ok());
        assert!(p
            .check_addr("h", "::ffff:127.0.0.1".parse().unwrap())
            .is_ok());
        assert!(p
            .check_addr("h", "169.254.169.254".parse().unwrap())
            .is_err());
        assert!(p.check_addr("h", "::1".parse().unwrap()).is_err());
    }

    #[tokio::test]
    async fn names_are_checked_after_resolution() {
        let p = Outbound::new(&OutboundConfig::default());
        let e = p.check_url("http://localhost:8080/x").await.unwrap_err();
        assert!(matches!(e, OutboundError::Internal { .. }), "{e}");
        let e = p.check_url("http://[::1]/x").await.unwrap_err();
        assert!(matches!(e, OutboundError::Internal { .. }), "{e}");
        assert!(p.check_literal("http://169.254.169.254/latest").is_err());
        assert!(p.check_literal("http://192.0.2.1/").is_ok());
    }
}
