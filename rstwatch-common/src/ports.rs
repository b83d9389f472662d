//! Likely server ports and Zeek's direction heuristic: a connection first seen without its
//! originator's SYN (a capture or a watch started mid-stream, a SYN missed) is flipped when
//! its first packet comes from a port a server likely listens on, so the originator is the
//! side that most likely opened it.

use crate::packet::{tcp_flags, PacketMeta};

/// 64-bit words of a `PortSet`: one bit per port.
pub const PORT_SET_WORDS: usize = 65_536 / 64;

/// TCP ports of Zeek's protocol analyzers, the ones its `likely_server_ports` is filled from:
/// FTP, SSH, Telnet, SMTP, DNS, finger, HTTP and proxies, Kerberos, POP3, ident, DCE/RPC,
/// NetBIOS and SMB, IMAP, LDAP, TLS services, rlogin/rsh, Modbus, SOCKS, MQTT, MySQL, RDP,
/// PostgreSQL, XMPP, IRC, Redis, DNP3. `--server-port` adds more.
pub const LIKELY_SERVER_PORTS: &[u16] = &[
    21, 22, 23, 25, 53, 79, 80, 81, 88, 110, 113, 135, 139, 143, 389, 443, 445, 502, 513, 514, 563,
    585, 587, 614, 631, 636, 989, 990, 992, 993, 995, 1080, 1883, 2811, 3128, 3268, 3306, 3389,
    5222, 5223, 5269, 5432, 6379, 6666, 6667, 6668, 6669, 8000, 8080, 8888, 20000,
];

/// A set of ports, one bit each: word `port / 64`, bit `port % 64`. The kernel keeps the
/// words in an array map of the same layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortSet {
    pub words: [u64; PORT_SET_WORDS],
}

impl PortSet {
    pub const EMPTY: PortSet = PortSet {
        words: [0; PORT_SET_WORDS],
    };

    /// The built-in likely server ports, `LIKELY_SERVER_PORTS`.
    pub const LIKELY_SERVERS: PortSet = {
        let mut set = PortSet::EMPTY;
        let mut i = 0;
        while i < LIKELY_SERVER_PORTS.len() {
            set = set.with(LIKELY_SERVER_PORTS[i]);
            i += 1;
        }
        set
    };

    /// This set and `port`.
    pub const fn with(mut self, port: u16) -> Self {
        let (word, bit) = word_and_bit(port);
        self.words[word] |= bit;
        self
    }

    pub const fn contains(&self, port: u16) -> bool {
        let (word, bit) = word_and_bit(port);
        self.words[word] & bit != 0
    }
}

/// The word of a `PortSet` that holds `port`, and its bit there.
#[inline(always)]
pub const fn word_and_bit(port: u16) -> (usize, u64) {
    ((port >> 6) as usize, 1 << (port & 63))
}

/// Zeek's heuristic for a connection whose first packet seen is `pkt`: whether the roles are
/// flipped, so that `pkt`'s receiver is the originator. A SYN (without ACK) is never flipped.
/// Any other first packet is flipped when it comes from a likely server port and goes to one
/// that is not; when both ports are likely, only a packet without SYN (a SYN-ACK may be a
/// stealth scan's answer) from the lower port. `likely_server` says whether a port is one.
#[inline(always)]
pub fn flips(pkt: &PacketMeta, likely_server: &impl Fn(u16) -> bool) -> bool {
    let syn = pkt.has(tcp_flags::SYN);
    if (syn && !pkt.has(tcp_flags::ACK)) || !likely_server(pkt.src_port) {
        return false;
    }
    if likely_server(pkt.dst_port) {
        !syn && pkt.src_port < pkt.dst_port
    } else {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(src_port: u16, dst_port: u16, flags: u8) -> PacketMeta {
        PacketMeta {
            src_port,
            dst_port,
            tcp_flags: flags,
            ..PacketMeta::default()
        }
    }

    #[test]
    fn the_built_in_set_holds_exactly_the_listed_ports() {
        let set = PortSet::LIKELY_SERVERS;
        let held = (0..=u16::MAX).filter(|&p| set.contains(p)).count();
        assert_eq!(held, LIKELY_SERVER_PORTS.len());
        assert!(set.contains(443) && set.contains(20000) && !set.contains(4001));
        assert!(PortSet::EMPTY.with(65535).contains(65535));
    }

    #[test]
    fn flips_as_zeek_does() {
        let likely = |port| PortSet::LIKELY_SERVERS.contains(port);
        let (ack, syn, syn_ack, rst) = (
            tcp_flags::ACK,
            tcp_flags::SYN,
            tcp_flags::SYN | tcp_flags::ACK,
            tcp_flags::RST,
        );
        let cases = [
            (segment(443, 40000, ack), true, "data from a server port"),
            (
                segment(80, 40000, rst),
                true,
                "a lone RST from a server port",
            ),
            (
                segment(443, 40000, syn_ack),
                true,
                "a SYN-ACK from a server port",
            ),
            (segment(443, 40000, syn), false, "a SYN is never flipped"),
            (segment(40000, 443, ack), false, "to a server port"),
            (segment(4001, 40000, ack), false, "no likely port"),
            (segment(80, 443, ack), true, "both likely, from the lower"),
            (segment(443, 80, ack), false, "both likely, from the higher"),
            (segment(80, 443, syn_ack), false, "both likely, a SYN-ACK"),
        ];
        for (pkt, flipped, what) in cases {
            assert_eq!(flips(&pkt, &likely), flipped, "{what}");
        }
    }
}
