//! The in-kernel filters' values: networks (`--net`) in the form the kernel's trie holds.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use rstwatch_common::packet::ipv4_mapped;

/// An IPv4 or IPv6 network in CIDR notation, host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl Cidr {
    /// The network as an IPv4-mapped IPv6 prefix, the form the kernel's filter trie holds.
    pub fn mapped(&self) -> ([u8; 16], u32) {
        match self.addr {
            IpAddr::V4(v4) => (ipv4_mapped(v4.octets()), 96 + self.prefix_len as u32),
            IpAddr::V6(v6) => (v6.octets(), self.prefix_len as u32),
        }
    }

    /// Whether the network holds `addr`, an address in its IPv4-mapped form.
    pub fn contains(&self, addr: &[u8; 16]) -> bool {
        let (prefix, bits) = self.mapped();
        mapped_prefix_contains(&prefix, bits, addr)
    }
}

/// Whether the IPv4-mapped prefix `prefix`/`bits` (`Cidr::mapped`) holds `addr`: what the
/// kernel's longest-prefix-match trie answers for one network.
pub fn mapped_prefix_contains(prefix: &[u8; 16], bits: u32, addr: &[u8; 16]) -> bool {
    let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
    u128::from_be_bytes(*addr) & mask == u128::from_be_bytes(*prefix) & mask
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| {
            format!("invalid network '{s}': {why}; write it like 10.1.2.0/24 or 2001:db8::/32")
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad("not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(bad(&format!("prefix length must be 0 to {max}"))),
            },
        };
        let addr = match addr {
            IpAddr::V4(v4) => {
                let mask = u32::MAX.checked_shl(32 - prefix_len as u32).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX.checked_shl(128 - prefix_len as u32).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        };
        Ok(Cidr { addr, prefix_len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_network_contains_its_addresses_in_the_mapped_form_only() {
        let v4: Cidr = "198.18.0.0/15".parse().unwrap();
        assert!(v4.contains(&ipv4_mapped([198, 19, 255, 255])));
        assert!(!v4.contains(&ipv4_mapped([198, 20, 0, 0])));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(&"2001:db8:1::2".parse::<Ipv6Addr>().unwrap().octets()));
        assert!(!v6.contains(&"2001:db9::".parse::<Ipv6Addr>().unwrap().octets()));
        let everything: Cidr = "::/0".parse().unwrap();
        assert!(everything.contains(&ipv4_mapped([10, 0, 0, 1])));
    }

    #[test]
    fn cidrs_clear_host_bits_and_map_ipv4() {
        let net: Cidr = "10.1.2.3/24".parse().unwrap();
        assert_eq!(net.to_string(), "10.1.2.0/24");
        let (bytes, prefix) = net.mapped();
        assert_eq!(prefix, 120);
        assert_eq!(&bytes[10..], &[0xff, 0xff, 10, 1, 2, 0]);

        let net: Cidr = "2001:db8::1/32".parse().unwrap();
        assert_eq!(net.to_string(), "2001:db8::/32");
        assert_eq!(net.mapped().1, 32);

        let host: Cidr = "198.18.0.1".parse().unwrap();
        assert_eq!(host.prefix_len, 32);
        assert_eq!("0.0.0.0/0".parse::<Cidr>().unwrap().mapped().1, 96);
    }

    #[test]
    fn bad_cidrs_say_how_to_write_one() {
        for bad in ["10.1.2.0/33", "2001:db8::/129", "nonsense/8", "10.1.2.0/x"] {
            let err = bad.parse::<Cidr>().unwrap_err();
            assert!(err.contains("10.1.2.0/24"), "{bad}: {err}");
        }
    }
}
