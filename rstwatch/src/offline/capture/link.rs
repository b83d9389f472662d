//! Link-layer headers of the capture formats rstwatch reads, down to the IP header: where it
//! starts, which VLAN the packet lives in, and which way the packet went when the format
//! says so.

use rstwatch_common::{
    wire::{
        ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6, MAX_VLAN_TAGS, VLAN_HLEN,
        VLAN_VID_MASK,
    },
    Counter,
};

use super::headers::Network;

/// Link types (the tcpdump.org registry's LINKTYPE_* numbers).
pub mod link_type {
    /// BSD loopback: a 4-byte address family in the byte order of the capturing host.
    pub const NULL: u32 = 0;
    pub const ETHERNET: u32 = 1;
    /// Raw IP as some BSDs number it.
    pub const RAW_BSD: u32 = 12;
    pub const RAW: u32 = 101;
    /// OpenBSD loopback: the address family in network byte order.
    pub const LOOP: u32 = 108;
    /// Linux cooked capture v1 (`tcpdump -i any`).
    pub const LINUX_SLL: u32 = 113;
    pub const IPV4: u32 = 228;
    pub const IPV6: u32 = 229;
    /// Linux cooked capture v2.
    pub const LINUX_SLL2: u32 = 276;
}

const SLL_HLEN: usize = 16;
const SLL2_HLEN: usize = 20;
/// Linux `PACKET_OUTGOING`: the cooked header's packet type of a packet the host sent.
const PACKET_OUTGOING: u16 = 4;
/// IPv6's address family differs between the systems that write BSD loopback captures.
const BSD_AF_INET: u32 = 2;
const BSD_AF_INET6: [u32; 4] = [10, 24, 28, 30];

/// Which way a packet went, when the capture records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    In,
    Out,
    Unknown,
}

/// Where the IP header starts in a captured frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkStart {
    pub network: Network,
    pub offset: usize,
    /// Innermost VLAN id, 0 when untagged.
    pub vlan: u16,
    pub way: Way,
}

/// Finds the IP header in `frame` of link type `link`.
pub fn network_start(link: u32, frame: &[u8]) -> Result<NetworkStart, Counter> {
    match link {
        link_type::ETHERNET => {
            let ether_type = be16(frame, 12)?;
            ethertype_start(frame, ether_type, ETH_HLEN, Way::Unknown)
        }
        link_type::LINUX_SLL => {
            let way = way_of_packet_type(be16(frame, 0)?);
            ethertype_start(frame, be16(frame, 14)?, SLL_HLEN, way)
        }
        link_type::LINUX_SLL2 => {
            let packet_type = *frame.get(10).ok_or(Counter::Truncated)?;
            let way = way_of_packet_type(packet_type as u16);
            ethertype_start(frame, be16(frame, 0)?, SLL2_HLEN, way)
        }
        link_type::RAW | link_type::RAW_BSD => {
            let version = frame.first().ok_or(Counter::Truncated)? >> 4;
            let network = match version {
                4 => Network::Ipv4,
                6 => Network::Ipv6,
                _ => return Err(Counter::NotIp),
            };
            Ok(untagged(network, 0))
        }
        link_type::IPV4 => Ok(untagged(Network::Ipv4, 0)),
        link_type::IPV6 => Ok(untagged(Network::Ipv6, 0)),
        link_type::NULL | link_type::LOOP => {
            let bytes: [u8; 4] = frame
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .ok_or(Counter::Truncated)?;
            // NULL is in the writer's byte order, which the file does not say; the families
            // are small numbers, so whichever order gives one is the right one.
            let family = match u32::from_le_bytes(bytes) {
                small if small < 256 => small,
                _ => u32::from_be_bytes(bytes),
            };
            let network = match family {
                BSD_AF_INET => Network::Ipv4,
                f if BSD_AF_INET6.contains(&f) => Network::Ipv6,
                _ => return Err(Counter::NotIp),
            };
            Ok(untagged(network, 4))
        }
        _ => Err(Counter::NotIp),
    }
}

fn untagged(network: Network, offset: usize) -> NetworkStart {
    NetworkStart {
        network,
        offset,
        vlan: 0,
        way: Way::Unknown,
    }
}

fn way_of_packet_type(packet_type: u16) -> Way {
    if packet_type == PACKET_OUTGOING {
        Way::Out
    } else {
        Way::In
    }
}

/// Follows VLAN tags from an EtherType at `offset - 2` to the IP header, as the kernel's parser
/// does (`rstwatch-ebpf/src/parse.rs`, with the same limits from `rstwatch_common::wire`): its
/// walk reads through bounds checks the BPF verifier follows and starts at Ethernet only, this
/// one reads a slice and starts after any link header a capture has.
fn ethertype_start(
    frame: &[u8],
    mut ether_type: u16,
    mut offset: usize,
    way: Way,
) -> Result<NetworkStart, Counter> {
    let mut vlan = 0;
    for _ in 0..MAX_VLAN_TAGS {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        // The innermost tag names the VLAN the conversation lives in.
        vlan = be16(frame, offset)? & VLAN_VID_MASK;
        ether_type = be16(frame, offset + 2)?;
        offset += VLAN_HLEN;
    }
    let network = match ether_type {
        ETH_P_IPV4 => Network::Ipv4,
        ETH_P_IPV6 => Network::Ipv6,
        ETH_P_8021Q | ETH_P_8021AD => return Err(Counter::VlanTooDeep),
        _ => return Err(Counter::NotIp),
    };
    Ok(NetworkStart {
        network,
        offset,
        vlan,
        way,
    })
}

fn be16(frame: &[u8], offset: usize) -> Result<u16, Counter> {
    frame
        .get(offset..offset + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or(Counter::Truncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bsd_null_reads_the_family_in_either_byte_order() {
        let little = [2, 0, 0, 0, 0x45];
        let big = [0, 0, 0, 30, 0x60];
        assert_eq!(
            network_start(link_type::NULL, &little).map(|s| (s.network, s.offset)),
            Ok((Network::Ipv4, 4))
        );
        assert_eq!(
            network_start(link_type::NULL, &big).map(|s| s.network),
            Ok(Network::Ipv6)
        );
    }

    #[test]
    fn a_cooked_capture_says_which_packets_the_host_sent() {
        let mut sll = [0u8; 20];
        sll[0..2].copy_from_slice(&PACKET_OUTGOING.to_be_bytes());
        sll[14..16].copy_from_slice(&ETH_P_IPV4.to_be_bytes());
        let start = network_start(link_type::LINUX_SLL, &sll).unwrap();
        assert_eq!((start.offset, start.way), (SLL_HLEN, Way::Out));
        let mut sll2 = [0u8; 24];
        sll2[0..2].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
        let start = network_start(link_type::LINUX_SLL2, &sll2).unwrap();
        assert_eq!((start.network, start.way), (Network::Ipv6, Way::In));
    }

    #[test]
    fn three_vlan_tags_are_too_deep_as_in_the_kernel() {
        let mut frame = vec![0u8; 12];
        for _ in 0..3 {
            frame.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
            frame.extend_from_slice(&7u16.to_be_bytes());
        }
        frame.extend_from_slice(&ETH_P_IPV4.to_be_bytes());
        assert_eq!(
            network_start(link_type::ETHERNET, &frame),
            Err(Counter::VlanTooDeep)
        );
    }
}
