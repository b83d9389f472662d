//! Settings shared through maps between userspace and the kernel programs.

use crate::packet::PacketMeta;

/// Runtime settings, written by userspace into the one-element `SETTINGS` array map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// How long a flow is kept after its first RST so that what follows it (data from the
    /// RST's claimed sender, a second RST) is reported as follow-up evidence.
    pub grace_ns: u64,
    /// A flow closed by a FIN from each side, silent this long, ends: its 4-tuple's next
    /// packet starts a new flow.
    pub close_delay_ns: u64,
    /// Seeds the hash that places a flow in its set of the flow table (`table::place`);
    /// userspace draws it at random.
    pub table_seed: u64,
    /// Follow-up events sent per RST at most, so a storm after a reset cannot flood the ring.
    pub followup_limit: u32,
    /// RSTs on unknown flows reported one by one per CPU and second; beyond it they are
    /// counted in the kernel by sender prefix and port and reported as aggregates.
    pub unknown_rsts_per_sec: u32,
    /// SYNs of new flows tracked per CPU and second; beyond it a SYN flood costs no table
    /// insert, and the few real connections among it are tracked from their second packet on.
    pub half_open_per_sec: u32,
    /// Sets of the IPv4 and the IPv6 flow table, log2 (`table::sets_log2`).
    pub table_sets_log2: [u8; 2],
    /// Non-zero: a packet's innermost VLAN ID is part of its flow key, so the same 4-tuple on
    /// two VLANs is two flows; zero: VLAN tags are ignored, so a connection whose directions
    /// carry different tags is one flow.
    pub vlan_key: u8,
    pub _pad: u8,
    pub filter: FilterConfig,
}

impl Settings {
    pub const DEFAULT_GRACE_NS: u64 = crate::defaults::GRACE_NS;
    pub const DEFAULT_FOLLOWUP_LIMIT: u32 = 4;
    pub const DEFAULT_UNKNOWN_RSTS_PER_SEC: u32 = 200;
    pub const DEFAULT_HALF_OPEN_PER_SEC: u32 = 5_000;
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            grace_ns: Self::DEFAULT_GRACE_NS,
            close_delay_ns: crate::defaults::CLOSE_DELAY_NS,
            followup_limit: Self::DEFAULT_FOLLOWUP_LIMIT,
            unknown_rsts_per_sec: Self::DEFAULT_UNKNOWN_RSTS_PER_SEC,
            half_open_per_sec: Self::DEFAULT_HALF_OPEN_PER_SEC,
            table_seed: 0,
            table_sets_log2: [0; 2],
            vlan_key: 0,
            _pad: 0,
            filter: FilterConfig::default(),
        }
    }
}

/// Which in-kernel filters are active. Within a kind the entries are alternatives (any port,
/// any network); across kinds all must match, like `tcp.port == P && ip.addr == NET`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilterConfig {
    /// Non-zero: only packets with a source or destination port in `FILTER_PORTS`.
    pub ports: u8,
    /// Non-zero: only packets with a source or destination address in `FILTER_NETS`.
    pub nets: u8,
    pub _pad: [u8; 6],
}

impl FilterConfig {
    /// The filters in force: ports when `--port` named some, networks when `--net` did.
    pub const fn new(ports: bool, nets: bool) -> Self {
        Self {
            ports: ports as u8,
            nets: nets as u8,
            _pad: [0; 6],
        }
    }

    /// Whether `pkt` passes the filters in force: a selected port at either end, and an
    /// address in a selected network at either end. `port_on` says whether a port is
    /// selected, `in_nets` whether an address (IPv4-mapped for IPv4) is in a selected
    /// network: where the lists are kept and how they are searched is the caller's, the
    /// kernel's maps (an array by port, a longest-prefix-match trie) or the replay's lists.
    /// The address comes by value: the kernel copies it from the 4-aligned packet in words,
    /// where a copy through a reference goes byte by byte.
    #[inline(always)]
    pub fn selects(
        &self,
        pkt: &PacketMeta,
        port_on: impl Fn(u16) -> bool,
        in_nets: impl Fn([u8; 16]) -> bool,
    ) -> bool {
        if self.ports != 0 && !port_on(pkt.src_port) && !port_on(pkt.dst_port) {
            return false;
        }
        if self.nets != 0 && !in_nets(pkt.src_addr) && !in_nets(pkt.dst_addr) {
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::ipv4_mapped;

    #[test]
    fn filters_pass_a_packet_with_a_selected_port_and_a_selected_network_at_either_end() {
        let pkt = PacketMeta {
            src_addr: ipv4_mapped([198, 18, 1, 2]),
            dst_addr: ipv4_mapped([10, 0, 0, 1]),
            src_port: 80,
            dst_port: 40_000,
            ..PacketMeta::default()
        };
        let port = |want: u16| move |port: u16| port == want;
        let net = |first: u8| move |addr: [u8; 16]| addr[12] == first;
        let none = FilterConfig::new(false, false);
        assert!(
            none.selects(&pkt, |_| false, |_| false),
            "no filter in force"
        );
        let ports = FilterConfig::new(true, false);
        assert!(ports.selects(&pkt, port(80), net(1)), "source port");
        assert!(
            ports.selects(&pkt, port(40_000), net(1)),
            "destination port"
        );
        assert!(!ports.selects(&pkt, port(443), net(10)), "neither port");
        let nets = FilterConfig::new(false, true);
        assert!(nets.selects(&pkt, port(1), net(198)), "source network");
        assert!(nets.selects(&pkt, port(1), net(10)), "destination network");
        assert!(!nets.selects(&pkt, port(80), net(192)), "neither network");
        let both = FilterConfig::new(true, true);
        assert!(both.selects(&pkt, port(80), net(10)));
        assert!(
            !both.selects(&pkt, port(80), net(192)),
            "both kinds must match"
        );
        assert!(
            !both.selects(&pkt, port(443), net(10)),
            "both kinds must match"
        );
    }
}

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::Settings {}
}
