//! IP and TCP headers of a captured packet to the `PacketMeta` the flow update takes.
//!
//! The kernel's parser works on raw pointers in the form the BPF verifier accepts; this is
//! the same decoding on a byte slice, with the same rules and the same `Counter` per reason,
//! checked against the kernel's results on the same frames by the integration tests. Two
//! differences come from captures themselves: a packet cut by the snapshot length keeps its
//! IP length (the payload length is what the IP header says, as Zeek and Wireshark count
//! it), and a TCP header cut inside its options still yields the fixed header.

use rstwatch_common::{
    packet::{tcp_flags, FAMILY_IPV4, FAMILY_IPV6, NO_WINDOW_SCALE},
    Counter, PacketMeta,
};

const IPPROTO_TCP: u8 = 6;
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_DEST: u8 = 60;
/// The kernel parser's limit, so both give up on the same chains.
const MAX_IPV6_EXT_HEADERS: usize = 6;
const TCP_HLEN: usize = 20;
const TCPOPT_EOL: u8 = 0;
const TCPOPT_NOP: u8 = 1;
const TCPOPT_WINDOW: u8 = 3;
const TLS_CONTENT_ALERT: u8 = 21;
const TLS_RECORD_HLEN: u16 = 5;

/// Which network header starts the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Network {
    Ipv4,
    Ipv6,
}

/// Decodes the IP packet in `ip` (captured bytes, perhaps cut short) into `pkt`. `wire_len`
/// is the packet's length on the wire from the IP header on, for IPv4 headers whose total
/// length is 0 (a segmentation-offloaded packet captured before the NIC split it).
pub fn decode_ip(
    network: Network,
    ip: &[u8],
    wire_len: usize,
    vlan: u16,
    pkt: &mut PacketMeta,
) -> Result<(), Counter> {
    *pkt = PacketMeta {
        vlan,
        window_scale: NO_WINDOW_SCALE,
        ..PacketMeta::default()
    };
    let (l4, l4_len) = match network {
        Network::Ipv4 => decode_ipv4(ip, wire_len, pkt)?,
        Network::Ipv6 => decode_ipv6(ip, pkt)?,
    };
    decode_tcp(&ip[l4..], l4_len, pkt)
}

fn decode_ipv4(ip: &[u8], wire_len: usize, pkt: &mut PacketMeta) -> Result<(usize, u16), Counter> {
    let header = ip.get(..IPV4_HLEN).ok_or(Counter::Truncated)?;
    let ihl = ((header[0] & 0x0f) as usize) * 4;
    if header[0] >> 4 != 4 || ihl < IPV4_HLEN {
        return Err(Counter::BadHeader);
    }
    let frag = u16::from_be_bytes([header[6], header[7]]);
    if frag & 0x1fff != 0 {
        return Err(Counter::NonFirstFragment);
    }
    if header[9] != IPPROTO_TCP {
        return Err(Counter::NotTcp);
    }
    if ip.len() < ihl {
        return Err(Counter::Truncated);
    }
    pkt.family = FAMILY_IPV4;
    pkt.ip_id = u16::from_be_bytes([header[4], header[5]]);
    pkt.df = ((frag & 0x4000) != 0) as u8;
    pkt.ttl = header[8];
    pkt.src_addr =
        rstwatch_common::packet::ipv4_mapped([header[12], header[13], header[14], header[15]]);
    pkt.dst_addr =
        rstwatch_common::packet::ipv4_mapped([header[16], header[17], header[18], header[19]]);
    let total_len = match u16::from_be_bytes([header[2], header[3]]) {
        0 => wire_len.min(u16::MAX as usize) as u16,
        len => len,
    };
    Ok((ihl, total_len.saturating_sub(ihl as u16)))
}

fn decode_ipv6(ip: &[u8], pkt: &mut PacketMeta) -> Result<(usize, u16), Counter> {
    let header = ip.get(..IPV6_HLEN).ok_or(Counter::Truncated)?;
    if header[0] >> 4 != 6 {
        return Err(Counter::BadHeader);
    }
    let payload_len = u16::from_be_bytes([header[4], header[5]]);
    let mut next = header[6];
    pkt.family = FAMILY_IPV6;
    pkt.ttl = header[7];
    pkt.src_addr.copy_from_slice(&header[8..24]);
    pkt.dst_addr.copy_from_slice(&header[24..40]);
    let mut off = IPV6_HLEN;
    let mut ext_len = 0u16;
    for _ in 0..=MAX_IPV6_EXT_HEADERS {
        if next == IPPROTO_TCP {
            return Ok((off, payload_len.saturating_sub(ext_len)));
        }
        let ext = ip.get(off..off + 4).ok_or(Counter::Truncated)?;
        let hdr_len = match next {
            NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST => (ext[1] as usize + 1) * 8,
            NEXTHDR_FRAGMENT => {
                if u16::from_be_bytes([ext[2], ext[3]]) & 0xfff8 != 0 {
                    return Err(Counter::NonFirstFragment);
                }
                8
            }
            _ => return Err(Counter::NotTcp),
        };
        next = ext[0];
        off += hdr_len;
        ext_len = ext_len.saturating_add(hdr_len as u16);
    }
    Err(Counter::Ipv6ChainTooLong)
}

fn decode_tcp(tcp: &[u8], l4_len: u16, pkt: &mut PacketMeta) -> Result<(), Counter> {
    let header = tcp.get(..TCP_HLEN).ok_or(Counter::Truncated)?;
    let doff = ((header[12] >> 4) as usize) * 4;
    if doff < TCP_HLEN {
        return Err(Counter::BadHeader);
    }
    pkt.src_port = u16::from_be_bytes([header[0], header[1]]);
    pkt.dst_port = u16::from_be_bytes([header[2], header[3]]);
    pkt.seq = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    pkt.ack = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
    pkt.tcp_flags = header[13];
    pkt.window = u16::from_be_bytes([header[14], header[15]]);
    pkt.payload_len = l4_len.saturating_sub(doff as u16);
    let options = tcp.get(TCP_HLEN..doff.min(tcp.len())).unwrap_or(&[]);
    if pkt.has(tcp_flags::SYN) {
        pkt.window_scale = window_scale(options);
    }
    if pkt.payload_len >= TLS_RECORD_HLEN {
        if let Some(head) = tcp.get(doff..doff + 2) {
            pkt.tls_alert = (head[0] == TLS_CONTENT_ALERT && head[1] == 3) as u8;
        }
    }
    Ok(())
}

/// The window-scale shift from a SYN's options (RFC 7323 2.2), `NO_WINDOW_SCALE` if absent or
/// cut off; a malformed option list ends the search.
fn window_scale(options: &[u8]) -> u8 {
    let mut off = 0;
    while let Some(&kind) = options.get(off) {
        match kind {
            TCPOPT_EOL => break,
            TCPOPT_NOP => off += 1,
            _ => {
                let Some(&len) = options.get(off + 1) else {
                    break;
                };
                if kind == TCPOPT_WINDOW && len == 3 {
                    return options.get(off + 2).copied().unwrap_or(NO_WINDOW_SCALE);
                }
                if len < 2 {
                    break;
                }
                off += len as usize;
            }
        }
    }
    NO_WINDOW_SCALE
}
