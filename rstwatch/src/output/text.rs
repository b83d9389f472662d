//! Terminal output: one line per reset that a person reads left to right — when and where,
//! how bad, what happened in plain words, who sent it and what gave a middlebox away, the
//! numbers behind it, and the filter to paste into Wireshark.

use std::io::Write as _;

use super::{fields, Format};
use crate::report::{write_joined, ResetReport, Sender, Severity};

/// Renders each report as one line, wrapped in an ANSI colour by severity when `colour` is on
/// (the caller decides: a TTY, and `NO_COLOR` unset).
#[derive(Clone, Copy, Debug)]
pub struct Text {
    colour: bool,
}

impl Text {
    pub const fn new(colour: bool) -> Self {
        Self { colour }
    }
}

impl Format for Text {
    fn render(&self, report: &ResetReport, out: &mut Vec<u8>) {
        if self.colour {
            out.extend_from_slice(colour_of(report.severity()).as_bytes());
            line(report, out);
            out.extend_from_slice(RESET_COLOUR.as_bytes());
        } else {
            line(report, out);
        }
    }
}

const RESET_COLOUR: &str = "\x1b[0m";

/// SGR codes: benign dim green, notice yellow, alert bold red.
const fn colour_of(severity: Severity) -> &'static str {
    match severity {
        Severity::Benign => "\x1b[2;32m",
        Severity::Notice => "\x1b[33m",
        Severity::Alert => "\x1b[1;31m",
    }
}

/// The parts of the line, `; ` between them, appended to `out`.
fn line(r: &ResetReport, out: &mut Vec<u8>) {
    const NEXT: &[u8] = b"; ";
    headline(r, out);
    out.extend_from_slice(b"; RST ");
    who(r, out);
    out.extend_from_slice(NEXT);
    ttl(r, out);
    if let Some(ms) = r.idle_ms {
        out.extend_from_slice(b"; idle ");
        duration_words(out, ms);
    }
    if let Some(us) = r.rtt_us {
        out.extend_from_slice(b"; rtt ");
        rtt_words(out, us);
    }
    out.extend_from_slice(b"; zeek ");
    out.extend_from_slice(r.conn_state.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(r.history.as_bytes());
    if r.followups > 0 {
        out.extend_from_slice(NEXT);
        fields::write_uint(out, r.followups.into());
        out.extend_from_slice(b" follow-up packets");
    }
    if let Some(earlier) = r.related_to {
        out.extend_from_slice(b"; follows the reset of ");
        fields::write_rfc3339(out, earlier);
    }
    if let Some(a) = &r.aggregate {
        out.extend_from_slice(NEXT);
        fields::write_uint(out, a.count);
        out.extend_from_slice(b"x since ");
        fields::write_rfc3339(out, a.first);
    }
    if let Some(local) = &r.local {
        out.extend_from_slice(NEXT);
        out.extend_from_slice(local.describe().as_bytes());
    }
    out.extend_from_slice(b"; wireshark: ");
    r.wireshark_filter.write(out);
}

/// `2024-05-01T12:00:00.250000Z eth0 ingress alert: connection aborted mid-stream (abort)`
fn headline(r: &ResetReport, out: &mut Vec<u8>) {
    fields::write_rfc3339(out, r.ts);
    out.push(b' ');
    out.extend_from_slice(r.iface.as_bytes());
    if r.vlan != 0 {
        out.extend_from_slice(b" vlan ");
        fields::write_uint(out, r.vlan.into());
    }
    out.push(b' ');
    out.extend_from_slice(r.direction.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(r.severity().as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(r.class.describe().as_bytes());
    out.extend_from_slice(b" (");
    out.extend_from_slice(r.class.as_str().as_bytes());
    out.push(b')');
}

/// `from responder 198.18.1.2:80 to 198.18.0.1:40000 (middlebox suspected: ttl_mismatch)`
fn who(r: &ResetReport, out: &mut Vec<u8>) {
    out.extend_from_slice(b"from ");
    match r.sender {
        Sender::Unknown => {
            fields::write_socket(out, r.src);
            out.extend_from_slice(b" (sender role unknown)");
        }
        sender => {
            out.extend_from_slice(sender.as_str().as_bytes());
            out.push(b' ');
            fields::write_socket(out, r.src);
        }
    }
    out.extend_from_slice(b" to ");
    fields::write_socket(out, r.dst);
    if r.middlebox {
        out.extend_from_slice(b" (middlebox suspected: ");
        write_joined(out, r.evidence, b", ");
        out.push(b')');
    } else if !r.evidence.is_empty() {
        out.extend_from_slice(b" (evidence: ");
        write_joined(out, r.evidence, b", ");
        out.push(b')');
    }
}

fn ttl(r: &ResetReport, out: &mut Vec<u8>) {
    out.extend_from_slice(b"ttl ");
    fields::write_uint(out, r.ttl.into());
    match r.expected_ttl {
        Some(expected) => {
            out.extend_from_slice(b" (expected ");
            fields::write_uint(out, expected.into());
            out.push(b')');
        }
        None => out.extend_from_slice(b" (expected unknown)"),
    }
}

/// Handshake round trips on a LAN are well below a millisecond.
fn rtt_words(out: &mut Vec<u8>, us: u64) {
    if us < 1_000 {
        fields::write_uint(out, us);
        out.extend_from_slice(b" us");
    } else {
        duration_words(out, us / 1_000)
    }
}

/// `850 ms`, `31.2 s`, `5 min 3 s`.
fn duration_words(out: &mut Vec<u8>, ms: u64) {
    if ms < 1_000 {
        fields::write_uint(out, ms);
        out.extend_from_slice(b" ms");
    } else if ms < 60_000 {
        write!(out, "{:.1} s", ms as f64 / 1_000.0).expect("writing into memory");
    } else {
        fields::write_uint(out, ms / 60_000);
        out.extend_from_slice(b" min ");
        fields::write_uint(out, ms % 60_000 / 1_000);
        out.extend_from_slice(b" s");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::sample::{ipv6_report, middlebox_report, teardown_report};

    fn render(report: &ResetReport, colour: bool) -> String {
        let mut out = Vec::new();
        Text::new(colour).render(report, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn middlebox_line_says_everything_an_analyst_needs() {
        assert_eq!(
            render(&middlebox_report(), false),
            "2024-05-01T12:00:00.250000Z eth0 ingress alert: connection aborted mid-stream \
             (abort); RST from responder 198.18.1.2:80 to 198.18.0.1:40000 (middlebox \
             suspected: ttl_mismatch, fast_rst); ttl 64 (expected 57); idle 1 ms; rtt 40 ms; \
             zeek RSTR ShADdr; wireshark: ip.addr==198.18.1.2 && ip.addr==198.18.0.1 && \
             tcp.port==80 && tcp.port==40000"
        );
    }

    #[test]
    fn unknown_sender_and_missing_numbers_are_said_plainly() {
        let line = render(&ipv6_report(), false);
        assert!(line.contains(" eth1 vlan 7 ingress notice: reset for a connection never seen"));
        assert!(line.contains(
            "RST from [2001:db8::2]:443 (sender role unknown) to [2001:db8::1]:40000; ttl 60 \
             (expected unknown); zeek OTH R; wireshark: ipv6.addr==2001:db8::2"
        ));
        assert!(!line.contains("idle"));
    }

    #[test]
    fn evidence_without_a_middlebox_is_listed_as_evidence() {
        let mut r = teardown_report();
        r.evidence = [crate::report::Evidence::TlsAlertBefore].into();
        let line = render(&r, false);
        assert!(line.contains("to 198.18.1.2:80 (evidence: tls_alert_before); "));
        assert!(line.contains("idle 2.5 s"));
    }

    #[test]
    fn colour_follows_severity() {
        assert!(render(&teardown_report(), true).starts_with("\x1b[2;32m"));
        assert!(render(&ipv6_report(), true).starts_with("\x1b[33m"));
        let alert = render(&middlebox_report(), true);
        assert!(alert.starts_with("\x1b[1;31m") && alert.ends_with("\x1b[0m"));
        assert!(!render(&middlebox_report(), false).contains('\x1b'));
    }

    #[test]
    fn repeated_resets_and_follow_ups_are_counted() {
        let mut r = middlebox_report();
        r.followups = 2;
        r.aggregate = Some(crate::report::Aggregate {
            count: 12,
            first: r.ts,
            last: r.ts,
        });
        let line = render(&r, false);
        assert!(line.contains("; 2 follow-up packets; 12x since 2024-05-01T12:00:00.250000Z; "));
    }

    #[test]
    fn durations_read_naturally() {
        let words = |write: fn(&mut Vec<u8>, u64), value| {
            let mut out = Vec::new();
            write(&mut out, value);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(words(duration_words, 850), "850 ms");
        assert_eq!(words(duration_words, 31_240), "31.2 s");
        assert_eq!(words(duration_words, 303_000), "5 min 3 s");
        assert_eq!(words(rtt_words, 180), "180 us");
        assert_eq!(words(rtt_words, 40_000), "40 ms");
    }

    #[test]
    fn a_related_reset_names_the_one_it_follows() {
        let line = render(&crate::test_support::sample::related_report(), false);
        assert!(
            line.contains("; follows the reset of 2024-05-01T12:00:00.250000Z; "),
            "{line}"
        );
    }
}
