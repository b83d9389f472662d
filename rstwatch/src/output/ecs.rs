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

use serde_json::{json, Value};

use super::Format;
use crate::report::{Aggregate, ResetClass, ResetReport, Severity};

/// The ECS release whose field reference this mapping follows.
pub const ECS_VERSION: &str = "8.11.0";

/// Renders reports as ECS documents.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ecs;

impl Format for Ecs {
    fn render(&self, report: &ResetReport, out: &mut Vec<u8>) {
        serde_json::to_writer(out, &document(report))
            .expect("writing a JSON value into memory cannot fail");
    }
}

fn document(r: &ResetReport) -> Value {
    let mut doc = json!({
        "@timestamp": rfc3339(r.ts),
        "ecs": { "version": ECS_VERSION },
        "message": r.explanation(),
        "event": event(r),
        "observer": observer(r),
        "source": { "ip": r.src.ip().to_string(), "port": r.src.port() },
        "destination": { "ip": r.dst.ip().to_string(), "port": r.dst.port() },
        "client": {
            "ip": r.orig.ip().to_string(), "port": r.orig.port(),
            "packets": r.orig_pkts, "bytes": r.orig_bytes,
        },
        "server": {
            "ip": r.resp.ip().to_string(), "port": r.resp.port(),
            "packets": r.resp_pkts, "bytes": r.resp_bytes,
        },
        "network": {
            "transport": "tcp",
            "iana_number": "6",
            "type": if r.src.is_ipv4() { "ipv4" } else { "ipv6" },
            "direction": r.direction.as_str(),
            "community_id": r.community_id,
        },
        "rstwatch": details(r),
    });
    if r.vlan != 0 {
        doc["network"]["vlan"] = json!({ "id": r.vlan.to_string() });
    }
    if let Some(local) = &r.local {
        let owner = local.owner();
        if let Some((pid, name)) = owner.and_then(|o| o.pid.zip(o.comm.as_ref())) {
            doc["process"] = json!({ "pid": pid, "name": name });
        }
        if let Some(id) = owner.and_then(|o| o.container_id.as_ref()) {
            doc["container"] = json!({ "id": id });
        }
        doc["rstwatch"]["local"] = local.to_json();
    }
    doc
}

fn event(r: &ResetReport) -> Value {
    let kind = if r.middlebox { "alert" } else { "event" };
    let outcome_type = match r.class {
        ResetClass::Refused => "denied",
        _ => "end",
    };
    let mut event = json!({
        "kind": kind,
        "category": ["network"],
        "type": ["connection", outcome_type],
        "action": r.class.as_str(),
        "reason": r.explanation(),
        "severity": severity_number(r.severity()),
        "module": "rstwatch",
        "dataset": "rstwatch.reset",
    });
    if let Some(Aggregate { first, last, .. }) = r.aggregate {
        event["start"] = rfc3339(first).into();
        event["end"] = rfc3339(last).into();
    }
    event
}

fn observer(r: &ResetReport) -> Value {
    let mut observer = json!({
        "product": "rstwatch",
        "vendor": "rstwatch",
        "version": env!("CARGO_PKG_VERSION"),
        "type": "sensor",
    });
    observer[r.direction.as_str()] = json!({ "interface": { "name": r.iface } });
    observer
}

fn details(r: &ResetReport) -> Value {
    let evidence: Vec<&str> = r.evidence.iter().map(|e| e.as_str()).collect();
    let mut details = json!({
        "class": r.class.as_str(),
        "severity": r.severity().as_str(),
        "sender": r.sender.as_str(),
        "middlebox": r.middlebox,
        "evidence": evidence,
        "direction": r.direction.as_str(),
        "ttl": r.ttl,
        "df": r.df,
        "seq": r.seq,
        "ack": r.ack,
        "flags": tcp_flag_names(r.flags),
        "window": r.window,
        "payload_len": r.payload_len,
        "conn_state": r.conn_state.as_str(),
        "history": r.history,
        "wireshark_filter": r.wireshark_filter,
        "orig": { "ip": r.orig.ip().to_string(), "port": r.orig.port() },
        "resp": { "ip": r.resp.ip().to_string(), "port": r.resp.port() },
        "originator_inferred": r.originator_inferred,
        "followups": r.followups,
        "count": r.count(),
    });
    if let Some(ttl) = r.expected_ttl {
        details["expected_ttl"] = ttl.into();
    }
    if let Some(earlier) = r.related_to {
        details["related_to"] = rfc3339(earlier).into();
    }
    if let Some(ip_id) = r.ip_id {
        details["ip_id"] = ip_id.into();
    }
    if let Some(idle_ms) = r.idle_ms {
        details["idle_ms"] = idle_ms.into();
    }
    if let Some(rtt_us) = r.rtt_us {
        details["rtt_us"] = rtt_us.into();
    }
    if let Some(Aggregate { count, first, last }) = r.aggregate {
        details["aggregate"] = json!({
            "count": count,
            "first": rfc3339(first),
            "last": rfc3339(last),
        });
    }
    details
}

/// The flag names of a TCP header, lowest bit first, as Wireshark spells them.
fn tcp_flag_names(flags: u8) -> Vec<&'static str> {
    const NAMES: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
    NAMES
        .iter()
        .enumerate()
        .filter(|(bit, _)| flags & (1 << bit) != 0)
        .map(|(_, name)| *name)
        .collect()
}

fn severity_number(severity: Severity) -> u8 {
    match severity {
        Severity::Benign => 1,
        Severity::Notice => 2,
        Severity::Alert => 4,
    }
}

fn rfc3339(time: std::time::SystemTime) -> String {
    humantime::format_rfc3339_micros(time).to_string()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
        report.evidence = vec![Evidence::TtlMismatch, Evidence::IpIdAnomaly];
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
        report.iface = "eth\"0\n\\é".to_owned();
        report.wireshark_filter = "tcp.port == 1 || ip.addr == \"x\"".to_owned();
        let doc = render(&report);
        assert_eq!(
            doc["observer"]["ingress"]["interface"]["name"],
            "eth\"0\n\\é"
        );
        assert_eq!(
            doc["rstwatch"]["wireshark_filter"],
            "tcp.port == 1 || ip.addr == \"x\""
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
