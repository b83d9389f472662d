//! `rstwatch watch`: attach, drain the ring buffer, hold each RST for its follow-ups, explain
//! it, write it; on SIGINT/SIGTERM flush what is pending and print the totals.

use std::{
    collections::HashMap,
    io::Write,
    net::{IpAddr, Ipv6Addr},
    time::Duration,
};

use anyhow::Context as _;
use aya::programs::XdpMode;
use rstwatch_common::{RstEvent, Settings};
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
};

use crate::{
    cli::{WatchArgs, XdpModeArg},
    clock::{monotonic_ns, WallClock},
    hold::{Held, HoldQueue, Offer},
    kernel::{Kernel, KernelConfig},
    preflight,
};

/// How often held RSTs are checked for release.
const RELEASE_TICK: Duration = Duration::from_millis(20);

pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    let mut ifnames = HashMap::new();
    for iface in &args.ifaces {
        ifnames.insert(preflight::interface_index(iface)?, iface.clone());
    }
    preflight::require_capabilities()?;

    let config = KernelConfig {
        flows: args.flows,
        ring_bytes: args.ring_mib << 20,
        settings: Settings {
            grace_ns: args.grace.as_nanos() as u64,
            ..Settings::default()
        },
        ports: args.ports.clone(),
        nets: args.nets.clone(),
    };
    let mut kernel = Kernel::load(&config)?;
    let mode = match args.xdp_mode {
        XdpModeArg::Auto => XdpMode::default(),
        XdpModeArg::Native => XdpMode::Driver,
        XdpModeArg::Generic => XdpMode::Skb,
    };
    for iface in &args.ifaces {
        kernel.attach(iface, mode, !args.no_egress)?;
    }
    // SAFETY: the ring buffer owns its fd and lives inside the AsyncFd until both drop.
    let mut events =
        unsafe { AsyncFd::register_with_interest(kernel.take_events()?, Interest::READABLE) }
            .map_err(std::io::Error::from)?;
    let clock = WallClock::new();
    let mut hold = HoldQueue::new(args.hold.as_nanos() as u64);
    let mut out = std::io::stdout().lock();
    let mut stats = DaemonStats::default();
    eprintln!(
        "rstwatch: watching {} (XDP ingress{}); Ctrl-C to stop",
        args.ifaces.join(", "),
        if args.no_egress { "" } else { ", TC egress" }
    );

    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut user1 = signal(SignalKind::user_defined1())?;
    let mut tick = tokio::time::interval(RELEASE_TICK);
    loop {
        tokio::select! {
            guard = events.readable_mut() => {
                let mut guard = guard?;
                drain(guard.get_inner_mut(), &mut hold, &mut stats);
                guard.clear_ready();
            }
            _ = tick.tick() => {
                for held in hold.release(monotonic_ns()) {
                    write_event(&mut out, &held, &clock, &ifnames)?;
                }
            }
            _ = user1.recv() => {
                eprintln!("rstwatch: {}", kernel.counters()?.describe());
            }
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
        }
    }
    drain(events.get_mut(), &mut hold, &mut stats);
    for held in hold.release_all() {
        write_event(&mut out, &held, &clock, &ifnames)?;
    }
    out.flush()?;
    eprintln!("rstwatch: kernel {}", kernel.counters()?.describe());
    eprintln!(
        "rstwatch: daemon late_followups={} unknown_events={} short_events={}",
        stats.late_followups, stats.unknown_events, stats.short_events
    );
    Ok(())
}

/// What the daemon itself could not use, reported on exit.
#[derive(Debug, Default)]
struct DaemonStats {
    late_followups: u64,
    unknown_events: u64,
    short_events: u64,
}

fn drain(
    ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
    hold: &mut HoldQueue,
    stats: &mut DaemonStats,
) {
    while let Some(item) = ring.next() {
        let Some(event) = decode(&item) else {
            stats.short_events += 1;
            continue;
        };
        match hold.offer(event) {
            Offer::Held | Offer::AttachedToHeld => {}
            Offer::LateFollowUp => stats.late_followups += 1,
            Offer::UnknownKind => stats.unknown_events += 1,
        }
    }
}

/// Copies one ring-buffer record out as an `RstEvent`; `None` if it is too short to be one.
pub fn decode(bytes: &[u8]) -> Option<RstEvent> {
    if bytes.len() < std::mem::size_of::<RstEvent>() {
        return None;
    }
    // SAFETY: length checked; RstEvent is plain old data, valid for any bit pattern.
    Some(unsafe { bytes.as_ptr().cast::<RstEvent>().read_unaligned() })
}

fn write_event(
    out: &mut impl Write,
    held: &Held,
    clock: &WallClock,
    ifnames: &HashMap<u32, String>,
) -> anyhow::Result<()> {
    let e = &held.event;
    let ts = clock.to_system_time(e.ts_ns);
    let addr = |bytes: [u8; 16]| {
        let v6 = Ipv6Addr::from(bytes);
        v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
    };
    writeln!(
        out,
        "{:?} {} {} {}:{} -> {}:{} flags={:#04x} ttl={} ip_id={} seq={} ack={} followups={}",
        ts,
        ifnames.get(&e.ifindex).map_or("?", String::as_str),
        if e.direction == 0 {
            "ingress"
        } else {
            "egress"
        },
        addr(e.pkt.src_addr),
        e.pkt.src_port,
        addr(e.pkt.dst_addr),
        e.pkt.dst_port,
        e.pkt.tcp_flags,
        e.pkt.ttl,
        e.pkt.ip_id,
        e.pkt.seq,
        e.pkt.ack,
        held.followups.len()
    )
    .context("writing a record")?;
    out.flush()?;
    Ok(())
}
