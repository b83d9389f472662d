//! The one class every RST gets (docs/design.md, Classes): the first of these rules that matches, in
//! this order, judged on the flow as it was just before the RST. "Sender" is the RST's
//! claimed sender (its source address), "receiver" the other side.
//!
//! 1. `refused`: the receiver sent a SYN, and the sender never sent a SYN-ACK, payload or FIN:
//!    the RST answers a connection attempt.
//! 2. `data_after_close`: the sender had sent a FIN and the receiver sent payload that the
//!    sender never acknowledged: it arrived after the sender closed, and the RST answers it.
//! 3. `teardown`: a FIN was seen from either side, and no payload from the receiver followed
//!    the sender's FIN. Payload that the sender did acknowledge after its FIN (a half-close)
//!    is recognised only when it was the receiver's first payload: the kernel records the
//!    order of first occurrences only.
//! 4. `idle_timeout`: the flow was silent for at least the idle timeout right before the RST,
//!    or right before the receiver's last packet when that packet is the latest on the flow
//!    (the RST answers the first packet after a long silence).
//! 5. `abort`: any other RST on a flow the table knows, established or still in its handshake.
//! 6. `no_state`: the table had never seen the flow (the snapshot holds no packet). It is
//!    tested first because every other rule needs state; none of them could match anyway.

use std::time::Duration;

use rstwatch_common::flow::seen;

use super::sides::Sides;
use crate::report::ResetClass;

pub fn classify(sides: &Sides, idle_timeout: Duration) -> ResetClass {
    if sides.flow.packets() == 0 {
        return ResetClass::NoState;
    }
    if refused(sides) {
        ResetClass::Refused
    } else if data_after_close(sides) {
        ResetClass::DataAfterClose
    } else if teardown(sides) {
        ResetClass::Teardown
    } else if idle_before_rst(sides).is_some_and(|idle| idle >= idle_timeout) {
        ResetClass::IdleTimeout
    } else {
        ResetClass::Abort
    }
}

/// The longer of two silences: the one on the flow right before the RST, and the one right
/// before the receiver's last packet when the RST may be answering it. `None` when the table
/// had seen no packet of the flow.
pub fn idle_before_rst(sides: &Sides) -> Option<Duration> {
    let flow_last = sides.flow.last_ns();
    if flow_last == 0 {
        return None;
    }
    let before_rst = sides.event.ts_ns.saturating_sub(flow_last);
    let before_answered = if sides.receiver_spoke_last() {
        sides.receiver.gap_before_last_ns()
    } else {
        0
    };
    Some(Duration::from_nanos(before_rst.max(before_answered)))
}

fn refused(s: &Sides) -> bool {
    s.receiver.has(seen::SYN) && !s.sender.has(seen::SYN_ACK | seen::DATA | seen::FIN)
}

fn data_after_close(s: &Sides) -> bool {
    s.sender.has(seen::FIN) && s.receiver_payload_unacked()
}

fn teardown(s: &Sides) -> bool {
    let any_fin = s.sender.has(seen::FIN) || s.receiver.has(seen::FIN);
    let payload_after_sender_fin = s.sender.has(seen::FIN)
        && (s.receiver_payload_unacked() || s.receiver_first_payload_after_sender_fin());
    any_fin && !payload_after_sender_fin
}
