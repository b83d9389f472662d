//! The Wireshark display filter that isolates one TCP conversation, in the shape Wireshark's
//! own "Conversation Filter" writes: both addresses and both ports, either direction.

use std::{fmt::Write as _, net::SocketAddr};

/// `ip.addr==A && ip.addr==B && tcp.port==P && tcp.port==Q` (`ipv6.addr` for IPv6), plus
/// `vlan.id==V` when the flow is tagged.
pub fn display_filter(a: SocketAddr, b: SocketAddr, vlan: u16) -> String {
    let field = if a.is_ipv4() { "ip.addr" } else { "ipv6.addr" };
    let mut filter = format!(
        "{field}=={} && {field}=={} && tcp.port=={} && tcp.port=={}",
        a.ip(),
        b.ip(),
        a.port(),
        b.port()
    );
    if vlan != 0 {
        write!(filter, " && vlan.id=={vlan}").expect("writing into a String");
    }
    filter
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_conversation() {
        assert_eq!(
            display_filter(sa("198.18.0.1:40000"), sa("198.18.1.2:80"), 0),
            "ip.addr==198.18.0.1 && ip.addr==198.18.1.2 && tcp.port==40000 && tcp.port==80"
        );
    }

    #[test]
    fn ipv6_conversation_uses_ipv6_addr() {
        assert_eq!(
            display_filter(sa("[2001:db8::1]:40000"), sa("[2001:db8::2]:443"), 0),
            "ipv6.addr==2001:db8::1 && ipv6.addr==2001:db8::2 && tcp.port==40000 && tcp.port==443"
        );
    }

    #[test]
    fn tagged_conversation_adds_the_vlan() {
        assert_eq!(
            display_filter(sa("10.0.0.1:1234"), sa("10.0.0.2:22"), 42),
            "ip.addr==10.0.0.1 && ip.addr==10.0.0.2 && tcp.port==1234 && tcp.port==22 \
             && vlan.id==42"
        );
    }
}
