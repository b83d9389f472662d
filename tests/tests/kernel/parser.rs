//! The shared parser under BPF_PROG_TEST_RUN: every VLAN and IP header variant parses and
//! is tracked, and what is not tracked (cut, mangled, not TCP, fragments) is counted under one
//! reason and passed.

use aya::programs::TestRun;
use rstwatch::kernel::KernelConfig;
use rstwatch_common::{
    event::DIRECTION_INGRESS,
    packet::{ipv4_mapped, FAMILY_IPV4, FAMILY_IPV6, NO_WINDOW_SCALE},
    Counter, EventKind, FlowKey, Settings,
};
use rstwatch_tests::{
    frames::{
        flags::{ACK, RST, SYN},
        Extension, Frame, Ipv4, Ipv6, Network, Tcp, TcpOption, Transport, Vlan,
    },
    probe::{
        assert_counts, assert_refused, config, ip_ids, key, key4, run_options,
        skb_test_run_accepts, syn, syn_ack, tcp, tracked, v4, v6, Probe, C, CLIENT, CLIENT6,
        ETH_HLEN, HTTP, LOOPBACK_IFINDEX, S, SERVER, SERVER6,
    },
};

// Parsing: every header variant

/// A SYN (with window scale) then a RST with a 3-byte payload from the client, through XDP:
/// checks the flow key, the RST's own fields in its event and the SYN's window scale.
#[test]
fn every_vlan_and_ip_header_variant_parses_and_tracks() {
    struct Case {
        name: &'static str,
        vlans: Vec<Vlan>,
        expected_vlan: u16,
        /// IPv4 options, or IPv6 extension headers.
        ip: IpCase,
    }
    enum IpCase {
        V4(Vec<u8>),
        V6(Vec<Extension>),
    }
    let first_fragment = Extension::Fragment {
        offset: 0,
        more: true,
    };
    // Record route with room for nine addresses: with the NOPs, the largest IHL (15 words).
    let record_route = {
        let mut o = vec![1, 1, 1, 7, 37, 4];
        o.resize(40, 0);
        o
    };
    let cases = vec![
        Case {
            name: "untagged IPv4",
            vlans: vec![],
            expected_vlan: 0,
            ip: IpCase::V4(vec![]),
        },
        Case {
            name: "802.1Q IPv4",
            vlans: vec![Vlan::dot1q(42)],
            expected_vlan: 42,
            ip: IpCase::V4(vec![]),
        },
        Case {
            name: "802.1ad outer VLAN, 802.1Q inner",
            vlans: vec![Vlan::dot1ad(7), Vlan::dot1q(42)],
            expected_vlan: 42,
            ip: IpCase::V4(vec![]),
        },
        Case {
            name: "two 802.1Q tags",
            vlans: vec![Vlan::dot1q(4000), Vlan::dot1q(43)],
            expected_vlan: 43,
            ip: IpCase::V4(vec![]),
        },
        Case {
            name: "IPv4 with 40 bytes of options, two tags",
            vlans: vec![Vlan::dot1ad(7), Vlan::dot1q(44)],
            expected_vlan: 44,
            ip: IpCase::V4(record_route),
        },
        Case {
            name: "IPv4 with a router-alert option",
            vlans: vec![],
            expected_vlan: 0,
            ip: IpCase::V4(vec![0x94, 4, 0, 0]),
        },
        Case {
            name: "plain IPv6",
            vlans: vec![],
            expected_vlan: 0,
            ip: IpCase::V6(vec![]),
        },
        Case {
            name: "IPv6 hop-by-hop",
            vlans: vec![],
            expected_vlan: 0,
            ip: IpCase::V6(vec![Extension::HopByHop(0)]),
        },
        Case {
            name: "IPv6 routing",
            vlans: vec![],
            expected_vlan: 0,
            ip: IpCase::V6(vec![Extension::Routing(2)]),
        },
        Case {
            name: "IPv6 destination options",
            vlans: vec![Vlan::dot1q(45)],
            expected_vlan: 45,
            ip: IpCase::V6(vec![Extension::DestinationOptions(1)]),
        },
        Case {
            name: "IPv6 first fragment",
            vlans: vec![],
            expected_vlan: 0,
            ip: IpCase::V6(vec![first_fragment]),
        },
        Case {
            name: "IPv6 chain of four, two tags",
            vlans: vec![Vlan::dot1ad(8), Vlan::dot1q(46)],
            expected_vlan: 46,
            ip: IpCase::V6(vec![
                Extension::HopByHop(1),
                Extension::DestinationOptions(0),
                Extension::Routing(1),
                first_fragment,
            ]),
        },
        Case {
            name: "IPv6 chain of six, the parser's bound",
            vlans: vec![],
            expected_vlan: 0,
            ip: IpCase::V6(vec![
                Extension::HopByHop(0),
                Extension::DestinationOptions(0),
                Extension::Routing(0),
                first_fragment,
                Extension::DestinationOptions(3),
                Extension::DestinationOptions(0),
            ]),
        },
    ];

    // With VLAN IDs in the flow key, the key shows the tag the parser took.
    let mut probe = Probe::load(KernelConfig {
        settings: Settings {
            vlan_key: 1,
            ..Settings::default()
        },
        ..config()
    });
    for (i, case) in cases.iter().enumerate() {
        let client_port = 41000 + i as u16;
        let window_scale = 1 + i as u8;
        let what = case.name;
        let rst = Tcp {
            window: 0,
            payload: b"bye".to_vec(),
            ..tcp(client_port, HTTP, RST | ACK, 0x0102_0304, 0xa0b0_c0d0)
        };
        let (syn_frame, rst_frame, key) = match &case.ip {
            IpCase::V4(options) => {
                let frame = |tcp: Tcp, ttl: u8, id: u16, df: bool| {
                    Frame::new(Network::Ipv4(Ipv4 {
                        ttl,
                        id,
                        dont_fragment: df,
                        options: options.clone(),
                        ..Ipv4::new(CLIENT, SERVER, Transport::Tcp(tcp))
                    }))
                    .with_vlans(&case.vlans)
                };
                (
                    frame(
                        syn(client_port, HTTP, 0x0102_0303, window_scale),
                        64,
                        9,
                        true,
                    ),
                    frame(rst, 33, 0xbeef, false),
                    key(
                        (CLIENT.into(), client_port),
                        (SERVER.into(), HTTP),
                        case.expected_vlan,
                    ),
                )
            }
            IpCase::V6(extensions) => {
                let frame = |tcp: Tcp, hop_limit: u8| {
                    Frame::new(Network::Ipv6(Ipv6 {
                        hop_limit,
                        extensions: extensions.clone(),
                        ..Ipv6::new(CLIENT6, SERVER6, Transport::Tcp(tcp))
                    }))
                    .with_vlans(&case.vlans)
                };
                (
                    frame(syn(client_port, HTTP, 0x0102_0303, window_scale), 64),
                    frame(rst, 33),
                    key(
                        (CLIENT6.into(), client_port),
                        (SERVER6.into(), HTTP),
                        case.expected_vlan,
                    ),
                )
            }
        };
        let mut inserted = tracked(false);
        inserted.push((Counter::FlowsInserted, 1));
        assert_counts(&probe.ingress(&syn_frame), &inserted, what);
        let mut rst_counts = tracked(true);
        rst_counts.push((Counter::EventsSent, 1));
        assert_counts(&probe.ingress(&rst_frame), &rst_counts, what);

        let flow = probe.expect_flow(&key);
        assert_eq!(flow.packets(), 2, "{what}");
        assert_eq!(flow.originator(), C, "{what}: the client sent the SYN");
        assert_eq!(flow.dir[C as usize].window_scale, window_scale, "{what}");
        assert_eq!(flow.dir[S as usize].window_scale, NO_WINDOW_SCALE, "{what}");
        if case.expected_vlan != 0 {
            let untagged = FlowKey { vlan: 0, ..key };
            assert!(probe.flow(&untagged).is_none(), "{what}: VLAN not in key");
        }

        let events = probe.events();
        assert_eq!(events.len(), 1, "{what}: one event per RST");
        let e = &events[0];
        assert_eq!(EventKind::from_u8(e.kind), Some(EventKind::Rst), "{what}");
        assert_eq!(e.key, key, "{what}");
        assert_eq!((e.direction, e.dir), (DIRECTION_INGRESS, C), "{what}");
        assert_eq!(e.ifindex, LOOPBACK_IFINDEX, "{what}");
        let p = &e.pkt;
        assert_eq!(p.src_port, client_port, "{what}");
        assert_eq!(p.dst_port, HTTP, "{what}");
        assert_eq!(p.seq, 0x0102_0304, "{what}");
        assert_eq!(p.ack, 0xa0b0_c0d0, "{what}");
        assert_eq!(p.tcp_flags, RST | ACK, "{what}");
        assert_eq!(p.window, 0, "{what}");
        assert_eq!(p.payload_len, 3, "{what}: TCP payload only");
        assert_eq!(p.vlan, case.expected_vlan, "{what}");
        assert_eq!(p.ttl, 33, "{what}");
        assert_eq!(p.window_scale, NO_WINDOW_SCALE, "{what}: not a SYN");
        match case.ip {
            IpCase::V4(_) => {
                assert_eq!(p.family, FAMILY_IPV4, "{what}");
                assert_eq!(p.src_addr, ipv4_mapped(CLIENT.octets()), "{what}");
                assert_eq!(p.dst_addr, ipv4_mapped(SERVER.octets()), "{what}");
                assert_eq!((p.ip_id, p.df), (0xbeef, 0), "{what}");
                assert_eq!(
                    ip_ids(&flow, C),
                    vec![9],
                    "{what}: the RST's IP ID is not kept"
                );
            }
            IpCase::V6(_) => {
                assert_eq!(p.family, FAMILY_IPV6, "{what}");
                assert_eq!(p.src_addr, CLIENT6.octets(), "{what}");
                assert_eq!(p.dst_addr, SERVER6.octets(), "{what}");
                assert_eq!((p.ip_id, p.df), (0, 0), "{what}");
                assert_eq!(ip_ids(&flow, C), Vec::<u16>::new(), "{what}");
            }
        }
        assert_eq!(
            e.flow.dir[C as usize].window_scale, window_scale,
            "{what}: snapshot"
        );
    }
    assert_eq!(probe.flow_count(), cases.len());
}

#[test]
fn three_vlan_tags_are_counted_too_deep_and_passed() {
    let probe = Probe::new();
    let frame = v4(CLIENT, SERVER, 64, 1, syn(40000, HTTP, 1, 7)).with_vlans(&[
        Vlan::dot1ad(1),
        Vlan::dot1q(2),
        Vlan::dot1q(3),
    ]);
    probe.both_count(
        &frame,
        &[(Counter::Packets, 1), (Counter::VlanTooDeep, 1)],
        "three tags",
    );
    assert_eq!(probe.flow_count(), 0);
}

/// The window-scale option is found wherever it sits in a SYN's options, and not after an
/// end-of-list; the advertised window is scaled once both sides offered scaling.
#[test]
fn syn_window_scale_is_found_anywhere_in_the_options() {
    let probe = Probe::new();
    let nops = |n: usize| vec![TcpOption::Nop; n];
    let cases: Vec<(&str, Vec<TcpOption>, u8)> = vec![
        ("alone", vec![TcpOption::WindowScale(3)], 3),
        (
            "after NOPs",
            [nops(3), vec![TcpOption::WindowScale(5)]].concat(),
            5,
        ),
        ("Linux order", TcpOption::linux_syn(7), 7),
        (
            "in the last three of 40 option bytes",
            [
                vec![
                    TcpOption::Mss(1460),
                    TcpOption::SackPermitted,
                    TcpOption::Timestamps(1, 0),
                ],
                nops(21),
                vec![TcpOption::WindowScale(14)],
            ]
            .concat(),
            14,
        ),
        (
            "after end-of-list",
            vec![
                TcpOption::Mss(1460),
                TcpOption::EndOfList,
                TcpOption::WindowScale(5),
            ],
            NO_WINDOW_SCALE,
        ),
        ("MSS only", vec![TcpOption::Mss(1460)], NO_WINDOW_SCALE),
        ("no options", vec![], NO_WINDOW_SCALE),
    ];
    for (i, (what, options, expected)) in cases.into_iter().enumerate() {
        let port = 42000 + i as u16;
        let frame = v4(
            CLIENT,
            SERVER,
            64,
            1,
            Tcp {
                options,
                ..tcp(port, HTTP, SYN, 1, 0)
            },
        );
        probe.ingress(&frame);
        let flow = probe.expect_flow(&key4(CLIENT, port, SERVER, HTTP));
        assert_eq!(flow.dir[C as usize].window_scale, expected, "{what}");
    }

    // Both offer scaling: later windows are shifted by the sender's own shift (RFC 7323 2.3).
    let port = 43000;
    let key = key4(CLIENT, port, SERVER, HTTP);
    probe.ingress(&v4(CLIENT, SERVER, 64, 1, syn(port, HTTP, 100, 7)));
    probe.ingress(&v4(
        SERVER,
        CLIENT,
        64,
        1,
        Tcp {
            window: 1000,
            ..syn_ack(HTTP, port, 900, 101, 2)
        },
    ));
    let flow = probe.expect_flow(&key);
    assert_eq!(
        flow.dir[S as usize].window(),
        1000,
        "a SYN's window is never scaled"
    );
    probe.ingress(&v4(
        CLIENT,
        SERVER,
        64,
        2,
        Tcp {
            window: 100,
            ..tcp(port, HTTP, ACK, 101, 901)
        },
    ));
    let flow = probe.expect_flow(&key);
    assert_eq!(flow.dir[C as usize].window(), 100 << 7);

    // Only the client offers scaling: nobody scales.
    let port = 43001;
    let key = key4(CLIENT, port, SERVER, HTTP);
    probe.ingress(&v4(CLIENT, SERVER, 64, 1, syn(port, HTTP, 100, 7)));
    probe.ingress(&v4(
        SERVER,
        CLIENT,
        64,
        1,
        tcp(HTTP, port, SYN | ACK, 900, 101),
    ));
    probe.ingress(&v4(
        CLIENT,
        SERVER,
        64,
        2,
        Tcp {
            window: 100,
            ..tcp(port, HTTP, ACK, 101, 901)
        },
    ));
    assert_eq!(probe.expect_flow(&key).dir[C as usize].window(), 100);
}

/// Ethernet pads short frames to 60 bytes: the padding is not TCP payload.
#[test]
fn ethernet_padding_is_not_payload() {
    let mut probe = Probe::new();
    let mut frame = v4(CLIENT, SERVER, 64, 1, tcp(40000, HTTP, RST, 5, 0)).bytes();
    assert_eq!(frame.len(), 54);
    frame.resize(60, 0);
    probe.ingress_bytes(&frame);
    let events = probe.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].pkt.payload_len, 0);
}

// Parsing: what is not tracked is counted under one reason and passed

/// Cuts `frame` after every byte from the Ethernet header on: each piece is passed and
/// counted `truncated`, and nothing enters the flow table.
fn assert_every_truncation_counted(frame: &Frame) {
    let probe = Probe::new();
    let bytes = frame.bytes();
    let expected = [(Counter::Packets, 1), (Counter::Truncated, 1)];
    for len in ETH_HLEN..bytes.len() {
        let cut = &bytes[..len];
        let what = format!("cut at {len} of {}", bytes.len());
        assert_counts(
            &probe.ingress_bytes(cut),
            &expected,
            &format!("{what} (XDP)"),
        );
        if skb_test_run_accepts(cut) {
            assert_counts(&probe.egress_bytes(cut), &expected, &format!("{what} (TC)"));
        }
    }
    assert_eq!(probe.flow_count(), 0, "a truncated frame made a flow");
    let mut whole = tracked(false);
    whole.push((Counter::FlowsInserted, 1));
    assert_counts(&probe.ingress_bytes(&bytes), &whole, "the whole frame");
}

fn truncation_syn() -> Tcp {
    Tcp {
        options: TcpOption::linux_syn(7),
        ..tcp(40000, HTTP, SYN, 1, 0)
    }
}

fn truncation_v4() -> Frame {
    Frame::new(Network::Ipv4(Ipv4 {
        options: vec![0x94, 4, 0, 0, 1, 1, 1, 1],
        ..Ipv4::new(CLIENT, SERVER, Transport::Tcp(truncation_syn()))
    }))
}

fn truncation_v6() -> Frame {
    v6(
        CLIENT6,
        SERVER6,
        &[
            Extension::HopByHop(0),
            Extension::DestinationOptions(1),
            Extension::Routing(0),
            Extension::Fragment {
                offset: 0,
                more: true,
            },
        ],
        truncation_syn(),
    )
}

#[test]
fn ipv4_frame_cut_anywhere_in_its_headers_is_counted_truncated() {
    assert_every_truncation_counted(&truncation_v4());
    assert_every_truncation_counted(
        &truncation_v4().with_vlans(&[Vlan::dot1ad(7), Vlan::dot1q(42)]),
    );
}

#[test]
fn ipv6_frame_cut_anywhere_in_its_headers_is_counted_truncated() {
    assert_every_truncation_counted(&truncation_v6());
    assert_every_truncation_counted(&truncation_v6().with_vlans(&[Vlan::dot1q(42)]));
}

/// BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header, so the truncation tests
/// start at 14 bytes; real drivers drop such runts before XDP too.
#[test]
fn runts_shorter_than_an_ethernet_header_never_reach_the_programs() {
    let probe = Probe::new();
    let bytes = v4(CLIENT, SERVER, 64, 1, truncation_syn()).bytes();
    for len in 0..ETH_HLEN {
        let cut = &bytes[..len];
        let xdp = probe.kernel.xdp().test_run(run_options(cut));
        let tc = probe.kernel.tc().test_run(run_options(cut));
        assert_refused(&xdp, &format!("XDP, {len} bytes"));
        assert_refused(&tc, &format!("TC, {len} bytes"));
    }
    assert_counts(&probe.counters(), &[], "runts");
}

#[test]
fn udp_icmp_and_arp_are_counted_not_tcp_or_not_ip() {
    let probe = Probe::new();
    let not_tcp = [(Counter::Packets, 1), (Counter::NotTcp, 1)];
    let not_ip = [(Counter::Packets, 1), (Counter::NotIp, 1)];
    let udp = || Transport::udp(5353, 53, b"query");
    let cases = [
        (
            "UDP over IPv4",
            Frame::new(Network::Ipv4(Ipv4::new(CLIENT, SERVER, udp()))),
            &not_tcp,
        ),
        (
            "ICMP echo",
            Frame::new(Network::Ipv4(Ipv4::new(
                CLIENT,
                SERVER,
                Transport::icmp_echo(),
            ))),
            &not_tcp,
        ),
        (
            "UDP over IPv6",
            Frame::new(Network::Ipv6(Ipv6::new(CLIENT6, SERVER6, udp()))),
            &not_tcp,
        ),
        (
            "ICMPv6 echo behind hop-by-hop",
            Frame::new(Network::Ipv6(Ipv6 {
                extensions: vec![Extension::HopByHop(0)],
                ..Ipv6::new(CLIENT6, SERVER6, Transport::icmpv6_echo())
            })),
            &not_tcp,
        ),
        (
            "ARP request",
            Frame::new(Network::Arp(CLIENT, SERVER)),
            &not_ip,
        ),
        (
            "tagged ARP request",
            Frame::new(Network::Arp(CLIENT, SERVER)).with_vlans(&[Vlan::dot1q(42)]),
            &not_ip,
        ),
    ];
    for (what, frame, expected) in cases {
        probe.both_count(&frame, expected, what);
    }
    assert_eq!(probe.flow_count(), 0);
}

#[test]
fn non_first_fragments_are_skipped_first_fragments_tracked() {
    let probe = Probe::new();
    let skipped = [(Counter::Packets, 1), (Counter::NonFirstFragment, 1)];
    let data = || Tcp {
        payload: vec![0xaa; 64],
        ..tcp(40000, HTTP, ACK, 1, 1)
    };
    let later_v4 = Frame::new(Network::Ipv4(Ipv4 {
        fragment_offset: 185,
        dont_fragment: false,
        ..Ipv4::new(CLIENT, SERVER, Transport::Tcp(data()))
    }));
    probe.both_count(&later_v4, &skipped, "IPv4 fragment at offset 1480");
    let last_v4_udp = Frame::new(Network::Ipv4(Ipv4 {
        fragment_offset: 1,
        dont_fragment: false,
        ..Ipv4::new(CLIENT, SERVER, Transport::udp(1, 2, b""))
    }));
    probe.both_count(&last_v4_udp, &skipped, "IPv4 UDP fragment at offset 8");
    let later_v6 = v6(
        CLIENT6,
        SERVER6,
        &[
            Extension::HopByHop(0),
            Extension::Fragment {
                offset: 181,
                more: true,
            },
        ],
        data(),
    );
    probe.both_count(&later_v6, &skipped, "IPv6 fragment at offset 1448");
    assert_eq!(probe.flow_count(), 0);

    let first_v4 = Frame::new(Network::Ipv4(Ipv4 {
        more_fragments: true,
        dont_fragment: false,
        ..Ipv4::new(CLIENT, SERVER, Transport::Tcp(data()))
    }));
    let mut inserted = tracked(false);
    inserted.push((Counter::FlowsInserted, 1));
    assert_counts(&probe.ingress(&first_v4), &inserted, "IPv4 first fragment");
    let first_v6 = v6(
        CLIENT6,
        SERVER6,
        &[Extension::Fragment {
            offset: 0,
            more: true,
        }],
        data(),
    );
    assert_counts(&probe.ingress(&first_v6), &inserted, "IPv6 first fragment");
    let flow = probe.expect_flow(&key((CLIENT6.into(), 40000), (SERVER6.into(), HTTP), 0));
    assert_eq!(
        flow.dir[C as usize].bytes, 64,
        "fragment header is not payload"
    );
}

#[test]
fn ipv6_chain_longer_than_six_headers_is_counted_too_long() {
    let probe = Probe::new();
    let seven = [Extension::DestinationOptions(0); 7];
    probe.both_count(
        &v6(CLIENT6, SERVER6, &seven, truncation_syn()),
        &[(Counter::Packets, 1), (Counter::Ipv6ChainTooLong, 1)],
        "seven extension headers",
    );
    assert_eq!(probe.flow_count(), 0);
    let mut inserted = tracked(false);
    inserted.push((Counter::FlowsInserted, 1));
    assert_counts(
        &probe.ingress(&v6(CLIENT6, SERVER6, &seven[..6], truncation_syn())),
        &inserted,
        "six extension headers",
    );
}

#[test]
fn bad_ihl_ip_version_and_tcp_data_offset_are_counted_bad_header() {
    let probe = Probe::new();
    let bad = [(Counter::Packets, 1), (Counter::BadHeader, 1)];
    let ipv4 = |ip: Ipv4| Frame::new(Network::Ipv4(ip));
    let plain = || Ipv4::new(CLIENT, SERVER, Transport::Tcp(truncation_syn()));
    let doff = |words: u8| Tcp {
        data_offset: Some(words),
        ..tcp(40000, HTTP, ACK, 1, 1)
    };
    let cases = [
        (
            "IHL 4",
            ipv4(Ipv4 {
                ihl: Some(4),
                ..plain()
            }),
        ),
        (
            "IHL 0",
            ipv4(Ipv4 {
                ihl: Some(0),
                ..plain()
            }),
        ),
        (
            "version 6 in an IPv4 ethertype",
            ipv4(Ipv4 {
                version: Some(6),
                ..plain()
            }),
        ),
        (
            "version 4 in an IPv6 ethertype",
            Frame::new(Network::Ipv6(Ipv6 {
                version: Some(4),
                ..Ipv6::new(CLIENT6, SERVER6, Transport::Tcp(truncation_syn()))
            })),
        ),
        ("TCP data offset 4", v4(CLIENT, SERVER, 64, 1, doff(4))),
        ("TCP data offset 0", v4(CLIENT, SERVER, 64, 1, doff(0))),
        (
            "TCP data offset 4 over IPv6",
            v6(CLIENT6, SERVER6, &[], doff(4)),
        ),
    ];
    for (what, frame) in cases {
        probe.both_count(&frame, &bad, what);
    }
    assert_eq!(probe.flow_count(), 0);
}

/// Counting invariant under garbage: every frame is passed and counted as a TCP packet or
/// under exactly one reason, whatever its bytes.
#[test]
fn mangled_frames_are_passed_and_counted_under_one_reason() {
    let probe = Probe::new();
    let reasons = [
        Counter::TcpPackets,
        Counter::NotIp,
        Counter::NotTcp,
        Counter::Truncated,
        Counter::BadHeader,
        Counter::NonFirstFragment,
        Counter::VlanTooDeep,
        Counter::Ipv6ChainTooLong,
    ];
    let seeds = [
        v4(CLIENT, SERVER, 64, 1, truncation_syn()).with_vlans(&[Vlan::dot1q(1)]),
        v6(
            CLIENT6,
            SERVER6,
            &[Extension::HopByHop(0), Extension::Routing(0)],
            truncation_syn(),
        ),
    ];
    // xorshift64: reproducible without a dependency.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..2000 {
        let mut bytes = seeds[round % seeds.len()].bytes();
        for _ in 0..1 + next() % 4 {
            let at = ETH_HLEN - 2 + (next() as usize) % (bytes.len() - ETH_HLEN + 2);
            bytes[at] = next() as u8;
        }
        bytes.truncate(ETH_HLEN + (next() as usize) % (bytes.len() - ETH_HLEN + 1));
        let mut runs = vec![("XDP", probe.ingress_bytes(&bytes))];
        // A frame the kernel refuses to test-run is checked as refused by `egress_bytes`.
        let tc = probe.egress_bytes(&bytes);
        if skb_test_run_accepts(&bytes) {
            runs.push(("TC", tc));
        }
        for (hook, d) in runs {
            let counted: u64 = reasons.iter().map(|r| d.get(*r)).sum();
            assert_eq!(d.get(Counter::Packets), 1, "{hook}: {bytes:02x?}");
            assert_eq!(counted, 1, "{hook}: {} for {bytes:02x?}", d.describe());
        }
    }
}
