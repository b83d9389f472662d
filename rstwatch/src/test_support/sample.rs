//! Reports for the format, sink and SIEM tests, written out by hand so they do not depend on
//! the classifier.

use std::time::{Duration, UNIX_EPOCH};

use rstwatch_common::packet::tcp_flags::{ACK, RST};

use crate::explain::{community_id, wireshark};
use crate::report::{ConnState, Direction, Evidence, ResetClass, ResetReport, Sender};

/// A server's RST forged by a nearby device: TTL 64 where the server's packets arrive with
/// 57, one millisecond after the client's request.
pub fn middlebox_report() -> ResetReport {
    ResetReport {
        ts: UNIX_EPOCH + Duration::from_millis(1_714_564_800_250),
        iface: "eth0".into(),
        direction: Direction::Ingress,
        class: ResetClass::Abort,
        sender: Sender::Responder,
        middlebox: true,
        evidence: [Evidence::TtlMismatch, Evidence::FastRst].into(),
        src: "198.18.1.2:80".parse().unwrap(),
        dst: "198.18.0.1:40000".parse().unwrap(),
        orig: "198.18.0.1:40000".parse().unwrap(),
        resp: "198.18.1.2:80".parse().unwrap(),
        originator_inferred: false,
        vlan: 0,
        ttl: 64,
        expected_ttl: Some(57),
        ip_id: Some(4242),
        df: true,
        seq: 3_000_001_401,
        ack: 1_000_501,
        flags: RST | ACK,
        window: 0,
        payload_len: 0,
        idle_ms: Some(1),
        rtt_us: Some(40_000),
        conn_state: ConnState::Rstr,
        history: "ShADdr".try_into().unwrap(),
        community_id: "1:m4Ien//KTz7fgaSi9qyji8Mv2JM=".try_into().unwrap(),
        wireshark_filter: wireshark::display_filter(
            "198.18.1.2:80".parse().unwrap(),
            "198.18.0.1:40000".parse().unwrap(),
            0,
        ),
        orig_pkts: 4,
        orig_bytes: 500,
        resp_pkts: 3,
        resp_bytes: 1_400,
        followups: 0,
        related_to: None,
        aggregate: None,
        local: None,
        frames: Vec::new(),
    }
}

/// A lone IPv6 RST for a flow the table never saw.
pub fn ipv6_report() -> ResetReport {
    let src = "[2001:db8::2]:443".parse().unwrap();
    let dst = "[2001:db8::1]:40000".parse().unwrap();
    ResetReport {
        ts: UNIX_EPOCH + Duration::from_secs(1_714_564_801),
        iface: "eth1".into(),
        class: ResetClass::NoState,
        sender: Sender::Unknown,
        src,
        dst,
        orig: src,
        resp: dst,
        originator_inferred: true,
        vlan: 7,
        ttl: 60,
        ip_id: None,
        df: false,
        seq: 1,
        ack: 0,
        flags: RST,
        conn_state: ConnState::Oth,
        history: "R".try_into().unwrap(),
        community_id: community_id::tcp(src, dst),
        wireshark_filter: wireshark::display_filter(src, dst, 7),
        orig_bytes: 0,
        resp_pkts: 0,
        resp_bytes: 0,
        ..refused_report()
    }
}

/// A benign teardown: the client reset after both sides sent FIN.
pub fn teardown_report() -> ResetReport {
    ResetReport {
        class: ResetClass::Teardown,
        sender: Sender::Originator,
        direction: Direction::Egress,
        middlebox: false,
        evidence: Default::default(),
        src: "198.18.0.1:40000".parse().unwrap(),
        dst: "198.18.1.2:80".parse().unwrap(),
        ttl: 64,
        expected_ttl: Some(64),
        conn_state: ConnState::Sf,
        history: "ShADdFfR".try_into().unwrap(),
        idle_ms: Some(2_500),
        ..middlebox_report()
    }
}

/// The client's own RST answering the server after `middlebox_report`'s forged one: it
/// follows that report.
pub fn related_report() -> ResetReport {
    let earlier = middlebox_report();
    ResetReport {
        ts: earlier.ts + Duration::from_millis(20),
        related_to: Some(earlier.ts),
        ..teardown_report()
    }
}

/// A client's SYN to a closed port answered by the server's RST, seen arriving on eth0.
pub fn refused_report() -> ResetReport {
    ResetReport {
        ts: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        class: ResetClass::Refused,
        middlebox: false,
        evidence: Default::default(),
        src: "192.0.2.80:4333".parse().unwrap(),
        dst: "198.51.100.7:51000".parse().unwrap(),
        orig: "198.51.100.7:51000".parse().unwrap(),
        resp: "192.0.2.80:4333".parse().unwrap(),
        ttl: 58,
        expected_ttl: None,
        ip_id: Some(0),
        seq: 0,
        ack: 2_000_001,
        flags: 0x14,
        idle_ms: None,
        rtt_us: None,
        conn_state: ConnState::Rej,
        history: "Sr".try_into().unwrap(),
        community_id: "1:hO+sN4H+MG5MY/8hIrXPqc4ZQz0=".try_into().unwrap(),
        wireshark_filter: wireshark::display_filter(
            "192.0.2.80:4333".parse().unwrap(),
            "198.51.100.7:51000".parse().unwrap(),
            0,
        ),
        orig_pkts: 1,
        orig_bytes: 60,
        resp_pkts: 1,
        resp_bytes: 40,
        ..middlebox_report()
    }
}

/// Text no format may trip over: CEF and RFC 5424 delimiters, escapes, line breaks, non-ASCII.
pub const HOSTILE: &str = "e|th=0 \\ cs1=forged\nline\r\"quoted\" ]ünï日本 ";

/// The number `numbered_report(n)` carries in `community_id`, which every format exports (ECS
/// `network.community_id`, OCSF `connection_info.community_uid`, CEF `cs6`).
pub fn id_of(n: u32) -> String {
    format!("1:rstwatch-test-{n:06}")
}

/// `refused_report` numbered `n`: `n` milliseconds later, its number in `community_id`.
pub fn numbered_report(n: u32) -> ResetReport {
    ResetReport {
        ts: UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_millis(n.into()),
        community_id: id_of(n)
            .as_str()
            .try_into()
            .expect("a test number fits a Community ID"),
        ..refused_report()
    }
}

/// `numbered_report(n)` with `HOSTILE` as its interface name, the one free-text field (the
/// history is Zeek's letters, the filter is addresses and ports).
pub fn hostile_report(n: u32) -> ResetReport {
    let mut report = numbered_report(n);
    report.iface = HOSTILE.into();
    report
}
