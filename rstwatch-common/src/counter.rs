//! The kernel programs' counters: one list, from which the enum, its count (the size of the
//! `COUNTERS` map), `Counter::ALL` and the names are all made, so that no counter can be left
//! out of any of them.

/// Defines `Counter` with its variants numbered from 0 in the order listed, and everything
/// derived from that one list.
macro_rules! counters {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal,)+) => {
        /// Per-CPU counters, indices into the `COUNTERS` map. Every packet the programs do not
        /// track is counted under exactly one reason, so nothing disappears without a trace.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Counter {
            $($(#[doc = $doc])* $variant,)+
        }

        impl Counter {
            /// Every counter, in index order.
            pub const ALL: [Counter; [$(Counter::$variant),+].len()] = [$(Counter::$variant),+];

            /// Stable snake_case name, used in summaries and metrics.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Counter::$variant => $name,)+
                }
            }
        }
    };
}

counters! {
    Packets => "packets",
    TcpPackets => "tcp_packets",
    Rsts => "rsts",
    /// Excluded by `--port` / `--net`.
    Filtered => "filtered",
    NotIp => "not_ip",
    NotTcp => "not_tcp",
    /// A header ended before the packet did not have room for it.
    Truncated => "truncated",
    /// IPv4 IHL < 5, IPv6 version mismatch, TCP data offset < 5.
    BadHeader => "bad_header",
    /// IPv4 or IPv6 fragment that is not the first: no TCP header to read.
    NonFirstFragment => "non_first_fragment",
    /// More than two VLAN tags.
    VlanTooDeep => "vlan_too_deep",
    /// IPv6 extension-header chain longer than the parser follows.
    Ipv6ChainTooLong => "ipv6_chain_too_long",
    /// New flows put in a slot of the flow table.
    FlowsInserted => "flows_inserted",
    /// Of those, flows put in a slot another flow held, which ended there.
    FlowsEvicted => "flows_evicted",
    /// Of the evicted flows, those that had completed a handshake (never for a SYN's flow).
    EstablishedEvicted => "established_evicted",
    /// A SYN of a new flow whose set held only established flows: not tracked.
    SynsNoRoom => "syns_no_room",
    /// A packet whose flow's slot another CPU kept busy past the wait: not tracked.
    FlowUpdatesLost => "flow_updates_lost",
    /// Of those, RSTs: not reported.
    RstUpdatesLost => "rst_updates_lost",
    /// A flow whose grace period after a RST had ended and that started over.
    FlowsRecycled => "flows_recycled",
    EventsSent => "events_sent",
    /// The ring buffer had no room: the event was lost and is counted here.
    EventsLost => "events_lost",
    /// Follow-up packets after a RST beyond `followup_limit`.
    FollowUpsSuppressed => "followups_suppressed",
    /// RSTs on unknown flows beyond `unknown_rsts_per_sec`, counted in the storm map instead
    /// of sent one by one.
    RstsAggregated => "rsts_aggregated",
    /// Of those, RSTs the storm map had no room for: counted here only.
    StormMapFull => "storm_map_full",
    /// SYNs of new flows beyond `half_open_per_sec`: not tracked.
    SynsUntracked => "syns_untracked",
}

/// Entries of the `COUNTERS` map: one per counter.
pub const COUNTER_COUNT: u32 = Counter::ALL.len() as u32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_has_its_index_its_place_in_all_and_a_name_of_its_own() {
        assert_eq!(Counter::ALL.len(), COUNTER_COUNT as usize);
        for (index, counter) in Counter::ALL.into_iter().enumerate() {
            assert_eq!(counter as usize, index, "{counter:?}");
            let name = counter.name();
            assert!(
                !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{counter:?}: {name}"
            );
            let same_name = Counter::ALL.iter().filter(|c| c.name() == name).count();
            assert_eq!(same_name, 1, "{name}");
        }
    }
}
