//! What the parser extracts from one TCP packet: the input of the flow update.

/// TCP header flag bits (RFC 9293, section 3.1).
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

pub const FAMILY_IPV4: u8 = 4;
pub const FAMILY_IPV6: u8 = 6;

/// `PacketMeta::window_scale` when the SYN carried no window-scale option.
pub const NO_WINDOW_SCALE: u8 = 0xff;

/// One parsed TCP segment. IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`) so both
/// families share one key layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketMeta {
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    /// TCP payload length in bytes (IP total/payload length minus headers).
    pub payload_len: u16,
    /// Raw (unscaled) receive window from the TCP header.
    pub window: u16,
    /// IPv4 identification; 0 for IPv6, which has none outside fragments.
    pub ip_id: u16,
    /// Innermost VLAN id, 0 when untagged.
    pub vlan: u16,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    pub tcp_flags: u8,
    pub family: u8,
    /// IPv4 don't-fragment bit (always 0 for IPv6).
    pub df: u8,
    /// Window-scale shift from a SYN's options, `NO_WINDOW_SCALE` if absent or not a SYN.
    pub window_scale: u8,
    /// The payload opens a TLS (<= 1.2) alert record: content type 21, version major 3.
    pub tls_alert: u8,
    pub _pad: [u8; 2],
}

impl PacketMeta {
    pub const fn has(&self, flag: u8) -> bool {
        self.tcp_flags & flag != 0
    }

    pub const fn is_rst(&self) -> bool {
        self.has(tcp_flags::RST)
    }

    /// Sequence space the segment occupies: SYN and FIN count one each (RFC 9293 3.4).
    pub const fn seq_len(&self) -> u32 {
        let mut len = self.payload_len as u32;
        if self.has(tcp_flags::SYN) {
            len += 1;
        }
        if self.has(tcp_flags::FIN) {
            len += 1;
        }
        len
    }
}

/// Builds an IPv4-mapped IPv6 address (RFC 4291 2.5.5.2) from IPv4 bytes in network order:
/// the one form of it, for the kernel (byte-level, through `ipv4_mapped_into_zeroed`) and for
/// userspace alike (rather than std's `Ipv4Addr::to_ipv6_mapped`, which the kernel cannot use).
pub const fn ipv4_mapped(v4: [u8; 4]) -> [u8; 16] {
    let mut addr = [0; 16];
    ipv4_mapped_into_zeroed(&mut addr, v4);
    addr
}

/// Makes `addr`, whose first ten bytes are zero already, `ipv4_mapped(v4)`: writes only its
/// last six bytes. The kernel's parser fills a zeroed `PacketMeta`, where writing the zeros
/// again would cost a byte-at-a-time `memset` call per address.
#[inline(always)]
pub const fn ipv4_mapped_into_zeroed(addr: &mut [u8; 16], v4: [u8; 4]) {
    addr[10] = 0xff;
    addr[11] = 0xff;
    addr[12] = v4[0];
    addr[13] = v4[1];
    addr[14] = v4[2];
    addr[15] = v4[3];
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn ipv4_mapped_is_the_standard_mapping() {
        let v4 = Ipv4Addr::new(198, 18, 0, 1);
        assert_eq!(ipv4_mapped(v4.octets()), v4.to_ipv6_mapped().octets());
        let mut addr = [0; 16];
        ipv4_mapped_into_zeroed(&mut addr, v4.octets());
        assert_eq!(addr, ipv4_mapped(v4.octets()));
    }
}
