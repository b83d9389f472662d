//! The kernel event's raw `u8` fields as types, decoded once: the rules in `explain` and the
//! hold queue read these, never the kernel's numbers.

use rstwatch_common::{
    event::DIRECTION_EGRESS,
    flow::{origin, FlowState},
    RstEvent,
};

/// The hook that saw the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    /// XDP: packets arriving on the interface (both directions on a sensor).
    XdpIngress,
    /// TC egress: packets this host sends.
    TcEgress,
}

impl Hook {
    pub fn of(event: &RstEvent) -> Self {
        if event.direction == DIRECTION_EGRESS {
            Hook::TcEgress
        } else {
            Hook::XdpIngress
        }
    }
}

/// One side of a flow: the index of its address and port in `FlowKey` and of its state in
/// `FlowState::dir`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlowSide {
    Low = 0,
    High = 1,
}

impl FlowSide {
    /// The kernel's direction index; only its lowest bit is meaningful.
    pub const fn of(raw: u8) -> Self {
        if raw & 1 == 0 {
            FlowSide::Low
        } else {
            FlowSide::High
        }
    }

    pub const fn other(self) -> Self {
        match self {
            FlowSide::Low => FlowSide::High,
            FlowSide::High => FlowSide::Low,
        }
    }

    pub const fn index(self) -> usize {
        self as usize
    }
}

/// How the flow table learnt which side opened the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Nothing seen yet.
    Unknown,
    /// The originator's SYN was seen.
    Syn,
    /// The responder's SYN-ACK was the first handshake packet seen.
    SynAck,
    /// No handshake seen: the sender of the first packet seen, a guess.
    Inferred,
}

impl Origin {
    pub const fn of(flow: &FlowState) -> Self {
        match flow.origin() {
            origin::SYN => Origin::Syn,
            origin::SYN_ACK => Origin::SynAck,
            origin::INFERRED => Origin::Inferred,
            _ => Origin::Unknown,
        }
    }

    /// A handshake packet says who opened the connection.
    pub const fn handshake_seen(self) -> bool {
        matches!(self, Origin::Syn | Origin::SynAck)
    }
}
