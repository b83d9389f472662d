//! Explains a RST: class, attribution, Zeek state, identifiers.
//!
//! Everything here is a pure function of the kernel's event (the RST's own fields plus the
//! flow as it was just before it), the follow-up events for the same flow, and settings, so
//! every rule is unit-tested on synthetic conversations without a kernel.
//!
//! Where to look:
//! - `classify`: the one class per RST (first matching rule wins, docs/design.md).
//! - `evidence`: the signals about who really sent it; `attribution`: the claimed sender and
//!   the rule that turns signals into `middlebox`.
//! - `zeek`: conn.log `conn_state` and `history`.
//! - `community_id`, `wireshark`: identifiers that find the flow in other tools.

mod address;
pub mod attribution;
pub mod classify;
pub mod community_id;
pub mod evidence;
mod sides;
pub mod wireshark;
pub mod zeek;

#[cfg(test)]
pub(crate) mod conversation;
#[cfg(test)]
mod tests;

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use rstwatch_common::{event::DIRECTION_EGRESS, flow::FlowState, PortSet, RstEvent, Settings};

use self::sides::Sides;
use crate::{
    event::{FlowSide, Hook, Origin},
    pipeline::hold::{AtHoldEnd, Held},
    report::{CapturedFrame, Direction, ResetReport},
};

/// What the classifier needs to know beyond the event itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExplainSettings {
    /// `--idle-timeout`: silence at least this long right before the RST, or right before the
    /// packet it answers, makes the RST an `idle_timeout`.
    pub idle_timeout: Duration,
    /// A TLS alert at most this long before the RST is reported as `tls_alert_before`.
    pub tls_alert_window: Duration,
    /// Likely server ports, for Zeek's direction heuristic on a flow the RST is the first
    /// packet of (the kernel decides it for every other flow).
    pub server_ports: &'static PortSet,
    /// VLAN IDs are part of flow keys (`--vlan-key on`): events keep their VLAN in their key,
    /// as the kernel's tables do; otherwise it is dropped from the key, as the tables drop it.
    pub vlan_key: bool,
}

/// The built-in likely server ports, for settings that add none.
pub static LIKELY_SERVER_PORTS: PortSet = PortSet::LIKELY_SERVERS;

impl ExplainSettings {
    pub const DEFAULT_IDLE_TIMEOUT: Duration =
        Duration::from_nanos(rstwatch_common::defaults::IDLE_TIMEOUT_NS);
    pub const DEFAULT_TLS_ALERT_WINDOW: Duration = Duration::from_secs(2);
}

impl Default for ExplainSettings {
    fn default() -> Self {
        Self {
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            tls_alert_window: Self::DEFAULT_TLS_ALERT_WINDOW,
            server_ports: &LIKELY_SERVER_PORTS,
            vlan_key: false,
        }
    }
}

/// The release step: explains a RST whose hold ended, with its connection's state as the
/// release step found it at the hold's end (`Held::state_at_hold_end`), and links it to the
/// earlier report it follows. `wall_clock` turns kernel timestamps into wall-clock time. The
/// frames the kernel copied are not in the report: see `captured_frames`.
pub fn explain_held(
    held: &Held,
    at_hold_end: AtHoldEnd<'_>,
    settings: &ExplainSettings,
    iface: &Arc<str>,
    wall_clock: impl Fn(u64) -> SystemTime,
) -> ResetReport {
    let state = match at_hold_end {
        AtHoldEnd::Exact(flow) => flow,
        AtHoldEnd::AfterRst { rst, .. } => flow_after_rst(rst, settings.server_ports),
    };
    let ts = wall_clock(held.event.ts_ns);
    let mut report = explain_at_hold_end(
        &held.event,
        &held.followups,
        Some(&state),
        settings,
        iface,
        ts,
    );
    report.related_to = held.related_to.map(&wall_clock);
    report
}

/// The frames the kernel copied of a held RST and its follow-ups, for the sinks that take
/// them (`ResetReport::frames`).
pub fn captured_frames(held: &Held, wall_clock: impl Fn(u64) -> SystemTime) -> Vec<CapturedFrame> {
    std::iter::once(&held.event)
        .chain(&held.followups)
        .filter(|event| event.frame.captured > 0)
        .map(|event| CapturedFrame {
            ts: wall_clock(event.ts_ns),
            ifindex: event.ifindex,
            direction: if event.direction == DIRECTION_EGRESS {
                Direction::Egress
            } else {
                Direction::Ingress
            },
            followup: !std::ptr::eq(event, &held.event),
            wire_len: event.frame.wire_len,
            bytes: event.frame.captured_bytes().to_vec(),
        })
        .collect()
}

/// Explains the RST in `event`, seen on `iface` at wall-clock time `ts`, from its own
/// snapshot: `conn_state`, `history` and the packet counts are those right after the RST.
pub fn explain(
    event: &RstEvent,
    followups: &[RstEvent],
    settings: &ExplainSettings,
    iface: &Arc<str>,
    ts: SystemTime,
) -> ResetReport {
    explain_at_hold_end(event, followups, None, settings, iface, ts)
}

/// Explains the RST in `event`, seen on `iface` at wall-clock time `ts`.
///
/// `followups` are the later events of the same claimed sender collected during the hold: they only
/// add evidence. Class and evidence are judged on the flow as it was before the RST. `conn_state`,
/// `history` and the packet counts are Zeek's for the connection as of the end of the hold:
/// `state_at_hold_end` is the flow's state then (what came after the RST, a FIN right behind it,
/// changes Zeek's verdict; `crate::pipeline::hold` says how it is found); without it they are those
/// right after the RST.
pub fn explain_at_hold_end(
    event: &RstEvent,
    followups: &[RstEvent],
    state_at_hold_end: Option<&FlowState>,
    settings: &ExplainSettings,
    iface: &Arc<str>,
    ts: SystemTime,
) -> ResetReport {
    let pkt = &event.pkt;
    let after = state_at_hold_end
        .copied()
        .unwrap_or_else(|| flow_after_rst(event, settings.server_ports));
    let sides = Sides::of(event);
    let evidence = evidence::collect(&sides, followups, settings);
    let endpoint = |side: FlowSide| {
        let i = side.index();
        address::socket(&event.key.addr[i], event.key.port[i], event.key.family)
    };
    let originator = FlowSide::of(after.originator());
    let (orig, resp) = (endpoint(originator), endpoint(originator.other()));
    let src = address::socket(&pkt.src_addr, pkt.src_port, pkt.family);
    let dst = address::socket(&pkt.dst_addr, pkt.dst_port, pkt.family);
    let orig_dir = &after.dir[originator.index()];
    let resp_dir = &after.dir[originator.other().index()];
    let history = zeek::history(&after);
    ResetReport {
        ts,
        iface: Arc::clone(iface),
        direction: match sides.hook {
            Hook::XdpIngress => Direction::Ingress,
            Hook::TcEgress => Direction::Egress,
        },
        class: classify::classify(&sides, settings.idle_timeout),
        sender: attribution::sender(&sides, &after),
        middlebox: attribution::middlebox(&sides, &evidence),
        evidence,
        src,
        dst,
        orig,
        resp,
        originator_inferred: !Origin::of(&after).handshake_seen(),
        vlan: pkt.vlan,
        ttl: pkt.ttl,
        expected_ttl: evidence::expected_ttl(&sides),
        ip_id: address::is_ipv4(pkt.family).then_some(pkt.ip_id),
        df: pkt.df != 0,
        seq: pkt.seq,
        ack: pkt.ack,
        flags: pkt.tcp_flags,
        window: pkt.window,
        payload_len: pkt.payload_len,
        idle_ms: classify::idle_before_rst(&sides).map(|idle| idle.as_millis() as u64),
        rtt_us: (event.flow.rtt_ns() != 0).then_some(event.flow.rtt_ns() / 1_000),
        conn_state: zeek::conn_state_with(&after, &history),
        history,
        community_id: community_id::tcp(src, dst),
        wireshark_filter: wireshark::display_filter(src, dst, event.key.vlan),
        orig_pkts: orig_dir.pkts.into(),
        orig_bytes: orig_dir.bytes.into(),
        resp_pkts: resp_dir.pkts.into(),
        resp_bytes: resp_dir.bytes.into(),
        followups: followups.len() as u32,
        related_to: None,
        aggregate: None,
        local: None,
        frames: Vec::new(),
    }
}

/// The flow with the RST recorded, by the same update the kernel runs: the snapshot is taken
/// before the RST, but Zeek's history and state include it. A flow the table never saw starts
/// the way the kernel would have started it, with the RST as its first packet.
fn flow_after_rst(event: &RstEvent, server_ports: &PortSet) -> FlowState {
    let likely_server = |port| server_ports.contains(port);
    let mut flow = if event.flow.packets() == 0 {
        FlowState::new(&event.pkt, event.dir, &likely_server)
    } else {
        event.flow
    };
    // No grace period may end here: this replays one packet on the snapshot taken for it.
    let settings = Settings {
        grace_ns: u64::MAX,
        ..Settings::default()
    };
    flow.step(
        &event.pkt,
        event.dir,
        event.ts_ns,
        &settings,
        &likely_server,
        |_, _| {},
    );
    flow
}
