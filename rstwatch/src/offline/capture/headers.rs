//! IP and TCP headers of a captured packet to the `PacketMeta` the flow update takes.
//!
//! What each header's bytes mean is `rstwatch_common::wire`'s, which the kernel's parser
//! (`rstwatch-ebpf/src/parse.rs`) calls too. How they are read stays apart: the kernel reads
//! through bounds checks in the form the BPF verifier follows, on a packet it sees whole, and
//! shapes its walks (the IPv6 extension chain, the TCP options as five words through a
//! function verified once) for the verifier's instruction budget; this reads a byte slice of
//! a capture, which may be cut short. The two are checked against each other on the same
//! frames by the integration tests, the same `PacketMeta` or the same `Counter` out of both.
//! Two differences come from captures themselves: a packet cut by the snapshot length keeps
//! its IP length (the payload length is what the IP header says, as Zeek and Wireshark count
//! it), and a TCP header cut inside its options still yields the fixed header.

use rstwatch_common::{
    packet::{tcp_flags, NO_WINDOW_SCALE},
    wire::{
        ipv4_fields, ipv4_header_len, ipv6_extension, ipv6_fields, opens_tls_alert, tcp_fields,
        tcp_header_len, IPPROTO_TCP, IPV4_HLEN, IPV6_HLEN, MAX_IPV6_EXT_HEADERS, TCPOPT_EOL,
        TCPOPT_NOP, TCPOPT_WINDOW, TCP_HLEN, TLS_RECORD_HLEN,
    },
    Counter, PacketMeta,
};

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
    let header = ip.first_chunk::<IPV4_HLEN>().ok_or(Counter::Truncated)?;
    let ihl = ipv4_header_len(header)?;
    if ip.len() < ihl {
        return Err(Counter::Truncated);
    }
    // `decode_ip` made `pkt` afresh, as `ipv4_fields` needs.
    let total_len = match ipv4_fields(header, pkt) {
        0 => wire_len.min(u16::MAX as usize) as u16,
        len => len,
    };
    Ok((ihl, total_len.saturating_sub(ihl as u16)))
}

fn decode_ipv6(ip: &[u8], pkt: &mut PacketMeta) -> Result<(usize, u16), Counter> {
    let header = ip.first_chunk::<IPV6_HLEN>().ok_or(Counter::Truncated)?;
    let (payload_len, mut next) = ipv6_fields(header, pkt)?;
    let mut off = IPV6_HLEN;
    let mut ext_len = 0u16;
    for _ in 0..=MAX_IPV6_EXT_HEADERS {
        if next == IPPROTO_TCP {
            return Ok((off, payload_len.saturating_sub(ext_len)));
        }
        let ext = ip.get(off..).and_then(<[u8]>::first_chunk::<4>);
        let (hdr_len, after) = ipv6_extension(next, *ext.ok_or(Counter::Truncated)?)?;
        next = after;
        off += hdr_len;
        ext_len = ext_len.saturating_add(hdr_len as u16);
    }
    Err(Counter::Ipv6ChainTooLong)
}

fn decode_tcp(tcp: &[u8], l4_len: u16, pkt: &mut PacketMeta) -> Result<(), Counter> {
    let header = tcp.first_chunk::<TCP_HLEN>().ok_or(Counter::Truncated)?;
    let doff = tcp_header_len(header)?;
    tcp_fields(header, doff, l4_len, pkt);
    let options = tcp.get(TCP_HLEN..doff.min(tcp.len())).unwrap_or(&[]);
    if pkt.has(tcp_flags::SYN) {
        pkt.window_scale = window_scale(options);
    }
    if pkt.payload_len >= TLS_RECORD_HLEN {
        if let Some(head) = tcp.get(doff..).and_then(<[u8]>::first_chunk::<2>) {
            pkt.tls_alert = opens_tls_alert(*head) as u8;
        }
    }
    Ok(())
}

/// The window-scale shift from a SYN's options (RFC 7323 2.2), `NO_WINDOW_SCALE` if absent or
/// cut off; a malformed option list ends the search. The kernel walks the options its own way
/// (`rstwatch_window_scale`): as five words, in a function the verifier checks once.
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
