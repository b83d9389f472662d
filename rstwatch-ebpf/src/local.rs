//! The host's own TCP stack as a witness: BTF-typed tracepoints on `tcp_send_reset`,
//! `tcp_receive_reset` and `inet_sock_set_state`, separate from the packet programs (they never
//! see the XDP/TC parser or flow table) and loaded only on kernels that have them.
//!
//! Programs written in Rust get no CO-RE relocations, so every read of a kernel struct goes
//! through `bpf_probe_read_kernel` at an offset userspace took from the running kernel's BTF
//! (`SOCKET_LAYOUT`). A field whose offset is unknown is not read.

use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel,
        generated::bpf_get_socket_cookie,
    },
    macros::{btf_tracepoint, map},
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
    programs::BtfTracePointContext,
};
use rstwatch_common::{
    local::{local_flags, local_kind, tcp_state, LocalResetRecord, SocketLayout, SocketOwner},
    RateWindow,
};

/// Resets are rare next to packets: a small ring of their own keeps them apart from the packet
/// events and the packet programs' record layout.
const LOCAL_RING_BYTES: u32 = 256 * 1024;
/// Records per CPU and second: a flood the stack answers with resets (a SYN flood on a closed
/// port) must not become a flood of records for the daemon. Beyond it records are counted as
/// lost, which suspends the "not from the stack" claim just as a full ring does.
const LOCAL_RECORDS_PER_CPU_SEC: u32 = 20_000;
/// Sockets whose owning process is remembered.
const MAX_OWNERS: u32 = 16384;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

#[map]
static LOCAL_EVENTS: RingBuf = RingBuf::with_byte_size(LOCAL_RING_BYTES, 0);

/// Records not delivered, over the per-CPU budget or refused by a full ring: userspace makes no
/// "not from the stack" claim while any may be missing.
#[map]
static LOCAL_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map]
static LOCAL_BUDGET: PerCpuArray<RateWindow> = PerCpuArray::with_max_entries(1, 0);

#[map]
static SOCKET_LAYOUT: Array<SocketLayout> = Array::with_max_entries(1, 0);

/// Socket cookie -> the process that made a state-changing system call on it.
#[map]
static SOCKET_OWNERS: LruHashMap<u64, SocketOwner> = LruHashMap::with_max_entries(MAX_OWNERS, 0);

/// `tcp_send_reset(sk, skb, reason)` (Linux 6.10+).
#[btf_tracepoint(function = "tcp_send_reset")]
pub fn rstwatch_send_reset(ctx: BtfTracePointContext) -> i32 {
    let reason: u32 = ctx.arg(2);
    sent(ctx.arg(0), ctx.arg(1), Some(reason));
    0
}

/// `tcp_send_reset(sk, skb)` on kernels before the reason: the third argument does not exist
/// there and the verifier refuses a program that reads it.
#[btf_tracepoint(function = "tcp_send_reset")]
pub fn rstwatch_send_reset_no_reason(ctx: BtfTracePointContext) -> i32 {
    sent(ctx.arg(0), ctx.arg(1), None);
    0
}

/// `tcp_receive_reset(sk)`: a socket of this host took a RST. Often in softirq context, so
/// the running task says nothing; the owner comes from `SOCKET_OWNERS`.
#[btf_tracepoint(function = "tcp_receive_reset")]
pub fn rstwatch_receive_reset(ctx: BtfTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    if sk.is_null() {
        return 0;
    }
    let Some(layout) = SOCKET_LAYOUT.get(0) else {
        return 0;
    };
    let Some(now) = admit() else {
        return 0;
    };
    let mut record = new_record(local_kind::RECEIVED, now);
    if !fill_from_socket(&mut record, layout, sk) {
        return 0;
    }
    fill_owner(&mut record, sk);
    emit(&record);
    0
}

/// `inet_sock_set_state(sk, oldstate, newstate)`: remembers the process behind transitions
/// only a system call makes, the one reliable moment to learn a socket's owner.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn rstwatch_sock_owner(ctx: BtfTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    let old: i32 = ctx.arg(1);
    let new: i32 = ctx.arg(2);
    if !crate::features::socket_cookie()
        || sk.is_null()
        || !tcp_state::made_by_syscall(old as u8, new as u8)
    {
        return 0;
    }
    let cookie = unsafe { bpf_get_socket_cookie(sk as *mut _) };
    let owner = SocketOwner {
        pid: (bpf_get_current_pid_tgid() >> 32) as u32,
        comm: bpf_get_current_comm().unwrap_or_default(),
    };
    let _ = SOCKET_OWNERS.insert(&cookie, &owner, 0);
    0
}

// Inlined, as every function here: the 6.1 verifier refuses a BTF-typed pointer (the socket,
// the skb) as the argument of a BPF-to-BPF call.
#[inline(always)]
fn sent(sk: *const u8, skb: *const u8, reason: Option<u32>) {
    let Some(layout) = SOCKET_LAYOUT.get(0) else {
        return;
    };
    let Some(now) = admit() else {
        return;
    };
    let mut record = new_record(local_kind::SENT, now);
    if let Some(reason) = reason {
        record.reason = reason;
        record.flags |= local_flags::REASON;
    }
    record.current_pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    record.current_comm = bpf_get_current_comm().unwrap_or_default();
    if !sk.is_null() {
        if !fill_from_socket(&mut record, layout, sk) {
            return;
        }
        fill_owner(&mut record, sk);
    }
    // A reply to a received segment: its addresses are the reliable ones (a listener's
    // socket has no remote end), and its numbers decide the RST's sequence number.
    if !skb.is_null() && !fill_from_segment(&mut record, layout, skb) {
        return;
    }
    emit(&record);
}

/// The time of a record this CPU may still send within its budget, checked before anything
/// is read for it: over the budget (a flood the stack answers with resets) a record costs a
/// clock read and a counter. `None`, counted as lost, when the budget is spent. (Not the
/// coarse clock, cheaper as it is: tracing programs that call it do not load.)
#[inline(always)]
fn admit() -> Option<u64> {
    let budget = LOCAL_BUDGET.get_ptr_mut(0)?;
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: a per-CPU slot, used by this CPU only while the program runs.
    if unsafe { (*budget).take(now, LOCAL_RECORDS_PER_CPU_SEC) } {
        Some(now)
    } else {
        count_lost();
        None
    }
}

#[inline(always)]
fn emit(record: &LocalResetRecord) {
    // No wakeup: the daemon drains this ring on its release tick, not when woken.
    if LOCAL_EVENTS
        .output::<LocalResetRecord>(record, BPF_RB_NO_WAKEUP as u64)
        .is_err()
    {
        count_lost();
    }
}

#[inline(always)]
fn count_lost() {
    if let Some(lost) = LOCAL_LOST.get_ptr_mut(0) {
        unsafe { *lost += 1 };
    }
}

#[inline(always)]
fn new_record(kind: u8, now: u64) -> LocalResetRecord {
    LocalResetRecord {
        ts_ns: now,
        kind,
        ..LocalResetRecord::default()
    }
}

#[inline(always)]
fn read<T>(base: *const u8, offset: u32) -> Option<T> {
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize) as *const T).ok() }
}

/// Addresses, ports, state and cgroup from the socket; `false` when it is not TCP over IP.
#[inline(always)]
fn fill_from_socket(record: &mut LocalResetRecord, layout: &SocketLayout, sk: *const u8) -> bool {
    let Some(family) = read::<u16>(sk, layout.family) else {
        return false;
    };
    record.flags |= local_flags::SOCKET;
    record.state = read::<u8>(sk, layout.state).unwrap_or(0);
    record.local_port = if tcp_state::is_mini_socket(record.state) {
        read::<u16>(sk, layout.num).unwrap_or(0)
    } else {
        u16::from_be(read::<u16>(sk, layout.sport).unwrap_or(0))
    };
    record.remote_port = u16::from_be(read::<u16>(sk, layout.dport).unwrap_or(0));
    match family {
        AF_INET => {
            let local: [u8; 4] = read(sk, layout.rcv_saddr).unwrap_or_default();
            let remote: [u8; 4] = read(sk, layout.daddr).unwrap_or_default();
            record.local_addr = v4_mapped(local);
            record.remote_addr = v4_mapped(remote);
        }
        AF_INET6 if layout.v6_present != 0 => {
            record.local_addr = read(sk, layout.v6_rcv_saddr).unwrap_or_default();
            record.remote_addr = read(sk, layout.v6_daddr).unwrap_or_default();
        }
        _ => return false,
    }
    // Mini sockets (TIME-WAIT, a pending connection) end before `sk_cgrp_data`.
    if layout.cgroup_present != 0 && !tcp_state::is_mini_socket(record.state) {
        let cgroup: Option<u64> = read(sk, layout.cgroup_ptr);
        let kn: Option<u64> = cgroup
            .filter(|&c| c != 0)
            .and_then(|c| read(c as *const u8, layout.cgroup_kn));
        if let Some(id) = kn
            .filter(|&kn| kn != 0)
            .and_then(|kn| read::<u64>(kn as *const u8, layout.kn_id))
        {
            record.cgroup_id = id;
            record.flags |= local_flags::CGROUP;
        }
    }
    true
}

#[inline(always)]
fn fill_owner(record: &mut LocalResetRecord, sk: *const u8) {
    if !crate::features::socket_cookie() {
        return;
    }
    let cookie = unsafe { bpf_get_socket_cookie(sk as *mut _) };
    if let Some(owner) = unsafe { SOCKET_OWNERS.get(&cookie) } {
        record.owner_pid = owner.pid;
        record.owner_comm = owner.comm;
        record.flags |= local_flags::OWNER;
    }
}

/// The received segment's addresses, ports, sequence, acknowledgment and flags; `false` when
/// its headers cannot be read.
#[inline(always)]
fn fill_from_segment(record: &mut LocalResetRecord, layout: &SocketLayout, skb: *const u8) -> bool {
    let Some(head) = read::<u64>(skb, layout.skb_head) else {
        return false;
    };
    let (Some(network), Some(transport)) = (
        read::<u16>(skb, layout.skb_network_header),
        read::<u16>(skb, layout.skb_transport_header),
    ) else {
        return false;
    };
    let ip = (head as *const u8).wrapping_add(network as usize);
    let Some(version) = read::<u8>(ip, 0) else {
        return false;
    };
    match version >> 4 {
        4 => {
            let Some(addrs) = read::<[[u8; 4]; 2]>(ip, 12) else {
                return false;
            };
            record.remote_addr = v4_mapped(addrs[0]);
            record.local_addr = v4_mapped(addrs[1]);
        }
        6 => {
            let Some(addrs) = read::<[[u8; 16]; 2]>(ip, 8) else {
                return false;
            };
            record.remote_addr = addrs[0];
            record.local_addr = addrs[1];
        }
        _ => return false,
    }
    let tcp = (head as *const u8).wrapping_add(transport as usize);
    // RFC 9293: ports, sequence number, acknowledgment number, then the flags in byte 13.
    let Some(header) = read::<[u8; 14]>(tcp, 0) else {
        return false;
    };
    record.remote_port = u16::from_be_bytes([header[0], header[1]]);
    record.local_port = u16::from_be_bytes([header[2], header[3]]);
    record.answered_seq = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    record.answered_ack = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
    record.answered_flags = header[13];
    record.flags |= local_flags::ANSWERS_SEGMENT;
    true
}

#[inline(always)]
fn v4_mapped(addr: [u8; 4]) -> [u8; 16] {
    let mut mapped = [0u8; 16];
    mapped[10] = 0xff;
    mapped[11] = 0xff;
    mapped[12..].copy_from_slice(&addr);
    mapped
}
