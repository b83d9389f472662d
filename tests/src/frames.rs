//! A small builder for the frames the kernel tests feed through BPF_PROG_TEST_RUN: Ethernet,
//! up to any number of VLAN tags, IPv4 (options, fragments) or IPv6 (extension headers), TCP
//! (options, payload), UDP, ICMP and ARP.
//!
//! Length fields (IPv4 IHL and total length, IPv6 payload length, extension header lengths,
//! TCP data offset, UDP length) are computed from what the frame holds; a test that wants a
//! malformed header overrides the one field it is about. Checksums are left zero by `bytes`
//! (the programs under test never read them) and filled in by `bytes_with_checksums`, for
//! frames sent into a real stack.

use std::net::{Ipv4Addr, Ipv6Addr};

// The wire's numbers are written out here rather than taken from `rstwatch_common::packet`:
// the frames are the tests' own statement of the wire format, so that a wrong number in the
// parsers fails the tests instead of agreeing with them.
pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// One Ethernet frame.
#[derive(Clone, Debug)]
pub struct Frame {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    /// Outermost first.
    pub vlans: Vec<Vlan>,
    pub network: Network,
}

/// A VLAN tag: its TPID (802.1Q or 802.1ad) and VLAN id.
#[derive(Clone, Copy, Debug)]
pub struct Vlan {
    pub tpid: u16,
    pub id: u16,
}

impl Vlan {
    /// A customer tag (802.1Q).
    pub const fn dot1q(id: u16) -> Self {
        Self {
            tpid: ETH_P_8021Q,
            id,
        }
    }

    /// A service tag (802.1ad, the outer tag of QinQ).
    pub const fn dot1ad(id: u16) -> Self {
        Self {
            tpid: ETH_P_8021AD,
            id,
        }
    }
}

#[derive(Clone, Debug)]
pub enum Network {
    Ipv4(Ipv4),
    Ipv6(Ipv6),
    /// An ARP request from the first address for the second.
    Arp(Ipv4Addr, Ipv4Addr),
}

#[derive(Clone, Debug)]
pub struct Ipv4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub id: u16,
    pub dont_fragment: bool,
    pub more_fragments: bool,
    /// In 8-byte units, as on the wire.
    pub fragment_offset: u16,
    /// Raw option bytes, padded with end-of-list to a multiple of four.
    pub options: Vec<u8>,
    /// Overrides the version nibble (4).
    pub version: Option<u8>,
    /// Overrides the computed IHL (in 32-bit words).
    pub ihl: Option<u8>,
    pub transport: Transport,
}

impl Ipv4 {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, transport: Transport) -> Self {
        Self {
            src,
            dst,
            ttl: 64,
            id: 1,
            dont_fragment: true,
            more_fragments: false,
            fragment_offset: 0,
            options: Vec::new(),
            version: None,
            ihl: None,
            transport,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Ipv6 {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub hop_limit: u8,
    /// In chain order, right after the fixed header.
    pub extensions: Vec<Extension>,
    /// Overrides the version nibble (6).
    pub version: Option<u8>,
    pub transport: Transport,
}

impl Ipv6 {
    pub fn new(src: Ipv6Addr, dst: Ipv6Addr, transport: Transport) -> Self {
        Self {
            src,
            dst,
            hop_limit: 64,
            extensions: Vec::new(),
            version: None,
            transport,
        }
    }
}

/// IPv6 extension headers (RFC 8200 4.3-4.6). Options headers are filled with one PadN option.
#[derive(Clone, Copy, Debug)]
pub enum Extension {
    /// Length in 8-byte units beyond the first 8 (the header's own length field).
    HopByHop(u8),
    Routing(u8),
    DestinationOptions(u8),
    Fragment {
        /// In 8-byte units, as on the wire.
        offset: u16,
        more: bool,
    },
}

impl Extension {
    const fn protocol(self) -> u8 {
        match self {
            Extension::HopByHop(_) => 0,
            Extension::Routing(_) => 43,
            Extension::Fragment { .. } => 44,
            Extension::DestinationOptions(_) => 60,
        }
    }

    fn bytes(self, next: u8) -> Vec<u8> {
        match self {
            Extension::HopByHop(len) | Extension::DestinationOptions(len) => {
                let size = (len as usize + 1) * 8;
                let mut h = vec![next, len, 1, (size - 4) as u8];
                h.resize(size, 0);
                h
            }
            Extension::Routing(len) => {
                // Routing type 253 (RFC 4727, experimental), segments left 0: ignored en route.
                let mut h = vec![next, len, 253, 0];
                h.resize((len as usize + 1) * 8, 0);
                h
            }
            Extension::Fragment { offset, more } => {
                let field = (offset << 3) | u16::from(more);
                let [hi, lo] = field.to_be_bytes();
                vec![next, 0, hi, lo, 0, 0, 0x12, 0x34]
            }
        }
    }
}

/// What an IP packet carries.
#[derive(Clone, Debug)]
pub enum Transport {
    Tcp(Tcp),
    /// Any other protocol, header and payload as given.
    Other {
        protocol: u8,
        bytes: Vec<u8>,
    },
}

impl Transport {
    pub fn udp(src_port: u16, dst_port: u16, payload: &[u8]) -> Self {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&src_port.to_be_bytes());
        bytes.extend_from_slice(&dst_port.to_be_bytes());
        bytes.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
        bytes.extend_from_slice(&[0, 0]);
        bytes.extend_from_slice(payload);
        Transport::Other {
            protocol: IPPROTO_UDP,
            bytes,
        }
    }

    /// An ICMP echo request.
    pub fn icmp_echo() -> Self {
        Transport::Other {
            protocol: IPPROTO_ICMP,
            bytes: vec![8, 0, 0, 0, 0, 1, 0, 1],
        }
    }

    /// An ICMPv6 echo request.
    pub fn icmpv6_echo() -> Self {
        Transport::Other {
            protocol: IPPROTO_ICMPV6,
            bytes: vec![128, 0, 0, 0, 0, 1, 0, 1],
        }
    }

    fn protocol(&self) -> u8 {
        match self {
            Transport::Tcp(_) => IPPROTO_TCP,
            Transport::Other { protocol, .. } => *protocol,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        match self {
            Transport::Tcp(tcp) => tcp.bytes(),
            Transport::Other { bytes, .. } => bytes.clone(),
        }
    }
}

/// TCP header flag bits.
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

#[derive(Clone, Copy, Debug)]
pub enum TcpOption {
    EndOfList,
    Nop,
    Mss(u16),
    WindowScale(u8),
    SackPermitted,
    Timestamps(u32, u32),
}

impl TcpOption {
    fn write(self, out: &mut Vec<u8>) {
        match self {
            TcpOption::EndOfList => out.push(0),
            TcpOption::Nop => out.push(1),
            TcpOption::Mss(mss) => {
                out.extend_from_slice(&[2, 4]);
                out.extend_from_slice(&mss.to_be_bytes());
            }
            TcpOption::WindowScale(shift) => out.extend_from_slice(&[3, 3, shift]),
            TcpOption::SackPermitted => out.extend_from_slice(&[4, 2]),
            TcpOption::Timestamps(value, echo) => {
                out.extend_from_slice(&[8, 10]);
                out.extend_from_slice(&value.to_be_bytes());
                out.extend_from_slice(&echo.to_be_bytes());
            }
        }
    }

    /// What Linux puts in a SYN: MSS, SACK permitted, timestamps, NOP, window scale.
    pub fn linux_syn(window_scale: u8) -> Vec<TcpOption> {
        vec![
            TcpOption::Mss(1460),
            TcpOption::SackPermitted,
            TcpOption::Timestamps(0x0102_0304, 0),
            TcpOption::Nop,
            TcpOption::WindowScale(window_scale),
        ]
    }
}

#[derive(Clone, Debug)]
pub struct Tcp {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// Padded with end-of-list to a multiple of four.
    pub options: Vec<TcpOption>,
    /// Overrides the computed data offset (in 32-bit words).
    pub data_offset: Option<u8>,
    pub payload: Vec<u8>,
}

impl Tcp {
    pub fn new(src_port: u16, dst_port: u16, flags: u8) -> Self {
        Self {
            src_port,
            dst_port,
            seq: 0,
            ack: 0,
            flags,
            window: 64240,
            options: Vec::new(),
            data_offset: None,
            payload: Vec::new(),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut options = Vec::new();
        for option in &self.options {
            option.write(&mut options);
        }
        pad4(&mut options);
        let data_offset = self.data_offset.unwrap_or(((20 + options.len()) / 4) as u8);
        let mut h = Vec::new();
        h.extend_from_slice(&self.src_port.to_be_bytes());
        h.extend_from_slice(&self.dst_port.to_be_bytes());
        h.extend_from_slice(&self.seq.to_be_bytes());
        h.extend_from_slice(&self.ack.to_be_bytes());
        h.push(data_offset << 4);
        h.push(self.flags);
        h.extend_from_slice(&self.window.to_be_bytes());
        h.extend_from_slice(&[0, 0, 0, 0]);
        h.extend_from_slice(&options);
        h.extend_from_slice(&self.payload);
        h
    }
}

impl Frame {
    /// An untagged frame from the client's MAC to the server's.
    pub fn new(network: Network) -> Self {
        Self {
            dst_mac: SERVER_MAC,
            src_mac: CLIENT_MAC,
            vlans: Vec::new(),
            network,
        }
    }

    pub fn tcp_v4(src: Ipv4Addr, dst: Ipv4Addr, tcp: Tcp) -> Self {
        Self::new(Network::Ipv4(Ipv4::new(src, dst, Transport::Tcp(tcp))))
    }

    pub fn tcp_v6(src: Ipv6Addr, dst: Ipv6Addr, tcp: Tcp) -> Self {
        Self::new(Network::Ipv6(Ipv6::new(src, dst, Transport::Tcp(tcp))))
    }

    pub fn with_vlans(mut self, vlans: &[Vlan]) -> Self {
        self.vlans = vlans.to_vec();
        self
    }

    /// The frame's bytes, no Ethernet padding or FCS.
    pub fn bytes(&self) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        for vlan in &self.vlans {
            f.extend_from_slice(&vlan.tpid.to_be_bytes());
            f.extend_from_slice(&(vlan.id & 0x0fff).to_be_bytes());
        }
        let (ethertype, packet) = match &self.network {
            Network::Ipv4(ip) => (ETH_P_IPV4, ipv4_bytes(ip)),
            Network::Ipv6(ip) => (ETH_P_IPV6, ipv6_bytes(ip)),
            Network::Arp(sender, target) => (ETH_P_ARP, arp_bytes(*sender, *target)),
        };
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(&packet);
        f
    }
}

impl Frame {
    /// `bytes` with the IPv4 header checksum and the TCP checksum filled in, as a real stack
    /// wants them.
    ///
    /// # Panics
    /// If the frame does not carry TCP directly after the IP header (no IPv6 extensions).
    pub fn bytes_with_checksums(&self) -> Vec<u8> {
        let mut frame = self.bytes();
        let ip_start = 14 + 4 * self.vlans.len();
        let (tcp_start, pseudo_header) = match &self.network {
            Network::Ipv4(ip) if matches!(ip.transport, Transport::Tcp(_)) => {
                let header_len = usize::from(frame[ip_start] & 0x0f) * 4;
                let header = &mut frame[ip_start..ip_start + header_len];
                let ip_checksum = checksum(&[header]);
                header[10..12].copy_from_slice(&ip_checksum.to_be_bytes());
                let tcp_len = (frame.len() - ip_start - header_len) as u16;
                let pseudo_header = [
                    &ip.src.octets()[..],
                    &ip.dst.octets(),
                    &[0, IPPROTO_TCP],
                    &tcp_len.to_be_bytes(),
                ]
                .concat();
                (ip_start + header_len, pseudo_header)
            }
            Network::Ipv6(ip)
                if ip.extensions.is_empty() && matches!(ip.transport, Transport::Tcp(_)) =>
            {
                let tcp_start = ip_start + 40;
                let tcp_len = (frame.len() - tcp_start) as u32;
                let pseudo_header = [
                    &ip.src.octets()[..],
                    &ip.dst.octets(),
                    &tcp_len.to_be_bytes(),
                    &[0, 0, 0, IPPROTO_TCP],
                ]
                .concat();
                (tcp_start, pseudo_header)
            }
            other => {
                panic!("checksums are computed for TCP right after the IP header, not {other:?}")
            }
        };
        let tcp_checksum = checksum(&[&pseudo_header, &frame[tcp_start..]]);
        frame[tcp_start + 16..tcp_start + 18].copy_from_slice(&tcp_checksum.to_be_bytes());
        frame
    }
}

/// The Internet checksum (RFC 1071) over the concatenation of even-length `parts` (an odd
/// last part is padded with a zero byte).
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = parts
        .iter()
        .flat_map(|part| part.chunks(2))
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ipv4_bytes(ip: &Ipv4) -> Vec<u8> {
    let mut options = ip.options.clone();
    pad4(&mut options);
    let payload = ip.transport.bytes();
    let ihl = ip.ihl.unwrap_or(((20 + options.len()) / 4) as u8);
    let total_len = (20 + options.len() + payload.len()) as u16;
    let mut fragment = ip.fragment_offset & 0x1fff;
    if ip.dont_fragment {
        fragment |= 0x4000;
    }
    if ip.more_fragments {
        fragment |= 0x2000;
    }
    let mut h = vec![(ip.version.unwrap_or(4) << 4) | (ihl & 0x0f), 0];
    h.extend_from_slice(&total_len.to_be_bytes());
    h.extend_from_slice(&ip.id.to_be_bytes());
    h.extend_from_slice(&fragment.to_be_bytes());
    h.extend_from_slice(&[ip.ttl, ip.transport.protocol(), 0, 0]);
    h.extend_from_slice(&ip.src.octets());
    h.extend_from_slice(&ip.dst.octets());
    h.extend_from_slice(&options);
    h.extend_from_slice(&payload);
    h
}

fn ipv6_bytes(ip: &Ipv6) -> Vec<u8> {
    let mut rest = Vec::new();
    for (i, ext) in ip.extensions.iter().enumerate() {
        let next = ip
            .extensions
            .get(i + 1)
            .map_or(ip.transport.protocol(), |e| e.protocol());
        rest.extend_from_slice(&ext.bytes(next));
    }
    rest.extend_from_slice(&ip.transport.bytes());
    let next = ip
        .extensions
        .first()
        .map_or(ip.transport.protocol(), |e| e.protocol());
    let mut h = vec![ip.version.unwrap_or(6) << 4, 0, 0, 0];
    h.extend_from_slice(&(rest.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next, ip.hop_limit]);
    h.extend_from_slice(&ip.src.octets());
    h.extend_from_slice(&ip.dst.octets());
    h.extend_from_slice(&rest);
    h
}

fn arp_bytes(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
    a.extend_from_slice(&CLIENT_MAC);
    a.extend_from_slice(&sender.octets());
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&target.octets());
    a
}

/// IPv4 options and TCP options end on a 32-bit boundary; end-of-list fills the rest.
fn pad4(options: &mut Vec<u8>) {
    options.resize(options.len().next_multiple_of(4), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    #[test]
    fn ipv4_tcp_lengths_follow_the_contents() {
        let mut tcp = Tcp::new(40000, 80, flags::SYN);
        tcp.options = TcpOption::linux_syn(7);
        tcp.payload = b"hello".to_vec();
        let mut ip = Ipv4::new(A, B, Transport::Tcp(tcp));
        ip.options = vec![1, 1, 1]; // three NOPs, padded to four bytes
        let f = Frame::new(Network::Ipv4(ip)).with_vlans(&[Vlan::dot1ad(5), Vlan::dot1q(42)]);
        let b = f.bytes();
        assert_eq!(&b[12..14], &ETH_P_8021AD.to_be_bytes());
        assert_eq!(&b[14..16], &5u16.to_be_bytes());
        assert_eq!(&b[16..18], &ETH_P_8021Q.to_be_bytes());
        assert_eq!(&b[18..20], &42u16.to_be_bytes());
        assert_eq!(&b[20..22], &ETH_P_IPV4.to_be_bytes());
        let ip = &b[22..];
        assert_eq!(ip[0], 0x46, "version 4, IHL 6 words");
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]) as usize, ip.len());
        let tcp = &ip[24..];
        assert_eq!(
            tcp[12] >> 4,
            10,
            "20 bytes of options: data offset 10 words"
        );
        assert_eq!(tcp.len(), 40 + 5);
        assert_eq!(&tcp[40..], b"hello");
    }

    #[test]
    fn ipv6_extension_chain_links_each_next_header() {
        let tcp = Tcp::new(40000, 80, flags::ACK);
        let mut ip = Ipv6::new(
            Ipv6Addr::LOCALHOST,
            Ipv6Addr::LOCALHOST,
            Transport::Tcp(tcp),
        );
        ip.extensions = vec![
            Extension::HopByHop(0),
            Extension::Routing(1),
            Extension::Fragment {
                offset: 0,
                more: true,
            },
            Extension::DestinationOptions(2),
        ];
        let b = Frame::new(Network::Ipv6(ip)).bytes();
        let ip = &b[14..];
        assert_eq!(u16::from_be_bytes([ip[4], ip[5]]) as usize, ip.len() - 40);
        assert_eq!(ip[6], 0, "hop-by-hop first");
        let ext = &ip[40..];
        assert_eq!((ext[0], ext[1]), (43, 0));
        let ext = &ext[8..];
        assert_eq!((ext[0], ext[1]), (44, 1));
        let ext = &ext[16..];
        assert_eq!(ext[0], 60);
        assert_eq!(u16::from_be_bytes([ext[2], ext[3]]), 1, "offset 0, more");
        let ext = &ext[8..];
        assert_eq!((ext[0], ext[1]), (IPPROTO_TCP, 2));
        assert_eq!(ext.len(), 24 + 20);
    }
}
