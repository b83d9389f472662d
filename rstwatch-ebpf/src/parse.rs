//! The one packet parser, shared by the XDP (ingress) and TC (egress) programs.
//!
//! Works on raw `[data, data_end)` bounds so both hooks can use it; every read is checked
//! against `data_end` first, in the form the verifier can follow.
//!
//! What each header's bytes mean is `rstwatch_common::wire`'s, which the capture decoder
//! (`rstwatch/src/offline/capture/link.rs` and `headers.rs`) calls too. How they are read
//! stays apart: here every read is such a check and the walks (VLAN tags, the IPv6 extension
//! chain, the TCP options as five words through a function verified once) are shaped for the
//! verifier's instruction budget, where the decoder reads a byte slice of a capture, which may
//! be cut short and may start with another link header than Ethernet. The integration
//! tests check the two against each other on the same frames.

use core::mem::size_of;

use rstwatch_common::{
    packet::{tcp_flags, NO_WINDOW_SCALE},
    wire::{
        ipv4_fields, ipv4_header_len, ipv6_extension, ipv6_fields, opens_tls_alert, tcp_fields,
        tcp_header_len, ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6, IPPROTO_TCP,
        IPV4_HLEN, IPV6_HLEN, MAX_IPV6_EXT_HEADERS, MAX_TCP_OPTION_BYTES, MAX_VLAN_TAGS,
        TCPOPT_EOL, TCPOPT_NOP, TCPOPT_WINDOW, TCP_HLEN, TLS_RECORD_HLEN, VLAN_HLEN, VLAN_VID_MASK,
    },
    Counter, PacketMeta,
};

/// Bounds the TCP header's offset for the verifier (`forget_bounds`).
const TCP_OFFSET_MASK: usize = (1 << 14) - 1;

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
        vlan = be16_at(data, data_end, l3)? & VLAN_VID_MASK;
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
    let ihl = ipv4_header_len(&ip)?;
    // Options are not interpreted, but the whole header must be present.
    ptr_at::<u8>(data, data_end, l3 + ihl - 1)?;
    // `parse` zeroed the addresses, as `ipv4_fields` needs.
    let total_len = ipv4_fields(&ip, pkt);
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
    let (payload_len, mut next) = ipv6_fields(unsafe { &*ip }, pkt)?;
    let mut off = l3 + IPV6_HLEN;
    let mut ext_len = 0u16;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        if next == IPPROTO_TCP {
            return Ok((off, payload_len.saturating_sub(ext_len)));
        }
        // Every extension header is at least 8 bytes; its first four say all the parser needs
        // (next header, length, fragment offset), read with one check.
        let (hdr_len, after) = ipv6_extension(next, bytes_at::<4>(data, data_end, off)?)?;
        next = after;
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
    let doff = tcp_header_len(&tcp)?;
    // Options are only searched in SYNs, but the whole header must be present.
    ptr_at::<u8>(data, data_end, l4 + doff - 1)?;
    tcp_fields(&tcp, doff, l4_len, pkt);
    if pkt.tcp_flags & tcp_flags::SYN != 0 {
        pkt.window_scale = window_scale(data, data_end, l4 + TCP_HLEN, doff - TCP_HLEN);
    }
    if pkt.payload_len >= TLS_RECORD_HLEN {
        // A payload that starts with a TLS alert record (type 21, version 3.x).
        if let Ok(head) = bytes_at::<2>(data, data_end, l4 + doff) {
            pkt.tls_alert = opens_tls_alert(head) as u8;
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
/// besides the context. The capture decoder walks a slice of the options instead
/// (`rstwatch/src/offline/capture/headers.rs`), which needs none of this.
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
