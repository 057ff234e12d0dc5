//! Which addresses provider requests may reach. An admin sets a config's base URL, so a base
//! URL must not turn the worker into a way to read cloud metadata (`169.254.169.254`) or
//! other link-local services. Loopback and private ranges are allowed unless
//! `PARLEY_LLM_ALLOW_PRIVATE_HOSTS=false` (a local Ollama is the common case).
//!
//! The URL is checked when a config is saved, and every address a host name resolves to is
//! checked again when a request is sent (a name can change what it points at), through the
//! HTTP client's resolver; an address written in the URL is checked before sending.

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// How a refused address is reported (and recognised in an error chain).
pub(super) const ADDRESS_REFUSED: &str = "the provider's address is not allowed";

/// Host names of cloud metadata services.
const METADATA_NAMES: [&str; 4] =
    ["metadata.google.internal", "metadata", "instance-data", "instance-data.ec2.internal"];

/// The rule for provider addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostPolicy {
    /// Loopback and private (RFC 1918, CGNAT, IPv6 unique local) addresses are allowed.
    pub allow_private: bool,
}

impl Default for HostPolicy {
    fn default() -> Self {
        Self { allow_private: true }
    }
}

impl HostPolicy {
    /// Why `ip` may not be reached, if it may not.
    pub fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        if is_link_local_or_metadata(ip) {
            return Some("link-local and cloud-metadata addresses are not allowed");
        }
        if ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::V4(Ipv4Addr::BROADCAST) {
            return Some("this address cannot be a provider");
        }
        if !self.allow_private && is_private(ip) {
            return Some("loopback and private addresses are not allowed (PARLEY_LLM_ALLOW_PRIVATE_HOSTS=false)");
        }
        None
    }

    /// Why a base URL may not be used, if it may not: an address (or a metadata service's
    /// name) the policy refuses. Names are resolved only when a request is sent.
    pub fn check_url(&self, url: &str) -> Result<(), String> {
        let parsed = reqwest::Url::parse(url).map_err(|_| "is not a valid URL".to_owned())?;
        match parsed.host() {
            None => Err("has no host".to_owned()),
            Some(url::Host::Ipv4(ip)) => self.refusal(IpAddr::V4(ip)).map_or(Ok(()), |r| Err(r.to_owned())),
            Some(url::Host::Ipv6(ip)) => self.refusal(IpAddr::V6(ip)).map_or(Ok(()), |r| Err(r.to_owned())),
            Some(url::Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if METADATA_NAMES.contains(&name.as_str()) {
                    return Err("link-local and cloud-metadata addresses are not allowed".to_owned());
                }
                Ok(())
            }
        }
    }

    /// The HTTP client's resolver under this policy.
    pub(super) fn resolver(self) -> Arc<CheckedResolver> {
        Arc::new(CheckedResolver(self))
    }
}

fn is_link_local_or_metadata(ip: IpAddr) -> bool {
    match ip {
        // 169.254.0.0/16 holds AWS, GCP and Azure metadata; 100.100.100.200 is Alibaba's.
        IpAddr::V4(v4) => v4.is_link_local() || v4 == Ipv4Addr::new(100, 100, 100, 200),
        // fe80::/10, and AWS's IPv6 metadata address fd00:ec2::254.
        IpAddr::V6(v6) => {
            (v6.segments()[0] & 0xffc0) == 0xfe80 || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
        }
    }
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback() || v4.is_private() || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// Resolves with the system resolver, then keeps only the addresses the policy allows.
pub(super) struct CheckedResolver(HostPolicy);

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| match policy.refusal(addr.ip()) {
                    Some(reason) => {
                        refused = Some(reason);
                        false
                    }
                    None => true,
                })
                .collect();
            if allowed.is_empty() {
                let reason = refused.unwrap_or("the name resolves to no address");
                return Err(format!("{ADDRESS_REFUSED}: {reason}").into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_and_link_local_addresses_are_always_refused() {
        let open = HostPolicy { allow_private: true };
        for url in [
            "http://169.254.169.254/latest/meta-data",
            "http://[fe80::1]/v1",
            "http://[::ffff:169.254.169.254]/",
            "http://100.100.100.200/",
            "http://metadata.google.internal/computeMetadata/v1",
            "http://0.0.0.0:11434/v1",
        ] {
            assert!(open.check_url(url).is_err(), "{url}");
        }
        for url in
            ["http://127.0.0.1:11434/v1", "http://10.0.0.5/v1", "https://api.openai.com/v1", "http://ollama:11434"]
        {
            assert!(open.check_url(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn private_ranges_are_refused_when_the_setting_says_so() {
        let closed = HostPolicy { allow_private: false };
        for url in [
            "http://127.0.0.1:11434/v1",
            "http://10.1.2.3/",
            "http://192.168.1.9/",
            "http://[::1]/",
            "http://[fd12::1]/",
        ] {
            assert!(closed.check_url(url).is_err(), "{url}");
        }
        assert!(closed.check_url("https://api.openai.com/v1").is_ok());
        assert!(closed.check_url("http://8.8.8.8/").is_ok());
    }
}
