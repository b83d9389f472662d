//! The one packet parser, shared by the XDP (ingress) and TC (egress) programs.
//!
//! Works on raw `[data, data_end)` bounds so both hooks can use it; every read is checked
//! against `data_end` first, in the form the verifier can follow.

use core::mem::size_of;

use rstwatch_common::{
    packet::{tcp_flags, FAMILY_IPV4, FAMILY_IPV6, NO_WINDOW_SCALE},
    Counter, PacketMeta,
};

const ETH_HLEN: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const VLAN_HLEN: usize = 4;
const MAX_VLAN_TAGS: usize = 2;

const IPPROTO_TCP: u8 = 6;
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_DEST: u8 = 60;
/// Extension headers followed before giving up: RFC 8200 4.1 recommends at most one of each
/// (destination options twice), so six covers every well-formed chain.
pub const MAX_IPV6_EXT_HEADERS: usize = 6;

const TCP_HLEN: usize = 20;
/// Bounds the TCP header's offset for the verifier (`forget_bounds`).
const TCP_OFFSET_MASK: usize = (1 << 14) - 1;
const TCPOPT_EOL: u8 = 0;
const TCPOPT_NOP: u8 = 1;
const TCPOPT_WINDOW: u8 = 3;
/// TCP options occupy at most 40 bytes; each loop turn consumes at least one.
const MAX_TCP_OPTION_BYTES: usize = 40;
const TLS_CONTENT_ALERT: u8 = 21;
const TLS_RECORD_HLEN: u16 = 5;

/// Why a packet was not parsed to the end; each maps to its counter.
pub type ParseError = Counter;

#[inline(always)]
fn ptr_at<T>(data: usize, data_end: usize, offset: usize) -> Result<*const T, ParseError> {
    if data + offset + size_of::<T>() > data_end {
        return Err(Counter::Truncated);
    }
    Ok((data + offset) as *const T)
}

#[inline(always)]
fn be16_at(data: usize, data_end: usize, offset: usize) -> Result<u16, ParseError> {
    Ok(u16::from_be(unsafe {
        ptr_at::<u16>(data, data_end, offset)?.read_unaligned()
    }))
}

#[inline(always)]
fn bytes_at<const N: usize>(
    data: usize,
    data_end: usize,
    offset: usize,
) -> Result<[u8; N], ParseError> {
    Ok(unsafe { ptr_at::<[u8; N]>(data, data_end, offset)?.read_unaligned() })
}

/// Parses an Ethernet frame down to TCP into `pkt`. `vlan_hint` is a VLAN id the hook already
/// knows (TC sees offloaded tags in skb metadata, not in the frame); 0 when none.
/// `tcp_offset` must be map memory (see `forget_bounds`).
#[inline(always)]
pub fn parse(
    data: usize,
    data_end: usize,
    vlan_hint: u16,
    pkt: &mut PacketMeta,
    tcp_offset: &mut usize,
) -> Result<(), ParseError> {
    let mut ether_type = be16_at(data, data_end, 12)?;
    let mut l3 = ETH_HLEN;
    let mut vlan = vlan_hint;
    for _ in 0..MAX_VLAN_TAGS {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        // The innermost tag names the VLAN the conversation lives in.
        vlan = be16_at(data, data_end, l3)? & 0x0fff;
        ether_type = be16_at(data, data_end, l3 + 2)?;
        l3 += VLAN_HLEN;
    }
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        return Err(Counter::VlanTooDeep);
    }
    // SAFETY: PacketMeta is plain old data, all zeroes is a valid value.
    unsafe { rstwatch_common::zero::zero_in_place(pkt as *mut PacketMeta) };
    pkt.vlan = vlan;
    pkt.window_scale = NO_WINDOW_SCALE;
    let (l4, l4_len) = match ether_type {
        ETH_P_IPV4 => parse_ipv4(data, data_end, l3, pkt)?,
        ETH_P_IPV6 => parse_ipv6(data, data_end, l3, pkt)?,
        _ => return Err(Counter::NotIp),
    };
    parse_tcp(data, data_end, forget_bounds(l4, tcp_offset), l4_len, pkt)
}

/// The TCP header's offset, with every path's exact bounds replaced by one range.
///
/// Each way through the link and IP headers (VLAN tags, IPv4 options, each IPv6 extension
/// chain) reaches the TCP parser with its own bounds on the offset, and the verifier walks
/// the TCP parser (options, TLS check) once per distinct bound. Going through map memory,
/// which the verifier does not track, and a mask gives every path the same
/// `[0, TCP_OFFSET_MASK]`, so it can prune more of them. The mask never changes a real offset: Ethernet, two VLAN tags, IPv6 and
/// six extension headers of at most 2048 bytes end below 12,400.
#[inline(always)]
fn forget_bounds(l4: usize, tcp_offset: &mut usize) -> usize {
    // Volatile: the compiler must not forward the stored value past the load.
    // SAFETY: a valid, exclusive reference.
    unsafe {
        core::ptr::write_volatile(tcp_offset, l4);
        core::ptr::read_volatile(tcp_offset) & TCP_OFFSET_MASK
    }
}

/// Returns the TCP header's offset and the length of the IP payload.
///
/// Fixed headers are copied out with one constant-size bounds check: the verifier cannot carry
/// a variable-length check (IPv4 options) over to later constant-offset reads, and LLVM would
/// otherwise merge the two.
#[inline(always)]
fn parse_ipv4(
    data: usize,
    data_end: usize,
    l3: usize,
    pkt: &mut PacketMeta,
) -> Result<(usize, u16), ParseError> {
    let ip = bytes_at::<IPV4_HLEN>(data, data_end, l3)?;
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    if ip[0] >> 4 != 4 || ihl < IPV4_HLEN {
        return Err(Counter::BadHeader);
    }
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    if frag & 0x1fff != 0 {
        return Err(Counter::NonFirstFragment);
    }
    if ip[9] != IPPROTO_TCP {
        return Err(Counter::NotTcp);
    }
    // Options are not interpreted, but the whole header must be present.
    ptr_at::<u8>(data, data_end, l3 + ihl - 1)?;
    pkt.family = FAMILY_IPV4;
    pkt.ip_id = u16::from_be_bytes([ip[4], ip[5]]);
    pkt.df = ((frag & 0x4000) != 0) as u8;
    pkt.ttl = ip[8];
    // IPv4-mapped (`::ffff:a.b.c.d`, as `ipv4_mapped` builds): `parse` zeroed the prefix
    // already, and writing it again would cost a byte-at-a-time `memset` call per address.
    pkt.src_addr[10..].copy_from_slice(&[0xff, 0xff, ip[12], ip[13], ip[14], ip[15]]);
    pkt.dst_addr[10..].copy_from_slice(&[0xff, 0xff, ip[16], ip[17], ip[18], ip[19]]);
    let total_len = u16::from_be_bytes([ip[2], ip[3]]);
    Ok((l3 + ihl, total_len.saturating_sub(ihl as u16)))
}

#[inline(always)]
fn parse_ipv6(
    data: usize,
    data_end: usize,
    l3: usize,
    pkt: &mut PacketMeta,
) -> Result<(usize, u16), ParseError> {
    let ip = ptr_at::<[u8; IPV6_HLEN]>(data, data_end, l3)?;
    // SAFETY: ptr_at checked that the whole fixed header is inside the packet.
    let ip = unsafe { &*ip };
    if ip[0] >> 4 != 6 {
        return Err(Counter::BadHeader);
    }
    let payload_len = u16::from_be_bytes([ip[4], ip[5]]);
    let mut next = ip[6];
    pkt.family = FAMILY_IPV6;
    pkt.ttl = ip[7];
    pkt.src_addr.copy_from_slice(&ip[8..24]);
    pkt.dst_addr.copy_from_slice(&ip[24..40]);
    let mut off = l3 + IPV6_HLEN;
    let mut ext_len = 0u16;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        if next == IPPROTO_TCP {
            return Ok((off, payload_len.saturating_sub(ext_len)));
        }
        // Every extension header is at least 8 bytes; its first four say all the parser needs
        // (next header, length, fragment offset), read with one check.
        let ext = bytes_at::<4>(data, data_end, off)?;
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
    if next == IPPROTO_TCP {
        return Ok((off, payload_len.saturating_sub(ext_len)));
    }
    Err(Counter::Ipv6ChainTooLong)
}

#[inline(always)]
fn parse_tcp(
    data: usize,
    data_end: usize,
    l4: usize,
    l4_len: u16,
    pkt: &mut PacketMeta,
) -> Result<(), ParseError> {
    let tcp = bytes_at::<TCP_HLEN>(data, data_end, l4)?;
    let doff = ((tcp[12] >> 4) as usize) * 4;
    if doff < TCP_HLEN {
        return Err(Counter::BadHeader);
    }
    // Options are only searched in SYNs, but the whole header must be present.
    ptr_at::<u8>(data, data_end, l4 + doff - 1)?;
    pkt.src_port = u16::from_be_bytes([tcp[0], tcp[1]]);
    pkt.dst_port = u16::from_be_bytes([tcp[2], tcp[3]]);
    pkt.seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    pkt.ack = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
    pkt.tcp_flags = tcp[13];
    pkt.window = u16::from_be_bytes([tcp[14], tcp[15]]);
    pkt.payload_len = l4_len.saturating_sub(doff as u16);
    if pkt.tcp_flags & tcp_flags::SYN != 0 {
        pkt.window_scale = window_scale(data, data_end, l4 + TCP_HLEN, doff - TCP_HLEN);
    }
    if pkt.payload_len >= TLS_RECORD_HLEN {
        // A payload that starts with a TLS alert record (type 21, version 3.x).
        if let Ok(head) = bytes_at::<2>(data, data_end, l4 + doff) {
            pkt.tls_alert = (head[0] == TLS_CONTENT_ALERT && head[1] == 3) as u8;
        }
    }
    Ok(())
}

/// The window-scale shift from a SYN's options (RFC 7323 2.2), `NO_WINDOW_SCALE` if absent.
/// A malformed option list just ends the search: the segment is still tracked.
#[inline(always)]
fn window_scale(data: usize, data_end: usize, start: usize, len: usize) -> u8 {
    let mut words = [0u64; MAX_TCP_OPTION_BYTES / 8];
    // Four bytes at a time (the options' length is a multiple of four), without an early
    // exit: each read's two outcomes meet again right after it, and each bounds check the
    // verifier passes is one more packet range it tells apart, so ten reads rather than forty
    // keep the copy's paths few. Bytes past the packet read as EOL, which ends the walk.
    for chunk in 0..MAX_TCP_OPTION_BYTES / 4 {
        let bytes = bytes_at::<4>(data, data_end, start + chunk * 4).unwrap_or([TCPOPT_EOL; 4]);
        words[chunk / 2] |= (u32::from_le_bytes(bytes) as u64) << (32 * (chunk % 2));
    }
    // Bytes past the options (payload) are EOL too. Masked afterwards rather than checked
    // per byte: next to that check the compiler drops the packet bound as implied by the
    // header-length check, which the verifier cannot follow.
    for (w, word) in words.iter_mut().enumerate() {
        let options_in_word = len.saturating_sub(w * 8);
        if options_in_word < 8 {
            *word &= (1u64 << (options_in_word * 8)) - 1;
        }
    }
    rstwatch_window_scale(words[0], words[1], words[2], words[3], words[4]) as u8
}

/// Walks the 40 option bytes, passed as five little-endian words, for the window-scale option.
///
/// A global (exported, never inlined) function: the verifier checks it once on its own,
/// instead of once for every parse path that leads to a SYN (VLAN tags times IPv6 extension
/// chains). Its arguments are plain scalars because that is all a global function may take
/// besides the context.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rstwatch_window_scale(o0: u64, o1: u64, o2: u64, o3: u64, o4: u64) -> u32 {
    let words = [o0, o1, o2, o3, o4];
    // Bytes past the 40 option bytes are EOL.
    let byte = |at: usize| {
        if at < MAX_TCP_OPTION_BYTES {
            (words[at / 8] >> (8 * (at % 8))) as u8
        } else {
            TCPOPT_EOL
        }
    };
    // Every position is visited in turn and only compared with `next`, where the next option
    // starts; `next` never indexes anything. Walking with the option offset as the index
    // instead makes the verifier track every reachable offset separately, hundreds of
    // thousands of instructions for one walk.
    let mut next = 0usize;
    for at in 0..MAX_TCP_OPTION_BYTES {
        if at != next {
            continue;
        }
        let kind = byte(at);
        if kind == TCPOPT_EOL {
            break;
        }
        if kind == TCPOPT_NOP {
            next = at + 1;
            continue;
        }
        let opt_len = byte(at + 1) as usize;
        if kind == TCPOPT_WINDOW && opt_len == 3 {
            return byte(at + 2) as u32;
        }
        if opt_len < 2 {
            break;
        }
        next = at + opt_len;
    }
    NO_WINDOW_SCALE as u32
}
