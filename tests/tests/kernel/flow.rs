//! Flow tracking and events under BPF_PROG_TEST_RUN: handshakes, data, FIN and RST go into the
//! flow table, each RST and its follow-ups reach the ring buffer, and flows start over when
//! they should.

use std::{thread::sleep, time::Duration};

use rstwatch::kernel::KernelConfig;
use rstwatch_common::{
    event::{DIRECTION_EGRESS, DIRECTION_INGRESS},
    flow::{origin, seen, seq_fingerprint, HISTORY_FROM_HIGH},
    packet::ipv4_mapped,
    Counter, EventKind, FlowKey, Settings,
};
use rstwatch_tests::{
    frames::{
        flags::{ACK, FIN, PSH, RST, SYN},
        Tcp, Vlan,
    },
    probe::{
        assert_counts, config, history, ip_ids, key4, oldest_kernel_config, syn, syn_ack, tcp,
        tracked, v4, Probe, C, CLIENT, HTTP, H_ACK, H_DATA, H_FIN, H_MULTI_FLAG, H_RETRANSMIT,
        H_RST, H_SYN, H_SYN_ACK, H_ZERO_WINDOW, LOOPBACK_IFINDEX, S, SERVER,
    },
};

/// The client (10.1.2.3:40000, TTL 64, IP IDs from 100) talks to the server (10.1.2.1:80,
/// TTL 58, IP IDs from 500); the server's side sends a RST with a foreign TTL after the
/// client's FIN, then data and a second RST with another sequence number.
#[test]
fn handshake_data_fin_rst_and_followups_are_tracked_and_reported() {
    a_whole_conversation_is_tracked_and_reported(Probe::new());
}

/// The same with every fallback Linux 5.10 needs: the fine clock for budgets, the frame
/// copied without a helper.
#[test]
fn handshake_data_fin_rst_and_followups_are_tracked_with_the_oldest_kernels_fallbacks() {
    a_whole_conversation_is_tracked_and_reported(Probe::load(oldest_kernel_config()));
}

fn a_whole_conversation_is_tracked_and_reported(mut probe: Probe) {
    let port = 40000;
    let key = key4(CLIENT, port, SERVER, HTTP);
    assert_eq!(
        key.addr[0],
        ipv4_mapped(SERVER.octets()),
        "server sorts first"
    );
    let from_client = |id: u16, tcp: Tcp| v4(CLIENT, SERVER, 64, id, tcp);
    let from_server = |ttl: u8, id: u16, tcp: Tcp| v4(SERVER, CLIENT, ttl, id, tcp);
    let data = |tcp: Tcp, len: usize| Tcp {
        payload: vec![0x55; len],
        ..tcp
    };
    let window = |tcp: Tcp, window: u16| Tcp { window, ..tcp };

    let inserted = [
        (Counter::Packets, 1),
        (Counter::TcpPackets, 1),
        (Counter::FlowsInserted, 1),
    ];
    let c = probe.ingress(&from_client(100, syn(port, HTTP, 1000, 7)));
    assert_counts(&c, &inserted, "SYN");
    let steps = [
        from_server(58, 500, window(syn_ack(HTTP, port, 5000, 1001, 9), 65160)),
        from_client(101, window(tcp(port, HTTP, ACK, 1001, 5001), 502)),
        from_client(
            102,
            window(data(tcp(port, HTTP, PSH | ACK, 1001, 5001), 100), 502),
        ),
        from_server(
            58,
            501,
            window(data(tcp(HTTP, port, PSH | ACK, 5001, 1101), 300), 509),
        ),
        from_client(103, window(tcp(port, HTTP, FIN | ACK, 1101, 5301), 502)),
    ];
    assert!(probe.is_half_open(&key), "a SYN's flow has only opened");
    for (i, frame) in steps.iter().enumerate() {
        let what = match i {
            1 => "the handshake's ACK completes it",
            _ => "handshake and data",
        };
        assert_counts(&probe.ingress(frame), &tracked(false), what);
        assert_eq!(probe.is_half_open(&key), i == 0, "{what}");
    }
    assert!(probe.events().is_empty(), "no RST yet, no event");

    let before_rst = probe.expect_flow(&key);
    let rst = from_server(250, 0, window(tcp(HTTP, port, RST | ACK, 5301, 1102), 0));
    let mut sent = tracked(true);
    sent.push((Counter::EventsSent, 1));
    assert_counts(&probe.ingress(&rst), &sent, "first RST");

    let late_data = from_server(
        58,
        502,
        window(data(tcp(HTTP, port, PSH | ACK, 5301, 1102), 40), 509),
    );
    let mut followup = tracked(false);
    followup.push((Counter::EventsSent, 1));
    assert_counts(&probe.ingress(&late_data), &followup, "data after RST");

    let client_ack = from_client(104, window(tcp(port, HTTP, ACK, 1102, 5341), 502));
    assert_counts(
        &probe.ingress(&client_ack),
        &tracked(false),
        "the other side's ACK is no follow-up",
    );

    let before_second_rst = probe.expect_flow(&key);
    let second_rst = from_server(250, 0, window(tcp(HTTP, port, RST, 9999, 0), 0));
    assert_counts(&probe.ingress(&second_rst), &sent, "second RST");

    // The events: the RST with the state just before it, then two follow-ups.
    let events = probe.events();
    assert_eq!(events.len(), 3, "{events:#?}");
    let kinds: Vec<_> = events.iter().map(|e| EventKind::from_u8(e.kind)).collect();
    assert_eq!(
        kinds,
        [
            Some(EventKind::Rst),
            Some(EventKind::FollowUp),
            Some(EventKind::FollowUp)
        ]
    );
    for e in &events {
        assert_eq!(e.key, key);
        assert_eq!((e.direction, e.dir), (DIRECTION_INGRESS, S));
        assert_eq!(e.ifindex, LOOPBACK_IFINDEX);
    }
    assert_eq!(events[0].flow, before_rst, "RST snapshot");
    // Payload after the RST only adds its own packet to the evidence: no state is sent.
    assert_eq!(
        events[1].flow.packets(),
        0,
        "a data follow-up carries no snapshot"
    );
    assert_eq!(
        events[2].flow, before_second_rst,
        "a later RST carries the state before it"
    );
    let p = &events[0].pkt;
    assert_eq!(
        (p.ttl, p.ip_id, p.df, p.seq, p.ack, p.tcp_flags, p.window),
        (250, 0, 1, 5301, 1102, RST | ACK, 0)
    );
    assert_eq!(events[1].pkt.payload_len, 40);
    assert_eq!((events[2].pkt.seq, events[2].pkt.tcp_flags), (9999, RST));
    assert!(events[0].ts_ns < events[1].ts_ns && events[1].ts_ns < events[2].ts_ns);

    // The flow as it stands.
    let flow = probe.expect_flow(&key);
    assert_eq!((flow.originator(), flow.origin()), (C, origin::SYN));
    let from_high = HISTORY_FROM_HIGH;
    assert_eq!(
        history(&flow),
        [
            H_SYN | from_high,
            H_SYN_ACK,
            H_ACK | from_high,
            H_DATA | from_high,
            H_DATA,
            H_FIN | from_high,
            H_RST,
            H_RST,
        ],
        "Zeek history ShADdFrr: the second RST has another sequence number"
    );
    let client = &flow.dir[C as usize];
    assert_eq!(
        client.seen & seen::HISTORY_MASK,
        seen::SYN | seen::ACK | seen::DATA | seen::FIN
    );
    assert!(client.has(seen::SEQ_KNOWN) && client.has(seen::ACK_KNOWN));
    assert_eq!((client.pkts, client.bytes), (5, 100));
    assert_eq!(client.ttl, 64);
    assert_eq!(ip_ids(&flow, C), [101, 102, 103, 104]);
    assert_eq!(client.next_seq, 1102, "FIN takes one sequence number");
    assert_eq!(client.max_ack, 5341);
    assert_eq!(client.window_scale, 7);
    assert_eq!(client.window(), 502 << 7);
    assert!(!client.has(seen::RST));

    let server = &flow.dir[S as usize];
    assert_eq!(
        server.seen & seen::HISTORY_MASK,
        seen::SYN_ACK | seen::DATA | seen::RST
    );
    assert_eq!((server.pkts, server.bytes), (5, 340));
    assert_eq!(server.ttl, 58, "RSTs do not move the genuine TTL");
    assert_eq!(
        ip_ids(&flow, S),
        [500, 501, 502],
        "RSTs' IP IDs are not kept"
    );
    assert_eq!(server.next_seq, 5341);
    assert_eq!(server.max_ack, 1102);
    assert_eq!(server.window_scale, 9);
    assert_eq!(
        server.window(),
        509 << 9,
        "the RST's zero window is not kept"
    );
    assert_eq!(
        server.history_rst_seq,
        seq_fingerprint(9999),
        "the last RST's"
    );

    assert!(flow.syn_ns() > 0 && flow.syn_ns() == flow.first_ns(C as usize));
    assert_eq!(flow.start_ns, flow.syn_ns(), "the SYN starts the flow");
    assert!(flow.rtt_ns() > 0, "handshake RTT");
    assert!(flow.rtt_ns() < server.last_ns - flow.syn_ns());
    assert_eq!(flow.rst_ns(), flow.as_kept(events[0].ts_ns));
    assert_eq!(
        (flow.rst_dir(), flow.followups()),
        (S, 1),
        "data follow-ups are counted, RSTs are always sent"
    );
    assert!(client.last_ns < server.last_ns && client.gap_before_last_ns() > 0);
    assert_counts(
        &probe.counters(),
        &[
            (Counter::Packets, 10),
            (Counter::TcpPackets, 10),
            (Counter::Rsts, 2),
            (Counter::FlowsInserted, 1),
            (Counter::EventsSent, 3),
        ],
        "totals",
    );
}

/// A flow seen first through TC egress (the local client's SYN) and then through XDP ingress
/// (the SYN-ACK) is one flow with both directions.
#[test]
fn egress_syn_and_ingress_syn_ack_share_one_flow() {
    let mut probe = Probe::new();
    let port = 40000;
    let key = key4(CLIENT, port, SERVER, HTTP);
    probe.egress(&v4(CLIENT, SERVER, 64, 1, syn(port, HTTP, 1000, 7)));
    probe.ingress(&v4(
        SERVER,
        CLIENT,
        60,
        1,
        tcp(HTTP, port, SYN | ACK, 5000, 1001),
    ));
    probe.egress(&v4(CLIENT, SERVER, 64, 2, tcp(port, HTTP, ACK, 1001, 5001)));
    probe.ingress(&v4(SERVER, CLIENT, 60, 2, tcp(HTTP, port, RST, 5001, 0)));
    probe.egress(&v4(CLIENT, SERVER, 64, 3, tcp(port, HTTP, RST, 1001, 0)));

    assert_eq!(probe.flow_count(), 1);
    let flow = probe.expect_flow(&key);
    assert_eq!((flow.originator(), flow.origin()), (C, origin::SYN));
    assert_eq!(flow.dir[C as usize].pkts, 3);
    assert_eq!(flow.dir[S as usize].pkts, 2);
    assert!(flow.dir[S as usize].has(seen::SYN_ACK | seen::RST));
    assert!(flow.rtt_ns() > 0);
    let events = probe.events();
    let seen_as: Vec<_> = events
        .iter()
        .map(|e| (EventKind::from_u8(e.kind), e.direction, e.dir))
        .collect();
    assert_eq!(
        seen_as,
        [
            (Some(EventKind::Rst), DIRECTION_INGRESS, S),
            (Some(EventKind::FollowUp), DIRECTION_EGRESS, C),
        ]
    );
    assert_counts(
        &probe.counters(),
        &[
            (Counter::Packets, 5),
            (Counter::TcpPackets, 5),
            (Counter::Rsts, 2),
            (Counter::FlowsInserted, 1),
            (Counter::EventsSent, 2),
        ],
        "totals",
    );
}

/// Opens a connection from the client (port `port`) and resets it from the server.
fn handshake_then_server_rst(probe: &Probe, port: u16) {
    probe.ingress(&v4(CLIENT, SERVER, 64, 1, syn(port, HTTP, 1000, 7)));
    probe.ingress(&v4(
        SERVER,
        CLIENT,
        60,
        1,
        tcp(HTTP, port, SYN | ACK, 5000, 1001),
    ));
    probe.ingress(&v4(SERVER, CLIENT, 60, 2, tcp(HTTP, port, RST, 5001, 0)));
}

/// Data from the RST's sender is a follow-up up to the limit, then only counted; every RST is
/// sent, from either side and however many.
#[test]
fn data_followups_beyond_the_limit_are_counted_every_rst_is_sent() {
    let mut probe = Probe::load(KernelConfig {
        settings: Settings {
            followup_limit: 2,
            ..Settings::default()
        },
        ..config()
    });
    let port = 40000;
    handshake_then_server_rst(&probe, port);
    for i in 0..4u32 {
        let late = Tcp {
            payload: vec![1; 10],
            ..tcp(HTTP, port, PSH | ACK, 5001 + 10 * i, 1001)
        };
        probe.ingress(&v4(SERVER, CLIENT, 60, 3, late));
    }
    for i in 0..6u32 {
        probe.ingress(&v4(
            SERVER,
            CLIENT,
            60,
            0,
            tcp(HTTP, port, RST, 7777 + i, 0),
        ));
    }
    probe.ingress(&v4(CLIENT, SERVER, 64, 2, tcp(port, HTTP, RST, 1001, 0)));
    let client_data = Tcp {
        payload: vec![1; 10],
        ..tcp(port, HTTP, PSH | ACK, 1001, 5001)
    };
    probe.ingress(&v4(CLIENT, SERVER, 64, 2, client_data));

    let events = probe.events();
    let kinds: Vec<_> = events.iter().map(|e| EventKind::from_u8(e.kind)).collect();
    let mut expected = vec![Some(EventKind::Rst)];
    expected.extend([Some(EventKind::FollowUp); 2 + 6 + 1]);
    assert_eq!(kinds, expected);
    let rst_events = events.iter().filter(|e| e.pkt.is_rst()).count();
    let c = probe.counters();
    assert_eq!(
        rst_events as u64,
        c.get(Counter::Rsts),
        "every RST the programs saw was sent"
    );
    assert_eq!(c.get(Counter::Rsts), 8, "{}", c.describe());
    assert_eq!(c.get(Counter::FollowUpsSuppressed), 2, "{}", c.describe());
    assert_eq!(c.get(Counter::EventsSent), 10);
    assert_eq!(
        events.last().unwrap().dir,
        C,
        "the other side's RST is sent too"
    );
    assert_eq!(
        probe
            .expect_flow(&key4(CLIENT, port, SERVER, HTTP))
            .followups(),
        2
    );
}

#[test]
fn after_the_grace_period_the_flow_starts_over() {
    let grace = Duration::from_millis(200);
    let mut probe = Probe::load(KernelConfig {
        settings: Settings {
            grace_ns: grace.as_nanos() as u64,
            ..Settings::default()
        },
        ..config()
    });
    let port = 40000;
    let key = key4(CLIENT, port, SERVER, HTTP);
    handshake_then_server_rst(&probe, port);
    let late = |seq: u32| Tcp {
        payload: vec![1; 10],
        ..tcp(HTTP, port, PSH | ACK, seq, 1001)
    };
    probe.ingress(&v4(SERVER, CLIENT, 60, 3, late(5001)));
    assert_eq!(probe.counters().get(Counter::FlowsRecycled), 0);
    let events = probe.events();
    assert_eq!(
        events.len(),
        2,
        "RST and a follow-up within the grace period"
    );

    sleep(grace + Duration::from_millis(100));
    let c = probe.ingress(&v4(SERVER, CLIENT, 60, 4, late(5011)));
    let mut recycled = tracked(false);
    recycled.push((Counter::FlowsRecycled, 1));
    assert_counts(&c, &recycled, "first packet after the grace period");
    assert!(
        probe.events().is_empty(),
        "data on a fresh flow is no follow-up"
    );
    let flow = probe.expect_flow(&key);
    assert_eq!(flow.packets(), 1);
    assert_eq!((flow.rst_ns(), flow.syn_ns(), flow.rtt_ns()), (0, 0, 0));
    assert_eq!(
        (flow.originator(), flow.origin(), flow.flipped()),
        (C, origin::INFERRED, true),
        "data from the server's port 80 first: the roles flipped as Zeek flips them"
    );
    assert_eq!(history(&flow), [H_DATA]);
    assert_eq!(flow.dir[S as usize].bytes, 10);

    probe.ingress(&v4(CLIENT, SERVER, 64, 5, tcp(port, HTTP, RST, 1001, 0)));
    let events = probe.events();
    assert_eq!(events.len(), 1);
    assert_eq!(EventKind::from_u8(events[0].kind), Some(EventKind::Rst));
    assert_eq!(
        events[0].flow, flow,
        "the new RST's snapshot is the fresh flow"
    );
    assert_eq!(probe.counters().get(Counter::FlowsInserted), 1);
}

/// A new SYN on a 4-tuple that was reset opens a new flow at once; a retransmitted SYN before
/// any RST does not.
#[test]
fn a_new_syn_on_a_reset_four_tuple_starts_over_a_retransmitted_one_does_not() {
    let probe = Probe::new();
    let port = 40000;
    let key = key4(CLIENT, port, SERVER, HTTP);
    probe.ingress(&v4(CLIENT, SERVER, 64, 1, syn(port, HTTP, 1000, 7)));
    let c = probe.ingress(&v4(CLIENT, SERVER, 64, 2, syn(port, HTTP, 1000, 7)));
    assert_counts(&c, &tracked(false), "retransmitted SYN");
    assert_eq!(probe.expect_flow(&key).dir[C as usize].pkts, 2);

    probe.ingress(&v4(
        SERVER,
        CLIENT,
        60,
        1,
        tcp(HTTP, port, RST | ACK, 0, 1001),
    ));
    let c = probe.ingress(&v4(CLIENT, SERVER, 64, 3, syn(port, HTTP, 90000, 5)));
    let mut recycled = tracked(false);
    recycled.push((Counter::FlowsRecycled, 1));
    assert_counts(&c, &recycled, "new SYN after the RST");
    let flow = probe.expect_flow(&key);
    assert_eq!(flow.packets(), 1);
    assert_eq!(flow.dir[C as usize].next_seq, 90001);
    assert_eq!(flow.dir[C as usize].window_scale, 5);
}

/// A client retrying a refused connection with the very same SYN (same initial sequence
/// number, as a raw-socket client or a crossed retransmission does) opens a new connection:
/// its RST is a new flow's first RST, not a follow-up of the last one.
#[test]
fn a_syn_after_a_rst_starts_over_even_with_the_same_isn() {
    let mut probe = Probe::new();
    let port = 40000;
    let key = key4(CLIENT, port, SERVER, HTTP);
    let refused = tcp(HTTP, port, RST | ACK, 0, 1001);
    probe.ingress(&v4(CLIENT, SERVER, 64, 1, syn(port, HTTP, 1000, 7)));
    probe.ingress(&v4(SERVER, CLIENT, 64, 0, refused.clone()));
    let c = probe.ingress(&v4(CLIENT, SERVER, 64, 2, syn(port, HTTP, 1000, 7)));
    let mut recycled = tracked(false);
    recycled.push((Counter::FlowsRecycled, 1));
    assert_counts(&c, &recycled, "the same SYN after the RST");
    probe.ingress(&v4(SERVER, CLIENT, 64, 0, refused));

    let events = probe.events();
    let kinds: Vec<_> = events.iter().map(|e| EventKind::from_u8(e.kind)).collect();
    assert_eq!(kinds, [Some(EventKind::Rst), Some(EventKind::Rst)]);
    let second = &events[1].flow;
    assert_eq!(
        second.packets(),
        1,
        "the retry's snapshot holds its SYN only"
    );
    assert_eq!(history(second), [H_SYN | HISTORY_FROM_HIGH]);
    let flow = probe.expect_flow(&key);
    assert_eq!(history(&flow), [H_SYN | HISTORY_FROM_HIGH, H_RST]);
}

/// The rarer Zeek history letters: retransmitted data (t), a zero window (w), a SYN together
/// with a RST (q); and a TLS alert record opening a payload.
#[test]
fn retransmission_zero_window_syn_rst_and_tls_alert_are_noted() {
    let mut probe = Probe::new();
    let port = 40000;
    let key = key4(CLIENT, port, SERVER, HTTP);
    let data = |tcp: Tcp, payload: &[u8]| Tcp {
        payload: payload.to_vec(),
        ..tcp
    };
    let tls_alert = [21, 3, 3, 0, 2, 2, 40];
    let frames = [
        v4(CLIENT, SERVER, 64, 1, syn(port, HTTP, 1000, 7)),
        v4(SERVER, CLIENT, 60, 1, syn_ack(HTTP, port, 5000, 1001, 7)),
        v4(
            CLIENT,
            SERVER,
            64,
            2,
            data(tcp(port, HTTP, ACK, 1001, 5001), &[1; 10]),
        ),
        v4(
            CLIENT,
            SERVER,
            64,
            3,
            data(tcp(port, HTTP, ACK, 1001, 5001), &[1; 10]),
        ),
        v4(
            SERVER,
            CLIENT,
            60,
            2,
            Tcp {
                window: 0,
                ..tcp(HTTP, port, ACK, 5001, 1011)
            },
        ),
        v4(
            SERVER,
            CLIENT,
            60,
            3,
            data(tcp(HTTP, port, ACK, 5001, 1011), &tls_alert),
        ),
    ];
    for frame in &frames {
        probe.ingress(frame);
    }
    let flow = probe.expect_flow(&key);
    let from_high = HISTORY_FROM_HIGH;
    assert_eq!(
        history(&flow),
        [
            H_SYN | from_high,
            H_SYN_ACK,
            H_DATA | from_high,
            H_RETRANSMIT | from_high,
            H_ACK,
            H_ZERO_WINDOW,
            H_DATA,
        ],
        "Zeek history ShDTawd"
    );
    let client = &flow.dir[C as usize];
    assert_eq!((client.bytes, client.next_seq), (20, 1011));
    assert!(!client.has(seen::TLS_ALERT));
    let server = &flow.dir[S as usize];
    assert!(server.has(seen::TLS_ALERT));
    assert_eq!(flow.tls_alert_ns(S as usize), flow.as_kept(server.last_ns));

    let port = 40001;
    probe.ingress(&v4(CLIENT, SERVER, 64, 1, syn(port, HTTP, 1, 7)));
    probe.ingress(&v4(CLIENT, SERVER, 64, 2, tcp(port, HTTP, SYN | RST, 1, 0)));
    let flow = probe.expect_flow(&key4(CLIENT, port, SERVER, HTTP));
    assert_eq!(
        history(&flow),
        [H_SYN | from_high, H_MULTI_FLAG | from_high],
        "Zeek writes a SYN with a RST as q, after the SYN that opened the flow"
    );
    assert_eq!(probe.events().len(), 1, "a SYN with RST is a RST");
}

/// The originator is the SYN's sender; if the SYN was missed, the receiver of the SYN-ACK;
/// otherwise the first sender seen, marked inferred. A RST for a flow the table does not know
/// creates no entry and carries an empty snapshot.
#[test]
fn originator_comes_from_the_syn_the_syn_ack_or_is_inferred() {
    let mut probe = Probe::new();
    let unlikely = 4001;
    let cases = [
        (
            v4(CLIENT, SERVER, 64, 1, syn(40000, HTTP, 1, 7)),
            (40000, HTTP),
            (C, origin::SYN, false),
        ),
        (
            v4(SERVER, CLIENT, 60, 1, syn_ack(HTTP, 40001, 5000, 2, 7)),
            (40001, HTTP),
            (C, origin::SYN_ACK, true),
        ),
        (
            v4(SERVER, CLIENT, 60, 1, tcp(HTTP, 40002, ACK, 5000, 2)),
            (40002, HTTP),
            (C, origin::INFERRED, true),
        ),
        (
            v4(SERVER, CLIENT, 60, 1, tcp(unlikely, 40004, ACK, 5000, 2)),
            (40004, unlikely),
            (S, origin::INFERRED, false),
        ),
    ];
    for (frame, (port, server_port), expected) in cases {
        probe.ingress(&frame);
        let flow = probe.expect_flow(&key4(CLIENT, port, SERVER, server_port));
        assert_eq!(
            (flow.originator(), flow.origin(), flow.flipped()),
            expected,
            "port {port}: Zeek's heuristic flips a first packet from port 80, not from {unlikely}"
        );
    }
    assert!(probe.events().is_empty());
    probe.ingress(&v4(CLIENT, SERVER, 64, 1, tcp(40003, HTTP, RST, 2, 0)));
    assert!(probe.flow(&key4(CLIENT, 40003, SERVER, HTTP)).is_none());
    let events = probe.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].flow.packets(), 0, "never seen before the RST");
    assert_eq!(events[0].flow.history_len, 0);
    assert_eq!(
        (events[0].flow.originator(), events[0].flow.origin()),
        (C, origin::INFERRED)
    );
}

/// A handshake on `port` to the server's port 80, then a FIN from each side.
fn handshake_then_both_fins(probe: &Probe, port: u16) {
    let steps = [
        v4(CLIENT, SERVER, 64, 1, syn(port, HTTP, 1000, 7)),
        v4(SERVER, CLIENT, 60, 1, syn_ack(HTTP, port, 5000, 1001, 7)),
        v4(CLIENT, SERVER, 64, 2, tcp(port, HTTP, ACK, 1001, 5001)),
        v4(
            CLIENT,
            SERVER,
            64,
            3,
            tcp(port, HTTP, FIN | ACK, 1001, 5001),
        ),
        v4(
            SERVER,
            CLIENT,
            60,
            2,
            tcp(HTTP, port, FIN | ACK, 5001, 1002),
        ),
    ];
    for frame in &steps {
        probe.ingress(frame);
    }
}

/// Zeek's close delay: a flow closed by both sides ends after it (1 ns here, so at once); the
/// next packet of the 4-tuple, a RST, starts a new flow and meets no state. Within the delay
/// (the default 5 s) the same RST belongs to the closed flow.
#[test]
fn a_flow_closed_by_both_sides_starts_over_after_the_close_delay() {
    let mut ended = Probe::load(KernelConfig {
        settings: Settings {
            close_delay_ns: 1,
            ..Settings::default()
        },
        ..config()
    });
    let mut kept = Probe::new();
    let port = 40000;
    let late_rst = v4(SERVER, CLIENT, 60, 3, tcp(HTTP, port, RST, 5002, 0));
    for (probe, recycled) in [(&mut ended, 1), (&mut kept, 0)] {
        handshake_then_both_fins(probe, port);
        probe.ingress(&late_rst);
        assert_eq!(probe.counters().get(Counter::FlowsRecycled), recycled);
        let events = probe.events();
        assert_eq!(events.len(), 1);
        let before = events[0].flow;
        let flow = probe.expect_flow(&key4(CLIENT, port, SERVER, HTTP));
        if recycled == 1 {
            assert_eq!(before.packets(), 0, "the late RST meets no state");
            assert_eq!(flow.packets(), 1);
            assert_eq!(
                (flow.originator(), flow.flipped()),
                (C, true),
                "a lone RST from port 80: flipped, sent by the responder"
            );
        } else {
            assert_eq!(before.packets(), 5, "within the delay: the closed flow");
            assert_eq!(flow.packets(), 6);
        }
    }
}

/// With `vlan_key` off (the default) the two directions of a connection tagged with different
/// VLANs are one flow; with it on they are two.
#[test]
fn vlan_tags_are_part_of_the_flow_key_only_when_asked() {
    let port = 40000;
    let from_client =
        v4(CLIENT, SERVER, 64, 1, syn(port, HTTP, 1000, 7)).with_vlans(&[Vlan::dot1q(10)]);
    let from_server = v4(SERVER, CLIENT, 60, 1, syn_ack(HTTP, port, 5000, 1001, 7))
        .with_vlans(&[Vlan::dot1q(20)]);
    let ack =
        v4(CLIENT, SERVER, 64, 2, tcp(port, HTTP, ACK, 1001, 5001)).with_vlans(&[Vlan::dot1q(10)]);
    let untagged = key4(CLIENT, port, SERVER, HTTP);

    let probe = Probe::new();
    for frame in [&from_client, &from_server, &ack] {
        probe.ingress(frame);
    }
    let flow = probe.expect_flow(&untagged);
    assert_eq!(flow.dir[C as usize].pkts, 2);
    assert_eq!(flow.dir[S as usize].pkts, 1);
    assert_eq!(
        history(&flow).len(),
        3,
        "S h A: the whole handshake in one flow"
    );

    let probe = Probe::load(KernelConfig {
        settings: Settings {
            vlan_key: 1,
            ..Settings::default()
        },
        ..config()
    });
    for frame in [&from_client, &from_server, &ack] {
        probe.ingress(frame);
    }
    assert!(probe.flow(&untagged).is_none() && !probe.is_half_open(&untagged));
    let tagged = |vlan| FlowKey { vlan, ..untagged };
    let client_half = probe.expect_flow(&tagged(10));
    assert_eq!(
        (
            client_half.dir[C as usize].pkts,
            client_half.dir[S as usize].pkts
        ),
        (2, 0)
    );
    let server_half = probe.expect_flow(&tagged(20));
    assert_eq!(
        (
            server_half.dir[C as usize].pkts,
            server_half.dir[S as usize].pkts
        ),
        (0, 1)
    );
}
