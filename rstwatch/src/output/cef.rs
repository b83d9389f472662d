//! ArcSight Common Event Format:
//! `CEF:0|rstwatch|rstwatch|VERSION|class|class in words|severity|extensions`.
//!
//! Escaping follows the CEF specification: in header fields `\` and `|` are escaped with a
//! backslash; in extension values `\` and `=` are, and line breaks are written as `\n` / `\r`
//! (a receiver must never see a raw line break: it would split the record). Pipes need no
//! escaping in extensions. Keys are fixed names from the CEF dictionary, so they never need it.
//!
//! Extension keys used:
//! - `rt` event time, `cnt` how many resets the record stands for (1 unless a storm was folded),
//!   `start`/`end` the span of a folded storm (all times in ms since the epoch);
//! - `src`/`spt`/`dst`/`dpt`: the RST packet's addresses (IPv4); for IPv6 the addresses go in
//!   `c6a2` ("Source IPv6 Address") and `c6a3` ("Destination IPv6 Address") with their labels,
//!   as the dictionary defines `src`/`dst` as IPv4 only;
//! - `proto=TCP`, `deviceDirection` (0 inbound, 1 outbound: the RST packet's direction),
//!   `deviceInboundInterface` or `deviceOutboundInterface` (the watched interface);
//! - `act` the class name, `reason` the explanation in words;
//! - labelled custom fields, left out when there is nothing to say: `cs1` rstSender, `cs2`
//!   evidence (comma-separated), `cs3` connState, `cs4` history, `cs5` wiresharkFilter, `cs6`
//!   communityId, `cn1` ttl, `cn2` expectedTtl, `cn3` idleMs, `flexNumber1` rttUs,
//!   `flexString1` middlebox (`true`/`false`), `flexString2` originator (`ip:port` of the
//!   connection's initiator), `deviceCustomDate1` relatedTo (the `rt` of the connection's first
//!   report, when this RST follows it).
//!
//! Severity (0-10): benign 1, notice 3 (both "Low"), alert 7 ("High").

use std::net::SocketAddr;

use super::Format;
use crate::report::{unix_millis, Aggregate, Direction, ResetReport, Severity};

/// Renders reports as CEF records.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cef;

impl Format for Cef {
    fn render(&self, r: &ResetReport, out: &mut Vec<u8>) {
        let mut record = String::with_capacity(768);
        record.push_str("CEF:0");
        for field in [
            "rstwatch",
            "rstwatch",
            env!("CARGO_PKG_VERSION"),
            r.class.as_str(),
            r.class.describe(),
        ] {
            record.push('|');
            push_header(&mut record, field);
        }
        record.push('|');
        record.push_str(&severity(r.severity()).to_string());
        record.push('|');

        let mut ext = Extensions {
            record: &mut record,
            empty: true,
        };
        ext.put("rt", unix_millis(r.ts));
        ext.put("cnt", r.count());
        if let Some(Aggregate { first, last, .. }) = r.aggregate {
            ext.put("start", unix_millis(first));
            ext.put("end", unix_millis(last));
        }
        ext.address(r.src, "src", "spt", "c6a2", "Source IPv6 Address");
        ext.address(r.dst, "dst", "dpt", "c6a3", "Destination IPv6 Address");
        ext.put("proto", "TCP");
        match r.direction {
            Direction::Ingress => {
                ext.put("deviceDirection", 0);
                ext.put("deviceInboundInterface", &r.iface);
            }
            Direction::Egress => {
                ext.put("deviceDirection", 1);
                ext.put("deviceOutboundInterface", &r.iface);
            }
        }
        ext.put("act", r.class.as_str());
        ext.put("reason", r.explanation());
        ext.labelled("cs1", "rstSender", r.sender.as_str());
        if !r.evidence.is_empty() {
            let evidence: Vec<&str> = r.evidence.iter().map(|e| e.as_str()).collect();
            ext.labelled("cs2", "evidence", evidence.join(","));
        }
        ext.labelled("cs3", "connState", r.conn_state.as_str());
        ext.labelled("cs4", "history", &r.history);
        ext.labelled("cs5", "wiresharkFilter", &r.wireshark_filter);
        ext.labelled("cs6", "communityId", &r.community_id);
        ext.labelled("cn1", "ttl", r.ttl);
        if let Some(ttl) = r.expected_ttl {
            ext.labelled("cn2", "expectedTtl", ttl);
        }
        if let Some(idle_ms) = r.idle_ms {
            ext.labelled("cn3", "idleMs", idle_ms);
        }
        if let Some(rtt_us) = r.rtt_us {
            ext.labelled("flexNumber1", "rttUs", rtt_us);
        }
        ext.labelled("flexString1", "middlebox", r.middlebox);
        ext.labelled("flexString2", "originator", r.orig);
        if let Some(earlier) = r.related_to {
            ext.labelled("deviceCustomDate1", "relatedTo", unix_millis(earlier));
        }
        if let Some(local) = &r.local {
            // The socket's process is on this host's end: the source of a RST it sent, the
            // destination of one it took.
            let owner = local.owner();
            if let Some((pid, name)) = owner.and_then(|o| o.pid.zip(o.comm.as_ref())) {
                let (pid_key, name_key) = match r.direction {
                    Direction::Egress => ("spid", "sproc"),
                    Direction::Ingress => ("dpid", "dproc"),
                };
                ext.put(pid_key, pid);
                ext.put(name_key, name);
            }
            ext.put("msg", local.describe());
        }
        out.extend_from_slice(record.as_bytes());
    }
}

fn severity(severity: Severity) -> u8 {
    match severity {
        Severity::Benign => 1,
        Severity::Notice => 3,
        Severity::Alert => 7,
    }
}

/// Appends a header field. Line breaks have no escape in the header, and a record must stay on
/// one line, so they become spaces.
fn push_header(out: &mut String, field: &str) {
    for c in field.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            _ => out.push(c),
        }
    }
}

fn push_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            _ => out.push(c),
        }
    }
}

/// The space-separated `key=value` list that follows the header.
struct Extensions<'a> {
    record: &'a mut String,
    empty: bool,
}

impl Extensions<'_> {
    fn put(&mut self, key: &str, value: impl ToString) {
        if !self.empty {
            self.record.push(' ');
        }
        self.empty = false;
        self.record.push_str(key);
        self.record.push('=');
        push_value(self.record, &value.to_string());
    }

    /// A custom field and the label that tells the receiver what it holds.
    fn labelled(&mut self, key: &str, label: &str, value: impl ToString) {
        self.put(key, value);
        self.put(&format!("{key}Label"), label);
    }

    fn address(
        &mut self,
        address: SocketAddr,
        v4_key: &str,
        port_key: &str,
        v6_key: &str,
        v6_label: &str,
    ) {
        match address {
            SocketAddr::V4(v4) => self.put(v4_key, v4.ip()),
            SocketAddr::V6(v6) => self.labelled(v6_key, v6_label, v6.ip()),
        }
        self.put(port_key, address.port());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::report::{Evidence, ResetClass};
    use crate::test_support::cef;

    /// The header fields and extensions of `record`, read strictly.
    fn parse(record: &str) -> (Vec<String>, BTreeMap<String, String>) {
        let parsed = cef::parse(record).unwrap_or_else(|error| panic!("{error}: {record}"));
        (parsed.header, parsed.extensions)
    }

    fn render(report: &ResetReport) -> String {
        let mut out = Vec::new();
        Cef.render(report, &mut out);
        String::from_utf8(out).expect("CEF output is UTF-8")
    }

    #[test]
    fn refused_connection_record() {
        let record = render(&crate::test_support::sample::refused_report());
        assert!(!record.contains('\n'));
        let (header, ext) = parse(&record);
        assert_eq!(
            header,
            [
                "CEF:0",
                "rstwatch",
                "rstwatch",
                env!("CARGO_PKG_VERSION"),
                "refused",
                "connection refused: port closed or service down",
                "3"
            ]
        );
        assert_eq!(ext["rt"], "1700000000123");
        assert_eq!(ext["cnt"], "1");
        assert_eq!(ext["src"], "192.0.2.80");
        assert_eq!(ext["spt"], "4333");
        assert_eq!(ext["dst"], "198.51.100.7");
        assert_eq!(ext["dpt"], "51000");
        assert_eq!(ext["proto"], "TCP");
        assert_eq!(ext["deviceDirection"], "0");
        assert_eq!(ext["deviceInboundInterface"], "eth0");
        assert_eq!(ext["act"], "refused");
        assert_eq!(ext["cs1Label"], "rstSender");
        assert_eq!(ext["cs1"], "responder");
        assert_eq!(ext["cs3"], "REJ");
        assert_eq!(ext["cs4"], "Sr");
        assert_eq!(ext["cs6"], "1:hO+sN4H+MG5MY/8hIrXPqc4ZQz0=");
        assert_eq!(ext["flexString1"], "false");
        assert_eq!(ext["flexString2"], "198.51.100.7:51000");
        assert!(!ext.contains_key("cn2"), "no expected TTL known");
        assert!(!ext.contains_key("cs2"), "no evidence, no empty field");
        assert!(!ext.contains_key("start"));
    }

    #[test]
    fn hostile_text_in_every_field_parses_back_unambiguously() {
        let hostile = [
            "a|b",
            "key=value",
            " cs1=forged ",
            "back\\slash\\",
            "line\nbreak\r\n",
            "pipe\\|and\\=escapes",
            "ünïcødé — 日本",
            "=",
            "\\",
            "trailing ",
            "ends with a pipe|",
        ];
        for text in hostile {
            let mut report = crate::test_support::sample::refused_report();
            report.iface = text.to_owned();
            report.wireshark_filter = format!("tcp.port == 1 && frame contains \"{text}\"");
            report.history = text.to_owned();
            report.community_id = text.to_owned();
            let record = render(&report);
            let (header, ext) = parse(&record);
            assert_eq!(header.len(), 7, "{text:?}");
            assert_eq!(ext["deviceInboundInterface"], text, "{record}");
            assert_eq!(ext["cs5"], report.wireshark_filter, "{record}");
            assert_eq!(ext["cs4"], text, "{record}");
            assert_eq!(ext["cs6"], text, "{record}");
            assert_eq!(ext["cs1"], "responder", "forged key won: {record}");
            assert_eq!(ext["flexString2"], "198.51.100.7:51000", "{record}");
        }
    }

    #[test]
    fn header_escapes_backslash_and_pipe_and_flattens_line_breaks() {
        let mut header = String::new();
        push_header(&mut header, "a|b\\c\nd=e");
        assert_eq!(header, "a\\|b\\\\c d=e");
    }

    #[test]
    fn ipv6_addresses_use_the_labelled_ipv6_fields() {
        let mut report = crate::test_support::sample::refused_report();
        report.src = "[2001:db8::80]:443".parse().unwrap();
        report.dst = "[2001:db8::7]:51000".parse().unwrap();
        let (_, ext) = parse(&render(&report));
        assert!(!ext.contains_key("src"));
        assert_eq!(ext["c6a2"], "2001:db8::80");
        assert_eq!(ext["c6a2Label"], "Source IPv6 Address");
        assert_eq!(ext["spt"], "443");
        assert_eq!(ext["c6a3"], "2001:db8::7");
        assert_eq!(ext["c6a3Label"], "Destination IPv6 Address");
    }

    #[test]
    fn middlebox_alert_with_storm_count() {
        let mut report = crate::test_support::sample::refused_report();
        report.class = ResetClass::IdleTimeout;
        report.direction = Direction::Egress;
        report.middlebox = true;
        report.evidence = vec![Evidence::TtlMismatch, Evidence::FastRst];
        report.expected_ttl = Some(61);
        report.idle_ms = Some(45_000);
        report.rtt_us = Some(1200);
        report.aggregate = Some(Aggregate {
            count: 12,
            first: report.ts,
            last: report.ts + std::time::Duration::from_millis(10),
        });
        let (header, ext) = parse(&render(&report));
        assert_eq!(header[6], "7");
        assert_eq!(ext["cnt"], "12");
        assert_eq!(ext["start"], "1700000000123");
        assert_eq!(ext["end"], "1700000000133");
        assert_eq!(ext["deviceDirection"], "1");
        assert_eq!(ext["deviceOutboundInterface"], "eth0");
        assert_eq!(ext["cs2"], "ttl_mismatch,fast_rst");
        assert_eq!(ext["cn2"], "61");
        assert_eq!(ext["cn3"], "45000");
        assert_eq!(ext["flexNumber1"], "1200");
        assert_eq!(ext["flexString1"], "true");
    }

    #[test]
    fn related_to_is_the_earlier_records_rt() {
        let (_, earlier) = parse(&render(&crate::test_support::sample::middlebox_report()));
        let (_, later) = parse(&render(&crate::test_support::sample::related_report()));
        assert_eq!(later["deviceCustomDate1"], earlier["rt"]);
        assert_eq!(later["deviceCustomDate1Label"], "relatedTo");
        assert!(!earlier.contains_key("deviceCustomDate1"));
    }
}
