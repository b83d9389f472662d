//! Signals about who really sent a RST, each a comparison of the RST with the genuine packets
//! of the endpoint it claims to come from. None of them is proof on its own; how they combine
//! into `middlebox` is `attribution`'s rule.

use rstwatch_common::{
    flow::{seen, DirState, RECENT_IP_IDS},
    packet::NO_WINDOW_SCALE,
    RstEvent,
};

use super::{address, sides::Sides, ExplainSettings};
use crate::{
    event::Hook,
    report::{Evidence, EvidenceSet},
};

/// Largest step between successive IP IDs of one sender that still reads as a counter: a
/// per-connection counter moves by the number of segments in each (offloaded) send.
pub const IP_ID_MAX_STEP: u16 = 256;
/// Largest step from the sender's last genuine IP ID to its RST's: a host-wide counter keeps
/// moving with the host's other traffic while the connection is quiet.
pub const IP_ID_MAX_JUMP: u16 = 4096;
/// Window assumed when the receiver's handshake was not seen: its scale factor is unknown, so
/// the advertised window is read with the largest scale RFC 7323 allows rather than risk
/// calling a genuine RST out of window.
const MAX_WINDOW_SCALE: u32 = 14;

/// Every signal that fired for this RST, in `Evidence` order.
pub fn collect(s: &Sides, followups: &[RstEvent], settings: &ExplainSettings) -> EvidenceSet {
    let signals = [
        (Evidence::TtlMismatch, ttl_mismatch(s)),
        (Evidence::IpIdAnomaly, ip_id_anomaly(s)),
        (Evidence::SeqOutOfWindow, seq_out_of_window(s)),
        (Evidence::DataAfterRst, data_after_rst(s, followups)),
        (Evidence::RstSeqChange, rst_seq_change(s, followups)),
        (Evidence::RstBurst, rst_burst(s, followups)),
        (Evidence::FastRst, fast_rst(s)),
        (
            Evidence::TlsAlertBefore,
            tls_alert_before(s, settings.tls_alert_window.as_nanos()),
        ),
    ];
    signals
        .into_iter()
        .filter_map(|(evidence, fired)| fired.then_some(evidence))
        .collect()
}

/// TTL / hop limit of the claimed sender's genuine (non-RST) packets, if it sent any.
pub fn expected_ttl(s: &Sides) -> Option<u8> {
    let sender = s.sender;
    // A packet that arrived had a TTL of at least 1: 0 means none was recorded.
    (sender.ttl != 0).then_some(sender.ttl)
}

/// `ttl_mismatch`: the RST's TTL differs from the sender's latest genuine packet. Any
/// difference counts, one hop included: a load balancer right in front of the endpoint is
/// exactly one hop closer. The baseline is the latest packet, so a path change is followed.
pub fn ttl_mismatch(s: &Sides) -> bool {
    expected_ttl(s).is_some_and(|expected| expected != s.event.pkt.ttl)
}

/// `ip_id_anomaly` (IPv4 only): the sender's recent IP IDs count up in small steps (at least
/// two of them, each step 1..=`IP_ID_MAX_STEP`) and the RST's ID is not a small step ahead of
/// the last one (1..=`IP_ID_MAX_JUMP`); or the sender's IDs were all 0 and the RST's is not.
/// Random IDs say nothing. A RST with DF set and ID 0 is never an anomaly: RFC 6864 lets
/// atomic datagrams carry any ID, and Linux sends its socket-less RSTs exactly like that.
pub fn ip_id_anomaly(s: &Sides) -> bool {
    let pkt = &s.event.pkt;
    if !address::is_ipv4(pkt.family) || (pkt.df != 0 && pkt.ip_id == 0) {
        return false;
    }
    let (recent, len) = recent_ip_ids(s.sender);
    let ids = &recent[..len];
    if ids.len() < 2 {
        return false;
    }
    let last = ids[ids.len() - 1];
    if ids.iter().all(|&id| id == 0) {
        return pkt.ip_id != 0;
    }
    let counts_up = ids
        .windows(2)
        .all(|w| (1..=IP_ID_MAX_STEP).contains(&w[1].wrapping_sub(w[0])));
    counts_up && !(1..=IP_ID_MAX_JUMP).contains(&pkt.ip_id.wrapping_sub(last))
}

/// The sender's recent IP IDs, oldest first, and how many there are.
fn recent_ip_ids(d: &DirState) -> ([u16; RECENT_IP_IDS], usize) {
    let mut ids = [0; RECENT_IP_IDS];
    let mut len = 0;
    d.recent_ip_ids(|id| {
        ids[len] = id;
        len += 1;
    });
    (ids, len)
}

/// `seq_out_of_window`: the RST's sequence number is outside the receiver's window, from the
/// highest ACK it sent to that plus its advertised (scaled) window: RFC 5961 3.2 has a stack
/// ignore such a RST, and an endpoint's own RST is never there. Judged only once the receiver
/// has acknowledged something; before that (a SYN answered by RST) the RST is validated by
/// its ACK field, not its sequence number.
pub fn seq_out_of_window(s: &Sides) -> bool {
    let receiver = s.receiver;
    if !receiver.has(seen::ACK_KNOWN) {
        return false;
    }
    let offset = s.event.pkt.seq.wrapping_sub(receiver.max_ack) as u64;
    offset >= receive_window(receiver).max(1)
}

fn receive_window(receiver: &DirState) -> u64 {
    let handshake_seen = receiver.has(seen::SYN | seen::SYN_ACK);
    if receiver.window_scale == NO_WINDOW_SCALE && !handshake_seen {
        (receiver.window() as u64) << MAX_WINDOW_SCALE
    } else {
        receiver.window() as u64
    }
}

/// `data_after_rst`: the RST's claimed sender sent payload after its RST. An endpoint's stack
/// forgets the connection when it sends a RST; one that keeps sending did not send it.
pub fn data_after_rst(s: &Sides, followups: &[RstEvent]) -> bool {
    followups
        .iter()
        .any(|f| s.sent_by_sender(f) && !f.pkt.is_rst() && f.pkt.payload_len > 0)
}

/// `rst_seq_change`: another RST from the same claimed sender with a different sequence
/// number, the mark of an injector guessing at the window.
pub fn rst_seq_change(s: &Sides, followups: &[RstEvent]) -> bool {
    followups
        .iter()
        .any(|f| s.sent_by_sender(f) && f.pkt.is_rst() && f.pkt.seq != s.event.pkt.seq)
}

/// How close together the RSTs of a burst come: an injector writes its copies back to back,
/// while an endpoint's stack answers each packet it receives, a round trip apart.
pub const RST_BURST_WINDOW_NS: u64 = 10_000_000;

/// `rst_burst`: at least one more RST from the same claimed sender with the same sequence
/// number within `RST_BURST_WINDOW_NS`, and the RST's TTL or IP ID unlike the endpoint's
/// genuine packets. Injectors send several identical RSTs to win the race with the real
/// endpoint; a stack answering two segments of a closed connection does the same, which is
/// why the RST must also not look like the endpoint's own.
pub fn rst_burst(s: &Sides, followups: &[RstEvent]) -> bool {
    let repeated = followups.iter().any(|f| {
        s.sent_by_sender(f)
            && f.pkt.is_rst()
            && f.pkt.seq == s.event.pkt.seq
            && f.ts_ns.saturating_sub(s.event.ts_ns) <= RST_BURST_WINDOW_NS
    });
    repeated && (ttl_mismatch(s) || ip_id_anomaly(s))
}

/// Scheduling jitter on the hosts themselves: a RST must beat half the round trip by more than
/// this to count as fast. On a sub-millisecond path timing says nothing, and a busy host can
/// stretch one handshake far beyond the path's real round trip.
const FAST_RST_MARGIN_NS: u64 = 1_000_000;

/// `fast_rst` (ingress only): the RST arrived well under half a handshake round trip after the
/// receiver's last packet, which was the latest on the flow. Its answer from the real endpoint
/// needs a full round trip; half of it, less `FAST_RST_MARGIN_NS`, leaves room for jitter.
/// Only a RST claiming to come from the far side of the capture point can be faster than the
/// path allows: the near endpoint (the host itself, or the client a sensor sits next to)
/// answers within microseconds, which is no sign of anything.
pub fn fast_rst(s: &Sides) -> bool {
    let answered_after = s.event.ts_ns.saturating_sub(s.receiver.last_ns);
    s.hook == Hook::XdpIngress
        && s.flow.rtt_ns() != 0
        && s.sender_is_far() == Some(true)
        && s.receiver_spoke_last()
        && answered_after + FAST_RST_MARGIN_NS < s.flow.rtt_ns() / 2
}

/// `tls_alert_before` (context only): either side sent a TLS alert record at most `window_ns`
/// before the RST, as TLS stacks do when they close.
pub fn tls_alert_before(s: &Sides, window_ns: u128) -> bool {
    (0..s.flow.dir.len()).any(|dir| {
        let alert_ns = s.flow.tls_alert_ns(dir);
        alert_ns != 0 && (s.event.ts_ns.saturating_sub(alert_ns) as u128) <= window_ns
    })
}
