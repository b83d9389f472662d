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
const TCPOPT_EOL: u8 = 0;
const TCPOPT_NOP: u8 = 1;
const TCPOPT_WINDOW: u8 = 3;
/// TCP options occupy at most 40 bytes; each loop turn consumes at least one.
const MAX_TCP_OPTION_BYTES: usize = 40;
/// Stack copy of the options for the walk: a power of two, so that `off & OPTION_INDEX_MASK`
/// keeps every read inside it in a form any verifier can prove; bytes past the 40 option bytes
/// are EOL.
const OPTION_BUF: usize = 64;
const OPTION_INDEX_MASK: usize = OPTION_BUF - 1;
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
fn u8_at(data: usize, data_end: usize, offset: usize) -> Result<u8, ParseError> {
    Ok(unsafe { *ptr_at::<u8>(data, data_end, offset)? })
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
#[inline(always)]
pub fn parse(
    data: usize,
    data_end: usize,
    vlan_hint: u16,
    pkt: &mut PacketMeta,
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
    parse_tcp(data, data_end, l4, l4_len, pkt)
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
    let mut options = [TCPOPT_EOL; MAX_TCP_OPTION_BYTES];
    for (i, byte) in options.iter_mut().enumerate() {
        if i >= len {
            break;
        }
        match u8_at(data, data_end, start + i) {
            Ok(b) => *byte = b,
            Err(_) => break,
        }
    }
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&options[i * 8..i * 8 + 8]);
        u64::from_le_bytes(w)
    };
    rstwatch_window_scale(word(0), word(1), word(2), word(3), word(4)) as u8
}

/// Walks the 40 option bytes, passed as five little-endian words, for the window-scale option.
///
/// A global (exported, never inlined) function: the verifier checks it once on its own,
/// instead of once for every parse path that leads to a SYN (VLAN tags times IPv6 extension
/// chains), which would exceed its instruction budget. Its arguments are plain scalars because
/// that is all a global function may take besides the context.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rstwatch_window_scale(o0: u64, o1: u64, o2: u64, o3: u64, o4: u64) -> u32 {
    let mut options = [TCPOPT_EOL; OPTION_BUF];
    for (i, word) in [o0, o1, o2, o3, o4].iter().enumerate() {
        options[i * 8..i * 8 + 8].copy_from_slice(&word.to_le_bytes());
    }
    // Every read masks its index right before it: the 6.1 verifier loses the bound of a
    // `min()`-clamped offset across loop turns (it then sees `umin > umax` and rejects the read),
    // while a mask bounds the index on every kernel. The masked reads never wrap for real:
    // `off` stays below 40 and the buffer holds 64 bytes.
    let mut off = 0usize;
    for _ in 0..MAX_TCP_OPTION_BYTES {
        if off >= MAX_TCP_OPTION_BYTES {
            break;
        }
        let kind = options[off & OPTION_INDEX_MASK];
        if kind == TCPOPT_EOL {
            break;
        }
        if kind == TCPOPT_NOP {
            off += 1;
            continue;
        }
        let opt_len = options[(off + 1) & OPTION_INDEX_MASK] as usize;
        if kind == TCPOPT_WINDOW && opt_len == 3 {
            return options[(off + 2) & OPTION_INDEX_MASK] as u32;
        }
        if opt_len < 2 {
            break;
        }
        off += opt_len;
    }
    NO_WINDOW_SCALE as u32
}
