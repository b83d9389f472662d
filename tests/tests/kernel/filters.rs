//! The kernel-side port and network filters under BPF_PROG_TEST_RUN.

use std::net::{Ipv4Addr, Ipv6Addr};

use rstwatch::{cidr::Cidr, kernel::KernelConfig};
use rstwatch_common::Counter;
use rstwatch_tests::{
    frames::{flags::ACK, Frame},
    probe::{
        assert_counts, config, tcp, v4, v6, Probe, CLIENT, CLIENT6, HTTP, OUTSIDER, OUTSIDER6,
        SERVER, SERVER6,
    },
};

fn cidrs(nets: &[&str]) -> Vec<Cidr> {
    nets.iter()
        .map(|n| n.parse().expect("a valid CIDR"))
        .collect()
}

/// Runs `frame` and checks it was filtered out (no flow) or tracked into a new flow.
fn assert_selected(probe: &Probe, frame: &Frame, selected: bool, what: &str) {
    let expected: &[(Counter, u64)] = if selected {
        &[
            (Counter::Packets, 1),
            (Counter::TcpPackets, 1),
            (Counter::FlowsInserted, 1),
        ]
    } else {
        &[
            (Counter::Packets, 1),
            (Counter::TcpPackets, 1),
            (Counter::Filtered, 1),
        ]
    };
    let flows = probe.flow_count();
    assert_counts(&probe.ingress(frame), expected, what);
    assert_eq!(probe.flow_count(), flows + usize::from(selected), "{what}");
}

#[test]
fn port_filter_keeps_either_side_and_drops_the_rest() {
    let probe = Probe::load(KernelConfig {
        ports: vec![443, 8443],
        ..config()
    });
    let ack = |src_port: u16, dst_port: u16| tcp(src_port, dst_port, ACK, 1, 1);
    let cases = [
        ("to 443", v4(CLIENT, SERVER, 64, 1, ack(40000, 443)), true),
        ("from 443", v4(SERVER, CLIENT, 64, 1, ack(443, 40001)), true),
        ("to 8443", v4(CLIENT, SERVER, 64, 1, ack(40002, 8443)), true),
        (
            "IPv6 from 8443",
            v6(SERVER6, CLIENT6, &[], ack(8443, 40003)),
            true,
        ),
        ("to 80", v4(CLIENT, SERVER, 64, 1, ack(40004, 80)), false),
        (
            "IPv6 to 444",
            v6(CLIENT6, SERVER6, &[], ack(40005, 444)),
            false,
        ),
        (
            "to 4430",
            v4(CLIENT, SERVER, 64, 1, ack(40006, 4430)),
            false,
        ),
    ];
    for (what, frame, selected) in cases {
        assert_selected(&probe, &frame, selected, what);
    }
}

#[test]
fn net_filter_keeps_either_side_in_v4_and_v6_networks() {
    let probe = Probe::load(KernelConfig {
        nets: cidrs(&["10.1.0.0/16", "2001:db8:1::/48"]),
        ..config()
    });
    let ack = |src_port: u16| tcp(src_port, HTTP, ACK, 1, 1);
    let cases = [
        (
            "v4 source inside",
            v4(CLIENT, OUTSIDER, 64, 1, ack(40000)),
            true,
        ),
        (
            "v4 destination inside",
            v4(OUTSIDER, SERVER, 64, 1, ack(40001)),
            true,
        ),
        (
            "v4 neither",
            v4(OUTSIDER, Ipv4Addr::new(10, 2, 0, 1), 64, 1, ack(40002)),
            false,
        ),
        (
            "v6 source inside",
            v6(CLIENT6, OUTSIDER6, &[], ack(40003)),
            true,
        ),
        (
            "v6 destination inside",
            v6(OUTSIDER6, SERVER6, &[], ack(40004)),
            true,
        ),
        (
            "v6 neither",
            v6(OUTSIDER6, Ipv6Addr::LOCALHOST, &[], ack(40005)),
            false,
        ),
    ];
    for (what, frame, selected) in cases {
        assert_selected(&probe, &frame, selected, what);
    }
}

#[test]
fn port_and_net_filters_together_must_both_match() {
    let probe = Probe::load(KernelConfig {
        ports: vec![443],
        nets: cidrs(&["10.1.2.0/24"]),
        ..config()
    });
    let ack = |src_port: u16, dst_port: u16| tcp(src_port, dst_port, ACK, 1, 1);
    let cases = [
        (
            "port and net",
            v4(CLIENT, OUTSIDER, 64, 1, ack(40000, 443)),
            true,
        ),
        (
            "port, not net",
            v4(OUTSIDER, Ipv4Addr::new(10, 1, 3, 1), 64, 1, ack(40001, 443)),
            false,
        ),
        (
            "net, not port",
            v4(CLIENT, SERVER, 64, 1, ack(40002, 80)),
            false,
        ),
        (
            "IPv6, port only",
            v6(CLIENT6, SERVER6, &[], ack(40003, 443)),
            false,
        ),
    ];
    for (what, frame, selected) in cases {
        assert_selected(&probe, &frame, selected, what);
    }
}
