//! The frames the benchmarks feed the kernel programs: built once with [`crate::frame`], then
//! patched in place where a run needs many distinct flows.

use crate::frame::TcpSegment;

const MAC_A: [u8; 6] = [0x02, 0x72, 0x62, 0, 0, 0x01];
const MAC_B: [u8; 6] = [0x02, 0x72, 0x62, 0, 0, 0x02];

/// Offsets in an untagged Ethernet/IPv4/TCP frame without IP options.
const IPV4_PROTOCOL: usize = 14 + 9;
const IPV4_SOURCE: usize = 14 + 12;
const IPV4_DESTINATION: usize = 14 + 16;
const TCP_SOURCE_PORT: usize = 14 + 20;
const TCP_DESTINATION_PORT: usize = 14 + 22;
const IPPROTO_UDP: u8 = 17;
const ETHERTYPE_8021Q: [u8; 2] = [0x81, 0x00];

pub const CLIENT_V4: &str = "198.18.0.2:40000";
pub const SERVER_V4: &str = "198.18.1.2:80";
pub const CLIENT_V6: &str = "[2001:db8:0:1::2]:40000";
pub const SERVER_V6: &str = "[2001:db8:0:2::2]:80";

/// An Ethernet frame with one TCP segment from `src` to `dst` (both `ip:port`, one family).
pub fn segment(src: &str, dst: &str, flags: u8, payload_len: u32) -> Vec<u8> {
    TcpSegment {
        src: src.parse().expect("a socket address"),
        dst: dst.parse().expect("a socket address"),
        ttl: 64,
        ip_id: Some(1),
        seq: 1_000,
        ack: 2_000,
        flags,
        payload_len,
    }
    .to_ethernet_frame(MAC_A, MAC_B)
}

/// The IPv4 TCP `frame` turned into a UDP datagram of the same size: the parser stops at the
/// protocol field, so nothing else needs to be valid UDP.
pub fn as_udp(frame: &[u8]) -> Vec<u8> {
    let mut udp = frame.to_vec();
    udp[IPV4_PROTOCOL] = IPPROTO_UDP;
    udp
}

/// `frame` with one 802.1Q tag for `vlan` after the MAC addresses.
pub fn vlan_tagged(frame: &[u8], vlan: u16) -> Vec<u8> {
    let mut tagged = frame[..12].to_vec();
    tagged.extend_from_slice(&ETHERTYPE_8021Q);
    tagged.extend_from_slice(&vlan.to_be_bytes());
    tagged.extend_from_slice(&frame[12..]);
    tagged
}

/// The endpoint of flow number `index` (up to 2^24 distinct): 198.19.x.y, any port.
pub fn flow_endpoint(index: u32) -> ([u8; 4], u16) {
    ([198, 19, (index >> 16) as u8, 1], index as u16)
}

/// Rewrites the source endpoint of an untagged IPv4 TCP frame.
pub fn set_source(frame: &mut [u8], (addr, port): ([u8; 4], u16)) {
    frame[IPV4_SOURCE..IPV4_SOURCE + 4].copy_from_slice(&addr);
    frame[TCP_SOURCE_PORT..TCP_SOURCE_PORT + 2].copy_from_slice(&port.to_be_bytes());
}

/// Rewrites the destination endpoint of an untagged IPv4 TCP frame.
pub fn set_destination(frame: &mut [u8], (addr, port): ([u8; 4], u16)) {
    frame[IPV4_DESTINATION..IPV4_DESTINATION + 4].copy_from_slice(&addr);
    frame[TCP_DESTINATION_PORT..TCP_DESTINATION_PORT + 2].copy_from_slice(&port.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{parse_ethernet_frame, RST, SYN};

    #[test]
    fn patched_endpoints_parse_back() {
        let mut frame = segment(CLIENT_V4, SERVER_V4, SYN, 0);
        set_source(&mut frame, flow_endpoint(0x01_0203));
        set_destination(&mut frame, ([198, 18, 9, 9], 4333));
        let parsed = parse_ethernet_frame(&frame).unwrap();
        assert_eq!(parsed.src, "198.19.1.1:515".parse().unwrap());
        assert_eq!(parsed.dst, "198.18.9.9:4333".parse().unwrap());
    }

    #[test]
    fn udp_and_tagged_frames_are_not_plain_tcp() {
        let frame = segment(CLIENT_V4, SERVER_V4, RST, 0);
        assert_eq!(parse_ethernet_frame(&as_udp(&frame)), None);
        let tagged = vlan_tagged(&frame, 100);
        assert_eq!(tagged.len(), frame.len() + 4);
        assert_eq!(&tagged[12..16], &[0x81, 0x00, 0, 100]);
        assert_eq!(&tagged[16..], &frame[12..]);
    }
}
