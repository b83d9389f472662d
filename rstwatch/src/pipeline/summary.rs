//! The end-of-run (or on-demand) summary: how many resets of each class, and which peers
//! were involved in the most of them.

use std::{collections::BTreeMap, net::IpAddr};

use foldhash::HashMap;

use crate::report::{Direction, ResetClass, ResetReport};

/// Peers listed by `Summary::render` unless told otherwise.
pub const DEFAULT_TOP_PEERS: usize = 10;

/// Resets counted as reports arrive. A report that folds a storm of identical resets
/// (`ResetReport::aggregate`) counts as that many resets.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    total: u64,
    middlebox: u64,
    by_class: BTreeMap<ResetClass, u64>,
    by_peer: HashMap<IpAddr, PeerTally>,
}

/// One peer's resets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerTally {
    pub resets: u64,
    pub middlebox: u64,
    pub by_class: BTreeMap<ResetClass, u64>,
}

/// The far end of the RST as seen from this host: the source of an ingress RST, the
/// destination of an egress one. On a sensor fed by a mirror port every RST is ingress, and
/// the peer is the address the RST claims to come from.
pub fn peer(report: &ResetReport) -> IpAddr {
    match report.direction {
        Direction::Ingress => report.src.ip(),
        Direction::Egress => report.dst.ip(),
    }
}

impl Summary {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, report: &ResetReport) {
        let resets = report.aggregate.map_or(1, |a| a.count);
        let middlebox = if report.middlebox { resets } else { 0 };
        self.total += resets;
        self.middlebox += middlebox;
        *self.by_class.entry(report.class).or_default() += resets;
        let tally = self.by_peer.entry(peer(report)).or_default();
        tally.resets += resets;
        tally.middlebox += middlebox;
        *tally.by_class.entry(report.class).or_default() += resets;
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn middlebox(&self) -> u64 {
        self.middlebox
    }

    pub fn count(&self, class: ResetClass) -> u64 {
        self.by_class.get(&class).copied().unwrap_or(0)
    }

    /// The `n` peers with the most resets, most first; ties in address order so the list is
    /// stable from one summary to the next.
    pub fn top_peers(&self, n: usize) -> Vec<(IpAddr, &PeerTally)> {
        let mut peers: Vec<_> = self.by_peer.iter().map(|(ip, t)| (*ip, t)).collect();
        peers.sort_by(|(a_ip, a), (b_ip, b)| b.resets.cmp(&a.resets).then(a_ip.cmp(b_ip)));
        peers.truncate(n);
        peers
    }

    /// The summary as text: totals, every class with its count and meaning, then the `top`
    /// peers with their resets by class.
    pub fn render(&self, top: usize) -> String {
        if self.total == 0 {
            return "rstwatch summary: no resets seen\n".to_owned();
        }
        let mut lines = vec![
            format!(
                "rstwatch summary: {} resets, {} with a middlebox suspected",
                self.total, self.middlebox
            ),
            "by class:".to_owned(),
        ];
        for class in ResetClass::ALL {
            lines.push(format!(
                "  {:<16} {:>8}  {}",
                class.as_str(),
                self.count(class),
                class.describe()
            ));
        }
        lines.push(format!("top peers (of {}):", self.by_peer.len()));
        for (ip, tally) in self.top_peers(top) {
            lines.push(format!(
                "  {:<39} {:>8}  {}",
                ip,
                tally.resets,
                breakdown(tally)
            ));
        }
        let mut text = lines.join("\n");
        text.push('\n');
        text
    }
}

/// `refused 18, abort 2, 2 middlebox suspected`
fn breakdown(tally: &PeerTally) -> String {
    let mut parts: Vec<String> = tally
        .by_class
        .iter()
        .map(|(class, n)| format!("{} {n}", class.as_str()))
        .collect();
    if tally.middlebox > 0 {
        parts.push(format!("{} middlebox suspected", tally.middlebox));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::report::{Aggregate, ConnState, Sender};

    fn report(class: ResetClass, direction: Direction, src: &str, dst: &str) -> ResetReport {
        let (src, dst) = (src.parse().unwrap(), dst.parse().unwrap());
        ResetReport {
            ts: SystemTime::UNIX_EPOCH,
            iface: "eth0".into(),
            direction,
            class,
            sender: Sender::Responder,
            middlebox: false,
            evidence: Default::default(),
            src,
            dst,
            orig: dst,
            resp: src,
            originator_inferred: false,
            vlan: 0,
            ttl: 57,
            expected_ttl: Some(57),
            ip_id: None,
            df: true,
            seq: 0,
            ack: 0,
            flags: 0x14,
            window: 0,
            payload_len: 0,
            idle_ms: None,
            rtt_us: None,
            conn_state: ConnState::Rstr,
            history: Default::default(),
            community_id: Default::default(),
            wireshark_filter: crate::explain::wireshark::display_filter(src, dst, 0),
            orig_pkts: 0,
            orig_bytes: 0,
            resp_pkts: 0,
            resp_bytes: 0,
            followups: 0,
            related_to: None,
            aggregate: None,
            local: None,
            frames: Vec::new(),
        }
    }

    fn from_server(class: ResetClass, server: &str) -> ResetReport {
        report(class, Direction::Ingress, server, "192.0.2.1:40000")
    }

    fn sample() -> Summary {
        let mut s = Summary::new();
        for _ in 0..3 {
            s.add(&from_server(ResetClass::Refused, "203.0.113.5:25"));
        }
        s.add(&from_server(ResetClass::Abort, "203.0.113.5:25"));
        let mut forged = from_server(ResetClass::Abort, "198.51.100.7:443");
        forged.middlebox = true;
        s.add(&forged);
        s.add(&report(
            ResetClass::Teardown,
            Direction::Egress,
            "192.0.2.1:40001",
            "198.51.100.9:80",
        ));
        s
    }

    #[test]
    fn counts_by_class() {
        let s = sample();
        assert_eq!(s.total(), 6);
        assert_eq!(s.middlebox(), 1);
        assert_eq!(s.count(ResetClass::Refused), 3);
        assert_eq!(s.count(ResetClass::Abort), 2);
        assert_eq!(s.count(ResetClass::Teardown), 1);
        assert_eq!(s.count(ResetClass::IdleTimeout), 0);
    }

    #[test]
    fn the_peer_is_the_far_end_from_this_host() {
        let ingress = from_server(ResetClass::Abort, "203.0.113.5:25");
        assert_eq!(peer(&ingress).to_string(), "203.0.113.5");
        let egress = report(
            ResetClass::Abort,
            Direction::Egress,
            "192.0.2.1:40000",
            "198.51.100.9:80",
        );
        assert_eq!(peer(&egress).to_string(), "198.51.100.9");
    }

    #[test]
    fn top_peers_most_resets_first_ties_by_address() {
        let s = sample();
        let top: Vec<(String, u64)> = s
            .top_peers(3)
            .into_iter()
            .map(|(ip, t)| (ip.to_string(), t.resets))
            .collect();
        assert_eq!(
            top,
            [
                ("203.0.113.5".to_owned(), 4),
                ("198.51.100.7".to_owned(), 1),
                ("198.51.100.9".to_owned(), 1),
            ]
        );
        assert_eq!(s.top_peers(1).len(), 1);
    }

    #[test]
    fn an_aggregate_counts_as_all_its_resets() {
        let mut r = from_server(ResetClass::Abort, "198.51.100.7:443");
        r.middlebox = true;
        r.aggregate = Some(Aggregate {
            count: 50,
            first: r.ts,
            last: r.ts,
        });
        let mut s = Summary::new();
        s.add(&r);
        assert_eq!((s.total(), s.middlebox()), (50, 50));
        assert_eq!(s.top_peers(1)[0].1.resets, 50);
    }

    #[test]
    fn renders_classes_and_top_peers() {
        let text = sample().render(2);
        let expected = "\
rstwatch summary: 6 resets, 1 with a middlebox suspected
by class:
  refused                 3  connection refused: port closed or service down
  data_after_close        0  peer kept sending after the connection was closed
  teardown                1  normal teardown after FIN
  idle_timeout            0  reset after a long idle period (idle timeout)
  abort                   2  connection aborted mid-stream
  no_state                0  reset for a connection never seen (late start, scan, backscatter)
top peers (of 3):
  203.0.113.5                                    4  refused 3, abort 1
  198.51.100.7                                   1  abort 1, 1 middlebox suspected
";
        assert_eq!(text, expected);
    }

    #[test]
    fn renders_an_empty_run() {
        assert_eq!(
            Summary::new().render(5),
            "rstwatch summary: no resets seen\n"
        );
    }
}
