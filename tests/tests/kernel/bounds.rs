//! Bounds under BPF_PROG_TEST_RUN: the flow table and the ring buffer never outgrow their size,
//! and every lost event, lost update and torn read is counted.

use rstwatch::kernel::KernelConfig;
use rstwatch_common::Counter;
use rstwatch_tests::{
    frames::flags::{ACK, RST},
    probe::{config, key4, syn, tcp, v4, Probe, CLIENT, HTTP, SERVER},
};

#[test]
fn flow_table_never_exceeds_its_bound_and_keeps_the_newest_flows() {
    const BOUND: u32 = 1024;
    const FLOWS: u32 = 3 * BOUND;
    /// Flows that must survive: a set gives up its oldest opening flow, so a flow is evicted
    /// only by four newer ones of its set, which the last sixteenth of the bound hardly
    /// holds (0.2 % chance that one set gets five of them).
    const NEWEST: u32 = BOUND / 16;
    let probe = Probe::load(KernelConfig {
        flows: BOUND,
        ..config()
    });
    let port = |i: u32| 20000 + i as u16;
    for i in 0..FLOWS {
        probe.ingress(&v4(CLIENT, SERVER, 64, 1, syn(port(i), HTTP, i, 7)));
        if i % 256 == 255 {
            let count = probe.flow_count();
            assert!(
                count <= BOUND as usize,
                "{count} flows after {} inserts",
                i + 1
            );
        }
    }
    let c = probe.counters();
    assert_eq!(
        c.get(Counter::FlowsInserted),
        FLOWS as u64,
        "{}",
        c.describe()
    );
    assert!(probe.flow_count() <= BOUND as usize);
    assert_eq!(
        c.get(Counter::FlowsEvicted),
        u64::from(FLOWS) - probe.flow_count() as u64,
        "every flow no longer held was counted as evicted: {}",
        c.describe()
    );
    assert_eq!(c.get(Counter::EstablishedEvicted), 0);
    for i in FLOWS - NEWEST..FLOWS {
        assert!(
            probe.flow(&key4(CLIENT, port(i), SERVER, HTTP)).is_some(),
            "flow {i} (one of the newest {NEWEST}) was evicted"
        );
    }
}

#[test]
fn a_full_ring_buffer_counts_every_lost_event() {
    const RSTS: u16 = 100;
    let mut probe = Probe::load(KernelConfig {
        ring_bytes: 4096,
        ..config()
    });
    for port in 0..RSTS {
        probe.ingress(&v4(
            CLIENT,
            SERVER,
            64,
            1,
            tcp(30000 + port, HTTP, RST, 1, 0),
        ));
    }
    let c = probe.counters();
    let (sent, lost) = (c.get(Counter::EventsSent), c.get(Counter::EventsLost));
    assert_eq!(c.get(Counter::Rsts), RSTS as u64);
    assert!(
        lost > 0,
        "a 4 KiB ring cannot hold {RSTS} events: {}",
        c.describe()
    );
    assert_eq!(sent + lost, RSTS as u64, "{}", c.describe());
    let events = probe.events();
    assert_eq!(events.len() as u64, sent);
    let ports: Vec<_> = events.iter().map(|e| e.pkt.src_port).collect();
    let first: Vec<_> = (30000..30000 + sent as u16).collect();
    assert_eq!(ports, first, "the first events are the ones delivered");

    // Drained, the ring takes events again.
    probe.ingress(&v4(CLIENT, SERVER, 64, 1, tcp(39999, HTTP, RST, 1, 0)));
    assert_eq!(probe.events().len(), 1);
}

/// A slot another CPU keeps locked: the packet, a RST included, is counted as a lost update
/// and not reported; the daemon's read of the slot is counted as torn and gives no state.
/// Once the lock is released, the flow is tracked and read again, its state intact.
#[test]
fn a_busy_slot_counts_lost_updates_and_torn_reads_and_nothing_else() {
    let mut probe = Probe::new();
    let port = 41000;
    let key = key4(CLIENT, port, SERVER, HTTP);
    probe.ingress(&v4(CLIENT, SERVER, 64, 1, syn(port, HTTP, 1000, 7)));
    assert_eq!(probe.expect_flow(&key).packets(), 1);

    assert!(probe.kernel.hold_slot_lock(&key, true), "the flow's slot");
    let rst = v4(SERVER, CLIENT, 64, 1, tcp(HTTP, port, RST | ACK, 0, 1001));
    let c = probe.ingress(&rst);
    assert_eq!(c.get(Counter::FlowUpdatesLost), 1, "{}", c.describe());
    assert_eq!(c.get(Counter::RstUpdatesLost), 1, "{}", c.describe());
    assert_eq!(c.get(Counter::EventsSent), 0, "{}", c.describe());
    assert!(probe.events().is_empty());
    assert!(
        probe.kernel.flow(&key).is_err(),
        "a torn read gives no state"
    );
    assert_eq!(probe.kernel.torn_reads(), 1);

    assert!(probe.kernel.hold_slot_lock(&key, false));
    probe.ingress(&rst);
    assert_eq!(probe.events().len(), 1, "the next RST is reported");
    let flow = probe.expect_flow(&key);
    assert_eq!(
        flow.packets(),
        2,
        "the SYN and the second RST: the lost one left no trace"
    );
    assert_eq!(probe.kernel.torn_reads(), 1);
}
