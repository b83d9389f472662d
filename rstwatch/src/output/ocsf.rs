//! OCSF Network Activity (class 4001, category 4): one JSON event per reset.
//!
//! Mapping choices (OCSF schema, version in `OCSF_VERSION`):
//! - `activity_id`: refused -> 5 Refuse, teardown -> 2 Close, every other class -> 3 Reset;
//!   `type_uid` = `class_uid * 100 + activity_id`.
//! - `src_endpoint`/`dst_endpoint` are the connection's initiator and responder, as OCSF defines
//!   them for this class, not the RST packet's addresses (those are `unmapped.rst_src/rst_dst`,
//!   and `unmapped.sender` says which endpoint the RST claims to come from).
//! - `connection_info.direction_id` is the direction of the *connection* from this host's point
//!   of view (1 Inbound: the peer opened it, 2 Outbound: this host did, 0 Unknown when the RST's
//!   sender is unknown); it assumes the watched interface belongs to the host.
//! - `severity_id`: benign -> 1 Informational, notice -> 2 Low, alert (including every suspected
//!   middlebox) -> 4 High.
//! - `status_id`: a teardown is 1 Success (the connection ended normally); every other class is
//!   2 Failure, with the class in words as `status_detail`.
//! - `count` is always present (1 unless a storm was folded); a folded storm adds `start_time`
//!   and `end_time`.

use std::net::SocketAddr;

use super::{fields, json_writer::JsonObject, Format};
use crate::report::{unix_millis, ResetClass, ResetReport, Severity};

/// The OCSF schema release this mapping follows.
pub const OCSF_VERSION: &str = "1.3.0";

const CLASS_UID: u32 = 4001;
const CATEGORY_UID: u32 = 4;
const OBSERVABLE_IP_ADDRESS: u8 = 2;

/// Renders reports as OCSF Network Activity events.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ocsf;

impl Format for Ocsf {
    /// Keys are written in sorted order at every level, as a document of sorted maps would
    /// have them.
    fn render(&self, r: &ResetReport, out: &mut Vec<u8>) {
        let (activity_id, activity_name, type_name) = activity(r.class);
        let (severity_id, severity_name) = severity(r.severity());
        let (status_id, status) = match r.class {
            ResetClass::Teardown => (1, "Success"),
            _ => (2, "Failure"),
        };
        let mut event = JsonObject::new(out);
        event
            .uint("activity_id", activity_id.into())
            .name("activity_name", activity_name);
        let owner = r.local.as_ref().and_then(|local| local.owner());
        if let Some((pid, name)) = owner.and_then(|o| o.pid.zip(o.comm.as_deref())) {
            event.object("actor", |actor| {
                actor.object("process", |process| {
                    process.str("name", name).uint("pid", pid.into());
                });
            });
        }
        event
            .name("category_name", "Network Activity")
            .uint("category_uid", CATEGORY_UID.into())
            .name("class_name", "Network Activity")
            .uint("class_uid", CLASS_UID.into())
            .object("connection_info", |info| connection_info(info, r))
            .uint("count", r.count())
            .object("dst_endpoint", |endpoint_| {
                endpoint(endpoint_, r.resp, r.vlan)
            })
            .known_uint("end_time", r.aggregate.map(|a| unix_millis(a.last)))
            .plain_str("message", |out| r.write_explanation(out))
            .object("metadata", |metadata| {
                metadata
                    .name("event_code", r.class.as_str())
                    .object("product", |product| {
                        product
                            .name("name", "rstwatch")
                            .name("vendor_name", "rstwatch")
                            .name("version", env!("CARGO_PKG_VERSION"));
                    })
                    .name("version", OCSF_VERSION);
            })
            .objects(
                "observables",
                [("src_endpoint.ip", r.orig), ("dst_endpoint.ip", r.resp)],
                |observable, (name, address)| {
                    observable
                        .name("name", name)
                        .name("type", "IP Address")
                        .uint("type_id", OBSERVABLE_IP_ADDRESS.into())
                        .ip("value", address.ip());
                },
            )
            .name("severity", severity_name)
            .uint("severity_id", severity_id.into())
            .object("src_endpoint", |endpoint_| {
                endpoint(endpoint_, r.orig, r.vlan)
            })
            .known_uint("start_time", r.aggregate.map(|a| unix_millis(a.first)))
            .name("status", status)
            .name("status_detail", r.class.describe())
            .uint("status_id", status_id)
            .uint("time", unix_millis(r.ts))
            .object("traffic", |traffic| {
                traffic
                    .uint("bytes", r.orig_bytes + r.resp_bytes)
                    .uint("bytes_in", r.resp_bytes)
                    .uint("bytes_out", r.orig_bytes)
                    .uint("packets", r.orig_pkts + r.resp_pkts)
                    .uint("packets_in", r.resp_pkts)
                    .uint("packets_out", r.orig_pkts);
            })
            .name("type_name", type_name)
            .uint("type_uid", (CLASS_UID * 100 + activity_id).into())
            .object("unmapped", |unmapped_| unmapped(unmapped_, r));
        event.end();
    }
}

/// The Network Activity `activity_id` of a class, with its caption and the event type's
/// name (`Network Activity: ` and the caption).
fn activity(class: ResetClass) -> (u32, &'static str, &'static str) {
    match class {
        ResetClass::Refused => (5, "Refuse", "Network Activity: Refuse"),
        ResetClass::Teardown => (2, "Close", "Network Activity: Close"),
        ResetClass::DataAfterClose
        | ResetClass::IdleTimeout
        | ResetClass::Abort
        | ResetClass::NoState => (3, "Reset", "Network Activity: Reset"),
    }
}

fn severity(severity: Severity) -> (u8, &'static str) {
    match severity {
        Severity::Benign => (1, "Informational"),
        Severity::Notice => (2, "Low"),
        Severity::Alert => (4, "High"),
    }
}

fn endpoint(endpoint: &mut JsonObject<'_>, address: SocketAddr, vlan: u16) {
    endpoint
        .ip("ip", address.ip())
        .uint("port", address.port().into());
    if vlan != 0 {
        endpoint.plain_str("vlan_uid", |out| fields::write_uint(out, vlan.into()));
    }
}

fn connection_info(info: &mut JsonObject<'_>, r: &ResetReport) {
    let (direction_id, direction) = match r.originator_is_local() {
        Some(false) => (1, "Inbound"),
        Some(true) => (2, "Outbound"),
        None => (0, "Unknown"),
    };
    let (protocol_ver_id, protocol_ver) = if r.src.is_ipv4() {
        (4, "Internet Protocol version 4 (IPv4)")
    } else {
        (6, "Internet Protocol version 6 (IPv6)")
    };
    info.str("community_uid", &r.community_id)
        .name("direction", direction)
        .uint("direction_id", direction_id)
        .str("flag_history", &r.history)
        .name("protocol_name", "tcp")
        .uint("protocol_num", 6)
        .name("protocol_ver", protocol_ver)
        .uint("protocol_ver_id", protocol_ver_id)
        .uint("tcp_flags", r.flags.into());
}

fn unmapped(unmapped: &mut JsonObject<'_>, r: &ResetReport) {
    unmapped
        .uint("ack", r.ack.into())
        .name("class", r.class.as_str())
        .name("conn_state", r.conn_state.as_str())
        .bool("df", r.df)
        .name("direction", r.direction.as_str())
        .names("evidence", r.evidence.iter().map(|e| e.as_str()));
    if let Some(ttl) = r.expected_ttl {
        unmapped.uint("expected_ttl", ttl.into());
    }
    unmapped
        .uint("followups", r.followups.into())
        .str("history", &r.history);
    if let Some(idle_ms) = r.idle_ms {
        unmapped.uint("idle_ms", idle_ms);
    }
    unmapped.str("iface", &r.iface);
    if let Some(ip_id) = r.ip_id {
        unmapped.uint("ip_id", ip_id.into());
    }
    if let Some(local) = &r.local {
        unmapped.value("local", &local.to_json());
    }
    unmapped
        .bool("middlebox", r.middlebox)
        .bool("originator_inferred", r.originator_inferred)
        .uint("payload_len", r.payload_len.into());
    if let Some(earlier) = r.related_to {
        unmapped.time("related_to", earlier);
    }
    unmapped
        .object("rst_dst", |dst| {
            dst.ip("ip", r.dst.ip()).uint("port", r.dst.port().into());
        })
        .object("rst_src", |src| {
            src.ip("ip", r.src.ip()).uint("port", r.src.port().into());
        });
    if let Some(rtt_us) = r.rtt_us {
        unmapped.uint("rtt_us", rtt_us);
    }
    unmapped
        .name("sender", r.sender.as_str())
        .uint("seq", r.seq.into())
        .uint("ttl", r.ttl.into())
        .uint("window", r.window.into())
        .plain_str("wireshark_filter", |out| r.wireshark_filter.write(out));
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{json, Value};

    use super::*;
    use crate::report::{Aggregate, Direction, Evidence, Sender};

    fn render(report: &ResetReport) -> Value {
        let mut out = Vec::new();
        Ocsf.render(report, &mut out);
        assert!(
            !out.ends_with(b"\n"),
            "a record carries no trailing newline"
        );
        serde_json::from_slice(&out).expect("OCSF output is one JSON document")
    }

    #[test]
    fn refused_connection_is_a_refuse_activity() {
        let doc = render(&crate::test_support::sample::refused_report());
        assert_eq!(doc["class_uid"], 4001);
        assert_eq!(doc["category_uid"], 4);
        assert_eq!(doc["activity_id"], 5);
        assert_eq!(doc["activity_name"], "Refuse");
        assert_eq!(doc["type_uid"], 400105);
        assert_eq!(doc["time"], 1_700_000_000_123u64);
        assert_eq!(doc["severity_id"], 2);
        assert_eq!(doc["status_id"], 2);
        assert_eq!(doc["count"], 1);
        assert_eq!(doc["metadata"]["version"], OCSF_VERSION);
        assert_eq!(doc["metadata"]["product"]["name"], "rstwatch");
        assert_eq!(doc["metadata"]["product"]["vendor_name"], "rstwatch");
        assert_eq!(
            doc["metadata"]["product"]["version"],
            env!("CARGO_PKG_VERSION")
        );
        // The initiator, not the RST's sender, is the source endpoint.
        assert_eq!(
            doc["src_endpoint"],
            json!({ "ip": "198.51.100.7", "port": 51000 })
        );
        assert_eq!(
            doc["dst_endpoint"],
            json!({ "ip": "192.0.2.80", "port": 4333 })
        );
        assert_eq!(doc["unmapped"]["rst_src"]["port"], 4333);
        let info = &doc["connection_info"];
        // The responder's RST came in: this host opened the connection.
        assert_eq!(info["direction_id"], 2);
        assert_eq!(info["protocol_num"], 6);
        assert_eq!(info["protocol_name"], "tcp");
        assert_eq!(info["protocol_ver_id"], 4);
        assert_eq!(info["tcp_flags"], 0x14);
        assert_eq!(info["community_uid"], "1:hO+sN4H+MG5MY/8hIrXPqc4ZQz0=");
        assert_eq!(doc["traffic"]["bytes"], 100);
        assert!(doc.get("start_time").is_none());
    }

    #[test]
    fn every_class_maps_to_its_activity() {
        for class in ResetClass::ALL {
            let mut report = crate::test_support::sample::refused_report();
            report.class = class;
            let doc = render(&report);
            let expected = match class {
                ResetClass::Refused => 5,
                ResetClass::Teardown => 2,
                _ => 3,
            };
            assert_eq!(doc["activity_id"], expected, "{class:?}");
            assert_eq!(doc["type_uid"], 400100 + expected, "{class:?}");
        }
    }

    #[test]
    fn teardown_is_an_informational_success() {
        let mut report = crate::test_support::sample::refused_report();
        report.class = ResetClass::Teardown;
        let doc = render(&report);
        assert_eq!(doc["activity_name"], "Close");
        assert_eq!(doc["severity_id"], 1);
        assert_eq!(doc["status_id"], 1);
    }

    #[test]
    fn suspected_middlebox_on_an_inbound_ipv6_connection_is_high() {
        let mut report = crate::test_support::sample::refused_report();
        report.class = ResetClass::Abort;
        report.middlebox = true;
        report.evidence = [Evidence::TtlMismatch].into();
        report.sender = Sender::Originator;
        report.direction = Direction::Ingress;
        report.src = "[2001:db8::7]:51000".parse().unwrap();
        report.dst = "[2001:db8::80]:443".parse().unwrap();
        report.orig = report.src;
        report.resp = report.dst;
        report.vlan = 7;
        report.ip_id = None;
        let doc = render(&report);
        assert_eq!(doc["severity_id"], 4);
        assert_eq!(doc["connection_info"]["direction_id"], 1);
        assert_eq!(doc["connection_info"]["protocol_ver_id"], 6);
        assert_eq!(doc["src_endpoint"]["ip"], "2001:db8::7");
        assert_eq!(doc["src_endpoint"]["vlan_uid"], "7");
        assert_eq!(doc["unmapped"]["evidence"], json!(["ttl_mismatch"]));
        assert!(doc["unmapped"].get("ip_id").is_none());
    }

    #[test]
    fn folded_storm_shows_its_count_and_span() {
        let mut report = crate::test_support::sample::refused_report();
        report.aggregate = Some(Aggregate {
            count: 40,
            first: report.ts,
            last: report.ts + Duration::from_secs(2),
        });
        let doc = render(&report);
        assert_eq!(doc["count"], 40);
        assert_eq!(doc["start_time"], 1_700_000_000_123u64);
        assert_eq!(doc["end_time"], 1_700_000_002_123u64);
    }

    #[test]
    fn related_to_is_the_earlier_reports_time() {
        let earlier = crate::test_support::sample::middlebox_report();
        let later = render(&crate::test_support::sample::related_report());
        assert_eq!(
            later["unmapped"]["related_to"],
            crate::output::fields::rfc3339(earlier.ts)
        );
        assert!(render(&earlier)["unmapped"].get("related_to").is_none());
    }
}
