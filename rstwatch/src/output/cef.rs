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

use super::{fields, Format};
use crate::report::{unix_millis, write_joined, Aggregate, Direction, ResetReport, Severity};

/// Renders reports as CEF records.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cef;

impl Format for Cef {
    fn render(&self, r: &ResetReport, out: &mut Vec<u8>) {
        out.extend_from_slice(b"CEF:0");
        for field in [
            "rstwatch",
            "rstwatch",
            env!("CARGO_PKG_VERSION"),
            r.class.as_str(),
            r.class.describe(),
        ] {
            out.push(b'|');
            push_header(out, field);
        }
        out.push(b'|');
        fields::write_uint(out, severity(r.severity()).into());
        out.push(b'|');

        let mut ext = Extensions { out, empty: true };
        ext.uint("rt", unix_millis(r.ts));
        ext.uint("cnt", r.count());
        if let Some(Aggregate { first, last, .. }) = r.aggregate {
            ext.uint("start", unix_millis(first));
            ext.uint("end", unix_millis(last));
        }
        ext.address(r.src, "src", "spt", "c6a2", "Source IPv6 Address");
        ext.address(r.dst, "dst", "dpt", "c6a3", "Destination IPv6 Address");
        ext.plain("proto", b"TCP");
        match r.direction {
            Direction::Ingress => {
                ext.uint("deviceDirection", 0);
                ext.str("deviceInboundInterface", &r.iface);
            }
            Direction::Egress => {
                ext.uint("deviceDirection", 1);
                ext.str("deviceOutboundInterface", &r.iface);
            }
        }
        ext.plain("act", r.class.as_str().as_bytes());
        ext.written("reason", |out| r.write_explanation(out));
        ext.labelled_plain("cs1", "rstSender", |out| {
            out.extend_from_slice(r.sender.as_str().as_bytes())
        });
        if !r.evidence.is_empty() {
            ext.labelled_plain("cs2", "evidence", |out| write_joined(out, r.evidence, b","));
        }
        ext.labelled_plain("cs3", "connState", |out| {
            out.extend_from_slice(r.conn_state.as_str().as_bytes())
        });
        ext.labelled("cs4", "history", |out| {
            out.extend_from_slice(r.history.as_bytes())
        });
        ext.labelled_plain("cs5", "wiresharkFilter", |out| {
            r.wireshark_filter.write_with(out, b"\\=\\=")
        });
        ext.labelled("cs6", "communityId", |out| {
            out.extend_from_slice(r.community_id.as_bytes())
        });
        ext.labelled_plain("cn1", "ttl", |out| fields::write_uint(out, r.ttl.into()));
        if let Some(ttl) = r.expected_ttl {
            ext.labelled_plain("cn2", "expectedTtl", |out| {
                fields::write_uint(out, ttl.into())
            });
        }
        if let Some(idle_ms) = r.idle_ms {
            ext.labelled_plain("cn3", "idleMs", |out| fields::write_uint(out, idle_ms));
        }
        if let Some(rtt_us) = r.rtt_us {
            ext.labelled_plain("flexNumber1", "rttUs", |out| {
                fields::write_uint(out, rtt_us)
            });
        }
        ext.labelled_plain("flexString1", "middlebox", |out| {
            out.extend_from_slice(if r.middlebox { b"true" } else { b"false" })
        });
        ext.labelled_plain("flexString2", "originator", |out| {
            fields::write_socket(out, r.orig)
        });
        if let Some(earlier) = r.related_to {
            ext.labelled_plain("deviceCustomDate1", "relatedTo", |out| {
                fields::write_uint(out, unix_millis(earlier))
            });
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
                ext.uint(pid_key, pid.into());
                ext.str(name_key, name);
            }
            ext.str("msg", &local.describe());
        }
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
fn push_header(out: &mut Vec<u8>, field: &str) {
    for &byte in field.as_bytes() {
        match byte {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'|' => out.extend_from_slice(b"\\|"),
            b'\r' | b'\n' => out.push(b' '),
            _ => out.push(byte),
        }
    }
}

/// The escape of a byte in an extension value: the letter after its backslash, 0 for none.
/// Every byte escaped is ASCII, so a UTF-8 value is escaped byte by byte.
const fn value_escape(byte: u8) -> u8 {
    match byte {
        b'\\' => b'\\',
        b'=' => b'=',
        b'\n' => b'n',
        b'\r' => b'r',
        _ => 0,
    }
}

/// Escapes the extension value that starts at `start` in `out`, in place.
fn escape_value_from(out: &mut Vec<u8>, start: usize) {
    let escapes = out[start..]
        .iter()
        .filter(|&&byte| value_escape(byte) != 0)
        .count();
    if escapes == 0 {
        return;
    }
    let old_len = out.len();
    out.resize(old_len + escapes, 0);
    let mut to = out.len();
    for from in (start..old_len).rev() {
        let byte = out[from];
        match value_escape(byte) {
            0 => {
                to -= 1;
                out[to] = byte;
            }
            letter => {
                to -= 2;
                out[to] = b'\\';
                out[to + 1] = letter;
            }
        }
    }
}

/// The space-separated `key=value` list that follows the header.
struct Extensions<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl Extensions<'_> {
    fn key(&mut self, key: &str) {
        if !self.empty {
            self.out.push(b' ');
        }
        self.empty = false;
        self.out.extend_from_slice(key.as_bytes());
        self.out.push(b'=');
    }

    /// A value `write` appends, escaped.
    fn written(&mut self, key: &str, write: impl FnOnce(&mut Vec<u8>)) {
        self.key(key);
        let start = self.out.len();
        write(self.out);
        escape_value_from(self.out, start);
    }

    fn str(&mut self, key: &str, value: &str) {
        self.written(key, |out| out.extend_from_slice(value.as_bytes()));
    }

    /// A value that needs no escaping.
    fn plain(&mut self, key: &str, value: &[u8]) {
        self.key(key);
        self.out.extend_from_slice(value);
    }

    /// Digits need no escaping.
    fn uint(&mut self, key: &str, value: u64) {
        self.key(key);
        fields::write_uint(self.out, value);
    }

    /// A custom field and the label that tells the receiver what it holds.
    fn labelled(&mut self, key: &str, label: &str, write: impl FnOnce(&mut Vec<u8>)) {
        self.written(key, write);
        self.label(key, label);
    }

    /// `labelled`, for a value `write` appends that needs no escaping or comes escaped.
    fn labelled_plain(&mut self, key: &str, label: &str, write: impl FnOnce(&mut Vec<u8>)) {
        self.key(key);
        write(self.out);
        self.label(key, label);
    }

    /// Labels are names of our own: nothing in them needs escaping.
    fn label(&mut self, key: &str, label: &str) {
        self.out.push(b' ');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"Label=");
        self.out.extend_from_slice(label.as_bytes());
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
            SocketAddr::V4(_) => {
                self.key(v4_key);
                fields::write_ip(self.out, address.ip());
            }
            SocketAddr::V6(_) => {
                self.labelled_plain(v6_key, v6_label, |out| fields::write_ip(out, address.ip()))
            }
        }
        self.uint(port_key, address.port().into());
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
            report.iface = text.into();
            report.history = text.try_into().unwrap();
            report.community_id = text.try_into().unwrap();
            let record = render(&report);
            let (header, ext) = parse(&record);
            assert_eq!(header.len(), 7, "{text:?}");
            assert_eq!(ext["deviceInboundInterface"], text, "{record}");
            assert_eq!(ext["cs5"], report.wireshark_filter.to_string(), "{record}");
            assert_eq!(ext["cs4"], text, "{record}");
            assert_eq!(ext["cs6"], text, "{record}");
            assert_eq!(ext["cs1"], "responder", "forged key won: {record}");
            assert_eq!(ext["flexString2"], "198.51.100.7:51000", "{record}");
        }
    }

    #[test]
    fn header_escapes_backslash_and_pipe_and_flattens_line_breaks() {
        let mut header = Vec::new();
        push_header(&mut header, "a|b\\c\nd=e");
        assert_eq!(header, b"a\\|b\\\\c d=e");
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
        report.evidence = [Evidence::TtlMismatch, Evidence::FastRst].into();
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
