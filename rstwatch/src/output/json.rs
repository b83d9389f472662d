//! `--format json`: one JSON object per reset, keys as docs/design.md lists them, then extras.
//!
//! Values: `ts` is RFC 3339 UTC with microseconds; addresses are in their standard text form
//! (IPv4 dotted quad, IPv6 RFC 5952); `flags` is the letters of the flags set (`"RA"`, see
//! `fields::tcp_flag_letters`); `evidence` is an array of signal names; a value that is not
//! known is `null` (`expected_ttl` without genuine packets, `ip_id` for IPv6, `idle_ms`
//! without state, `rtt_us` without a handshake, `aggregate` for a single reset, `related_to`
//! for a RST that follows no earlier report; else the `ts` of the connection's first report).

use std::net::IpAddr;

use serde::Serialize;

use super::{fields, Format};
use crate::report::{Aggregate, ResetReport};

/// The keys docs/design.md promises in every record, in the order they are written; more may
/// follow. SIEM pipelines parse on these names, so they never change.
pub const REQUIRED_KEYS: [&str; 27] = [
    "ts",
    "iface",
    "direction",
    "class",
    "sender",
    "middlebox",
    "evidence",
    "src_ip",
    "src_port",
    "dst_ip",
    "dst_port",
    "orig_ip",
    "orig_port",
    "resp_ip",
    "resp_port",
    "ttl",
    "expected_ttl",
    "ip_id",
    "seq",
    "ack",
    "flags",
    "idle_ms",
    "rtt_us",
    "conn_state",
    "history",
    "community_id",
    "wireshark_filter",
];

/// Renders each report as one JSON object.
#[derive(Clone, Copy, Debug, Default)]
pub struct Json;

impl Format for Json {
    fn render(&self, report: &ResetReport, out: &mut Vec<u8>) {
        serde_json::to_writer(out, &Record::of(report))
            .expect("a record of plain fields always serialises into memory");
    }
}

/// The JSON object of one reset; fields serialise in this order.
#[derive(Serialize)]
struct Record<'a> {
    ts: String,
    iface: &'a str,
    direction: &'static str,
    class: &'static str,
    sender: &'static str,
    middlebox: bool,
    evidence: Vec<&'static str>,
    src_ip: IpAddr,
    src_port: u16,
    dst_ip: IpAddr,
    dst_port: u16,
    orig_ip: IpAddr,
    orig_port: u16,
    resp_ip: IpAddr,
    resp_port: u16,
    ttl: u8,
    expected_ttl: Option<u8>,
    ip_id: Option<u16>,
    seq: u32,
    ack: u32,
    flags: String,
    idle_ms: Option<u64>,
    rtt_us: Option<u64>,
    conn_state: &'static str,
    history: &'a str,
    community_id: &'a str,
    wireshark_filter: &'a str,
    severity: &'static str,
    description: &'static str,
    originator_inferred: bool,
    vlan: u16,
    df: bool,
    window: u16,
    payload_len: u16,
    orig_pkts: u64,
    orig_bytes: u64,
    resp_pkts: u64,
    resp_bytes: u64,
    followups: u32,
    related_to: Option<String>,
    aggregate: Option<AggregateRecord>,
    /// What this host's TCP stack said (`crate::local`); left out where it was not watched.
    #[serde(skip_serializing_if = "Option::is_none")]
    local: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct AggregateRecord {
    count: u64,
    first: String,
    last: String,
}

impl<'a> Record<'a> {
    fn of(r: &'a ResetReport) -> Self {
        Self {
            ts: fields::rfc3339(r.ts),
            iface: &r.iface,
            direction: r.direction.as_str(),
            class: r.class.as_str(),
            sender: r.sender.as_str(),
            middlebox: r.middlebox,
            evidence: r.evidence.iter().map(|e| e.as_str()).collect(),
            src_ip: r.src.ip(),
            src_port: r.src.port(),
            dst_ip: r.dst.ip(),
            dst_port: r.dst.port(),
            orig_ip: r.orig.ip(),
            orig_port: r.orig.port(),
            resp_ip: r.resp.ip(),
            resp_port: r.resp.port(),
            ttl: r.ttl,
            expected_ttl: r.expected_ttl,
            ip_id: r.ip_id,
            seq: r.seq,
            ack: r.ack,
            flags: fields::tcp_flag_letters(r.flags),
            idle_ms: r.idle_ms,
            rtt_us: r.rtt_us,
            conn_state: r.conn_state.as_str(),
            history: &r.history,
            community_id: &r.community_id,
            wireshark_filter: &r.wireshark_filter,
            severity: r.severity().as_str(),
            description: r.class.describe(),
            originator_inferred: r.originator_inferred,
            vlan: r.vlan,
            df: r.df,
            window: r.window,
            payload_len: r.payload_len,
            orig_pkts: r.orig_pkts,
            orig_bytes: r.orig_bytes,
            resp_pkts: r.resp_pkts,
            resp_bytes: r.resp_bytes,
            followups: r.followups,
            related_to: r.related_to.map(fields::rfc3339),
            aggregate: r.aggregate.as_ref().map(AggregateRecord::of),
            local: r.local.as_ref().map(|local| local.to_json()),
        }
    }
}

impl AggregateRecord {
    fn of(a: &Aggregate) -> Self {
        Self {
            count: a.count,
            first: fields::rfc3339(a.first),
            last: fields::rfc3339(a.last),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use serde_json::{json, Value};

    use super::*;
    use crate::output::sample::{ipv6_report, middlebox_report};

    fn render(report: &ResetReport) -> Value {
        let mut out = Vec::new();
        Json.render(report, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains('\n'), "one record, one line: {text}");
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn every_stable_key_is_present() {
        let v = render(&middlebox_report());
        for key in REQUIRED_KEYS {
            assert!(v.get(key).is_some(), "missing {key} in {v}");
        }
    }

    #[test]
    fn ipv4_record_values() {
        let v = render(&middlebox_report());
        assert_eq!(v["ts"], "2024-05-01T12:00:00.250000Z");
        assert_eq!(v["iface"], "eth0");
        assert_eq!(v["direction"], "ingress");
        assert_eq!(v["class"], "abort");
        assert_eq!(v["sender"], "responder");
        assert_eq!(v["middlebox"], true);
        assert_eq!(v["evidence"], json!(["ttl_mismatch", "fast_rst"]));
        assert_eq!(v["src_ip"], "198.18.1.2");
        assert_eq!(v["src_port"], 80);
        assert_eq!(v["dst_ip"], "198.18.0.1");
        assert_eq!(v["dst_port"], 40000);
        assert_eq!(v["orig_ip"], "198.18.0.1");
        assert_eq!(v["orig_port"], 40000);
        assert_eq!(v["resp_ip"], "198.18.1.2");
        assert_eq!(v["resp_port"], 80);
        assert_eq!(v["ttl"], 64);
        assert_eq!(v["expected_ttl"], 57);
        assert_eq!(v["ip_id"], 4242);
        assert_eq!(v["seq"], 3_000_001_401u32);
        assert_eq!(v["ack"], 1_000_501);
        assert_eq!(v["flags"], "RA");
        assert_eq!(v["idle_ms"], 1);
        assert_eq!(v["rtt_us"], 40_000);
        assert_eq!(v["conn_state"], "RSTR");
        assert_eq!(v["history"], "ShADdr");
        assert_eq!(v["community_id"], "1:m4Ien//KTz7fgaSi9qyji8Mv2JM=");
        assert_eq!(
            v["wireshark_filter"],
            "ip.addr==198.18.1.2 && ip.addr==198.18.0.1 && tcp.port==80 && tcp.port==40000"
        );
        assert_eq!(v["severity"], "alert");
        assert_eq!(v["vlan"], 0);
        assert_eq!(v["followups"], 0);
        assert_eq!(v["aggregate"], Value::Null);
    }

    #[test]
    fn unknown_values_are_null_and_ipv6_is_standard_text() {
        let v = render(&ipv6_report());
        assert_eq!(v["src_ip"], "2001:db8::2");
        assert_eq!(v["orig_ip"], "2001:db8::2");
        assert_eq!(v["sender"], "unknown");
        assert_eq!(v["class"], "no_state");
        assert_eq!(v["ip_id"], Value::Null);
        assert_eq!(v["expected_ttl"], Value::Null);
        assert_eq!(v["idle_ms"], Value::Null);
        assert_eq!(v["rtt_us"], Value::Null);
        assert_eq!(v["evidence"], json!([]));
    }

    #[test]
    fn aggregate_is_rendered_when_present() {
        let mut r = middlebox_report();
        r.aggregate = Some(Aggregate {
            count: 12,
            first: UNIX_EPOCH + Duration::from_secs(1_714_564_800),
            last: UNIX_EPOCH + Duration::from_secs(1_714_564_803),
        });
        let v = render(&r);
        assert_eq!(
            v["aggregate"],
            json!({
                "count": 12,
                "first": "2024-05-01T12:00:00.000000Z",
                "last": "2024-05-01T12:00:03.000000Z",
            })
        );
    }

    #[test]
    fn related_to_is_the_earlier_reports_ts_or_null() {
        let earlier = render(&middlebox_report());
        let later = render(&crate::output::sample::related_report());
        assert_eq!(later["related_to"], earlier["ts"]);
        assert_eq!(earlier["related_to"], Value::Null);
    }
}
