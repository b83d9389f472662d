//! Kernel addresses to standard ones: the kernel stores IPv4 IPv4-mapped in 16 bytes so both
//! families share one key layout; people and tools expect a dotted quad.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use rstwatch_common::packet::FAMILY_IPV4;

pub fn is_ipv4(family: u8) -> bool {
    family == FAMILY_IPV4
}

/// The address in its family's own form: the last four bytes for IPv4, all 16 for IPv6.
pub fn ip(addr: &[u8; 16], family: u8) -> IpAddr {
    if is_ipv4(family) {
        IpAddr::V4(Ipv4Addr::new(addr[12], addr[13], addr[14], addr[15]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*addr))
    }
}

pub fn socket(addr: &[u8; 16], port: u16, family: u8) -> SocketAddr {
    SocketAddr::new(ip(addr, family), port)
}

#[cfg(test)]
mod tests {
    use rstwatch_common::packet::{ipv4_mapped, FAMILY_IPV6};

    use super::*;

    #[test]
    fn ipv4_is_shown_as_a_dotted_quad_not_mapped() {
        let addr = ipv4_mapped([198, 18, 0, 1]);
        assert_eq!(socket(&addr, 80, FAMILY_IPV4).to_string(), "198.18.0.1:80");
    }

    #[test]
    fn ipv6_keeps_all_sixteen_bytes() {
        let addr: Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert_eq!(
            socket(&addr.octets(), 443, FAMILY_IPV6).to_string(),
            "[2001:db8::1]:443"
        );
    }
}
