//! The headers on the wire down to TCP: their numbers and lengths, and what the parsers make
//! of each header's fixed bytes, written once for the kernel's parser
//! (`rstwatch-ebpf/src/parse.rs`) and the capture decoder (`rstwatch/src/offline/capture/`).
//!
//! Each parser reads the bytes its own way and hands them here as fixed-size arrays: the
//! kernel through bounds checks in the form the BPF verifier follows, on a packet it sees
//! whole; the decoder from a slice of a capture, which may be cut short. How far each walks
//! (the VLAN tags and the IPv6 extension chain, whose every read is such a check) and how it
//! reads the TCP options therefore stay each parser's own, with the same limits from here.

use crate::{
    counter::Counter,
    packet::{ipv4_mapped_into_zeroed, PacketMeta, FAMILY_IPV4, FAMILY_IPV6},
};

pub const ETH_HLEN: usize = 14;
/// EtherTypes.
pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
/// One VLAN tag: its TCI, then the EtherType of what follows.
pub const VLAN_HLEN: usize = 4;
/// The VLAN ID's bits of a tag's TCI.
pub const VLAN_VID_MASK: u16 = 0x0fff;
/// VLAN tags followed; a frame with more counts as `Counter::VlanTooDeep`.
pub const MAX_VLAN_TAGS: usize = 2;

pub const IPPROTO_TCP: u8 = 6;
pub const IPV4_HLEN: usize = 20;
pub const IPV6_HLEN: usize = 40;
/// The IPv6 extension headers the parsers follow.
pub const NEXTHDR_HOP: u8 = 0;
pub const NEXTHDR_ROUTING: u8 = 43;
pub const NEXTHDR_FRAGMENT: u8 = 44;
pub const NEXTHDR_DEST: u8 = 60;
/// Extension headers followed before giving up (`Counter::Ipv6ChainTooLong`): RFC 8200 4.1
/// recommends at most one of each (destination options twice), so six covers every
/// well-formed chain.
pub const MAX_IPV6_EXT_HEADERS: usize = 6;

pub const TCP_HLEN: usize = 20;
/// TCP option kinds.
pub const TCPOPT_EOL: u8 = 0;
pub const TCPOPT_NOP: u8 = 1;
pub const TCPOPT_WINDOW: u8 = 3;
/// TCP options occupy at most 40 bytes (a data offset of 15 words).
pub const MAX_TCP_OPTION_BYTES: usize = 40;
/// A payload this long at least may open a TLS record: its header's length.
pub const TLS_RECORD_HLEN: u16 = 5;
/// A TLS record's content type for an alert.
pub const TLS_CONTENT_ALERT: u8 = 21;

/// The length of the IPv4 header `ip` opens (IHL), when it is one of a first fragment that
/// carries TCP; else why the packet is left alone.
#[inline(always)]
pub fn ipv4_header_len(ip: &[u8; IPV4_HLEN]) -> Result<usize, Counter> {
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    if ip[0] >> 4 != 4 || ihl < IPV4_HLEN {
        return Err(Counter::BadHeader);
    }
    if fragment(ip) & 0x1fff != 0 {
        return Err(Counter::NonFirstFragment);
    }
    if ip[9] != IPPROTO_TCP {
        return Err(Counter::NotTcp);
    }
    Ok(ihl)
}

/// Fills `pkt`'s IPv4 fields from the header `ip` (`ipv4_header_len` accepted it) and returns
/// its total length. `pkt`'s addresses must be zero (a fresh `PacketMeta`'s are).
#[inline(always)]
pub fn ipv4_fields(ip: &[u8; IPV4_HLEN], pkt: &mut PacketMeta) -> u16 {
    pkt.family = FAMILY_IPV4;
    pkt.ip_id = u16::from_be_bytes([ip[4], ip[5]]);
    pkt.df = ((fragment(ip) & 0x4000) != 0) as u8;
    pkt.ttl = ip[8];
    ipv4_mapped_into_zeroed(&mut pkt.src_addr, [ip[12], ip[13], ip[14], ip[15]]);
    ipv4_mapped_into_zeroed(&mut pkt.dst_addr, [ip[16], ip[17], ip[18], ip[19]]);
    u16::from_be_bytes([ip[2], ip[3]])
}

/// The flags and fragment offset of an IPv4 header.
#[inline(always)]
fn fragment(ip: &[u8; IPV4_HLEN]) -> u16 {
    u16::from_be_bytes([ip[6], ip[7]])
}

/// Fills `pkt`'s IPv6 fields from the fixed header `ip` and returns its payload length and
/// its next header; `BadHeader` when it is no IPv6 header.
#[inline(always)]
pub fn ipv6_fields(ip: &[u8; IPV6_HLEN], pkt: &mut PacketMeta) -> Result<(u16, u8), Counter> {
    if ip[0] >> 4 != 6 {
        return Err(Counter::BadHeader);
    }
    let (payload_len, next) = (u16::from_be_bytes([ip[4], ip[5]]), ip[6]);
    pkt.family = FAMILY_IPV6;
    pkt.ttl = ip[7];
    pkt.src_addr.copy_from_slice(&ip[8..24]);
    pkt.dst_addr.copy_from_slice(&ip[24..40]);
    Ok((payload_len, next))
}

/// The length of the IPv6 extension header of type `next` whose first four bytes are `ext`
/// (all a parser needs: next header, length, fragment offset), and the type of the header
/// after it; else why the chain ends without TCP.
#[inline(always)]
pub fn ipv6_extension(next: u8, ext: [u8; 4]) -> Result<(usize, u8), Counter> {
    let len = match next {
        NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST => (ext[1] as usize + 1) * 8,
        NEXTHDR_FRAGMENT => {
            if u16::from_be_bytes([ext[2], ext[3]]) & 0xfff8 != 0 {
                return Err(Counter::NonFirstFragment);
            }
            8
        }
        _ => return Err(Counter::NotTcp),
    };
    Ok((len, ext[0]))
}

/// The length of the TCP header `tcp` opens (its data offset); `BadHeader` below the fixed
/// header's.
#[inline(always)]
pub fn tcp_header_len(tcp: &[u8; TCP_HLEN]) -> Result<usize, Counter> {
    let doff = ((tcp[12] >> 4) as usize) * 4;
    if doff < TCP_HLEN {
        return Err(Counter::BadHeader);
    }
    Ok(doff)
}

/// Fills `pkt`'s TCP fields from the fixed header `tcp`, `doff` bytes long
/// (`tcp_header_len`), of a segment `l4_len` bytes long (what the IP header says).
#[inline(always)]
pub fn tcp_fields(tcp: &[u8; TCP_HLEN], doff: usize, l4_len: u16, pkt: &mut PacketMeta) {
    pkt.src_port = u16::from_be_bytes([tcp[0], tcp[1]]);
    pkt.dst_port = u16::from_be_bytes([tcp[2], tcp[3]]);
    pkt.seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    pkt.ack = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
    pkt.tcp_flags = tcp[13];
    pkt.window = u16::from_be_bytes([tcp[14], tcp[15]]);
    pkt.payload_len = l4_len.saturating_sub(doff as u16);
}

/// Whether a payload (at least `TLS_RECORD_HLEN` long) whose first two bytes are `head` opens
/// a TLS (<= 1.2) alert record: content type 21, version major 3.
#[inline(always)]
pub const fn opens_tls_alert(head: [u8; 2]) -> bool {
    head[0] == TLS_CONTENT_ALERT && head[1] == 3
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::ipv4_mapped;

    fn ipv4() -> [u8; IPV4_HLEN] {
        let mut ip = [0; IPV4_HLEN];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&60u16.to_be_bytes());
        ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        ip[6] = 0x40;
        ip[8] = 64;
        ip[9] = IPPROTO_TCP;
        ip[12..16].copy_from_slice(&[198, 18, 0, 1]);
        ip[16..20].copy_from_slice(&[198, 18, 1, 2]);
        ip
    }

    #[test]
    fn an_ipv4_header_is_read_or_left_alone_for_its_reason() {
        let ip = ipv4();
        assert_eq!(ipv4_header_len(&ip), Ok(20));
        let mut pkt = PacketMeta::default();
        assert_eq!(ipv4_fields(&ip, &mut pkt), 60);
        assert_eq!(
            (pkt.family, pkt.ip_id, pkt.df, pkt.ttl),
            (FAMILY_IPV4, 0x1234, 1, 64)
        );
        assert_eq!(pkt.src_addr, ipv4_mapped([198, 18, 0, 1]));
        assert_eq!(pkt.dst_addr, ipv4_mapped([198, 18, 1, 2]));
        let with = |at: usize, byte: u8| {
            let mut ip = ipv4();
            ip[at] = byte;
            ipv4_header_len(&ip)
        };
        assert_eq!(with(0, 0x47), Ok(28), "options");
        assert_eq!(with(0, 0x44), Err(Counter::BadHeader), "IHL below 5");
        assert_eq!(with(0, 0x65), Err(Counter::BadHeader), "version 6");
        assert_eq!(with(7, 1), Err(Counter::NonFirstFragment));
        assert_eq!(with(6, 0x20), Ok(20), "more fragments: the first");
        assert_eq!(with(9, 17), Err(Counter::NotTcp));
    }

    #[test]
    fn an_ipv6_header_and_its_extensions_lead_to_tcp_or_say_why_not() {
        let mut ip = [0; IPV6_HLEN];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&40u16.to_be_bytes());
        ip[6] = NEXTHDR_HOP;
        ip[7] = 63;
        ip[8] = 0x20;
        ip[39] = 2;
        let mut pkt = PacketMeta::default();
        assert_eq!(ipv6_fields(&ip, &mut pkt), Ok((40, NEXTHDR_HOP)));
        assert_eq!(
            (pkt.family, pkt.ttl, pkt.src_addr[0]),
            (FAMILY_IPV6, 63, 0x20)
        );
        assert_eq!(pkt.dst_addr[15], 2);
        ip[0] = 0x40;
        assert_eq!(ipv6_fields(&ip, &mut pkt), Err(Counter::BadHeader));

        assert_eq!(
            ipv6_extension(NEXTHDR_HOP, [NEXTHDR_DEST, 0, 0, 0]),
            Ok((8, 60))
        );
        assert_eq!(
            ipv6_extension(NEXTHDR_ROUTING, [IPPROTO_TCP, 2, 0, 0]),
            Ok((24, IPPROTO_TCP))
        );
        assert_eq!(
            ipv6_extension(NEXTHDR_FRAGMENT, [IPPROTO_TCP, 0, 0, 1]),
            Ok((8, IPPROTO_TCP)),
            "more fragments: the first"
        );
        assert_eq!(
            ipv6_extension(NEXTHDR_FRAGMENT, [IPPROTO_TCP, 0, 0, 8]),
            Err(Counter::NonFirstFragment)
        );
        assert_eq!(ipv6_extension(17, [0; 4]), Err(Counter::NotTcp), "UDP");
    }

    #[test]
    fn a_tcp_header_fills_the_segments_fields() {
        let mut tcp = [0; TCP_HLEN];
        tcp[0..2].copy_from_slice(&443u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&40_000u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&7u32.to_be_bytes());
        tcp[8..12].copy_from_slice(&9u32.to_be_bytes());
        tcp[12] = 6 << 4;
        tcp[13] = 0x14;
        tcp[14..16].copy_from_slice(&512u16.to_be_bytes());
        assert_eq!(tcp_header_len(&tcp), Ok(24));
        let mut pkt = PacketMeta::default();
        tcp_fields(&tcp, 24, 30, &mut pkt);
        assert_eq!(
            (pkt.src_port, pkt.dst_port, pkt.seq, pkt.ack),
            (443, 40_000, 7, 9)
        );
        assert_eq!((pkt.tcp_flags, pkt.window, pkt.payload_len), (0x14, 512, 6));
        tcp_fields(&tcp, 24, 20, &mut pkt);
        assert_eq!(pkt.payload_len, 0, "an IP length short of the header");
        tcp[12] = 4 << 4;
        assert_eq!(tcp_header_len(&tcp), Err(Counter::BadHeader));
    }

    #[test]
    fn a_tls_alert_is_content_type_21_of_version_3() {
        assert!(opens_tls_alert([21, 3]));
        assert!(!opens_tls_alert([23, 3]), "application data");
        assert!(!opens_tls_alert([21, 2]), "SSL 2");
    }
}
