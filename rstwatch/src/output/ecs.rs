//! Elastic Common Schema: one JSON document per reset.
//!
//! Mapping choices (ECS field reference, version in `ECS_VERSION`):
//! - `source`/`destination` are the RST packet's own addresses ("the sender of a network
//!   packet"); `client`/`server` are the connection's originator and responder.
//! - `network.direction` is the RST packet's direction as seen by this host (`ingress` or
//!   `egress`, the values ECS prescribes for host-based monitoring), which keeps it coherent with
//!   `source`/`destination`; the interface is in `observer.ingress|egress.interface.name`.
//! - `event.kind` is `alert` when a middlebox is suspected, `event` otherwise; `event.type` is
//!   `connection` + `denied` for a refused connection and `connection` + `end` for every other
//!   reset (both are allowed for the `network` category).
//! - `event.severity` uses the same numbers as OCSF `severity_id`: 1 benign, 2 notice, 4 alert.
//! - Everything ECS has no field for is under `rstwatch.*`; `rstwatch.count` is always present
//!   (1 unless a storm was folded), and `event.start`/`event.end` plus `rstwatch.aggregate` give
//!   the span of a folded storm.

use std::net::SocketAddr;

use super::{fields, json_writer::JsonObject, Format};
use crate::report::{Aggregate, ResetClass, ResetReport, Severity};

/// The ECS release whose field reference this mapping follows.
pub const ECS_VERSION: &str = "8.11.0";

/// Renders reports as ECS documents.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ecs;

impl Format for Ecs {
    /// Keys are written in sorted order at every level, as a document of sorted maps would
    /// have them.
    fn render(&self, r: &ResetReport, out: &mut Vec<u8>) {
        let mut doc = JsonObject::new(out);
        doc.time("@timestamp", r.ts).object("client", |client| {
            endpoint_counts(client, r.orig, r.orig_pkts, r.orig_bytes)
        });
        let owner = r.local.as_ref().and_then(|local| local.owner());
        if let Some(id) = owner.and_then(|o| o.container_id.as_deref()) {
            doc.object("container", |container| {
                container.str("id", id);
            });
        }
        doc.object("destination", |destination| endpoint(destination, r.dst))
            .object("ecs", |ecs| {
                ecs.name("version", ECS_VERSION);
            })
            .object("event", |event| event_fields(event, r))
            .plain_str("message", |out| r.write_explanation(out))
            .object("network", |network| {
                network
                    .str("community_id", &r.community_id)
                    .name("direction", r.direction.as_str())
                    .name("iana_number", "6")
                    .name("transport", "tcp")
                    .name("type", if r.src.is_ipv4() { "ipv4" } else { "ipv6" });
                if r.vlan != 0 {
                    network.object("vlan", |vlan| {
                        vlan.plain_str("id", |out| fields::write_uint(out, r.vlan.into()));
                    });
                }
            })
            .object("observer", |observer| {
                observer
                    .object(r.direction.as_str(), |side| {
                        side.object("interface", |interface| {
                            interface.str("name", &r.iface);
                        });
                    })
                    .name("product", "rstwatch")
                    .name("type", "sensor")
                    .name("vendor", "rstwatch")
                    .name("version", env!("CARGO_PKG_VERSION"));
            });
        if let Some((pid, name)) = owner.and_then(|o| o.pid.zip(o.comm.as_deref())) {
            doc.object("process", |process| {
                process.str("name", name).uint("pid", pid.into());
            });
        }
        doc.object("rstwatch", |details| details_fields(details, r))
            .object("server", |server| {
                endpoint_counts(server, r.resp, r.resp_pkts, r.resp_bytes)
            })
            .object("source", |source| endpoint(source, r.src));
        doc.end();
    }
}

fn endpoint(object: &mut JsonObject<'_>, address: SocketAddr) {
    object
        .ip("ip", address.ip())
        .uint("port", address.port().into());
}

fn endpoint_counts(object: &mut JsonObject<'_>, address: SocketAddr, packets: u64, bytes: u64) {
    object
        .uint("bytes", bytes)
        .ip("ip", address.ip())
        .uint("packets", packets)
        .uint("port", address.port().into());
}

fn event_fields(event: &mut JsonObject<'_>, r: &ResetReport) {
    let kind = if r.middlebox { "alert" } else { "event" };
    let outcome_type = match r.class {
        ResetClass::Refused => "denied",
        _ => "end",
    };
    event
        .name("action", r.class.as_str())
        .names("category", ["network"])
        .name("dataset", "rstwatch.reset");
    if let Some(Aggregate { last, .. }) = r.aggregate {
        event.time("end", last);
    }
    event
        .name("kind", kind)
        .name("module", "rstwatch")
        .plain_str("reason", |out| r.write_explanation(out))
        .uint("severity", severity_number(r.severity()).into());
    if let Some(Aggregate { first, .. }) = r.aggregate {
        event.time("start", first);
    }
    event.names("type", ["connection", outcome_type]);
}

fn details_fields(details: &mut JsonObject<'_>, r: &ResetReport) {
    details.uint("ack", r.ack.into());
    if let Some(Aggregate { count, first, last }) = r.aggregate {
        details.object("aggregate", |aggregate| {
            aggregate
                .uint("count", count)
                .time("first", first)
                .time("last", last);
        });
    }
    details
        .name("class", r.class.as_str())
        .name("conn_state", r.conn_state.as_str())
        .uint("count", r.count())
        .bool("df", r.df)
        .name("direction", r.direction.as_str())
        .names("evidence", r.evidence.iter().map(|e| e.as_str()));
    if let Some(ttl) = r.expected_ttl {
        details.uint("expected_ttl", ttl.into());
    }
    details
        .names("flags", tcp_flag_names(r.flags))
        .uint("followups", r.followups.into())
        .str("history", &r.history);
    if let Some(idle_ms) = r.idle_ms {
        details.uint("idle_ms", idle_ms);
    }
    if let Some(ip_id) = r.ip_id {
        details.uint("ip_id", ip_id.into());
    }
    if let Some(local) = &r.local {
        details.value("local", &local.to_json());
    }
    details
        .bool("middlebox", r.middlebox)
        .object("orig", |orig| endpoint(orig, r.orig))
        .bool("originator_inferred", r.originator_inferred)
        .uint("payload_len", r.payload_len.into());
    if let Some(earlier) = r.related_to {
        details.time("related_to", earlier);
    }
    details.object("resp", |resp| endpoint(resp, r.resp));
    if let Some(rtt_us) = r.rtt_us {
        details.uint("rtt_us", rtt_us);
    }
    details
        .name("sender", r.sender.as_str())
        .uint("seq", r.seq.into())
        .name("severity", r.severity().as_str())
        .uint("ttl", r.ttl.into())
        .uint("window", r.window.into())
        .plain_str("wireshark_filter", |out| r.wireshark_filter.write(out));
}

/// The flag names of a TCP header, lowest bit first, as Wireshark spells them.
fn tcp_flag_names(flags: u8) -> impl Iterator<Item = &'static str> {
    const NAMES: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
    NAMES
        .into_iter()
        .enumerate()
        .filter(move |(bit, _)| flags & (1 << bit) != 0)
        .map(|(_, name)| name)
}

fn severity_number(severity: Severity) -> u8 {
    match severity {
        Severity::Benign => 1,
        Severity::Notice => 2,
        Severity::Alert => 4,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{json, Value};

    use super::*;
    use crate::report::{Direction, Evidence};

    fn render(report: &ResetReport) -> Value {
        let mut out = Vec::new();
        Ecs.render(report, &mut out);
        assert!(
            !out.ends_with(b"\n"),
            "a record carries no trailing newline"
        );
        serde_json::from_slice(&out).expect("ECS output is one JSON document")
    }

    #[test]
    fn refused_connection_is_a_denied_network_event() {
        let doc = render(&crate::test_support::sample::refused_report());
        assert_eq!(doc["@timestamp"], "2023-11-14T22:13:20.123000Z");
        assert_eq!(doc["ecs"]["version"], ECS_VERSION);
        assert_eq!(doc["event"]["kind"], "event");
        assert_eq!(doc["event"]["category"], json!(["network"]));
        assert_eq!(doc["event"]["type"], json!(["connection", "denied"]));
        assert_eq!(doc["event"]["action"], "refused");
        assert_eq!(doc["event"]["severity"], 2);
        assert_eq!(doc["source"], json!({ "ip": "192.0.2.80", "port": 4333 }));
        assert_eq!(doc["destination"]["ip"], "198.51.100.7");
        assert_eq!(doc["client"]["port"], 51000);
        assert_eq!(doc["server"]["ip"], "192.0.2.80");
        assert_eq!(doc["network"]["transport"], "tcp");
        assert_eq!(doc["network"]["iana_number"], "6");
        assert_eq!(doc["network"]["direction"], "ingress");
        assert_eq!(
            doc["network"]["community_id"],
            "1:hO+sN4H+MG5MY/8hIrXPqc4ZQz0="
        );
        assert!(doc["network"].get("vlan").is_none(), "untagged: no VLAN");
        assert_eq!(doc["observer"]["ingress"]["interface"]["name"], "eth0");
        assert!(doc["observer"].get("egress").is_none());
        assert_eq!(doc["rstwatch"]["flags"], json!(["RST", "ACK"]));
        assert_eq!(doc["rstwatch"]["conn_state"], "REJ");
        assert_eq!(doc["rstwatch"]["history"], "Sr");
        assert_eq!(doc["rstwatch"]["count"], 1);
        assert_eq!(doc["rstwatch"]["ip_id"], 0);
        assert!(doc["rstwatch"].get("expected_ttl").is_none());
        assert!(doc["rstwatch"].get("aggregate").is_none());
    }

    #[test]
    fn injected_reset_mid_stream_is_an_alert_with_its_evidence() {
        let mut report = crate::test_support::sample::refused_report();
        report.class = ResetClass::Abort;
        report.direction = Direction::Egress;
        report.middlebox = true;
        report.evidence = [Evidence::TtlMismatch, Evidence::IpIdAnomaly].into();
        report.expected_ttl = Some(52);
        report.vlan = 42;
        report.idle_ms = Some(1500);
        report.rtt_us = Some(830);
        let doc = render(&report);
        assert_eq!(doc["event"]["kind"], "alert");
        assert_eq!(doc["event"]["type"], json!(["connection", "end"]));
        assert_eq!(doc["event"]["severity"], 4);
        assert_eq!(doc["network"]["direction"], "egress");
        assert_eq!(doc["network"]["vlan"]["id"], "42");
        assert_eq!(doc["observer"]["egress"]["interface"]["name"], "eth0");
        assert_eq!(
            doc["rstwatch"]["evidence"],
            json!(["ttl_mismatch", "ip_id_anomaly"])
        );
        assert_eq!(doc["rstwatch"]["expected_ttl"], 52);
        assert_eq!(doc["rstwatch"]["idle_ms"], 1500);
        assert_eq!(doc["rstwatch"]["rtt_us"], 830);
        assert!(doc["event"]["reason"]
            .as_str()
            .unwrap()
            .contains("middlebox (ttl_mismatch, ip_id_anomaly)"));
    }

    #[test]
    fn folded_storm_shows_its_count_and_span() {
        let mut report = crate::test_support::sample::refused_report();
        let first = report.ts;
        let last = first + Duration::from_millis(900);
        report.aggregate = Some(Aggregate {
            count: 250,
            first,
            last,
        });
        let doc = render(&report);
        assert_eq!(doc["rstwatch"]["count"], 250);
        assert_eq!(doc["rstwatch"]["aggregate"]["count"], 250);
        assert_eq!(doc["event"]["start"], "2023-11-14T22:13:20.123000Z");
        assert_eq!(doc["event"]["end"], "2023-11-14T22:13:21.023000Z");
    }

    #[test]
    fn text_fields_survive_json_escaping() {
        let mut report = crate::test_support::sample::refused_report();
        report.iface = "eth\"0\n\\é".into();
        let doc = render(&report);
        assert_eq!(
            doc["observer"]["ingress"]["interface"]["name"],
            "eth\"0\n\\é"
        );
    }

    #[test]
    fn related_to_is_the_earlier_reports_timestamp() {
        let earlier = render(&crate::test_support::sample::middlebox_report());
        let later = render(&crate::test_support::sample::related_report());
        assert_eq!(later["rstwatch"]["related_to"], earlier["@timestamp"]);
        assert!(earlier["rstwatch"].get("related_to").is_none());
    }
}
