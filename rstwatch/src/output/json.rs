//! `--format json`: one JSON object per reset, keys as docs/design.md lists them, then extras.
//!
//! Values: `ts` is RFC 3339 UTC with microseconds; addresses are in their standard text form
//! (IPv4 dotted quad, IPv6 RFC 5952); `flags` is the letters of the flags set (`"RA"`, see
//! `fields::tcp_flag_letters`); `evidence` is an array of signal names; a value that is not
//! known is `null` (`expected_ttl` without genuine packets, `ip_id` for IPv6, `idle_ms`
//! without state, `rtt_us` without a handshake, `aggregate` for a single reset, `related_to`
//! for a RST that follows no earlier report; else the `ts` of the connection's first report).

use super::{fields, json_writer::JsonObject, Format};
use crate::report::ResetReport;

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
    fn render(&self, r: &ResetReport, out: &mut Vec<u8>) {
        let mut record = JsonObject::new(out);
        record
            .time("ts", r.ts)
            .str("iface", &r.iface)
            .name("direction", r.direction.as_str())
            .name("class", r.class.as_str())
            .name("sender", r.sender.as_str())
            .bool("middlebox", r.middlebox)
            .names("evidence", r.evidence.iter().map(|e| e.as_str()))
            .ip("src_ip", r.src.ip())
            .uint("src_port", r.src.port().into())
            .ip("dst_ip", r.dst.ip())
            .uint("dst_port", r.dst.port().into())
            .ip("orig_ip", r.orig.ip())
            .uint("orig_port", r.orig.port().into())
            .ip("resp_ip", r.resp.ip())
            .uint("resp_port", r.resp.port().into())
            .uint("ttl", r.ttl.into())
            .opt_uint("expected_ttl", r.expected_ttl.map(u64::from))
            .opt_uint("ip_id", r.ip_id.map(u64::from))
            .uint("seq", r.seq.into())
            .uint("ack", r.ack.into())
            .name("flags", fields::tcp_flag_letters(r.flags).as_str())
            .opt_uint("idle_ms", r.idle_ms)
            .opt_uint("rtt_us", r.rtt_us)
            .name("conn_state", r.conn_state.as_str())
            .str("history", &r.history)
            .str("community_id", &r.community_id)
            .plain_str("wireshark_filter", |out| r.wireshark_filter.write(out))
            .name("severity", r.severity().as_str())
            .name("description", r.class.describe())
            .bool("originator_inferred", r.originator_inferred)
            .uint("vlan", r.vlan.into())
            .bool("df", r.df)
            .uint("window", r.window.into())
            .uint("payload_len", r.payload_len.into())
            .uint("orig_pkts", r.orig_pkts)
            .uint("orig_bytes", r.orig_bytes)
            .uint("resp_pkts", r.resp_pkts)
            .uint("resp_bytes", r.resp_bytes)
            .uint("followups", r.followups.into())
            .opt_time("related_to", r.related_to);
        match &r.aggregate {
            Some(aggregate) => record.object("aggregate", |object| {
                object
                    .uint("count", aggregate.count)
                    .time("first", aggregate.first)
                    .time("last", aggregate.last);
            }),
            None => record.null("aggregate"),
        };
        // What this host's TCP stack said (`crate::local`); left out where it was not watched.
        if let Some(local) = &r.local {
            record.value("local", &local.to_json());
        }
        record.end();
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use serde_json::{json, Value};

    use super::*;
    use crate::report::Aggregate;
    use crate::test_support::sample::{ipv6_report, middlebox_report};

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
        let later = render(&crate::test_support::sample::related_report());
        assert_eq!(later["related_to"], earlier["ts"]);
        assert_eq!(earlier["related_to"], Value::Null);
    }
}
