//! The Wireshark display filter that isolates one TCP conversation, in the shape Wireshark's
//! own "Conversation Filter" writes: both addresses and both ports, either direction.

use std::{fmt, net::SocketAddr};

use crate::output::fields::{write_ip, write_uint};

/// `ip.addr==A && ip.addr==B && tcp.port==P && tcp.port==Q` (`ipv6.addr` for IPv6), plus
/// `vlan.id==V` when the flow is tagged.
pub fn display_filter(a: SocketAddr, b: SocketAddr, vlan: u16) -> DisplayFilter {
    DisplayFilter { a, b, vlan }
}

/// A conversation's display filter, kept as what it is made of and spelled where it is
/// written. Its text is addresses, digits, `.`, `=`, `&` and spaces: nothing a JSON string
/// escapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DisplayFilter {
    a: SocketAddr,
    b: SocketAddr,
    vlan: u16,
}

impl DisplayFilter {
    /// The filter's text appended to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        self.write_with(out, b"==");
    }

    /// The filter's text appended to `out`, with `equals` for each `==`: a format whose
    /// values escape `=` passes the escaped form, and the rest of the text needs none.
    pub fn write_with(&self, out: &mut Vec<u8>, equals: &[u8]) {
        let field: &[u8] = if self.a.is_ipv4() {
            b"ip.addr"
        } else {
            b"ipv6.addr"
        };
        let compare = |out: &mut Vec<u8>, name: &[u8]| {
            out.extend_from_slice(name);
            out.extend_from_slice(equals);
        };
        compare(out, field);
        write_ip(out, self.a.ip());
        out.extend_from_slice(b" && ");
        compare(out, field);
        write_ip(out, self.b.ip());
        out.extend_from_slice(b" && ");
        compare(out, b"tcp.port");
        write_uint(out, self.a.port().into());
        out.extend_from_slice(b" && ");
        compare(out, b"tcp.port");
        write_uint(out, self.b.port().into());
        if self.vlan != 0 {
            out.extend_from_slice(b" && ");
            compare(out, b"vlan.id");
            write_uint(out, self.vlan.into());
        }
    }
}

impl fmt::Display for DisplayFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = Vec::with_capacity(128);
        self.write(&mut text);
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
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
            display_filter(sa("198.18.0.1:40000"), sa("198.18.1.2:80"), 0).to_string(),
            "ip.addr==198.18.0.1 && ip.addr==198.18.1.2 && tcp.port==40000 && tcp.port==80"
        );
    }

    #[test]
    fn ipv6_conversation_uses_ipv6_addr() {
        assert_eq!(
            display_filter(sa("[2001:db8::1]:40000"), sa("[2001:db8::2]:443"), 0).to_string(),
            "ipv6.addr==2001:db8::1 && ipv6.addr==2001:db8::2 && tcp.port==40000 && tcp.port==443"
        );
    }

    #[test]
    fn tagged_conversation_adds_the_vlan() {
        assert_eq!(
            display_filter(sa("10.0.0.1:1234"), sa("10.0.0.2:22"), 42).to_string(),
            "ip.addr==10.0.0.1 && ip.addr==10.0.0.2 && tcp.port==1234 && tcp.port==22 \
             && vlan.id==42"
        );
    }
}
