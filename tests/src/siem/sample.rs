//! Reports to feed the sink: each carries its number in `community_id`, which every format
//! exports (ECS `network.community_id`, OCSF `connection_info.community_uid`, CEF `cs6`).

use std::{
    net::SocketAddr,
    time::{Duration, SystemTime},
};

use rstwatch::report::{ConnState, Direction, ResetClass, ResetReport, Sender};

/// Text no format may trip over: CEF and RFC 5424 delimiters, escapes, line breaks, non-ASCII.
pub const HOSTILE: &str = "e|th=0 \\ cs1=forged\nline\r\"quoted\" ]ünï日本 ";

pub fn id_of(n: u32) -> String {
    format!("1:rstwatch-test-{n:06}")
}

/// A client's connection to a closed port, refused by the server.
pub fn report(n: u32) -> ResetReport {
    let server: SocketAddr = "192.0.2.80:4333".parse().expect("valid address");
    let client: SocketAddr = "198.51.100.7:51000".parse().expect("valid address");
    ResetReport {
        ts: SystemTime::UNIX_EPOCH
            + Duration::from_secs(1_700_000_000)
            + Duration::from_millis(n.into()),
        iface: "eth0".to_owned(),
        direction: Direction::Ingress,
        class: ResetClass::Refused,
        sender: Sender::Responder,
        middlebox: false,
        evidence: Vec::new(),
        src: server,
        dst: client,
        orig: client,
        resp: server,
        originator_inferred: false,
        vlan: 0,
        ttl: 58,
        expected_ttl: None,
        ip_id: Some(0),
        df: true,
        seq: 0,
        ack: 1,
        flags: 0x14,
        window: 0,
        payload_len: 0,
        idle_ms: None,
        rtt_us: None,
        conn_state: ConnState::Rej,
        history: "Sr".to_owned(),
        community_id: id_of(n),
        wireshark_filter: "ip.addr==192.0.2.80 && tcp.port==4333 && tcp.port==51000".to_owned(),
        orig_pkts: 1,
        orig_bytes: 60,
        resp_pkts: 1,
        resp_bytes: 40,
        followups: 0,
        related_to: None,
        aggregate: None,
        local: None,
    }
}

/// `report(n)` with `HOSTILE` in every free-text field but its number.
pub fn hostile_report(n: u32) -> ResetReport {
    let mut report = report(n);
    report.iface = HOSTILE.to_owned();
    report.history = HOSTILE.to_owned();
    report.wireshark_filter = format!("frame contains \"{HOSTILE}\"");
    report
}
