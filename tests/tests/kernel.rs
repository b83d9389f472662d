//! The kernel programs under BPF_PROG_TEST_RUN: crafted frames go through the XDP (ingress)
//! and TC (egress) programs of a freshly loaded object, and each test reads back what the
//! kernel side made of them: counters, the flow table and the ring buffer's events.
//!
//! Run as root (`cargo test -p rstwatch-tests --test kernel`): a kernel that cannot load the
//! programs fails every test, nothing is skipped.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    thread::sleep,
    time::Duration,
};

use aya::{
    maps::{MapData, RingBuf},
    programs::{ProgramError, TestRun, TestRunOptions, TestRunResult},
};
use rstwatch::{
    filter::Cidr,
    kernel::{Counters, Kernel, KernelConfig},
};
use rstwatch_common::{
    event::{decode, DIRECTION_EGRESS, DIRECTION_INGRESS},
    flow::{origin, seen, DIR_FROM_HIGH, DIR_FROM_LOW, HISTORY_FROM_HIGH},
    packet::{ipv4_mapped, FAMILY_IPV4, FAMILY_IPV6, NO_WINDOW_SCALE},
    Counter, EventKind, FlowKey, FlowState, RstEvent, Settings, COUNTER_COUNT,
};
use rstwatch_tests::frames::{
    flags::{ACK, FIN, PSH, RST, SYN},
    Extension, Frame, Ipv4, Ipv6, Network, Tcp, TcpOption, Transport, Vlan,
};

const XDP_PASS: u32 = 2;
const TC_ACT_UNSPEC: i32 = -1;
/// Test runs happen on the loopback device of the caller's network namespace.
const LOOPBACK_IFINDEX: u32 = 1;
/// Ethernet header: the shortest frame BPF_PROG_TEST_RUN accepts.
const ETH_HLEN: usize = 14;
const EINVAL: i32 = 22;

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 3);
/// Sorts before `CLIENT`: the server is the flow key's low end.
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 1);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 3);
const SERVER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
const OUTSIDER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 9);
const OUTSIDER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 9, 0, 0, 0, 0, 9);
const HTTP: u16 = 80;

/// The client is `FlowKey` end 1 (its address sorts after the server's).
const C: u8 = DIR_FROM_HIGH;
const S: u8 = DIR_FROM_LOW;

/// Zeek history letter indices, as `FlowState::history` stores them.
const H_SYN: u8 = 0;
const H_SYN_ACK: u8 = 1;
const H_ACK: u8 = 2;
const H_DATA: u8 = 3;
const H_FIN: u8 = 4;
const H_RST: u8 = 5;
const H_RETRANSMIT: u8 = 6;
const H_ZERO_WINDOW: u8 = 7;
const H_MULTI_FLAG: u8 = 8;

/// A freshly loaded kernel side (its own maps), the ring buffer in the test's hands.
struct Probe {
    kernel: Kernel,
    events: RingBuf<MapData>,
}

impl Probe {
    fn load(config: KernelConfig) -> Self {
        let mut kernel = Kernel::load(&config).unwrap_or_else(|err| {
            panic!(
                "loading rstwatch's eBPF programs failed: {err:#}\n\
                 these tests need root on Linux >= 5.8 with BTF and BPF ring buffers"
            )
        });
        let events = kernel.take_events().expect("the EVENTS ring buffer");
        Self { kernel, events }
    }

    fn new() -> Self {
        Self::load(config())
    }

    /// Runs `frame` through XDP and returns what it changed in the counters.
    fn ingress(&self, frame: &Frame) -> Counters {
        self.ingress_bytes(&frame.bytes())
    }

    /// Runs `frame` through TC egress and returns what it changed in the counters.
    fn egress(&self, frame: &Frame) -> Counters {
        self.egress_bytes(&frame.bytes())
    }

    fn ingress_bytes(&self, bytes: &[u8]) -> Counters {
        let before = self.counters();
        let result = self
            .kernel
            .xdp()
            .test_run(run_options(bytes))
            .unwrap_or_else(|err| {
                panic!(
                    "XDP test run of {} bytes {bytes:02x?}: {err:?}",
                    bytes.len()
                )
            });
        assert_eq!(
            result.return_value,
            XDP_PASS,
            "XDP must pass every packet ({} bytes: {bytes:02x?})",
            bytes.len()
        );
        delta(&before, &self.counters())
    }

    fn egress_bytes(&self, bytes: &[u8]) -> Counters {
        let before = self.counters();
        if !skb_test_run_accepts(bytes) {
            let refused = self.kernel.tc().test_run(run_options(bytes));
            assert_refused(&refused, &format!("TC, {} bytes", bytes.len()));
            let unchanged = delta(&before, &self.counters());
            assert_counts(&unchanged, &[], "a frame the kernel refused to run");
            return unchanged;
        }
        let result = self
            .kernel
            .tc()
            .test_run(run_options(bytes))
            .unwrap_or_else(|err| {
                panic!("TC test run of {} bytes {bytes:02x?}: {err:?}", bytes.len())
            });
        assert_eq!(
            result.return_value as i32,
            TC_ACT_UNSPEC,
            "TC must leave every packet alone ({} bytes: {bytes:02x?})",
            bytes.len()
        );
        delta(&before, &self.counters())
    }

    /// Runs `frame` through both hooks; each run must be counted exactly as `expected`.
    fn both_count(&self, frame: &Frame, expected: &[(Counter, u64)], what: &str) {
        let bytes = frame.bytes();
        assert_counts(
            &self.ingress_bytes(&bytes),
            expected,
            &format!("{what} (XDP)"),
        );
        assert_counts(
            &self.egress_bytes(&bytes),
            expected,
            &format!("{what} (TC)"),
        );
    }

    fn counters(&self) -> Counters {
        self.kernel.counters().expect("reading COUNTERS")
    }

    fn flow(&self, key: &FlowKey) -> Option<FlowState> {
        self.kernel.flow(key).expect("looking up FLOWS")
    }

    fn expect_flow(&self, key: &FlowKey) -> FlowState {
        self.flow(key)
            .unwrap_or_else(|| panic!("no flow in the table for {key:?}"))
    }

    fn is_half_open(&self, key: &FlowKey) -> bool {
        self.kernel.is_half_open(key).expect("looking up HALF_OPEN")
    }

    fn flow_count(&self) -> usize {
        self.kernel.flow_count().expect("walking FLOWS")
    }

    /// Everything in the ring buffer, oldest first.
    fn events(&mut self) -> Vec<RstEvent> {
        let mut events = Vec::new();
        while let Some(item) = self.events.next() {
            events.push(decode(&item).expect("a ring-buffer record rstwatch cannot decode"));
        }
        events
    }
}

/// BPF_PROG_TEST_RUN for skb programs (kernel 6.18) refuses, with EINVAL and without running
/// the program, an untagged IPv4 or IPv6 frame too short for the fixed IP header. The stack
/// never hands TC egress such a packet either; the XDP runs cover those cuts.
fn skb_test_run_accepts(bytes: &[u8]) -> bool {
    let ip_header = match bytes.get(12..14) {
        Some([0x08, 0x00]) => 20,
        Some([0x86, 0xdd]) => 40,
        _ => 0,
    };
    bytes.len() >= ETH_HLEN + ip_header
}

/// Small tables: every test loads its own object, and the LRU map preallocates its entries.
fn config() -> KernelConfig {
    KernelConfig {
        flows: 4096,
        ring_bytes: 256 << 10,
        ..KernelConfig::default()
    }
}

fn run_options(bytes: &[u8]) -> TestRunOptions<'_> {
    TestRunOptions {
        data_in: Some(bytes),
        repeat: 1,
        ..TestRunOptions::default()
    }
}

/// The kernel turned the test run down (EINVAL) before running the program.
fn assert_refused(result: &Result<TestRunResult, ProgramError>, what: &str) {
    assert!(
        matches!(result, Err(ProgramError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(EINVAL)),
        "{what}: the kernel was expected to refuse the frame: {result:?}"
    );
}

fn delta(before: &Counters, after: &Counters) -> Counters {
    let mut d = [0u64; COUNTER_COUNT as usize];
    for (i, d) in d.iter_mut().enumerate() {
        *d = after.0[i] - before.0[i];
    }
    Counters(d)
}

/// `counters` holds exactly `expected`, every other counter zero.
fn assert_counts(counters: &Counters, expected: &[(Counter, u64)], what: &str) {
    for counter in Counter::ALL {
        let want = expected
            .iter()
            .find(|(c, _)| *c == counter)
            .map_or(0, |(_, n)| *n);
        assert_eq!(
            counters.get(counter),
            want,
            "{what}: counter {} (counted: {})",
            counter.name(),
            counters.describe()
        );
    }
}

/// What one tracked packet of an existing flow counts.
fn tracked(rst: bool) -> Vec<(Counter, u64)> {
    let mut c = vec![(Counter::Packets, 1), (Counter::TcpPackets, 1)];
    if rst {
        c.push((Counter::Rsts, 1));
    }
    c
}

/// The flow key the kernel should use, worked out independently of `FlowKey::fill_from`:
/// endpoints in ascending (address, port) order, IPv4 as IPv4-mapped IPv6.
fn key(a: (IpAddr, u16), b: (IpAddr, u16), vlan: u16) -> FlowKey {
    let mapped = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => ipv4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    };
    let family = if a.0.is_ipv4() {
        FAMILY_IPV4
    } else {
        FAMILY_IPV6
    };
    let (mut low, mut high) = ((mapped(a.0), a.1), (mapped(b.0), b.1));
    if high < low {
        (low, high) = (high, low);
    }
    FlowKey {
        addr: [low.0, high.0],
        port: [low.1, high.1],
        vlan,
        family,
        _pad: 0,
    }
}

fn key4(a: Ipv4Addr, a_port: u16, b: Ipv4Addr, b_port: u16) -> FlowKey {
    key((a.into(), a_port), (b.into(), b_port), 0)
}

fn tcp(src_port: u16, dst_port: u16, flags: u8, seq: u32, ack: u32) -> Tcp {
    Tcp {
        seq,
        ack,
        ..Tcp::new(src_port, dst_port, flags)
    }
}

fn syn(src_port: u16, dst_port: u16, seq: u32, window_scale: u8) -> Tcp {
    Tcp {
        options: TcpOption::linux_syn(window_scale),
        ..tcp(src_port, dst_port, SYN, seq, 0)
    }
}

fn syn_ack(src_port: u16, dst_port: u16, seq: u32, ack: u32, window_scale: u8) -> Tcp {
    Tcp {
        flags: SYN | ACK,
        ack,
        ..syn(src_port, dst_port, seq, window_scale)
    }
}

/// An IPv4 frame with the given TTL and IP ID.
fn v4(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, id: u16, tcp: Tcp) -> Frame {
    Frame::new(Network::Ipv4(Ipv4 {
        ttl,
        id,
        ..Ipv4::new(src, dst, Transport::Tcp(tcp))
    }))
}

fn v6(src: Ipv6Addr, dst: Ipv6Addr, extensions: &[Extension], tcp: Tcp) -> Frame {
    Frame::new(Network::Ipv6(Ipv6 {
        extensions: extensions.to_vec(),
        ..Ipv6::new(src, dst, Transport::Tcp(tcp))
    }))
}

fn history(flow: &FlowState) -> Vec<u8> {
    flow.history[..flow.history_len as usize].to_vec()
}

fn ip_ids(flow: &FlowState, dir: u8) -> Vec<u16> {
    let mut ids = Vec::new();
    flow.dir[dir as usize].recent_ip_ids(|id| ids.push(id));
    ids
}

// ---------------------------------------------------------------------------------------
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

    let mut probe = Probe::new();
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
        assert_eq!(flow.originator, C, "{what}: the client sent the SYN");
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
        flow.dir[S as usize].window, 1000,
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
    assert_eq!(flow.dir[C as usize].window, 100 << 7);

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
    assert_eq!(probe.expect_flow(&key).dir[C as usize].window, 100);
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

// ---------------------------------------------------------------------------------------
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

// ---------------------------------------------------------------------------------------
// Flow tracking and events

/// The client (10.1.2.3:40000, TTL 64, IP IDs from 100) talks to the server (10.1.2.1:80,
/// TTL 58, IP IDs from 500); the server's side sends a RST with a foreign TTL after the
/// client's FIN, then data and a second RST with another sequence number.
#[test]
fn handshake_data_fin_rst_and_followups_are_tracked_and_reported() {
    let mut probe = Probe::new();
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
    assert!(
        probe.is_half_open(&key),
        "a SYN waits in the half-open table"
    );
    let mut promoted = tracked(false);
    promoted.push((Counter::FlowsPromoted, 1));
    for (i, frame) in steps.iter().enumerate() {
        let (expected, what) = match i {
            1 => (&promoted, "the handshake's ACK promotes the flow"),
            _ => (&tracked(false), "handshake and data"),
        };
        assert_counts(&probe.ingress(frame), expected, what);
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
    assert_eq!((flow.originator, flow.origin), (C, origin::SYN));
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
    assert_eq!(client.window, 502 << 7);
    assert_eq!(client.rst_count, 0);

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
    assert_eq!(server.window, 509 << 9, "the RST's zero window is not kept");
    assert_eq!((server.rst_count, server.rst_seq), (2, 9999));

    assert!(flow.syn_ns > 0 && flow.syn_ns == client.first_ns);
    assert!(flow.rtt_ns > 0, "handshake RTT");
    assert!(flow.rtt_ns < server.last_ns - flow.syn_ns);
    assert_eq!(flow.rst_ns, events[0].ts_ns);
    assert_eq!(
        (flow.rst_dir, flow.followups),
        (S, 1),
        "data follow-ups are counted, RSTs are always sent"
    );
    assert!(client.last_ns < server.last_ns && client.gap_before_last_ns > 0);
    assert_counts(
        &probe.counters(),
        &[
            (Counter::Packets, 10),
            (Counter::TcpPackets, 10),
            (Counter::Rsts, 2),
            (Counter::FlowsInserted, 1),
            (Counter::FlowsPromoted, 1),
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
    assert_eq!((flow.originator, flow.origin), (C, origin::SYN));
    assert_eq!(flow.dir[C as usize].pkts, 3);
    assert_eq!(flow.dir[S as usize].pkts, 2);
    assert!(flow.dir[S as usize].has(seen::SYN_ACK | seen::RST));
    assert!(flow.rtt_ns > 0);
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
            (Counter::FlowsPromoted, 1),
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
            .followups,
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
    assert_eq!((flow.rst_ns, flow.syn_ns, flow.rtt_ns), (0, 0, 0));
    assert_eq!((flow.originator, flow.origin), (S, origin::INFERRED));
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
    assert_eq!(server.tls_alert_ns, server.last_ns);

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
    let cases = [
        (
            v4(CLIENT, SERVER, 64, 1, syn(40000, HTTP, 1, 7)),
            40000,
            C,
            origin::SYN,
        ),
        (
            v4(SERVER, CLIENT, 60, 1, syn_ack(HTTP, 40001, 5000, 2, 7)),
            40001,
            C,
            origin::SYN_ACK,
        ),
        (
            v4(SERVER, CLIENT, 60, 1, tcp(HTTP, 40002, ACK, 5000, 2)),
            40002,
            S,
            origin::INFERRED,
        ),
    ];
    for (frame, port, originator, how) in cases {
        probe.ingress(&frame);
        let flow = probe.expect_flow(&key4(CLIENT, port, SERVER, HTTP));
        assert_eq!(
            (flow.originator, flow.origin),
            (originator, how),
            "port {port}"
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
        (events[0].flow.originator, events[0].flow.origin),
        (C, origin::INFERRED)
    );
}

// ---------------------------------------------------------------------------------------
// Filters

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

// ---------------------------------------------------------------------------------------
// Bounds: the flow table and the ring buffer

#[test]
fn flow_table_never_exceeds_its_bound_and_keeps_the_newest_flows() {
    const BOUND: u32 = 1024;
    const FLOWS: u32 = 3 * BOUND;
    /// Flows that must survive: far fewer than the bound, since the LRU evicts in batches
    /// and keeps per-CPU free lists.
    const NEWEST: u32 = BOUND / 4;
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
    assert_eq!(c.get(Counter::FlowInsertFailed), 0);
    assert!(probe.flow_count() <= BOUND as usize);
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

// ---------------------------------------------------------------------------------------
// Storms and floods

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

/// A SYN flood fills the half-open table many times over; flows that completed a handshake
/// keep their state, and a RST answering a SYN is still reported with the SYN's state.
#[test]
fn a_syn_flood_never_evicts_established_flows() {
    const ESTABLISHED: u16 = 16;
    const FLOOD: u32 = 12_000;
    // Every SYN inserted: the half-open table itself must bear the flood.
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
    let half_open = config().half_open_flows();
    assert!(
        FLOOD > 4 * half_open,
        "the flood must overflow the half-open table"
    );
    let c = probe.counters();
    assert_eq!(c.get(Counter::FlowInsertFailed), 0, "{}", c.describe());
    assert_eq!(
        c.get(Counter::FlowsInserted),
        u64::from(FLOOD + u32::from(ESTABLISHED)),
        "{}",
        c.describe()
    );
    assert!(probe.flow_count() <= (config().flows + half_open) as usize);

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
        assert!(event.flow.rtt_ns > 0);
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

    let reported = rstwatch::storm::StormTally::new().read(&storms);
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
