//! The capture replay (`rstwatch explain FILE`) against the kernel: the same frames through
//! XDP and through `rstwatch::offline::replay::Replay`, the same events (kind, packet, whether they
//! carry the flow's state), the same counts and the same storms. Both call the same decisions
//! in `rstwatch_common`; this checks what each keeps around them, where things are stored.

use std::net::Ipv4Addr;

use rstwatch::{
    cidr::Cidr,
    kernel::{Counters, KernelConfig},
    offline::capture::{
        headers::decode_ip,
        link::{link_type, network_start},
    },
    offline::replay::{PacketFilter, Replay},
};
use rstwatch_common::{
    event::DIRECTION_INGRESS, Counter, EventKind, PacketMeta, PortSet, RstEvent, SeenAt, Settings,
    StormCount, StormKey,
};
use rstwatch_tests::{
    frames::{
        flags::{ACK, PSH, RST},
        Frame, Tcp,
    },
    probe::{
        config, syn, syn_ack, tcp, v4, Probe, CLIENT, HTTP, LOOPBACK_IFINDEX, OUTSIDER, SERVER,
    },
};

static SERVER_PORTS: PortSet = PortSet::LIKELY_SERVERS;
/// Outside `--net 10.1.2.0/24` as `OUTSIDER` is.
const FAR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

/// The counters `Replay::packet` keeps (the frame-level ones are the capture reader's).
const COMPARED: [Counter; 10] = [
    Counter::TcpPackets,
    Counter::Rsts,
    Counter::Filtered,
    Counter::FlowsInserted,
    Counter::FlowsRecycled,
    Counter::FollowUpsSuppressed,
    Counter::RstsAggregated,
    Counter::SynsUntracked,
    Counter::StormMapFull,
    Counter::FlowsEvicted,
];

/// What an event says, for the comparison: its kind, its packet and whether it carries the
/// flow's state.
fn said(event: &RstEvent) -> (Option<EventKind>, PacketMeta, bool) {
    (
        EventKind::from_u8(event.kind),
        event.pkt,
        event.flow.packets() > 0,
    )
}

fn counts(counters: &Counters) -> Vec<(Counter, u64)> {
    COMPARED.iter().map(|&c| (c, counters.get(c))).collect()
}

/// Runs `frames` through the kernel (XDP, a microsecond apart at most: well within one
/// second and one grace period) and through a replay with the same settings and filters,
/// the capture 1 µs between packets, and checks that both did the same. Returns what the
/// kernel did: its events, counts and storms.
fn assert_alike(config: KernelConfig, frames: &[Frame], what: &str) -> Done {
    let mut probe = Probe::load(config.clone());
    let mut replay = Replay::new(
        config.settings,
        PacketFilter::new(&config.ports, &config.nets),
        &SERVER_PORTS,
    );
    let seen = SeenAt {
        direction: DIRECTION_INGRESS,
        ifindex: LOOPBACK_IFINDEX,
    };
    let mut replayed = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        probe.ingress(frame);
        let bytes = frame.bytes();
        let start = network_start(link_type::ETHERNET, &bytes).expect("an Ethernet frame");
        let mut pkt = PacketMeta::default();
        let ip = &bytes[start.offset..];
        decode_ip(start.network, ip, ip.len(), start.vlan, &mut pkt).expect("a TCP segment");
        let now = 1_000_000_000 + i as u64 * 1_000;
        replay.packet(&pkt, now, seen, |event| replayed.push(event));
    }
    let kernel: Vec<_> = probe.events().iter().map(said).collect();
    let replayed: Vec<_> = replayed.iter().map(said).collect();
    assert_eq!(kernel, replayed, "{what}: the same events");
    assert_eq!(
        counts(&probe.counters()),
        counts(&replay.counters()),
        "{what}: the same counts"
    );
    let resets = |storms: Vec<(StormKey, Vec<StormCount>)>| {
        let mut resets: Vec<_> = storms
            .into_iter()
            .map(|(key, per_cpu)| (key, per_cpu.iter().map(|c| c.resets).sum::<u64>()))
            .filter(|(_, resets)| *resets > 0)
            .collect();
        resets.sort_by_key(|(key, _)| (key.sender_prefix, key.sender_port));
        resets
    };
    let storms = resets(probe.kernel.storms().expect("reading the storm counts"));
    assert_eq!(storms, resets(replay.storms()), "{what}: the same storms");
    Done {
        events: kernel,
        counters: probe.counters(),
        storms: storms.len(),
    }
}

/// What the kernel did with the frames.
struct Done {
    events: Vec<(Option<EventKind>, PacketMeta, bool)>,
    counters: Counters,
    storms: usize,
}

/// A RST from `sender`'s `port` to `CLIENT`.
fn rst_from(sender: Ipv4Addr, port: u16, seq: u32) -> Frame {
    v4(sender, CLIENT, 50, 9, tcp(port, 40_000, RST, seq, 0))
}

#[test]
fn packets_of_flows_the_table_does_not_hold_fare_alike_in_the_kernel_and_the_replay() {
    let config = KernelConfig {
        settings: Settings {
            followup_limit: 2,
            unknown_rsts_per_sec: 3,
            half_open_per_sec: 2,
            ..Settings::default()
        },
        ..config()
    };
    let data = |seq: u32| {
        v4(
            OUTSIDER,
            CLIENT,
            50,
            10,
            Tcp {
                payload: vec![1; 10],
                ..tcp(443, 40_000, PSH | ACK, seq, 1)
            },
        )
    };
    let frames = [
        // An unknown RST, reported alone; two more are its follow-ups, the third is one too
        // many.
        rst_from(OUTSIDER, 443, 7000),
        rst_from(OUTSIDER, 443, 7001),
        rst_from(OUTSIDER, 443, 7002),
        rst_from(OUTSIDER, 443, 7003),
        // Data from the RST's sender: beyond the follow-up limit, and it starts the flow.
        data(7000),
        // The flow is held now: its RST carries the flow's state.
        rst_from(OUTSIDER, 443, 7010),
        // Two more unknown RSTs within the budget of three, then a storm of three.
        rst_from(SERVER, 80, 1),
        rst_from(SERVER, 81, 1),
        rst_from(SERVER, 82, 1),
        rst_from(SERVER, 83, 1),
        rst_from(SERVER, 1083, 1),
        // Bare SYNs beyond the half-open budget of two go untracked; a SYN-ACK is no bare SYN.
        v4(CLIENT, SERVER, 64, 1, syn(41_000, HTTP, 1, 7)),
        v4(CLIENT, SERVER, 64, 1, syn(41_001, HTTP, 1, 7)),
        v4(CLIENT, SERVER, 64, 1, syn(41_002, HTTP, 1, 7)),
        v4(SERVER, CLIENT, 64, 1, syn_ack(HTTP, 41_003, 1, 2, 7)),
    ];
    let done = assert_alike(config, &frames, "unheld packets");
    let events: Vec<_> = done
        .events
        .iter()
        .map(|(kind, pkt, with_state)| (*kind, pkt.seq, *with_state))
        .collect();
    let (rst, followup) = (Some(EventKind::Rst), Some(EventKind::FollowUp));
    assert_eq!(
        events,
        [
            (rst, 7000, false),
            (followup, 7001, false),
            (followup, 7002, false),
            (rst, 7010, true),
            (rst, 1, false),
            (rst, 1, false),
        ]
    );
    for (counter, count) in [
        (Counter::FollowUpsSuppressed, 2),
        (Counter::RstsAggregated, 3),
        (Counter::SynsUntracked, 1),
        (Counter::FlowsInserted, 4),
    ] {
        assert_eq!(done.counters.get(counter), count, "{counter:?}");
    }
    assert_eq!(done.storms, 3, "three storms");
}

#[test]
fn the_filters_select_alike_in_the_kernel_and_the_replay() {
    let nets: Vec<Cidr> = vec!["10.1.2.0/24".parse().expect("a valid CIDR")];
    for (ports, nets) in [
        (vec![443], vec![]),
        (vec![], nets.clone()),
        (vec![443, 80], nets),
    ] {
        let config = KernelConfig {
            ports: ports.clone(),
            nets: nets.clone(),
            ..config()
        };
        let frames = [
            rst_from(OUTSIDER, 443, 1),
            v4(OUTSIDER, FAR, 50, 9, tcp(443, 40_000, RST, 2, 0)),
            v4(OUTSIDER, FAR, 50, 9, tcp(80, 40_000, RST, 3, 0)),
            rst_from(OUTSIDER, 80, 4),
            rst_from(OUTSIDER, 8080, 5),
            v4(OUTSIDER, SERVER, 64, 1, syn(40_001, 8080, 1, 7)),
            v4(FAR, OUTSIDER, 64, 1, syn(40_002, 443, 1, 7)),
        ];
        let what = format!("--port {ports:?} --net {nets:?}");
        let done = assert_alike(config, &frames, &what);
        let filtered = done.counters.get(Counter::Filtered);
        assert!(filtered > 0 && filtered < frames.len() as u64, "{what}");
    }
}
