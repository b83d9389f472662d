//! In-kernel storm counts to aggregate reports.
//!
//! Beyond a per-CPU rate the kernel stops sending unknown-flow RSTs one by one and counts them
//! per sender prefix and port, per CPU, in a map that only ever grows. `StormTally` reads it
//! periodically and turns what is new since its last reading into one aggregate per key: the
//! count, the first and last time, and the first RST counted as the representative. Only the
//! kernel writes the counts and only the tally remembers what it has reported, so a reading
//! racing with the kernel merely leaves the newest resets for the next one.

use std::collections::HashMap;

use rstwatch_common::{
    event::{RecordHeader, RstEvent},
    EventKind, StormCount, StormKey,
};

/// One aggregate: `count` resets like `sample`, from `first_ns` to `last_ns` (monotonic).
#[derive(Clone, Copy, Debug)]
pub struct Storm {
    pub sample: RstEvent,
    pub count: u64,
    pub first_ns: u64,
    pub last_ns: u64,
}

/// What has been reported so far, per key and CPU.
#[derive(Debug, Default)]
pub struct StormTally {
    reported: HashMap<(StormKey, usize), u64>,
    /// The last reset time of each key's previous aggregate.
    reported_until: HashMap<StormKey, u64>,
}

impl StormTally {
    pub fn new() -> Self {
        Self::default()
    }

    /// The aggregates of the resets counted since the previous reading.
    pub fn read(&mut self, storms: &[(StormKey, Vec<StormCount>)]) -> Vec<Storm> {
        let mut out = Vec::new();
        for (key, per_cpu) in storms {
            let mut new: Option<Storm> = None;
            for (cpu, counted) in per_cpu.iter().enumerate() {
                let reported = self.reported.entry((*key, cpu)).or_insert(0);
                let fresh = counted.resets.saturating_sub(*reported);
                if fresh == 0 {
                    continue;
                }
                // A CPU's first reading starts at its first reset; later ones right after the
                // previous aggregate of the key.
                let first_ns = if *reported == 0 {
                    counted.first_ns
                } else {
                    self.reported_until
                        .get(key)
                        .copied()
                        .unwrap_or(counted.first_ns)
                        .max(counted.first_ns)
                };
                *reported = counted.resets;
                let storm = new.get_or_insert(Storm {
                    sample: sample(key, counted),
                    count: 0,
                    first_ns,
                    last_ns: counted.last_ns,
                });
                storm.count += fresh;
                storm.first_ns = storm.first_ns.min(first_ns);
                storm.last_ns = storm.last_ns.max(counted.last_ns);
            }
            if let Some(storm) = new {
                self.reported_until.insert(*key, storm.last_ns);
                out.push(storm);
            }
        }
        out.sort_by_key(|storm| storm.first_ns);
        out
    }
}

fn sample(key: &StormKey, counted: &StormCount) -> RstEvent {
    let header = RecordHeader {
        ifindex: counted.ifindex,
        ts_ns: counted.first_ns,
        direction: key.direction,
        ..RecordHeader::default()
    };
    RstEvent::of_packet(&header, EventKind::Rst, counted.sample)
}

#[cfg(test)]
mod tests {
    use rstwatch_common::{
        event::DIRECTION_EGRESS,
        packet::{ipv4_mapped, tcp_flags, FAMILY_IPV4},
        PacketMeta,
    };

    use super::*;

    fn rst_from(host: u8, port: u16) -> PacketMeta {
        PacketMeta {
            src_addr: ipv4_mapped([198, 18, 7, host]),
            dst_addr: ipv4_mapped([198, 18, 0, 1]),
            src_port: port,
            dst_port: 40_000,
            tcp_flags: tcp_flags::RST,
            family: FAMILY_IPV4,
            ..PacketMeta::default()
        }
    }

    fn counted(resets: u64, first_ns: u64, last_ns: u64, host: u8) -> StormCount {
        StormCount {
            resets,
            first_ns,
            last_ns,
            sample: rst_from(host, 443),
            ..StormCount::default()
        }
    }

    #[test]
    fn hosts_of_one_prefix_and_port_share_a_key() {
        assert_eq!(
            StormKey::of(&rst_from(1, 443), DIRECTION_EGRESS),
            StormKey::of(&rst_from(200, 443), DIRECTION_EGRESS)
        );
        assert_ne!(
            StormKey::of(&rst_from(1, 443), DIRECTION_EGRESS),
            StormKey::of(&rst_from(1, 80), DIRECTION_EGRESS)
        );
    }

    #[test]
    fn every_counted_reset_is_reported_once_across_cpus_and_readings() {
        let key = StormKey::of(&rst_from(1, 443), DIRECTION_EGRESS);
        let mut tally = StormTally::new();
        let first = tally.read(&[(key, vec![counted(10, 100, 900, 1), counted(5, 50, 700, 9)])]);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].count, 15);
        assert_eq!((first[0].first_ns, first[0].last_ns), (50, 900));

        let unchanged =
            tally.read(&[(key, vec![counted(10, 100, 900, 1), counted(5, 50, 700, 9)])]);
        assert!(unchanged.is_empty(), "nothing new, nothing reported");

        let more = tally.read(&[(key, vec![counted(13, 100, 1500, 1), counted(5, 50, 700, 9)])]);
        assert_eq!(more.len(), 1);
        assert_eq!(more[0].count, 3);
        assert_eq!(
            (more[0].first_ns, more[0].last_ns),
            (900, 1500),
            "a later aggregate starts where the previous one ended"
        );
        assert_eq!(more[0].sample.pkt, rst_from(1, 443));
    }
}
