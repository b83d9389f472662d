//! Who sent the RST: the endpoint its source address claims, and whether the evidence says a
//! device in the middle forged it.

use rstwatch_common::FlowState;

use super::{evidence::expected_ttl, sides::Sides};
use crate::{
    event::{FlowSide, Hook, Origin},
    report::{Evidence, EvidenceSet, Sender},
};

/// TTLs stacks start their packets with; a RST arriving with one of them has not been routed.
const INITIAL_TTLS: [u8; 3] = [64, 128, 255];
/// Hops below its initial value from which an endpoint's genuine TTL is plainly routed: one
/// router is enough, since a RST at an untouched initial TTL then came from nearer than the
/// endpoint (a firewall or load balancer on the path).
const ROUTED_HOPS: u8 = 1;

/// The claimed sender's role, by the RST's direction within the flow. `Unknown` when the
/// table never saw the flow or saw no handshake packet, unless Zeek's heuristic decided the
/// roles from a likely server port: otherwise nobody is known to have sent the SYN, and the
/// originator is only a guess.
pub fn sender(s: &Sides, after: &FlowState) -> Sender {
    // A flow the RST is the first packet of has its roles only from Zeek's heuristic, which
    // the flow after the RST carries.
    let (flow, originator) = if s.flow.packets() == 0 {
        (after, FlowSide::of(after.originator()))
    } else {
        (s.flow, s.originator)
    };
    let roles_known = Origin::of(flow).handshake_seen() || flow.flipped();
    if flow.packets() == 0 || !roles_known {
        Sender::Unknown
    } else if s.sender_side == originator {
        Sender::Originator
    } else {
        Sender::Responder
    }
}

/// Signals that compare the RST with its claimed sender's genuine packets. Each can have an
/// innocent cause, so one alone is not enough.
const CORROBORATING: [Evidence; 4] = [
    Evidence::TtlMismatch,
    Evidence::IpIdAnomaly,
    Evidence::SeqOutOfWindow,
    Evidence::FastRst,
];

/// A middlebox is suspected for an ingress RST when any of these holds:
/// - `data_after_rst`, `rst_seq_change` or `rst_burst` fired: the claimed endpoint behaved as
///   if it had not sent the RST, or RSTs came with shifting sequence numbers, or as a burst of
///   copies unlike the endpoint's own packets;
/// - at least two of `ttl_mismatch`, `ip_id_anomaly`, `seq_out_of_window`, `fast_rst` fired:
///   independent signals agree (this also catches a middlebox that copies the TTL);
/// - `ttl_mismatch` where the RST's TTL is an initial value (64, 128, 255), higher than the
///   endpoint's genuine TTL, which is at least one hop below the initial value it started
///   from: the RST was not routed along the endpoint's path but sent by a device nearer than
///   the endpoint (TTL 64 where the server's packets arrive with 63, say).
///
/// `ttl_mismatch` alone is never enough: routes change and some stacks send RSTs with their
/// own TTL. `tls_alert_before` is context and never counts. An egress RST was sent by this
/// host, so it is never a middlebox's.
pub fn middlebox(s: &Sides, evidence: &EvidenceSet) -> bool {
    if s.hook == Hook::TcEgress {
        return false;
    }
    let fired = |e: Evidence| evidence.contains(&e);
    let corroborating = CORROBORATING.iter().filter(|&&e| fired(e)).count();
    fired(Evidence::DataAfterRst)
        || fired(Evidence::RstSeqChange)
        || fired(Evidence::RstBurst)
        || corroborating >= 2
        || (fired(Evidence::TtlMismatch) && unrouted_ttl(s))
}

fn unrouted_ttl(s: &Sides) -> bool {
    let rst_ttl = s.event.pkt.ttl;
    let Some(genuine) = expected_ttl(s) else {
        return false;
    };
    INITIAL_TTLS.contains(&rst_ttl) && rst_ttl > genuine && hops_travelled(genuine) >= ROUTED_HOPS
}

/// Hops a packet travelled, assuming it started at the nearest initial TTL at or above it.
fn hops_travelled(ttl: u8) -> u8 {
    let initial = INITIAL_TTLS
        .into_iter()
        .find(|&i| i >= ttl)
        .unwrap_or(u8::MAX);
    initial - ttl
}
