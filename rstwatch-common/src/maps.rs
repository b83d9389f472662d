//! The names of the kernel programs' maps that userspace opens, in one place. A map's name is
//! the name of its `#[map] static` in `rstwatch-ebpf/src/`, which the BPF side cannot take
//! from a constant; userspace names maps through these constants only, and a test
//! (`rstwatch::kernel`) finds every one of them in the built object, so that a rename on
//! either side fails the tests instead of the load.

/// Defines a constant per map, whose value is its own name, and `ALL` from the same list.
macro_rules! map_names {
    ($($(#[doc = $doc:literal])* $name:ident,)+) => {
        $($(#[doc = $doc])* pub const $name: &str = stringify!($name);)+

        /// Every map name above.
        pub const ALL: [&str; [$(stringify!($name)),+].len()] = [$($name),+];
    };
}

map_names! {
    /// The IPv4 flow table's sets (`crate::table`), mapped by userspace.
    FLOWS4,
    /// The IPv6 flow table's sets.
    FLOWS6,
    /// The per-way tags beside the IPv4 flow table.
    TAGS4,
    /// The per-way tags beside the IPv6 flow table.
    TAGS6,
    /// The ring buffer of RST events.
    EVENTS,
    /// Each CPU's storm counts, one storm a slot, found by the hash of its key.
    STORM_SLOTS,
    /// The storm counts of the storms whose slot another storm held.
    STORMS,
    /// The per-CPU counters (`crate::Counter`).
    COUNTERS,
    /// The one-element array of `crate::Settings`.
    SETTINGS,
    /// `--port`: a byte per port.
    FILTER_PORTS,
    /// The likely server ports (`crate::PortSet`'s words).
    SERVER_PORTS,
    /// `--net`: an LPM trie of IPv4-mapped and IPv6 prefixes.
    FILTER_NETS,
    /// The socket field offsets the stack witness reads (`crate::local::SocketLayout`).
    SOCKET_LAYOUT,
    /// The ring buffer of the TCP stack's own reset records.
    LOCAL_EVENTS,
    /// Records of the stack witness the kernel could not push, per CPU.
    LOCAL_LOST,
}
