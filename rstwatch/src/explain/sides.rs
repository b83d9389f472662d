//! The RST's event seen from its claimed sender: one `Sides` per event, built once and handed
//! to every rule.

use rstwatch_common::{
    flow::{seen, seq_after, DirState, FlowState, HISTORY_FROM_HIGH},
    RstEvent,
};

use crate::event::{FlowSide, Hook, Origin};

pub struct Sides<'a> {
    pub event: &'a RstEvent,
    /// The flow as it was just before the RST.
    pub flow: &'a FlowState,
    pub hook: Hook,
    /// The RST's side of the flow (its source address).
    pub sender_side: FlowSide,
    /// The side that opened the connection, as far as the table knows (`origin`).
    pub originator: FlowSide,
    pub origin: Origin,
    /// What the RST's source address had sent before the RST.
    pub sender: &'a DirState,
    /// What the RST's destination had sent before the RST.
    pub receiver: &'a DirState,
}

impl<'a> Sides<'a> {
    pub fn of(event: &'a RstEvent) -> Self {
        let sender_side = FlowSide::of(event.dir);
        let flow = &event.flow;
        Self {
            event,
            flow,
            hook: Hook::of(event),
            sender_side,
            originator: FlowSide::of(flow.originator()),
            origin: Origin::of(flow),
            sender: &flow.dir[sender_side.index()],
            receiver: &flow.dir[sender_side.other().index()],
        }
    }

    /// `other` came from the RST's claimed sender.
    pub fn sent_by_sender(&self, other: &RstEvent) -> bool {
        FlowSide::of(other.dir) == self.sender_side
    }

    /// The receiver's packet is the latest on the flow, so the RST is (or may be) its answer.
    pub fn receiver_spoke_last(&self) -> bool {
        self.receiver.pkts > 0 && self.receiver.last_ns >= self.sender.last_ns
    }

    /// Whether the RST's claimed sender is the endpoint farther from the capture point, judged
    /// from the handshake as seen here: each side's answer to the other's handshake packet
    /// (responder: SYN to SYN-ACK; originator: SYN-ACK to its ACK) takes the path's round
    /// trip when that side is far, and almost nothing when it is near. `None` when the
    /// handshake was not seen whole.
    pub fn sender_is_far(&self) -> Option<bool> {
        let flow = self.flow;
        let responder = &flow.dir[self.originator.other().index()];
        if self.origin != Origin::Syn || flow.rtt_ns() == 0 || !responder.has(seen::SYN_ACK) {
            return None;
        }
        let syn_ack_ns = flow.first_ns(self.originator.other().index());
        let ack_ns = flow.syn_ns().saturating_add(flow.rtt_ns());
        let responder_answer = syn_ack_ns.saturating_sub(flow.syn_ns());
        let originator_answer = ack_ns.saturating_sub(syn_ack_ns);
        let originator_is_far = originator_answer > responder_answer;
        Some(if self.sender_side == self.originator {
            originator_is_far
        } else {
            !originator_is_far
        })
    }

    /// The receiver sent payload that the sender never acknowledged. The receiver's FIN is
    /// always last in its sequence space, so it is taken off before comparing.
    pub fn receiver_payload_unacked(&self) -> bool {
        let (r, s) = (self.receiver, self.sender);
        if !r.has(seen::DATA) || !r.has(seen::SEQ_KNOWN) || !s.has(seen::ACK_KNOWN) {
            return false;
        }
        let payload_end = r.next_seq.wrapping_sub(r.has(seen::FIN) as u32);
        seq_after(payload_end, s.max_ack)
    }

    /// The receiver's first payload came after the sender's first FIN, by the order in which
    /// the kernel recorded first occurrences in the flow's history.
    pub fn receiver_first_payload_after_sender_fin(&self) -> bool {
        let sender_fin = self.first_in_history(self.sender_side, seen::FIN);
        let receiver_data = self.first_in_history(self.sender_side.other(), seen::DATA);
        matches!((sender_fin, receiver_data), (Some(fin), Some(data)) if data > fin)
    }

    fn first_in_history(&self, side: FlowSide, bit: u16) -> Option<usize> {
        let from_high = if side == FlowSide::High {
            HISTORY_FROM_HIGH
        } else {
            0
        };
        let wanted = bit.trailing_zeros() as u8 | from_high;
        self.flow.history_events().position(|b| b == wanted)
    }
}
