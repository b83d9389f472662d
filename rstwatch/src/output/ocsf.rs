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

use serde_json::{json, Value};

use super::{fields, Format};
use crate::report::{unix_millis, Aggregate, ResetClass, ResetReport, Severity};

/// The OCSF schema release this mapping follows.
pub const OCSF_VERSION: &str = "1.3.0";

const CLASS_UID: u32 = 4001;
const CATEGORY_UID: u32 = 4;
const OBSERVABLE_IP_ADDRESS: u8 = 2;

/// Renders reports as OCSF Network Activity events.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ocsf;

impl Format for Ocsf {
    fn render(&self, report: &ResetReport, out: &mut Vec<u8>) {
        serde_json::to_writer(out, &event(report))
            .expect("writing a JSON value into memory cannot fail");
    }
}

/// The Network Activity `activity_id` of a class, with its caption.
fn activity(class: ResetClass) -> (u32, &'static str) {
    match class {
        ResetClass::Refused => (5, "Refuse"),
        ResetClass::Teardown => (2, "Close"),
        ResetClass::DataAfterClose
        | ResetClass::IdleTimeout
        | ResetClass::Abort
        | ResetClass::NoState => (3, "Reset"),
    }
}

fn severity(severity: Severity) -> (u8, &'static str) {
    match severity {
        Severity::Benign => (1, "Informational"),
        Severity::Notice => (2, "Low"),
        Severity::Alert => (4, "High"),
    }
}

fn event(r: &ResetReport) -> Value {
    let (activity_id, activity_name) = activity(r.class);
    let (severity_id, severity_name) = severity(r.severity());
    let (status_id, status) = match r.class {
        ResetClass::Teardown => (1, "Success"),
        _ => (2, "Failure"),
    };
    let mut event = json!({
        "class_uid": CLASS_UID,
        "class_name": "Network Activity",
        "category_uid": CATEGORY_UID,
        "category_name": "Network Activity",
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": CLASS_UID * 100 + activity_id,
        "type_name": format!("Network Activity: {activity_name}"),
        "time": unix_millis(r.ts),
        "severity_id": severity_id,
        "severity": severity_name,
        "status_id": status_id,
        "status": status,
        "status_detail": r.class.describe(),
        "message": r.explanation(),
        "count": r.count(),
        "metadata": {
            "version": OCSF_VERSION,
            "event_code": r.class.as_str(),
            "product": {
                "name": "rstwatch",
                "vendor_name": "rstwatch",
                "version": env!("CARGO_PKG_VERSION"),
            },
        },
        "src_endpoint": endpoint(r.orig, r.vlan),
        "dst_endpoint": endpoint(r.resp, r.vlan),
        "connection_info": connection_info(r),
        "traffic": {
            "packets_out": r.orig_pkts,
            "packets_in": r.resp_pkts,
            "packets": r.orig_pkts + r.resp_pkts,
            "bytes_out": r.orig_bytes,
            "bytes_in": r.resp_bytes,
            "bytes": r.orig_bytes + r.resp_bytes,
        },
        "observables": [
            {
                "name": "src_endpoint.ip",
                "type_id": OBSERVABLE_IP_ADDRESS,
                "type": "IP Address",
                "value": r.orig.ip().to_string(),
            },
            {
                "name": "dst_endpoint.ip",
                "type_id": OBSERVABLE_IP_ADDRESS,
                "type": "IP Address",
                "value": r.resp.ip().to_string(),
            },
        ],
        "unmapped": unmapped(r),
    });
    if let Some(Aggregate { first, last, .. }) = r.aggregate {
        event["start_time"] = unix_millis(first).into();
        event["end_time"] = unix_millis(last).into();
    }
    if let Some(local) = &r.local {
        let owner = local.owner();
        if let Some((pid, name)) = owner.and_then(|o| o.pid.zip(o.comm.as_ref())) {
            event["actor"] = json!({ "process": { "pid": pid, "name": name } });
        }
        event["unmapped"]["local"] = local.to_json();
    }
    event
}

fn endpoint(address: std::net::SocketAddr, vlan: u16) -> Value {
    let mut endpoint = json!({ "ip": address.ip().to_string(), "port": address.port() });
    if vlan != 0 {
        endpoint["vlan_uid"] = vlan.to_string().into();
    }
    endpoint
}

fn connection_info(r: &ResetReport) -> Value {
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
    json!({
        "direction_id": direction_id,
        "direction": direction,
        "protocol_num": 6,
        "protocol_name": "tcp",
        "protocol_ver_id": protocol_ver_id,
        "protocol_ver": protocol_ver,
        "tcp_flags": r.flags,
        "community_uid": r.community_id,
        "flag_history": r.history,
    })
}

fn unmapped(r: &ResetReport) -> Value {
    let evidence: Vec<&str> = r.evidence.iter().map(|e| e.as_str()).collect();
    let mut unmapped = json!({
        "class": r.class.as_str(),
        "sender": r.sender.as_str(),
        "middlebox": r.middlebox,
        "evidence": evidence,
        "iface": r.iface,
        "direction": r.direction.as_str(),
        "rst_src": { "ip": r.src.ip().to_string(), "port": r.src.port() },
        "rst_dst": { "ip": r.dst.ip().to_string(), "port": r.dst.port() },
        "originator_inferred": r.originator_inferred,
        "ttl": r.ttl,
        "df": r.df,
        "seq": r.seq,
        "ack": r.ack,
        "window": r.window,
        "payload_len": r.payload_len,
        "conn_state": r.conn_state.as_str(),
        "history": r.history,
        "wireshark_filter": r.wireshark_filter,
        "followups": r.followups,
    });
    if let Some(ttl) = r.expected_ttl {
        unmapped["expected_ttl"] = ttl.into();
    }
    if let Some(earlier) = r.related_to {
        unmapped["related_to"] = fields::rfc3339(earlier).into();
    }
    if let Some(ip_id) = r.ip_id {
        unmapped["ip_id"] = ip_id.into();
    }
    if let Some(idle_ms) = r.idle_ms {
        unmapped["idle_ms"] = idle_ms.into();
    }
    if let Some(rtt_us) = r.rtt_us {
        unmapped["rtt_us"] = rtt_us.into();
    }
    unmapped
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::report::{Direction, Evidence, Sender};

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
        report.evidence = vec![Evidence::TtlMismatch];
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
