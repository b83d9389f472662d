//! rstwatch's kernel side: an XDP program for ingress and a TC classifier for egress, both
//! feeding every TCP segment through the same parser and flow table, and reporting each RST
//! through a ring buffer. Apart from them, `local` holds the tracepoints through which the
//! host's own TCP stack says why it reset a connection and whose socket it was.
//!
//! Neither program ever alters traffic: every path, errors included, returns `XDP_PASS` or
//! `TC_ACT_UNSPEC`.
#![no_std]
#![no_main]
// `core::intrinsics::atomic_xadd`: see `track::atomic_add`.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod features;
mod local;
mod parse;
mod track;

use aya_ebpf::{
    bindings::{__sk_buff, xdp_action::XDP_PASS, xdp_md, TC_ACT_UNSPEC},
    helpers::{bpf_skb_load_bytes, bpf_xdp_load_bytes},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use rstwatch_common::{
    event::{DIRECTION_EGRESS, DIRECTION_INGRESS},
    wire::VLAN_VID_MASK,
    SeenAt,
};

/// Bytes of an egress skb made linear before parsing, enough for Ethernet, two VLAN tags,
/// IPv6 with a few extension headers and TCP with options.
const EGRESS_PULL_BYTES: u32 = 256;

#[xdp]
pub fn rstwatch_xdp(ctx: XdpContext) -> u32 {
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let seen = SeenAt {
        direction: DIRECTION_INGRESS,
        ifindex,
    };
    let xdp = ctx.ctx;
    let track = || {
        rstwatch_track_xdp(xdp, seen.direction as u32, ifindex);
    };
    track::observe(ctx.data(), ctx.data_end(), 0, track);
    XDP_PASS
}

#[classifier]
pub fn rstwatch_tc_egress(ctx: TcContext) -> i32 {
    let skb = unsafe { &*ctx.skb.skb };
    // Headers of locally built packets may sit in paged fragments; pulling them into the
    // linear area lets the parser read them and changes no byte on the wire.
    let want = ctx.len().min(EGRESS_PULL_BYTES);
    if (ctx.data_end() - ctx.data()) < want as usize {
        let _ = ctx.pull_data(want);
    }
    // Offloaded VLAN tags live in skb metadata, not in the frame.
    let vlan_hint = if skb.vlan_present != 0 {
        skb.vlan_tci as u16 & VLAN_VID_MASK
    } else {
        0
    };
    let seen = SeenAt {
        direction: DIRECTION_EGRESS,
        ifindex: skb.ifindex,
    };
    let skb_ptr = ctx.skb.skb;
    let track = || {
        rstwatch_track_tc(skb_ptr, seen.direction as u32, seen.ifindex);
    };
    track::observe(ctx.data(), ctx.data_end(), vlan_hint, track);
    TC_ACT_UNSPEC
}

/// The XDP program's global function (`track::track` says why it is one): tracks the packet
/// the parser left in the scratch, with `rstwatch_capture_xdp` to copy the start of a RST's
/// frame when its record is sent. Returns 0.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rstwatch_track_xdp(ctx: *mut xdp_md, direction: u32, ifindex: u32) -> u32 {
    let seen = SeenAt {
        direction: direction as u8,
        ifindex,
    };
    track::track(seen, || {
        rstwatch_capture_xdp(ctx);
    });
    0
}

/// Copies the start of the XDP frame into the scratch for a RST's record. A global function
/// of its own, verified once however many places of `track` send a RST's record. Returns 0.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rstwatch_capture_xdp(ctx: *mut xdp_md) -> u32 {
    let (data, data_end) = unsafe { ((*ctx).data as usize, (*ctx).data_end as usize) };
    let wire_len = data_end.wrapping_sub(data) as u32;
    if features::xdp_load_bytes() {
        // SAFETY: the helper writes at most `len` bytes to `to`, which `capture_frame` sized.
        track::capture_frame(wire_len, |to, offset, len| unsafe {
            bpf_xdp_load_bytes(ctx, offset, to, len)
        });
    } else {
        track::capture_frame(wire_len, |to, offset, len| {
            copy_packet(data, data_end, offset, to.cast(), len)
        });
    }
    0
}

/// `bpf_xdp_load_bytes` for kernels without it (before 5.18): copies `len` bytes of the
/// packet from `offset` to `to`, or returns -1 when they are not all inside the packet. The
/// XDP program is loaded without multi-buffer support, so the whole frame lies between
/// `data` and `data_end`.
#[inline(always)]
fn copy_packet(data: usize, data_end: usize, offset: u32, to: *mut u8, len: u32) -> i64 {
    let from = data + offset as usize;
    if from + len as usize > data_end {
        return -1;
    }
    // SAFETY: `len` bytes from `from` are inside the packet (checked above) and `to` has room
    // for them (`capture_frame` sized each copy).
    unsafe { core::ptr::copy_nonoverlapping(from as *const u8, to, len as usize) };
    0
}

/// `rstwatch_track_xdp` for the TC egress program's context.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rstwatch_track_tc(skb: *mut __sk_buff, direction: u32, ifindex: u32) -> u32 {
    let seen = SeenAt {
        direction: direction as u8,
        ifindex,
    };
    track::track(seen, || {
        rstwatch_capture_tc(skb);
    });
    0
}

/// `rstwatch_capture_xdp` for the TC egress program's context.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn rstwatch_capture_tc(skb: *mut __sk_buff) -> u32 {
    let wire_len = unsafe { (*skb).len };
    // SAFETY: the helper writes at most `len` bytes to `to`, which `capture_frame` sized.
    track::capture_frame(wire_len, |to, offset, len| unsafe {
        bpf_skb_load_bytes(skb.cast(), offset, to, len)
    });
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
