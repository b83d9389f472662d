//! What the host's own TCP stack says about a reset: records of the `tcp_send_reset` and
//! `tcp_receive_reset` tracepoints, pushed through a ring buffer of their own, and the struct
//! offsets the programs need to read a socket (taken from the running kernel's BTF by
//! userspace, since eBPF programs written in Rust get no CO-RE relocations).

/// `LocalResetRecord::kind`.
pub mod local_kind {
    /// The stack sent a RST (`tcp_send_reset`).
    pub const SENT: u8 = 1;
    /// A socket of this host took a RST (`tcp_receive_reset`).
    pub const RECEIVED: u8 = 2;
}

/// `LocalResetRecord::flags` bits.
pub mod local_flags {
    /// A socket was involved (a `NO_SOCKET` reset has none).
    pub const SOCKET: u8 = 0x01;
    /// The socket is a full socket: its cgroup was read.
    pub const CGROUP: u8 = 0x02;
    /// `reason` holds the kernel's `enum sk_rst_reason` value.
    pub const REASON: u8 = 0x04;
    /// The RST answers a received segment (`answered_*` hold it); otherwise the stack
    /// aborted the connection on its own (an active reset).
    pub const ANSWERS_SEGMENT: u8 = 0x08;
    /// `owner_pid` and `owner_comm` were recorded in a system call on this socket.
    pub const OWNER: u8 = 0x10;
}

/// One reset as the stack reports it. Addresses are IPv4-mapped like `PacketMeta`'s; ports
/// are in host order; "local" is this host's end of the connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalResetRecord {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC.
    pub ts_ns: u64,
    /// The socket's cgroup (v2) id, 0 when unknown.
    pub cgroup_id: u64,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    pub local_port: u16,
    pub remote_port: u16,
    /// `local_kind::*`.
    pub kind: u8,
    /// `local_flags::*`.
    pub flags: u8,
    /// The socket's TCP state (the kernel's `TCP_*` numbering), 0 without a socket.
    pub state: u8,
    pub _pad: u8,
    /// `enum sk_rst_reason`, meaningful with `local_flags::REASON`.
    pub reason: u32,
    /// Sequence and acknowledgment numbers and flags of the segment a RST answers.
    pub answered_seq: u32,
    pub answered_ack: u32,
    pub answered_flags: u8,
    pub _pad2: [u8; 3],
    /// The task running when the tracepoint fired (thread-group id): the owner only when the
    /// reset came from a system call, which userspace decides from the reason.
    pub current_pid: u32,
    pub current_comm: [u8; 16],
    /// The process that last made a system call on this socket that changed its state
    /// (connect, listen, close, shutdown), when one was seen.
    pub owner_pid: u32,
    pub owner_comm: [u8; 16],
    pub _pad3: u32,
}

/// A process seen acting on a socket, by the socket's cookie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketOwner {
    pub pid: u32,
    pub comm: [u8; 16],
}

/// Byte offsets the programs read at; a zero `*_present` means the field is absent on this
/// kernel and is not read.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketLayout {
    /// In `struct sock` (its `sock_common` comes first).
    pub family: u32,
    pub state: u32,
    pub daddr: u32,
    pub rcv_saddr: u32,
    pub dport: u32,
    pub num: u32,
    /// `inet_sock.inet_sport`: the local port of a full socket, kept after close() unhashes
    /// the socket and zeroes `skc_num`.
    pub sport: u32,
    pub v6_daddr: u32,
    pub v6_rcv_saddr: u32,
    /// `sock.sk_cgrp_data.cgroup`, `cgroup.kn`, `kernfs_node.id`.
    pub cgroup_ptr: u32,
    pub cgroup_kn: u32,
    pub kn_id: u32,
    pub cgroup_present: u32,
    /// In `struct sk_buff`.
    pub skb_head: u32,
    pub skb_network_header: u32,
    pub skb_transport_header: u32,
    pub v6_present: u32,
}

/// The kernel's `TCP_*` socket states (include/net/tcp_states.h; fixed ABI, also in
/// `/proc/net/tcp`).
pub mod tcp_state {
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const FIN_WAIT1: u8 = 4;
    pub const TIME_WAIT: u8 = 6;
    pub const CLOSE: u8 = 7;
    pub const CLOSE_WAIT: u8 = 8;
    pub const LAST_ACK: u8 = 9;
    pub const LISTEN: u8 = 10;
    pub const NEW_SYN_RECV: u8 = 12;

    /// Names as `ss` prints them.
    pub const fn name(state: u8) -> &'static str {
        match state {
            1 => "ESTAB",
            2 => "SYN-SENT",
            3 => "SYN-RECV",
            4 => "FIN-WAIT-1",
            5 => "FIN-WAIT-2",
            6 => "TIME-WAIT",
            7 => "CLOSE",
            8 => "CLOSE-WAIT",
            9 => "LAST-ACK",
            10 => "LISTEN",
            11 => "CLOSING",
            12 => "NEW-SYN-RECV",
            _ => "UNKNOWN",
        }
    }

    /// A transition only a system call makes (connect, listen, close, shutdown), so the task
    /// running it is the socket's owner.
    pub const fn made_by_syscall(old: u8, new: u8) -> bool {
        matches!(
            (old, new),
            (CLOSE, SYN_SENT) | (CLOSE, LISTEN) | (ESTABLISHED, FIN_WAIT1) | (CLOSE_WAIT, LAST_ACK)
        )
    }

    /// Sockets that are not full sockets: no cgroup, no owner.
    pub const fn is_mini_socket(state: u8) -> bool {
        matches!(state, TIME_WAIT | NEW_SYN_RECV)
    }
}

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::LocalResetRecord {}
    unsafe impl aya::Pod for super::SocketLayout {}
    unsafe impl aya::Pod for super::SocketOwner {}
}
