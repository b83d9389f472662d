//! The host's own word on a reset: the kernel's reason and the socket's owner, from the
//! `tcp_send_reset` / `tcp_receive_reset` tracepoints, joined with the RST seen on the wire.
//!
//! - `layout`: struct offsets and reason names from the running kernel's BTF.
//! - `witness`: loads and attaches the tracepoint programs where the kernel has them.
//! - `gate`: when the reset programs step aside for a flood the stack answers with resets.
//! - `cgroup`: a cgroup id to its path and container id.
//!
//! The join: an egress RST matches the stack's record of the same 4-tuple whose sequence
//! number it carries (a RST answering a segment takes the segment's acknowledgment number, or
//! 0 without one, RFC 9293 section 3.10.7.1; an active reset carries the socket's next
//! sequence number, which the record does not hold, so the 4-tuple decides). An ingress RST
//! matches the record of a local socket taking it. Where the stack reports every reset it
//! sends (the kernels with `enum sk_rst_reason`), an egress RST with no record was not
//! produced by this host's TCP stack.

pub mod cgroup;
pub mod gate;
pub mod layout;
pub mod witness;

use std::collections::{hash_map::Entry, HashMap, VecDeque};

use rstwatch_common::{
    local::{local_flags, local_kind, tcp_state, LocalResetRecord},
    packet::tcp_flags::ACK,
    RstEvent,
};

use crate::event::Hook;

use self::cgroup::CgroupPaths;

/// How far apart in time a wire RST and the stack's record may be and still match.
const MATCH_WINDOW_NS: u64 = 1_000_000_000;

/// Reasons raised only inside a system call on the socket (close, a lingering close, a
/// disconnect with data): the running task is the one that closed it.
const SYSCALL_REASONS: [&str; 3] = [
    "TCP_ABORT_ON_CLOSE",
    "TCP_ABORT_ON_LINGER",
    "TCP_DISCONNECT_WITH_DATA",
];

/// Who a socket belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Owner {
    pub cgroup_id: Option<u64>,
    /// Relative to the cgroup v2 root, `/` for the root itself.
    pub cgroup: Option<String>,
    pub container_id: Option<String>,
    /// Only where it is reliable: a system call on the socket was seen.
    pub pid: Option<u32>,
    pub comm: Option<String>,
}

/// What the host's stack said about one RST.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalEvidence {
    /// The stack sent it. `reason` is `None` on kernels before `enum sk_rst_reason`.
    Sent {
        reason: Option<String>,
        /// The socket's TCP state, `None` without a socket (`NO_SOCKET`).
        state: Option<&'static str>,
        owner: Owner,
    },
    /// A socket of this host took it.
    Received { state: &'static str, owner: Owner },
    /// An egress RST the stack did not send: a firewall REJECT on this host, another program,
    /// or a forwarded packet.
    NotFromStack,
}

impl LocalEvidence {
    /// Words for the text line, e.g. `kernel: TCP_ABORT_ON_CLOSE by nginx[412]
    /// (system.slice/nginx.service)`.
    pub fn describe(&self) -> String {
        match self {
            LocalEvidence::Sent { reason, owner, .. } => format!(
                "kernel: {}{}",
                reason
                    .as_deref()
                    .unwrap_or("sent (no reason on this kernel)"),
                owner.describe("by")
            ),
            LocalEvidence::Received { owner, .. } => {
                format!("kernel: received by a socket{}", owner.describe("of"))
            }
            LocalEvidence::NotFromStack => {
                "kernel: not sent by this host's TCP stack (firewall REJECT or another program)"
                    .to_owned()
            }
        }
    }

    /// The JSON object of the `local` key.
    pub fn to_json(&self) -> serde_json::Value {
        let mut value = serde_json::json!({ "source": self.source() });
        let (state, owner) = match self {
            LocalEvidence::Sent {
                reason,
                state,
                owner,
            } => {
                value["reason"] = reason.clone().into();
                (*state, owner)
            }
            LocalEvidence::Received { state, owner } => (Some(*state), owner),
            LocalEvidence::NotFromStack => return value,
        };
        value["state"] = state.into();
        value["cgroup_id"] = owner.cgroup_id.into();
        value["cgroup"] = owner.cgroup.clone().into();
        value["container_id"] = owner.container_id.clone().into();
        value["pid"] = owner.pid.into();
        value["comm"] = owner.comm.clone().into();
        value
    }

    /// `sent`, `received` or `not_tcp_stack`: the `local.source` value.
    pub const fn source(&self) -> &'static str {
        match self {
            LocalEvidence::Sent { .. } => "sent",
            LocalEvidence::Received { .. } => "received",
            LocalEvidence::NotFromStack => "not_tcp_stack",
        }
    }

    pub fn owner(&self) -> Option<&Owner> {
        match self {
            LocalEvidence::Sent { owner, .. } | LocalEvidence::Received { owner, .. } => {
                Some(owner)
            }
            LocalEvidence::NotFromStack => None,
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            LocalEvidence::Sent { reason, .. } => reason.as_deref(),
            _ => None,
        }
    }
}

impl Owner {
    /// ` by comm[pid] (cgroup)` (`process_word` "by"), with what is known.
    fn describe(&self, process_word: &str) -> String {
        let mut text = String::new();
        if let (Some(pid), Some(comm)) = (self.pid, &self.comm) {
            text.push_str(&format!(" {process_word} {comm}[{pid}]"));
        }
        if let Some(cgroup) = &self.cgroup {
            text.push_str(&format!(" ({cgroup})"));
        } else if let Some(id) = self.cgroup_id {
            text.push_str(&format!(" (cgroup {id})"));
        }
        text
    }
}

/// One record of the stack, decoded and its names resolved as it arrives (a cgroup may be gone
/// by the time its RST is released).
#[derive(Clone, Debug)]
struct StackReset {
    ts_ns: u64,
    /// The RST's own sequence number, when the segment it answers decides it.
    rst_seq: Option<u32>,
    evidence: LocalEvidence,
}

/// What a stack record is about: sent or received, the local and the remote endpoint.
type ResetKey = (u8, ([u8; 16], u16), ([u8; 16], u16));

/// The stack's records waiting for their wire RST.
pub struct LocalJoin {
    reasons: HashMap<u32, String>,
    cgroups: CgroupPaths,
    /// The stack reports every RST it sends: an egress RST without a record was not its own.
    sees_every_sent_reset: bool,
    /// Each endpoint pair's records in arrival order: a RST looks at its own, not at every
    /// record of a reset flood.
    pending: HashMap<ResetKey, VecDeque<StackReset>>,
    /// Every pending record's key and time in arrival order, to forget the old ones.
    arrivals: VecDeque<(u64, ResetKey)>,
    /// Records that could not be used (short).
    pub short_records: u64,
    /// Records the kernel lost, as last read.
    lost_records: u64,
    /// RSTs up to this kernel time may have lost their record: no "not from the stack" claim.
    unsure_until_ns: u64,
}

impl LocalJoin {
    pub fn new(reasons: HashMap<u32, String>, sees_every_sent_reset: bool) -> Self {
        Self {
            reasons,
            cgroups: CgroupPaths::new(),
            sees_every_sent_reset,
            pending: HashMap::new(),
            arrivals: VecDeque::new(),
            short_records: 0,
            lost_records: 0,
            unsure_until_ns: 0,
        }
    }

    /// The kernel's count of records it could not push (`lost_total`), read at kernel time
    /// `now_ns`: if it grew, RSTs up to a match window past now may lack their record.
    pub fn note_lost(&mut self, lost_total: u64, now_ns: u64) {
        if lost_total > self.lost_records {
            self.lost_records = lost_total;
            self.unsure_until_ns = now_ns.saturating_add(MATCH_WINDOW_NS);
        }
    }

    /// The reset programs are detached at kernel time `now_ns`: RSTs up to a match window
    /// past now may have no record.
    pub fn note_blind(&mut self, now_ns: u64) {
        self.unsure_until_ns = self
            .unsure_until_ns
            .max(now_ns.saturating_add(MATCH_WINDOW_NS));
    }

    /// Records the kernel lost, as last read.
    pub const fn lost_records(&self) -> u64 {
        self.lost_records
    }

    /// Takes one record of the stack's ring buffer.
    pub fn offer_record(&mut self, bytes: &[u8]) {
        if bytes.len() < size_of::<LocalResetRecord>() {
            self.short_records += 1;
            return;
        }
        // SAFETY: long enough, and every bit pattern is a valid `LocalResetRecord`.
        let record: LocalResetRecord = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        self.offer(&record);
    }

    pub fn offer(&mut self, record: &LocalResetRecord) {
        let key = (
            record.kind,
            (record.local_addr, record.local_port),
            (record.remote_addr, record.remote_port),
        );
        let reset = self.decode(record);
        self.arrivals.push_back((reset.ts_ns, key));
        self.pending.entry(key).or_default().push_back(reset);
    }

    /// What the stack said about the RST in `event`, consuming the record it matched.
    pub fn evidence_for(&mut self, event: &RstEvent) -> Option<LocalEvidence> {
        let pkt = &event.pkt;
        let egress = Hook::of(event) == Hook::TcEgress;
        let (kind, local, remote) = if egress {
            (
                local_kind::SENT,
                (pkt.src_addr, pkt.src_port),
                (pkt.dst_addr, pkt.dst_port),
            )
        } else {
            (
                local_kind::RECEIVED,
                (pkt.dst_addr, pkt.dst_port),
                (pkt.src_addr, pkt.src_port),
            )
        };
        let found = self
            .pending
            .get_mut(&(kind, local, remote))
            .and_then(|resets| {
                let index = resets.iter().position(|reset| {
                    reset.ts_ns.abs_diff(event.ts_ns) <= MATCH_WINDOW_NS
                        && reset.rst_seq.is_none_or(|seq| seq == pkt.seq)
                })?;
                resets.remove(index)
            });
        match found {
            Some(reset) => Some(reset.evidence),
            None if egress && self.sees_every_sent_reset && event.ts_ns > self.unsure_until_ns => {
                Some(LocalEvidence::NotFromStack)
            }
            None => None,
        }
    }

    /// Forgets records too old to match a RST still to come (`now_ns` is kernel time).
    pub fn forget_before(&mut self, now_ns: u64, hold_ns: u64) {
        let horizon = now_ns.saturating_sub(hold_ns.saturating_add(2 * MATCH_WINDOW_NS));
        while let Some(&(ts_ns, key)) = self.arrivals.front() {
            if ts_ns >= horizon {
                break;
            }
            self.arrivals.pop_front();
            if let Entry::Occupied(mut entry) = self.pending.entry(key) {
                let resets = entry.get_mut();
                while resets.front().is_some_and(|r| r.ts_ns < horizon) {
                    resets.pop_front();
                }
                if resets.is_empty() {
                    entry.remove();
                }
            }
        }
    }

    fn decode(&mut self, record: &LocalResetRecord) -> StackReset {
        let has = |flag: u8| record.flags & flag != 0;
        let reason = has(local_flags::REASON).then(|| {
            self.reasons
                .get(&record.reason)
                .cloned()
                .unwrap_or_else(|| format!("reason {}", record.reason))
        });
        let mut owner = Owner::default();
        if has(local_flags::CGROUP) {
            owner.cgroup_id = Some(record.cgroup_id);
            owner.cgroup = self.cgroups.path(record.cgroup_id);
            owner.container_id = owner.cgroup.as_deref().and_then(cgroup::container_id);
        }
        let in_syscall = !has(local_flags::ANSWERS_SEGMENT)
            && reason
                .as_deref()
                .is_some_and(|reason| SYSCALL_REASONS.contains(&reason));
        if in_syscall {
            owner.pid = Some(record.current_pid);
            owner.comm = Some(comm(&record.current_comm));
        } else if has(local_flags::OWNER) {
            owner.pid = Some(record.owner_pid);
            owner.comm = Some(comm(&record.owner_comm));
        }
        let state = has(local_flags::SOCKET).then(|| tcp_state::name(record.state));
        let evidence = if record.kind == local_kind::RECEIVED {
            LocalEvidence::Received {
                state: state.unwrap_or("UNKNOWN"),
                owner,
            }
        } else {
            LocalEvidence::Sent {
                reason,
                state,
                owner,
            }
        };
        let implied_seq = if record.answered_flags & ACK != 0 {
            record.answered_ack
        } else {
            0
        };
        let rst_seq = has(local_flags::ANSWERS_SEGMENT).then_some(implied_seq);
        StackReset {
            ts_ns: record.ts_ns,
            rst_seq,
            evidence,
        }
    }
}

fn comm(raw: &[u8; 16]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

#[cfg(test)]
mod tests;
