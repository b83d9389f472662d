//! The presence filter under BPF_PROG_TEST_RUN: a key a flow table holds always has its bit
//! set in the active generation, through rebuilds and while flows are inserted during them,
//! and a rebuild clears the bits of flows the tables no longer hold.

use std::{sync::mpsc, thread};

use rstwatch::{kernel::KernelConfig, presence::PresenceFilter};
use rstwatch_common::{event::EventKind, Counter, FlowKey};
use rstwatch_tests::{
    frames::flags::{ACK, PSH, RST},
    probe::{config, key4, stay_on_this_cpu, syn, syn_ack, tcp, v4, Probe, CLIENT, HTTP, SERVER},
};

const TABLE: u32 = 1024;

fn small_tables() -> Probe {
    Probe::load(KernelConfig {
        flows: TABLE,
        ..config()
    })
}

/// A data packet from the client on port `port`: a new flow in the main table.
fn data(probe: &Probe, port: u16) {
    let segment = tcp(port, HTTP, PSH | ACK, 1, 1);
    probe.ingress(&v4(CLIENT, SERVER, 64, 1, segment));
}

#[test]
fn an_established_flow_keeps_its_state_through_rebuilds_while_others_are_evicted() {
    let mut probe = small_tables();
    let mut filter = probe.kernel.presence_filter().expect("the presence filter");
    let port = 40000;
    let key = key4(CLIENT, port, SERVER, HTTP);
    probe.ingress(&v4(CLIENT, SERVER, 64, 1, syn(port, HTTP, 1000, 7)));
    probe.ingress(&v4(
        SERVER,
        CLIENT,
        64,
        1,
        syn_ack(HTTP, port, 5000, 1001, 7),
    ));
    probe.ingress(&v4(CLIENT, SERVER, 64, 2, tcp(port, HTTP, ACK, 1001, 5001)));
    assert!(filter.may_hold(&key).unwrap(), "a new flow's bit is set");

    // Three tables' worth of other flows, the established one kept recent among them.
    let others: Vec<u16> = (0..3 * TABLE as u16).map(|i| 1000 + i).collect();
    for (i, &other) in others.iter().enumerate() {
        data(&probe, other);
        if i % 128 == 0 {
            probe.ingress(&v4(CLIENT, SERVER, 64, 3, tcp(port, HTTP, ACK, 1001, 5001)));
        }
    }
    let held = probe.flow_keys();
    let evicted: Vec<_> = others
        .iter()
        .map(|&p| key4(CLIENT, p, SERVER, HTTP))
        .filter(|k| !held.contains(k))
        .collect();
    assert!(evicted.len() >= TABLE as usize, "{} evicted", evicted.len());
    let set = |filter: &PresenceFilter, keys: &[FlowKey]| {
        keys.iter().filter(|k| filter.may_hold(k).unwrap()).count()
    };
    assert_eq!(
        set(&filter, &evicted),
        evicted.len(),
        "bits are only cleared by rebuilds"
    );

    // Both generations rebuilt: the held flows keep their bits, most evicted ones lose them.
    filter.rebuild().expect("first rebuild");
    let rebuilt = filter.rebuild().expect("second rebuild");
    assert_eq!(rebuilt, held.len() as u64, "a rebuild counts the held keys");
    assert_eq!(
        filter.count().unwrap(),
        held.len() as u64,
        "the count walks both tables"
    );
    assert_eq!(
        set(&filter, &held),
        held.len(),
        "every held key has its bit"
    );
    let stale = set(&filter, &evicted) as f64 / evicted.len() as f64;
    assert!(stale < 0.3, "{stale:.2} of evicted keys still set");

    probe.ingress(&v4(
        SERVER,
        CLIENT,
        64,
        9,
        tcp(HTTP, port, RST | ACK, 5001, 1001),
    ));
    let events = probe.events();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(EventKind::from_u8(events[0].kind), Some(EventKind::Rst));
    assert_eq!(events[0].key, key);
    assert!(
        events[0].flow.packets() >= 3,
        "the RST carries the established flow's state: {:?}",
        events[0].flow
    );
}

#[test]
fn flows_inserted_while_the_filter_is_rebuilt_keep_their_bits() {
    const ROUNDS: u16 = 12;
    const PER_ROUND: u16 = 400;
    let probe = small_tables();
    let reader = probe.kernel.presence_filter().expect("the presence filter");
    let mut rebuilder = probe.kernel.presence_filter().expect("the presence filter");
    let (go, rebuild) = mpsc::channel::<()>();
    let (rebuilt, done) = mpsc::channel();
    let worker = thread::spawn(move || {
        stay_on_this_cpu();
        for () in rebuild {
            rebuilt.send(rebuilder.rebuild()).expect("the test waits");
        }
    });
    for round in 0..ROUNDS {
        // A rebuild runs while this thread inserts flows on its own CPU.
        go.send(()).unwrap();
        for i in 0..PER_ROUND {
            data(&probe, 1000 + round * PER_ROUND + i);
        }
        done.recv().unwrap().expect("a rebuild");
        let held = probe.flow_keys();
        let missing = held.iter().filter(|k| !reader.may_hold(k).unwrap()).count();
        assert_eq!(missing, 0, "round {round}: held keys without their bit");
    }
    drop(go);
    worker.join().unwrap();
    let c = probe.counters();
    assert_eq!(
        c.get(Counter::FlowsInserted),
        u64::from(ROUNDS * PER_ROUND),
        "{}",
        c.describe()
    );
}
