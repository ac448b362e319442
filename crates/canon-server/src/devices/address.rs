//! Which addresses a device may have (SSRF safety; docs/devices.md).
//!
//! Checked at registration and again at connect time, after DNS
//! resolution, so a name that later resolves elsewhere (DNS rebinding)
//! cannot reach what the check refuses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Link-local, a cloud metadata service, unspecified, multicast or
    /// broadcast: never a device, whatever the configuration.
    #[error("{0} addresses are never device endpoints")]
    Never(&'static str),
    /// Canon's own listen address.
    #[error("the endpoint is Canon itself")]
    Canon,
    /// Outside `CANON_DEVICE_ALLOWED_NETWORKS`.
    #[error("the address is outside the networks devices may be in (CANON_DEVICE_ALLOWED_NETWORKS)")]
    NotAllowed,
}

/// The address rules: the allowed networks, and Canon's own address.
#[derive(Debug, Clone)]
pub struct AddressPolicy {
    allowed: Vec<IpNet>,
    own: SocketAddr,
}

/// AWS's IPv6 metadata address (`fd00:ec2::254`).
const EC2_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);

/// The kind of address no device may have, if `ip` is one.
fn never(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            if v4.is_link_local() {
                Some("link-local and metadata (169.254.0.0/16)")
            } else if v4.is_unspecified() || v4.octets()[0] == 0 {
                Some("unspecified (0.0.0.0/8)")
            } else if v4.is_multicast() || v4.is_broadcast() {
                Some("multicast and broadcast")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if v6 == EC2_METADATA_V6 {
                Some("cloud metadata (fd00:ec2::254)")
            } else if (v6.segments()[0] & 0xffc0) == 0xfe80 {
                Some("link-local (fe80::/10)")
            } else if v6.is_unspecified() {
                Some("unspecified (::)")
            } else if v6.is_multicast() {
                Some("multicast")
            } else {
                None
            }
        }
    }
}

impl AddressPolicy {
    /// Devices in `allowed`, never at `own` (Canon's listen address).
    pub fn new(allowed: Vec<IpNet>, own: SocketAddr) -> Self {
        Self { allowed, own }
    }

    /// Whether a device may be reached at `ip` (any port).
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refusal> {
        // `::ffff:169.254.169.254` is 169.254.169.254.
        let ip = ip.to_canonical();
        if let Some(what) = never(ip) {
            return Err(Refusal::Never(what));
        }
        if !self.allowed.iter().any(|net| net.contains(&ip)) {
            return Err(Refusal::NotAllowed);
        }
        Ok(())
    }

    /// Whether a device may be reached at `addr`: [`AddressPolicy::check_ip`],
    /// and not Canon's own listen address (with an unspecified listen
    /// address, any loopback address on its port).
    pub fn check(&self, addr: SocketAddr) -> Result<(), Refusal> {
        self.check_ip(addr.ip())?;
        let ip = addr.ip().to_canonical();
        let own_ip = self.own.ip().to_canonical();
        let same_host = ip == own_ip || (own_ip.is_unspecified() && (ip.is_loopback() || ip.is_unspecified()));
        if addr.port() == self.own.port() && same_host {
            return Err(Refusal::Canon);
        }
        Ok(())
    }
}

/// An address that is never anyone's: for tests and defaults.
pub const NOWHERE: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> AddressPolicy {
        let allowed = crate::config::parse_trusted_proxies(super::super::config::DEFAULT_ALLOWED_NETWORKS).unwrap();
        AddressPolicy::new(allowed, "127.0.0.1:8080".parse().unwrap())
    }

    fn at(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn metadata_link_local_and_unspecified_are_always_refused() {
        let everywhere = AddressPolicy::new(vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()], NOWHERE);
        for a in [
            "169.254.169.254:80",
            "[fd00:ec2::254]:80",
            "[fe80::1]:80",
            "[::ffff:169.254.169.254]:80",
            "0.0.0.0:80",
            "[::]:80",
            "224.0.0.1:80",
            "255.255.255.255:80",
        ] {
            assert!(matches!(everywhere.check(at(a)), Err(Refusal::Never(_))), "{a}");
        }
        assert!(everywhere.check(at("93.184.216.34:443")).is_ok());
    }

    #[test]
    fn the_default_allows_loopback_and_private_ranges_only() {
        let p = policy();
        for a in [
            "127.0.0.1:9000",
            "[::1]:9000",
            "10.1.2.3:443",
            "172.16.0.1:80",
            "192.168.1.1:80",
            "[fd12::1]:80",
        ] {
            assert_eq!(p.check(at(a)), Ok(()), "{a}");
        }
        for a in ["8.8.8.8:53", "172.32.0.1:80", "[2001:db8::1]:80"] {
            assert_eq!(p.check(at(a)), Err(Refusal::NotAllowed), "{a}");
        }
    }

    #[test]
    fn canon_itself_is_refused_on_its_port_only() {
        let p = policy();
        assert_eq!(p.check(at("127.0.0.1:8080")), Err(Refusal::Canon));
        assert_eq!(p.check(at("127.0.0.1:8081")), Ok(()));
        let any = AddressPolicy::new(p.allowed.clone(), at("0.0.0.0:8080"));
        assert_eq!(any.check(at("127.0.0.2:8080")), Err(Refusal::Canon));
        assert_eq!(any.check(at("[::1]:8080")), Err(Refusal::Canon));
        assert_eq!(any.check(at("10.0.0.1:8080")), Ok(()));
    }
}
