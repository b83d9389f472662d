//! A freshly loaded kernel side under BPF_PROG_TEST_RUN, and what the kernel tests
//! (`tests/tests/kernel/`) build their frames and expectations from: crafted frames go
//! through the XDP (ingress) and TC (egress) programs, and each test reads back what the
//! kernel side made of them: counters, the flow table and the ring buffer's events.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::{
    maps::{MapData, RingBuf},
    programs::{ProgramError, TestRun, TestRunOptions, TestRunResult},
};
use rstwatch::kernel::{Counters, Kernel, KernelConfig};
use rstwatch_common::{
    event::decode,
    features::ProgramFeatures,
    flow::{DIR_FROM_HIGH, DIR_FROM_LOW},
    packet::{ipv4_mapped, FAMILY_IPV4, FAMILY_IPV6},
    Counter, FlowKey, FlowState, RstEvent, COUNTER_COUNT,
};

use crate::frames::{
    flags::{ACK, SYN},
    Extension, Frame, Ipv4, Ipv6, Network, Tcp, TcpOption, Transport,
};

pub const XDP_PASS: u32 = 2;
pub const TC_ACT_UNSPEC: i32 = -1;
/// Test runs happen on the loopback device of the caller's network namespace.
pub const LOOPBACK_IFINDEX: u32 = 1;
/// Ethernet header: the shortest frame BPF_PROG_TEST_RUN accepts.
pub const ETH_HLEN: usize = 14;
pub const EINVAL: i32 = 22;

pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 3);
/// Sorts before `CLIENT`: the server is the flow key's low end.
pub const SERVER: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 1);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 3);
pub const SERVER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
pub const OUTSIDER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 9);
pub const OUTSIDER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 9, 0, 0, 0, 0, 9);
pub const HTTP: u16 = 80;

/// The client is `FlowKey` end 1 (its address sorts after the server's).
pub const C: u8 = DIR_FROM_HIGH;
pub const S: u8 = DIR_FROM_LOW;

/// Zeek history letter indices, as `FlowState::history` stores them.
pub const H_SYN: u8 = 0;
pub const H_SYN_ACK: u8 = 1;
pub const H_ACK: u8 = 2;
pub const H_DATA: u8 = 3;
pub const H_FIN: u8 = 4;
pub const H_RST: u8 = 5;
pub const H_RETRANSMIT: u8 = 6;
pub const H_ZERO_WINDOW: u8 = 7;
pub const H_MULTI_FLAG: u8 = 8;

impl Default for Probe {
    fn default() -> Self {
        Self::new()
    }
}

/// Pins the calling test thread to the CPU it runs on. BPF_PROG_TEST_RUN runs the program on
/// the caller's CPU, and the kernel keeps per-CPU state (the cache of unknown-flow RSTs, the
/// storm and half-open budgets): a thread the scheduler moves between two runs would meet
/// another CPU's state, as two packets of one flow never do on a real interface.
pub fn stay_on_this_cpu() {
    // SAFETY: a plain syscall.
    let cpu = unsafe { libc::sched_getcpu() };
    assert!(cpu >= 0, "sched_getcpu failed");
    move_to_cpu(cpu as usize);
}

/// Moves the calling test thread to CPU `cpu` and keeps it there (see `stay_on_this_cpu`).
pub fn move_to_cpu(cpu: usize) {
    // SAFETY: plain syscalls on the calling thread with a zero-initialised cpu_set_t.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let pinned = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(pinned, 0, "sched_setaffinity to CPU {cpu} failed");
        assert_eq!(libc::sched_getcpu(), cpu as i32, "not moved to CPU {cpu}");
    }
}

/// A freshly loaded kernel side (its own maps), the ring buffer in the test's hands.
pub struct Probe {
    pub kernel: Kernel,
    pub events: RingBuf<MapData>,
}

impl Probe {
    pub fn load(config: KernelConfig) -> Self {
        stay_on_this_cpu();
        let mut kernel = Kernel::load(&config).unwrap_or_else(|err| {
            panic!(
                "loading rstwatch's eBPF programs failed: {err:#}\n\
                 these tests need root on Linux >= 5.10 (the floor rstwatch supports) with BTF"
            )
        });
        let events = kernel.take_events().expect("the EVENTS ring buffer");
        Self { kernel, events }
    }

    pub fn new() -> Self {
        Self::load(config())
    }

    /// Runs `frame` through XDP and returns what it changed in the counters.
    pub fn ingress(&self, frame: &Frame) -> Counters {
        self.ingress_bytes(&frame.bytes())
    }

    /// Runs `frame` through TC egress and returns what it changed in the counters.
    pub fn egress(&self, frame: &Frame) -> Counters {
        self.egress_bytes(&frame.bytes())
    }

    pub fn ingress_bytes(&self, bytes: &[u8]) -> Counters {
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

    pub fn egress_bytes(&self, bytes: &[u8]) -> Counters {
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
    pub fn both_count(&self, frame: &Frame, expected: &[(Counter, u64)], what: &str) {
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

    pub fn counters(&self) -> Counters {
        self.kernel.counters().expect("reading COUNTERS")
    }

    pub fn flow(&self, key: &FlowKey) -> Option<FlowState> {
        self.kernel.flow(key).expect("reading the flow table")
    }

    pub fn expect_flow(&self, key: &FlowKey) -> FlowState {
        self.flow(key)
            .unwrap_or_else(|| panic!("no flow in the table for {key:?}"))
    }

    pub fn is_half_open(&self, key: &FlowKey) -> bool {
        self.kernel
            .is_half_open(key)
            .expect("reading the flow table")
    }

    pub fn flow_count(&self) -> usize {
        self.kernel.flow_count() as usize
    }

    /// Everything in the ring buffer, oldest first.
    pub fn events(&mut self) -> Vec<RstEvent> {
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
pub fn skb_test_run_accepts(bytes: &[u8]) -> bool {
    let ip_header = match bytes.get(12..14) {
        Some([0x08, 0x00]) => 20,
        Some([0x86, 0xdd]) => 40,
        _ => 0,
    };
    bytes.len() >= ETH_HLEN + ip_header
}

/// Small tables: every test loads its own object, with its tables allocated whole.
pub fn config() -> KernelConfig {
    KernelConfig {
        flows: 4096,
        ring_bytes: 256 << 10,
        ..KernelConfig::default()
    }
}

/// `config()` as Linux 5.10 gets it, whatever the running kernel: every program feature
/// newer than 5.10 left to its fallback.
pub fn oldest_kernel_config() -> KernelConfig {
    KernelConfig {
        features: ProgramFeatures {
            coarse_clock: 0,
            xdp_load_bytes: 0,
            socket_cookie: 0,
        },
        ..config()
    }
}

pub fn run_options(bytes: &[u8]) -> TestRunOptions<'_> {
    TestRunOptions {
        data_in: Some(bytes),
        repeat: 1,
        ..TestRunOptions::default()
    }
}

/// The kernel turned the test run down (EINVAL) before running the program.
pub fn assert_refused(result: &Result<TestRunResult, ProgramError>, what: &str) {
    assert!(
        matches!(result, Err(ProgramError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(EINVAL)),
        "{what}: the kernel was expected to refuse the frame: {result:?}"
    );
}

pub fn delta(before: &Counters, after: &Counters) -> Counters {
    let mut d = [0u64; COUNTER_COUNT as usize];
    for (i, d) in d.iter_mut().enumerate() {
        *d = after.0[i] - before.0[i];
    }
    Counters(d)
}

/// `counters` holds exactly `expected`, every other counter zero.
pub fn assert_counts(counters: &Counters, expected: &[(Counter, u64)], what: &str) {
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
pub fn tracked(rst: bool) -> Vec<(Counter, u64)> {
    let mut c = vec![(Counter::Packets, 1), (Counter::TcpPackets, 1)];
    if rst {
        c.push((Counter::Rsts, 1));
    }
    c
}

/// The flow key the kernel should use, worked out independently of `FlowKey::fill_from`:
/// endpoints in ascending (address, port) order, IPv4 as IPv4-mapped IPv6.
pub fn key(a: (IpAddr, u16), b: (IpAddr, u16), vlan: u16) -> FlowKey {
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

pub fn key4(a: Ipv4Addr, a_port: u16, b: Ipv4Addr, b_port: u16) -> FlowKey {
    key((a.into(), a_port), (b.into(), b_port), 0)
}

pub fn tcp(src_port: u16, dst_port: u16, flags: u8, seq: u32, ack: u32) -> Tcp {
    Tcp {
        seq,
        ack,
        ..Tcp::new(src_port, dst_port, flags)
    }
}

pub fn syn(src_port: u16, dst_port: u16, seq: u32, window_scale: u8) -> Tcp {
    Tcp {
        options: TcpOption::linux_syn(window_scale),
        ..tcp(src_port, dst_port, SYN, seq, 0)
    }
}

pub fn syn_ack(src_port: u16, dst_port: u16, seq: u32, ack: u32, window_scale: u8) -> Tcp {
    Tcp {
        flags: SYN | ACK,
        ack,
        ..syn(src_port, dst_port, seq, window_scale)
    }
}

/// An IPv4 frame with the given TTL and IP ID.
pub fn v4(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, id: u16, tcp: Tcp) -> Frame {
    Frame::new(Network::Ipv4(Ipv4 {
        ttl,
        id,
        ..Ipv4::new(src, dst, Transport::Tcp(tcp))
    }))
}

pub fn v6(src: Ipv6Addr, dst: Ipv6Addr, extensions: &[Extension], tcp: Tcp) -> Frame {
    Frame::new(Network::Ipv6(Ipv6 {
        extensions: extensions.to_vec(),
        ..Ipv6::new(src, dst, Transport::Tcp(tcp))
    }))
}

pub fn history(flow: &FlowState) -> Vec<u8> {
    flow.history_events().collect()
}

pub fn ip_ids(flow: &FlowState, dir: u8) -> Vec<u16> {
    let mut ids = Vec::new();
    flow.dir[dir as usize].recent_ip_ids(|id| ids.push(id));
    ids
}
