//! Ethernet frames carrying one TCP segment over IPv4 or IPv6: parsed from what an AF_PACKET
//! socket sniffs, and built (through the [`crate::frames`] builder) for the RSTs the scenarios
//! forge.

use std::net::{IpAddr, SocketAddr};

pub use crate::frames::flags::{ACK, FIN, RST, SYN};
use crate::frames::{
    Frame, Ipv4, Ipv6, Network, Tcp, Transport, ETH_P_IPV4 as ETHERTYPE_IPV4,
    ETH_P_IPV6 as ETHERTYPE_IPV6, IPPROTO_TCP,
};

const ETHERNET_HEADER_LEN: usize = 14;
const IPV6_HEADER_LEN: usize = 40;

/// The header fields of one TCP segment that tell who sent a RST and whether it fits the flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpSegment {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// IPv4 identification; IPv6 has none.
    pub ip_id: Option<u16>,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub payload_len: u32,
}

impl TcpSegment {
    pub fn is_rst(&self) -> bool {
        self.flags & RST != 0
    }

    /// The sequence number that follows this segment's payload (SYN and FIN not counted).
    pub fn next_seq(&self) -> u32 {
        self.seq.wrapping_add(self.payload_len)
    }

    /// An Ethernet frame carrying this segment with a zero-filled payload, DF clear and a
    /// zero window, checksums computed.
    ///
    /// # Panics
    /// If `src` and `dst` are not of the same address family.
    pub fn to_ethernet_frame(&self, src_mac: [u8; 6], dst_mac: [u8; 6]) -> Vec<u8> {
        let tcp = Transport::Tcp(Tcp {
            seq: self.seq,
            ack: self.ack,
            window: 0,
            payload: vec![0; self.payload_len as usize],
            ..Tcp::new(self.src.port(), self.dst.port(), self.flags)
        });
        let network = match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => Network::Ipv4(Ipv4 {
                ttl: self.ttl,
                id: self.ip_id.unwrap_or(0),
                dont_fragment: false,
                ..Ipv4::new(src, dst, tcp)
            }),
            (IpAddr::V6(src), IpAddr::V6(dst)) => Network::Ipv6(Ipv6 {
                hop_limit: self.ttl,
                ..Ipv6::new(src, dst, tcp)
            }),
            _ => panic!(
                "segment {} -> {} mixes address families",
                self.src, self.dst
            ),
        };
        Frame {
            src_mac,
            dst_mac,
            ..Frame::new(network)
        }
        .bytes_with_checksums()
    }
}

/// Parses an Ethernet frame carrying TCP directly in IPv4 or IPv6 (no VLAN tag, no IPv6
/// extension header); anything else is `None`.
pub fn parse_ethernet_frame(frame: &[u8]) -> Option<TcpSegment> {
    let ip = frame.get(ETHERNET_HEADER_LEN..)?;
    let (src, dst, ttl, ip_id, tcp_and_payload_len, tcp) = match be16(frame, 12)? {
        ETHERTYPE_IPV4 => {
            let header_len = usize::from(ip.first()? & 0x0f) * 4;
            if *ip.get(9)? != IPPROTO_TCP || be16(ip, 6)? & 0x1fff != 0 {
                return None;
            }
            let src: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            let tcp_len = usize::from(be16(ip, 2)?).checked_sub(header_len)?;
            let ttl = *ip.get(8)?;
            (
                src.into(),
                dst.into(),
                ttl,
                Some(be16(ip, 4)?),
                tcp_len,
                ip.get(header_len..)?,
            )
        }
        ETHERTYPE_IPV6 => {
            if *ip.get(6)? != IPPROTO_TCP {
                return None;
            }
            let src: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            let tcp_len = usize::from(be16(ip, 4)?);
            (
                src.into(),
                dst.into(),
                ip[7],
                None,
                tcp_len,
                ip.get(IPV6_HEADER_LEN..)?,
            )
        }
        _ => return None,
    };
    let tcp_header_len = usize::from(tcp.get(12)? >> 4) * 4;
    Some(TcpSegment {
        src: SocketAddr::new(src, be16(tcp, 0)?),
        dst: SocketAddr::new(dst, be16(tcp, 2)?),
        ttl,
        ip_id,
        seq: be32(tcp, 4)?,
        ack: be32(tcp, 8)?,
        flags: *tcp.get(13)?,
        payload_len: u32::try_from(tcp_and_payload_len.checked_sub(tcp_header_len)?).ok()?,
    })
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::checksum;

    const IPV4_HEADER_LEN: usize = 20;

    fn forged_rst(src: &str, dst: &str) -> TcpSegment {
        TcpSegment {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            ttl: 255,
            ip_id: if src.starts_with('[') {
                None
            } else {
                Some(0xbeef)
            },
            seq: 0x0102_0304,
            ack: 0xa0b0_c0d0,
            flags: RST | ACK,
            payload_len: 0,
        }
    }

    #[test]
    fn built_frames_parse_back_to_the_same_segment() {
        for rst in [
            forged_rst("198.18.1.2:4001", "198.18.0.2:40000"),
            forged_rst("[2001:db8:0:2::2]:4001", "[2001:db8:0:1::2]:40000"),
        ] {
            let frame = rst.to_ethernet_frame([2; 6], [4; 6]);
            assert_eq!(&frame[..12], &[4, 4, 4, 4, 4, 4, 2, 2, 2, 2, 2, 2]);
            assert_eq!(parse_ethernet_frame(&frame), Some(rst));
        }
    }

    #[test]
    fn checksums_verify_to_zero() {
        let frame =
            forged_rst("198.18.1.2:4001", "198.18.0.2:40000").to_ethernet_frame([0; 6], [0; 6]);
        let ip = &frame[ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + IPV4_HEADER_LEN];
        assert_eq!(checksum(&[ip]), 0);
        let tcp = &frame[ETHERNET_HEADER_LEN + IPV4_HEADER_LEN..];
        let pseudo_header = [198, 18, 1, 2, 198, 18, 0, 2, 0, IPPROTO_TCP, 0, 20];
        assert_eq!(checksum(&[&pseudo_header, tcp]), 0);
    }

    #[test]
    fn checksum_matches_rfc_1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&[&data]), !0xddf2);
    }

    #[test]
    fn non_tcp_and_truncated_frames_are_ignored() {
        let mut frame =
            forged_rst("198.18.1.2:4001", "198.18.0.2:40000").to_ethernet_frame([0; 6], [0; 6]);
        assert_eq!(parse_ethernet_frame(&frame[..40]), None);
        frame[ETHERNET_HEADER_LEN + 9] = 17;
        assert_eq!(parse_ethernet_frame(&frame), None);
    }
}
