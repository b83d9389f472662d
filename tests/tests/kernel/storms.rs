//! Storms and floods under BPF_PROG_TEST_RUN: unknown RSTs and SYN floods are rate-limited and
//! counted, and never evict established flows.

use std::net::Ipv4Addr;

use rstwatch::kernel::{table_capacity, KernelConfig};
use rstwatch_common::{
    event::{DIRECTION_INGRESS, STORM_SLOTS_LOG2},
    flow::seen,
    packet::{ipv4_mapped, FAMILY_IPV4},
    Counter, EventKind, Settings, StormCount, StormKey,
};
use rstwatch_tests::{
    frames::{
        flags::{ACK, PSH, RST},
        Tcp,
    },
    probe::{
        assert_counts, config, key4, move_to_cpu, syn, syn_ack, tcp, tracked, v4, Probe, C, CLIENT,
        HTTP, OUTSIDER, S, SERVER,
    },
};

/// A client of `SERVER` on `port` completes a handshake and sends a little data.
fn establish(probe: &Probe, port: u16) {
    probe.ingress(&v4(CLIENT, SERVER, 64, 1, syn(port, HTTP, 1000, 7)));
    probe.egress(&v4(
        SERVER,
        CLIENT,
        64,
        1,
        syn_ack(HTTP, port, 5000, 1001, 7),
    ));
    probe.ingress(&v4(CLIENT, SERVER, 64, 2, tcp(port, HTTP, ACK, 1001, 5001)));
    probe.ingress(&v4(
        CLIENT,
        SERVER,
        64,
        3,
        Tcp {
            payload: vec![7; 20],
            ..tcp(port, HTTP, PSH | ACK, 1001, 5001)
        },
    ));
}

#[test]
fn an_unknown_rst_creates_no_flow_and_what_follows_it_is_still_reported() {
    let mut probe = Probe::new();
    let key = key4(OUTSIDER, 443, CLIENT, 40000);
    let rst = |seq: u32| v4(OUTSIDER, CLIENT, 50, 9, tcp(443, 40000, RST, seq, 0));
    let mut sent = tracked(true);
    sent.push((Counter::EventsSent, 1));
    assert_counts(
        &probe.ingress(&rst(7000)),
        &sent,
        "unknown RST: sent, not inserted",
    );
    assert!(probe.flow(&key).is_none());
    assert_eq!(probe.flow_count(), 0);

    assert_counts(
        &probe.ingress(&rst(9000)),
        &sent,
        "a second RST is a follow-up",
    );
    let data = Tcp {
        payload: vec![1; 10],
        ..tcp(443, 40000, ACK, 7000, 1)
    };
    probe.ingress(&v4(OUTSIDER, CLIENT, 50, 10, data));
    let events = probe.events();
    let kinds: Vec<_> = events
        .iter()
        .map(|e| (EventKind::from_u8(e.kind), e.pkt.seq, e.key))
        .collect();
    assert_eq!(
        kinds,
        [
            (Some(EventKind::Rst), 7000, key),
            (Some(EventKind::FollowUp), 9000, key),
            (Some(EventKind::FollowUp), 7000, key),
        ],
        "the RST, another RST and data from its claimed sender"
    );
    assert_eq!(
        events[0].flow.packets(),
        0,
        "no state: the table never saw it"
    );
}

/// A SYN flood fills the flow table many times over; flows that completed a handshake
/// keep their state, and a RST answering a SYN is still reported with the SYN's state.
#[test]
fn a_syn_flood_never_evicts_established_flows() {
    const ESTABLISHED: u16 = 16;
    const FLOOD: u32 = 12_000;
    // Every SYN tracked: the table itself must bear the flood.
    let mut probe = Probe::load(KernelConfig {
        settings: Settings {
            half_open_per_sec: u32::MAX,
            ..Settings::default()
        },
        ..config()
    });
    for port in 0..ESTABLISHED {
        establish(&probe, 41000 + port);
    }
    let flood_source = |i: u32| Ipv4Addr::new(198, 18, (i >> 8) as u8, i as u8);
    for i in 0..FLOOD {
        // Each 4-tuple twice, as a SYN flood's retransmissions would send it.
        let frame = v4(
            flood_source(i),
            SERVER,
            64,
            1,
            syn(1024 + (i % 50_000) as u16, HTTP, i, 7),
        );
        probe.ingress(&frame);
        probe.ingress(&frame);
    }
    let capacity = table_capacity(config().flows)[0];
    assert!(
        u64::from(FLOOD) > 2 * capacity,
        "the flood must overflow the table"
    );
    let c = probe.counters();
    assert_eq!(c.get(Counter::EstablishedEvicted), 0, "{}", c.describe());
    assert_eq!(
        c.get(Counter::FlowsInserted) + c.get(Counter::SynsNoRoom),
        u64::from(FLOOD + u32::from(ESTABLISHED)),
        "every new flow inserted or counted: {}",
        c.describe()
    );
    assert!(c.get(Counter::FlowsEvicted) > 0, "{}", c.describe());
    assert!(probe.flow_count() as u64 <= capacity);

    for port in 0..ESTABLISHED {
        let port = 41000 + port;
        let flow = probe.expect_flow(&key4(CLIENT, port, SERVER, HTTP));
        assert!(!probe.is_half_open(&key4(CLIENT, port, SERVER, HTTP)));
        assert_eq!(flow.dir[C as usize].bytes, 20, "port {port}: state intact");
        probe.egress(&v4(
            SERVER,
            CLIENT,
            64,
            2,
            tcp(HTTP, port, RST | ACK, 5001, 1021),
        ));
    }
    let events = probe.events();
    assert_eq!(events.len(), ESTABLISHED as usize);
    for event in &events {
        assert_eq!(EventKind::from_u8(event.kind), Some(EventKind::Rst));
        assert_eq!(
            event.flow.dir[C as usize].pkts, 3,
            "the RST carries the handshake and data seen before the flood"
        );
        assert!(event.flow.rtt_ns() > 0);
    }

    // A RST answering a SYN (a refused connection) still finds the SYN's state.
    let refused = 39999;
    probe.ingress(&v4(CLIENT, SERVER, 64, 1, syn(refused, HTTP, 1, 7)));
    probe.egress(&v4(
        SERVER,
        CLIENT,
        64,
        0,
        tcp(HTTP, refused, RST | ACK, 0, 2),
    ));
    let events = probe.events();
    assert_eq!(events.len(), 1);
    assert!(events[0].flow.dir[C as usize].has(seen::SYN));
    assert!(!events[0].flow.dir[S as usize].has(seen::SYN_ACK));
}

#[test]
fn unknown_rsts_beyond_the_rate_are_counted_by_sender_prefix_and_port() {
    const RSTS: u16 = 60;
    const RATE: u32 = 5;
    let mut probe = Probe::load(KernelConfig {
        settings: Settings {
            unknown_rsts_per_sec: RATE,
            ..Settings::default()
        },
        ..config()
    });
    for i in 0..RSTS {
        let sender = Ipv4Addr::new(198, 18, 7, (i % 200) as u8 + 1);
        probe.ingress(&v4(sender, CLIENT, 50, 1, tcp(443, 20000 + i, RST, 1, 0)));
    }
    let c = probe.counters();
    let (sent, aggregated) = (c.get(Counter::EventsSent), c.get(Counter::RstsAggregated));
    // The rate is per CPU and the test may move between CPUs; at least one CPU's second
    // overflowed, since RSTS > RATE * CPUs here.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    assert!(
        sent <= RATE as u64 * cpus && aggregated > 0,
        "{}",
        c.describe()
    );
    assert_eq!(sent + aggregated, RSTS as u64, "every RST sent or counted");
    assert_eq!(c.get(Counter::StormMapFull), 0);
    assert_eq!(probe.events().len() as u64, sent);
    assert_eq!(probe.flow_count(), 0);

    let storms = probe.kernel.storms().expect("reading STORMS");
    assert_eq!(storms.len(), 1, "one sender /24 and port: {storms:?}");
    let (key, per_cpu) = &storms[0];
    assert_eq!(key.sender_port, 443);
    assert_eq!(key.sender_prefix, ipv4_mapped([198, 18, 7, 0]));
    let counted: u64 = per_cpu.iter().map(|c| c.resets).sum();
    assert_eq!(counted, aggregated);

    let reported = rstwatch::pipeline::storm::StormTally::new().read(&storms);
    assert_eq!(reported.len(), 1);
    assert_eq!(reported[0].count, aggregated);
    assert!(reported[0].first_ns <= reported[0].last_ns);
    assert_eq!(reported[0].sample.pkt.src_port, 443);
}

#[test]
fn syns_beyond_the_per_cpu_budget_are_counted_untracked() {
    const SYNS: u16 = 40;
    const BUDGET: u32 = 4;
    let probe = Probe::load(KernelConfig {
        settings: Settings {
            half_open_per_sec: BUDGET,
            ..Settings::default()
        },
        ..config()
    });
    for port in 0..SYNS {
        probe.ingress(&v4(CLIENT, SERVER, 64, 1, syn(20000 + port, HTTP, 1, 7)));
    }
    let c = probe.counters();
    let (inserted, untracked) = (c.get(Counter::FlowsInserted), c.get(Counter::SynsUntracked));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    assert!(inserted <= BUDGET as u64 * cpus, "{}", c.describe());
    assert_eq!(inserted + untracked, SYNS as u64, "{}", c.describe());
    assert_eq!(probe.flow_count() as u64, inserted);

    // An untracked SYN's connection is tracked from its next packet on.
    let port = 20000 + SYNS - 1;
    let key = key4(CLIENT, port, SERVER, HTTP);
    if probe.flow(&key).is_none() {
        probe.ingress(&v4(CLIENT, SERVER, 64, 2, tcp(port, HTTP, ACK, 2, 1)));
        assert!(probe.flow(&key).is_some(), "the ACK starts the flow");
    }
}

#[test]
fn storms_that_share_a_slot_are_both_counted_in_full() {
    const PER_STORM: u16 = 10;
    let mut probe = Probe::load(KernelConfig {
        settings: Settings {
            unknown_rsts_per_sec: 1,
            ..Settings::default()
        },
        ..config()
    });
    // Two sender /24s whose storms hash to the same per-CPU slot.
    let prefix = |third: u8| Ipv4Addr::new(198, 18, third, 0);
    let key_of = |third: u8| StormKey {
        sender_prefix: ipv4_mapped(prefix(third).octets()),
        sender_port: 443,
        family: FAMILY_IPV4,
        direction: DIRECTION_INGRESS,
        _pad: [0; 4],
    };
    let first = 1u8;
    let slot = key_of(first).slot(STORM_SLOTS_LOG2);
    let second = (2..=255u8)
        .find(|&third| key_of(third).slot(STORM_SLOTS_LOG2) == slot)
        .expect("two /24s sharing a slot among 255");
    for third in [first, second] {
        for i in 0..PER_STORM {
            let sender = Ipv4Addr::new(198, 18, third, 1 + i as u8);
            probe.ingress(&v4(sender, CLIENT, 50, 1, tcp(443, 20000 + i, RST, 1, 0)));
        }
    }
    let c = probe.counters();
    assert_eq!(c.get(Counter::EventsSent), 1, "{}", c.describe());
    assert_eq!(c.get(Counter::RstsAggregated), 2 * PER_STORM as u64 - 1);
    assert_eq!(probe.events().len(), 1);

    let storms = probe.kernel.storms().expect("reading the storm counts");
    let cpus = storms[0].1.len() / 2;
    let counted = |third: u8| -> (u64, u64) {
        let (_, per_cpu) = storms
            .iter()
            .find(|(key, _)| *key == key_of(third))
            .unwrap_or_else(|| panic!("no storm from {}: {storms:?}", prefix(third)));
        let sum = |counts: &[StormCount]| counts.iter().map(|c| c.resets).sum();
        (sum(&per_cpu[..cpus]), sum(&per_cpu[cpus..]))
    };
    assert_eq!(
        counted(first),
        (0, PER_STORM as u64 - 1),
        "the first storm, in its slot"
    );
    assert_eq!(
        counted(second),
        (PER_STORM as u64, 0),
        "the second, in the storm map"
    );
    let reported = rstwatch::pipeline::storm::StormTally::new().read(&storms);
    let mut counts: Vec<u64> = reported.iter().map(|storm| storm.count).collect();
    counts.sort_unstable();
    assert_eq!(counts, [PER_STORM as u64 - 1, PER_STORM as u64]);
}

#[test]
fn a_storm_in_the_map_counted_on_a_second_cpu_carries_that_cpus_first_reset() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        cpus >= 2,
        "this test needs two CPUs, the machine offers {cpus}"
    );
    let probe = Probe::load(KernelConfig {
        settings: Settings {
            unknown_rsts_per_sec: 1,
            ..Settings::default()
        },
        ..config()
    });
    let key_of = |third: u8| StormKey {
        sender_prefix: ipv4_mapped([198, 18, third, 0]),
        sender_port: 443,
        family: FAMILY_IPV4,
        direction: DIRECTION_INGRESS,
        _pad: [0; 4],
    };
    // Storm `mapped` shares its slot with storm `slotted`, which takes the slot first on each
    // CPU: `mapped` is counted in the storm map, whose entry the first CPU makes.
    let slotted = 1u8;
    let mapped = (2..=255u8)
        .find(|&third| {
            key_of(third).slot(STORM_SLOTS_LOG2) == key_of(slotted).slot(STORM_SLOTS_LOG2)
        })
        .expect("two /24s sharing a slot among 255");
    let rst = |third: u8, host: u8, port: u16| {
        v4(
            Ipv4Addr::new(198, 18, third, host),
            CLIENT,
            50,
            1,
            tcp(443, port, RST, 1, 0),
        )
    };
    let mut sent_by_cpu = Vec::new();
    for (cpu, host) in [(0usize, 10u8), (1, 20)] {
        move_to_cpu(cpu);
        // The first unknown RST of a CPU's second is sent as an event, the rest aggregated.
        probe.ingress(&rst(slotted, 1, 20000));
        probe.ingress(&rst(slotted, 2, 20001));
        for i in 0..3u16 {
            probe.ingress(&rst(mapped, host + i as u8, 30000 + i));
        }
        sent_by_cpu.push((cpu, Ipv4Addr::new(198, 18, mapped, host)));
    }
    let storms = probe.kernel.storms().expect("reading the storm counts");
    let (_, per_cpu) = storms
        .iter()
        .find(|(key, _)| *key == key_of(mapped))
        .unwrap_or_else(|| panic!("no storm from 198.18.{mapped}.0: {storms:?}"));
    for (cpu, first_sender) in sent_by_cpu {
        let counted = &per_cpu[cpu];
        assert_eq!(counted.resets, 3, "CPU {cpu}: {counted:?}");
        assert_ne!(
            counted.first_ns, 0,
            "CPU {cpu} started its count: {counted:?}"
        );
        assert_eq!(
            counted.sample.src_addr,
            ipv4_mapped(first_sender.octets()),
            "CPU {cpu} keeps its own first reset as the sample"
        );
        assert_eq!(counted.sample.src_port, 443, "CPU {cpu}");
    }
    let reported = rstwatch::pipeline::storm::StormTally::new().read(&storms);
    let storm = reported
        .iter()
        .find(|storm| storm.count == 6)
        .unwrap_or_else(|| panic!("the mapped storm's 6 resets in one aggregate: {reported:?}"));
    assert_eq!(storm.sample.pkt.src_port, 443);
    assert_ne!(storm.first_ns, 0);
}
