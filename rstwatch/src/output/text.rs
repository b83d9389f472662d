//! Terminal output: one line per reset that a person reads left to right — when and where,
//! how bad, what happened in plain words, who sent it and what gave a middlebox away, the
//! numbers behind it, and the filter to paste into Wireshark.

use super::{fields, Format};
use crate::report::{ResetReport, Sender, Severity};

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
        let line = line(report);
        if self.colour {
            out.extend_from_slice(colour_of(report.severity()).as_bytes());
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(RESET_COLOUR.as_bytes());
        } else {
            out.extend_from_slice(line.as_bytes());
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

fn line(r: &ResetReport) -> String {
    let mut parts = vec![headline(r), format!("RST {}", who(r)), ttl(r)];
    if let Some(ms) = r.idle_ms {
        parts.push(format!("idle {}", duration_words(ms)));
    }
    if let Some(us) = r.rtt_us {
        parts.push(format!("rtt {}", rtt_words(us)));
    }
    parts.push(format!("zeek {} {}", r.conn_state.as_str(), r.history));
    if r.followups > 0 {
        parts.push(format!("{} follow-up packets", r.followups));
    }
    if let Some(earlier) = r.related_to {
        parts.push(format!("follows the reset of {}", fields::rfc3339(earlier)));
    }
    if let Some(a) = &r.aggregate {
        parts.push(format!("{}x since {}", a.count, fields::rfc3339(a.first)));
    }
    if let Some(local) = &r.local {
        parts.push(local.describe());
    }
    parts.push(format!("wireshark: {}", r.wireshark_filter));
    parts.join("; ")
}

/// `2024-05-01T12:00:00.250000Z eth0 ingress alert: connection aborted mid-stream (abort)`
fn headline(r: &ResetReport) -> String {
    let vlan = if r.vlan != 0 {
        format!(" vlan {}", r.vlan)
    } else {
        String::new()
    };
    format!(
        "{} {}{vlan} {} {}: {} ({})",
        fields::rfc3339(r.ts),
        r.iface,
        r.direction.as_str(),
        r.severity().as_str(),
        r.class.describe(),
        r.class.as_str()
    )
}

/// `from responder 198.18.1.2:80 to 198.18.0.1:40000 (middlebox suspected: ttl_mismatch)`
fn who(r: &ResetReport) -> String {
    let from = match r.sender {
        Sender::Unknown => format!("{} (sender role unknown)", r.src),
        sender => format!("{} {}", sender.as_str(), r.src),
    };
    let evidence: Vec<&str> = r.evidence.iter().map(|e| e.as_str()).collect();
    let attribution = if r.middlebox {
        format!(" (middlebox suspected: {})", evidence.join(", "))
    } else if !evidence.is_empty() {
        format!(" (evidence: {})", evidence.join(", "))
    } else {
        String::new()
    };
    format!("from {from} to {}{attribution}", r.dst)
}

fn ttl(r: &ResetReport) -> String {
    match r.expected_ttl {
        Some(expected) => format!("ttl {} (expected {expected})", r.ttl),
        None => format!("ttl {} (expected unknown)", r.ttl),
    }
}

/// Handshake round trips on a LAN are well below a millisecond.
fn rtt_words(us: u64) -> String {
    if us < 1_000 {
        format!("{us} us")
    } else {
        duration_words(us / 1_000)
    }
}

/// `850 ms`, `31.2 s`, `5 min 3 s`.
fn duration_words(ms: u64) -> String {
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1_000.0)
    } else {
        format!("{} min {} s", ms / 60_000, ms % 60_000 / 1_000)
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
        r.evidence = vec![crate::report::Evidence::TlsAlertBefore];
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
        assert_eq!(duration_words(850), "850 ms");
        assert_eq!(duration_words(31_240), "31.2 s");
        assert_eq!(duration_words(303_000), "5 min 3 s");
        assert_eq!(rtt_words(180), "180 us");
        assert_eq!(rtt_words(40_000), "40 ms");
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
