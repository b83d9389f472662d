//! `rstwatch explain --flow FILTER`: the conversations a filter selects, packet by packet,
//! with the verdict under each RST: the "follow the TCP stream" view of an analyst.

use std::{
    collections::HashMap,
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    str::FromStr,
};

use rstwatch_common::{
    packet::{tcp_flags, FAMILY_IPV4},
    FlowKey, PacketMeta,
};

use crate::{cidr::Cidr, report::ResetReport};

/// Which conversations `--flow` shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlowSelector {
    /// Both endpoints, in either order.
    Endpoints(SocketAddr, SocketAddr),
    /// Either port (`tcp.port==P`).
    Port(u16),
    /// Either address inside the network (`ip.addr==NET`, or a bare address or network).
    Net(Cidr),
}

impl FromStr for FlowSelector {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        let bad = || {
            format!(
                "invalid flow filter '{s}': write a 4-tuple (10.0.0.1:40000-10.0.0.2:443), an \
                 address or network, tcp.port==4333 or ip.addr==10.1.2.0/24"
            )
        };
        if let Some(port) = compact.strip_prefix("tcp.port==") {
            return port.parse().map(FlowSelector::Port).map_err(|_| bad());
        }
        for prefix in ["ip.addr==", "ipv6.addr=="] {
            if let Some(net) = compact.strip_prefix(prefix) {
                return net.parse().map(FlowSelector::Net).map_err(|_| bad());
            }
        }
        if let Ok(net) = compact.parse() {
            return Ok(FlowSelector::Net(net));
        }
        // IPv6 endpoints are bracketed (`[2001:db8::1]:443`), so the separator is the only
        // '-' outside brackets.
        let mut depth = 0;
        for (i, c) in compact.char_indices() {
            match c {
                '[' => depth += 1,
                ']' => depth -= 1,
                '-' if depth == 0 => {
                    let (a, b) = (&compact[..i], &compact[i + 1..]);
                    return match (a.parse(), b.parse()) {
                        (Ok(a), Ok(b)) => Ok(FlowSelector::Endpoints(a, b)),
                        _ => Err(bad()),
                    };
                }
                _ => {}
            }
        }
        Err(bad())
    }
}

impl FlowSelector {
    pub fn matches(&self, pkt: &PacketMeta) -> bool {
        let (src, dst) = endpoints(pkt);
        match self {
            FlowSelector::Endpoints(a, b) => (src == *a && dst == *b) || (src == *b && dst == *a),
            FlowSelector::Port(port) => src.port() == *port || dst.port() == *port,
            FlowSelector::Net(net) => net.contains(&pkt.src_addr) || net.contains(&pkt.dst_addr),
        }
    }
}

/// The flow key of the RST a report explains.
fn key_of(report: &ResetReport) -> FlowKey {
    let mapped = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => rstwatch_common::packet::ipv4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    };
    let pkt = PacketMeta {
        src_addr: mapped(report.src.ip()),
        dst_addr: mapped(report.dst.ip()),
        src_port: report.src.port(),
        dst_port: report.dst.port(),
        vlan: report.vlan,
        family: if report.src.is_ipv4() {
            FAMILY_IPV4
        } else {
            rstwatch_common::packet::FAMILY_IPV6
        },
        ..PacketMeta::default()
    };
    FlowKey::of(&pkt).0
}

fn address(pkt: &PacketMeta, bytes: [u8; 16]) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(bytes);
    match (pkt.family, v6.to_ipv4_mapped()) {
        (FAMILY_IPV4, Some(v4)) => IpAddr::V4(v4),
        _ => IpAddr::V6(v6),
    }
}

fn endpoints(pkt: &PacketMeta) -> (SocketAddr, SocketAddr) {
    (
        SocketAddr::new(address(pkt, pkt.src_addr), pkt.src_port),
        SocketAddr::new(address(pkt, pkt.dst_addr), pkt.dst_port),
    )
}

/// One packet of a conversation.
#[derive(Clone, Copy, Debug)]
struct Seen {
    ts_ns: u64,
    pkt: PacketMeta,
}

#[derive(Debug, Default)]
struct Conversation {
    packets: Vec<Seen>,
    /// Verdicts by the time of the RST they explain.
    verdicts: Vec<(u64, String)>,
}

/// The selected conversations, in the order their first packet was seen.
#[derive(Debug)]
pub struct Timelines {
    filter: FlowSelector,
    index: HashMap<FlowKey, usize>,
    conversations: Vec<Conversation>,
}

impl Timelines {
    pub fn new(filter: FlowSelector) -> Self {
        Self {
            filter,
            index: HashMap::new(),
            conversations: Vec::new(),
        }
    }

    /// Adds a packet if its conversation is selected.
    pub fn packet(&mut self, pkt: &PacketMeta, ts_ns: u64) {
        if !self.filter.matches(pkt) {
            return;
        }
        let (key, _) = FlowKey::of(pkt);
        let next = self.conversations.len();
        let at = *self.index.entry(key).or_insert(next);
        if at == next {
            self.conversations.push(Conversation::default());
        }
        self.conversations[at]
            .packets
            .push(Seen { ts_ns, pkt: *pkt });
    }

    /// Puts the verdict on a RST under it, if the RST's conversation is selected.
    pub fn verdict(&mut self, report: &ResetReport) {
        if report.aggregate.is_some() {
            return;
        }
        let Some(&at) = self.index.get(&key_of(report)) else {
            return;
        };
        let rst_ts_ns = report
            .ts
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64);
        let mut text = format!(
            "{} sender={} middlebox={} conn_state={} history={}",
            report.class.as_str(),
            report.sender.as_str(),
            if report.middlebox { "yes" } else { "no" },
            report.conn_state.as_str(),
            report.history
        );
        if !report.evidence.is_empty() {
            let evidence: Vec<&str> = report.evidence.iter().map(|e| e.as_str()).collect();
            let _ = write!(text, " evidence={}", evidence.join(","));
        }
        let _ = write!(text, ": {}", report.explanation());
        self.conversations[at].verdicts.push((rst_ts_ns, text));
    }

    /// Every conversation: a heading, then one line per packet with its time since the
    /// conversation's first packet, direction, flags, relative sequence numbers, TTL and IP
    /// ID, and the verdict under each RST.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.conversations.is_empty() {
            out.push_str("no conversation matches the --flow filter\n");
        }
        for (stream, conversation) in self.conversations.iter().enumerate() {
            let Some(first) = conversation.packets.first() else {
                continue;
            };
            let (a, b) = endpoints(&first.pkt);
            let _ = writeln!(
                out,
                "conversation {stream}: {a} <-> {b}, {} packets",
                conversation.packets.len()
            );
            // Sequence numbers relative to each side's first one, as Wireshark shows them.
            let mut initial_seq: HashMap<SocketAddr, u32> = HashMap::new();
            for seen in &conversation.packets {
                let pkt = &seen.pkt;
                let (src, dst) = endpoints(pkt);
                let isn = *initial_seq.entry(src).or_insert(pkt.seq);
                let peer_isn = initial_seq.get(&dst).copied();
                let rel_ack = match (pkt.has(tcp_flags::ACK), peer_isn) {
                    (true, Some(peer)) => pkt.ack.wrapping_sub(peer).to_string(),
                    (true, None) => format!("{} (abs)", pkt.ack),
                    (false, _) => "-".to_owned(),
                };
                let rel_time = seen.ts_ns.saturating_sub(first.ts_ns) as f64 / 1e9;
                let arrow = if src == a { "->" } else { "<-" };
                let ip_id = if pkt.family == FAMILY_IPV4 {
                    pkt.ip_id.to_string()
                } else {
                    "-".to_owned()
                };
                let _ = writeln!(
                    out,
                    "  {rel_time:>10.6}  {arrow} {:<6} seq={} ack={rel_ack} len={} ttl={} \
                     ip_id={ip_id}",
                    flag_letters(pkt.tcp_flags),
                    pkt.seq.wrapping_sub(isn),
                    pkt.payload_len,
                    pkt.ttl,
                );
                if pkt.is_rst() {
                    for (_, verdict) in conversation
                        .verdicts
                        .iter()
                        .filter(|(ts, _)| *ts == seen.ts_ns)
                    {
                        let _ = writeln!(out, "              => {verdict}");
                    }
                }
            }
        }
        out
    }
}

/// Flags as tcpdump writes them: S, F, R, P, U, E, W and `.` for ACK.
fn flag_letters(flags: u8) -> String {
    let letters = [
        (tcp_flags::SYN, 'S'),
        (tcp_flags::FIN, 'F'),
        (tcp_flags::RST, 'R'),
        (tcp_flags::PSH, 'P'),
        (tcp_flags::URG, 'U'),
        (tcp_flags::ECE, 'E'),
        (tcp_flags::CWR, 'W'),
        (tcp_flags::ACK, '.'),
    ];
    let text: String = letters
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, letter)| *letter)
        .collect();
    format!("[{text}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_in_every_form_parse() {
        assert_eq!("tcp.port==4333".parse(), Ok(FlowSelector::Port(4333)));
        assert_eq!("tcp.port == 443".parse(), Ok(FlowSelector::Port(443)));
        assert_eq!(
            "ip.addr==10.1.2.0/24".parse(),
            Ok(FlowSelector::Net("10.1.2.0/24".parse().unwrap()))
        );
        assert_eq!(
            "198.18.0.1".parse(),
            Ok(FlowSelector::Net("198.18.0.1".parse().unwrap()))
        );
        assert_eq!(
            "[2001:db8::1]:40000-[2001:db8::2]:443".parse(),
            Ok(FlowSelector::Endpoints(
                "[2001:db8::1]:40000".parse().unwrap(),
                "[2001:db8::2]:443".parse().unwrap()
            ))
        );
        assert!("tcp.port==x".parse::<FlowSelector>().is_err());
        assert!("nonsense".parse::<FlowSelector>().is_err());
    }

    #[test]
    fn a_tuple_selects_both_directions_and_nothing_else() {
        let filter: FlowSelector = "198.18.0.1:40000-198.18.1.2:80".parse().unwrap();
        let mut pkt = PacketMeta {
            src_addr: rstwatch_common::packet::ipv4_mapped([198, 18, 1, 2]),
            dst_addr: rstwatch_common::packet::ipv4_mapped([198, 18, 0, 1]),
            src_port: 80,
            dst_port: 40000,
            family: FAMILY_IPV4,
            ..PacketMeta::default()
        };
        assert!(filter.matches(&pkt));
        pkt.dst_port = 40001;
        assert!(!filter.matches(&pkt));
    }
}
