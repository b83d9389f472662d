//! The userspace decoder of captured frames against the kernel's parser: the same frames
//! through XDP (BPF_PROG_TEST_RUN) and through `rstwatch::offline::capture`, the same `PacketMeta`
//! out of both, or the same reason for leaving a frame alone. Needs root; fails without it.

use std::net::{Ipv4Addr, Ipv6Addr};

use aya::{
    maps::{MapData, RingBuf},
    programs::{TestRun, TestRunOptions},
};
use rstwatch::{
    kernel::{Kernel, KernelConfig},
    offline::capture::{
        headers::decode_ip,
        link::{link_type, network_start},
    },
};
use rstwatch_common::{event::decode, Counter, PacketMeta};
use rstwatch_tests::frames::{
    flags::{ACK, PSH, RST, SYN},
    Extension, Frame, Ipv4, Ipv6, Network, Tcp, TcpOption, Transport, Vlan,
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 2);
const SERVER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 2);

struct Probe {
    kernel: Kernel,
    events: RingBuf<MapData>,
}

impl Probe {
    fn load() -> Self {
        let mut kernel = Kernel::load(&KernelConfig {
            flows: 4096,
            ring_bytes: 256 << 10,
            ..KernelConfig::default()
        })
        .unwrap_or_else(|err| panic!("loading rstwatch's eBPF programs failed: {err:#}"));
        let events = kernel.take_events().expect("the EVENTS ring buffer");
        Self { kernel, events }
    }

    /// The kernel's parse of `bytes` through XDP: the RST's packet as its event carries it,
    /// or the counter that took the frame instead.
    fn parse(&mut self, bytes: &[u8]) -> Result<PacketMeta, Counter> {
        let before = self.kernel.counters().unwrap();
        self.kernel
            .xdp()
            .test_run(TestRunOptions {
                data_in: Some(bytes),
                repeat: 1,
                ..TestRunOptions::default()
            })
            .unwrap();
        let after = self.kernel.counters().unwrap();
        if let Some(item) = self.events.next() {
            return Ok(decode(&item).expect("a record rstwatch decodes").pkt);
        }
        // Every frame counts as a packet, a TCP one too; the reason comes after those.
        let reason = Counter::ALL
            .iter()
            .skip(2)
            .find(|c| after.get(**c) > before.get(**c))
            .copied()
            .expect("the frame was counted under some reason");
        Err(reason)
    }
}

fn userspace(bytes: &[u8]) -> Result<PacketMeta, Counter> {
    let start = network_start(link_type::ETHERNET, bytes)?;
    let mut pkt = PacketMeta::default();
    decode_ip(
        start.network,
        &bytes[start.offset..],
        bytes.len() - start.offset,
        start.vlan,
        &mut pkt,
    )?;
    Ok(pkt)
}

/// A RST (so the kernel reports its packet) from a port of its own (so each is a new flow).
fn rst(port: u16) -> Tcp {
    Tcp {
        seq: 0x0102_0304,
        ack: 0x0506_0708,
        window: 1234,
        ..Tcp::new(port, 443, RST | ACK)
    }
}

#[test]
fn the_userspace_decoder_reads_every_frame_as_the_kernel_parser_does() {
    let mut probe = Probe::load();
    let tls_alert = Tcp {
        payload: vec![21, 3, 3, 0, 2, 2, 40],
        ..Tcp::new(40_003, 443, RST | ACK | PSH)
    };
    let syn_rst = Tcp {
        options: TcpOption::linux_syn(7),
        ..Tcp::new(40_004, 443, SYN | RST)
    };
    let with_payload = Tcp {
        payload: vec![0xaa; 300],
        ..rst(40_005)
    };
    let record_route = {
        let mut o = vec![1, 1, 1, 7, 37, 4];
        o.resize(40, 0);
        o
    };
    let cases: Vec<(&str, Frame)> = vec![
        ("IPv4", Frame::tcp_v4(CLIENT, SERVER, rst(40_001))),
        (
            "IPv4, two VLAN tags, IP options",
            Frame::new(Network::Ipv4(Ipv4 {
                options: record_route,
                ..Ipv4::new(CLIENT, SERVER, Transport::Tcp(rst(40_002)))
            }))
            .with_vlans(&[Vlan::dot1ad(7), Vlan::dot1q(42)]),
        ),
        ("TLS alert", Frame::tcp_v4(CLIENT, SERVER, tls_alert)),
        (
            "SYN|RST with options",
            Frame::tcp_v4(CLIENT, SERVER, syn_rst),
        ),
        ("payload", Frame::tcp_v4(CLIENT, SERVER, with_payload)),
        ("IPv6", Frame::tcp_v6(CLIENT6, SERVER6, rst(40_006))),
        (
            "IPv6 with extension headers",
            Frame::new(Network::Ipv6(Ipv6 {
                extensions: vec![
                    Extension::HopByHop(0),
                    Extension::DestinationOptions(1),
                    Extension::Fragment {
                        offset: 0,
                        more: true,
                    },
                ],
                ..Ipv6::new(CLIENT6, SERVER6, Transport::Tcp(rst(40_007)))
            })),
        ),
        (
            "IPv6 later fragment",
            Frame::new(Network::Ipv6(Ipv6 {
                extensions: vec![Extension::Fragment {
                    offset: 100,
                    more: false,
                }],
                ..Ipv6::new(CLIENT6, SERVER6, Transport::Tcp(rst(40_008)))
            })),
        ),
        (
            "UDP",
            Frame::new(Network::Ipv4(Ipv4::new(
                CLIENT,
                SERVER,
                Transport::udp(1, 2, b"x"),
            ))),
        ),
        ("ARP", Frame::new(Network::Arp(CLIENT, SERVER))),
        (
            "three VLAN tags",
            Frame::tcp_v4(CLIENT, SERVER, rst(40_009)).with_vlans(&[
                Vlan::dot1ad(1),
                Vlan::dot1q(2),
                Vlan::dot1q(3),
            ]),
        ),
        (
            "TCP data offset below 5",
            Frame::tcp_v4(
                CLIENT,
                SERVER,
                Tcp {
                    data_offset: Some(4),
                    ..rst(40_010)
                },
            ),
        ),
    ];
    for (name, frame) in cases {
        let bytes = frame.bytes();
        let kernel = probe.parse(&bytes);
        assert_eq!(userspace(&bytes), kernel, "{name}: {bytes:02x?}");
    }
}
