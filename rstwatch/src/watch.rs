//! `rstwatch watch`: attach, drain the ring buffer, hold each RST for its follow-ups, explain
//! it, write it; on SIGINT/SIGTERM flush what is pending and print the totals.

use std::{
    collections::HashMap,
    fs::OpenOptions,
    io::{IsTerminal as _, Write},
    time::Duration,
};

use anyhow::Context as _;
use aya::{
    maps::{MapData, RingBuf},
    programs::XdpMode,
};
use rstwatch_common::{
    event::{decode, DecodeError},
    Counter, FlowKey, Settings,
};
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
};

use crate::{
    cli::{AggregateRate, FormatArg, SyslogArgs, TcAttachArg, WatchArgs, XdpModeArg},
    clock::{monotonic_ns, WallClock},
    explain::{explain, explain_held, ExplainSettings},
    features::KernelFeatures,
    hold::{HoldQueue, Offer},
    kernel::{Kernel, KernelConfig, TcAttach, UserError, VerifierRejection},
    output::{cef::Cef, ecs::Ecs, json::Json, ocsf::Ocsf, text::Text, Format},
    preflight,
    report::Aggregate,
    sink::{
        aggregate::AggregateConfig,
        syslog::{self, SyslogConfig, SyslogHandle},
        transport::TlsTrust,
    },
    storm::StormTally,
    summary::Summary,
};

/// How often the ring buffer is drained and held RSTs are checked for release. The kernel
/// wakes the daemon only once the ring fills past a threshold, so this bounds the latency.
const RELEASE_TICK: Duration = Duration::from_millis(20);
/// How often the kernel's storm counts are read and reported as aggregates.
const STORM_TICK: Duration = Duration::from_secs(1);
/// How long the syslog sink may keep delivering after SIGINT/SIGTERM; the rest is spooled.
pub(crate) const SYSLOG_SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Peers listed in the summary.
pub(crate) const SUMMARY_PEERS: usize = 5;

pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    let mut ifnames = HashMap::new();
    for iface in &args.ifaces {
        ifnames.insert(preflight::interface_index(iface)?, iface.clone());
    }
    preflight::require_capabilities()?;
    let mut records = Records::open(args.output.as_deref(), args.format)?;
    let syslog = start_syslog(&args.syslog, args.format)?;

    if let Some(missing) = KernelFeatures::detect().missing() {
        eprintln!("rstwatch: {missing}");
    }
    let mut kernel = Kernel::load(&kernel_config(&args)).inspect_err(|err| {
        if let Some(rejection) = err.downcast_ref::<VerifierRejection>() {
            if args.verbose {
                eprintln!("{}", rejection.log.trim_end());
            }
        }
    })?;
    let mode = match args.xdp_mode {
        XdpModeArg::Auto => XdpMode::default(),
        XdpModeArg::Native => XdpMode::Driver,
        XdpModeArg::Generic => XdpMode::Skb,
    };
    let tc_attach = match args.tc_attach {
        TcAttachArg::Auto => TcAttach::Auto,
        TcAttachArg::Tcx => TcAttach::Tcx,
        TcAttachArg::Netlink => TcAttach::Netlink,
    };
    let mut egress_attached = false;
    for iface in &args.ifaces {
        let loopback = preflight::is_loopback(iface);
        let egress = !args.no_egress && !loopback;
        if let Some(stale) = kernel.attach(iface, mode, egress.then_some(tc_attach))? {
            eprintln!("rstwatch: removed the stale {stale} a killed rstwatch left on {iface}");
        }
        egress_attached |= egress;
        if loopback && !args.no_egress {
            eprintln!(
                "rstwatch: {iface} is a loopback interface: XDP alone sees each of its packets \
                 once, TC egress is not attached"
            );
        }
    }
    // SAFETY: the ring buffer owns its fd and lives inside the AsyncFd until both drop.
    let mut events =
        unsafe { AsyncFd::register_with_interest(kernel.take_events()?, Interest::READABLE) }
            .map_err(std::io::Error::from)?;
    let mut pipeline = Pipeline {
        clock: WallClock::new(),
        explain: ExplainSettings {
            idle_timeout: args.idle_timeout,
            ..ExplainSettings::default()
        },
        ifnames,
        hold: HoldQueue::new(args.hold.as_nanos() as u64, args.grace.as_nanos() as u64),
        records: &mut records,
        syslog: syslog.as_ref().map(|(handle, _)| handle.clone()),
        summary: Summary::new(),
        storms: StormTally::new(),
        stats: DaemonStats::default(),
    };
    eprintln!(
        "rstwatch: watching {} (XDP ingress{}); Ctrl-C to stop, SIGUSR1 for counters",
        args.ifaces.join(", "),
        if egress_attached { ", TC egress" } else { "" }
    );

    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut user1 = signal(SignalKind::user_defined1())?;
    let mut tick = tokio::time::interval(RELEASE_TICK);
    let mut storm_tick = tokio::time::interval(STORM_TICK);
    loop {
        tokio::select! {
            guard = events.readable_mut() => {
                let mut guard = guard?;
                pipeline.drain(guard.get_inner_mut());
                guard.clear_ready();
            }
            _ = tick.tick() => {
                pipeline.drain(events.get_mut());
                pipeline.release(monotonic_ns(), &kernel)?;
            }
            _ = storm_tick.tick() => pipeline.report_storms(&kernel)?,
            _ = user1.recv() => eprint!("{}", pipeline.totals(&kernel)?),
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
        }
    }
    pipeline.drain(events.get_mut());
    pipeline.release(u64::MAX, &kernel)?;
    pipeline.report_storms(&kernel)?;
    pipeline.records.flush()?;
    eprint!("{}", pipeline.totals(&kernel)?);
    if let Some((handle, task)) = syslog {
        let stats = handle.shutdown(SYSLOG_SHUTDOWN_GRACE).await;
        task.await.context("the syslog sender task failed")?;
        eprintln!(
            "rstwatch: syslog sent={} resent={} folded={} spooled_pending={} dropped={}",
            stats.sent,
            stats.resent,
            stats.folded,
            stats.pending,
            stats.dropped()
        );
    }
    Ok(())
}

fn kernel_config(args: &WatchArgs) -> KernelConfig {
    KernelConfig {
        flows: args.flows,
        ring_bytes: args.ring_mib << 20,
        settings: Settings {
            grace_ns: args.grace.as_nanos() as u64,
            ..Settings::default()
        },
        ports: args.ports.clone(),
        nets: args.nets.clone(),
    }
}

pub(crate) fn format(arg: FormatArg, colour: bool) -> Box<dyn Format> {
    match arg {
        FormatArg::Text => Box::new(Text::new(colour)),
        FormatArg::Json => Box::new(Json),
        FormatArg::Ecs => Box::new(Ecs),
        FormatArg::Ocsf => Box::new(Ocsf),
        FormatArg::Cef => Box::new(Cef),
    }
}

pub(crate) fn start_syslog(
    args: &SyslogArgs,
    format_arg: Option<FormatArg>,
) -> anyhow::Result<Option<(SyslogHandle, tokio::task::JoinHandle<()>)>> {
    let Some(url) = args.syslog.clone() else {
        return Ok(None);
    };
    let body = match args.syslog_format.or(format_arg) {
        None | Some(FormatArg::Text) => FormatArg::Json,
        Some(other) => other,
    };
    let mut config = SyslogConfig::new(url, &args.spool_dir);
    config.tls_trust = match (&args.syslog_ca, args.syslog_insecure) {
        (Some(ca), _) => TlsTrust::CaFile(ca.clone()),
        (None, true) => TlsTrust::Insecure,
        (None, false) => TlsTrust::SystemRoots,
    };
    config.facility = args.syslog_facility;
    config.spool_max_bytes = args.spool_max_mib << 20;
    config.aggregate = match args.aggregate_rate {
        AggregateRate::Off => None,
        AggregateRate::PerSecond(rate) => Some(AggregateConfig::per_second(rate)),
    };
    let started = syslog::spawn(config, format(body, false))
        .map_err(|err| UserError(format!("cannot start the syslog export: {err}")))?;
    Ok(Some(started))
}

/// Where records go: standard output or `--output FILE`, in `--format`.
pub(crate) struct Records {
    out: Box<dyn Write>,
    format: Box<dyn Format>,
    line: Vec<u8>,
}

impl Records {
    pub(crate) fn open(
        output: Option<&std::path::Path>,
        format_arg: Option<FormatArg>,
    ) -> anyhow::Result<Self> {
        let stdout_is_terminal = std::io::stdout().is_terminal();
        let (out, to_terminal): (Box<dyn Write>, bool) = match output {
            Some(path) => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|err| {
                        UserError(format!(
                            "cannot open --output {}: {err}: check the directory exists and is \
                             writable",
                            path.display()
                        ))
                    })?;
                (Box::new(file), false)
            }
            None => (Box::new(std::io::stdout()), stdout_is_terminal),
        };
        let format_arg = format_arg.unwrap_or(if to_terminal {
            FormatArg::Text
        } else {
            FormatArg::Json
        });
        let colour = to_terminal && std::env::var_os("NO_COLOR").is_none();
        Ok(Self {
            out,
            format: format(format_arg, colour),
            line: Vec::with_capacity(1024),
        })
    }

    /// Writes one record and flushes it: a consumer tailing the output sees every reset as
    /// soon as its hold ends.
    pub(crate) fn write(&mut self, report: &crate::report::ResetReport) -> anyhow::Result<()> {
        self.line.clear();
        self.format.render(report, &mut self.line);
        self.line.push(b'\n');
        self.out
            .write_all(&self.line)
            .and_then(|()| self.out.flush())
            .context("writing a record")
    }

    pub(crate) fn flush(&mut self) -> anyhow::Result<()> {
        self.out.flush().context("flushing records")
    }
}

/// From ring-buffer records to written reports.
struct Pipeline<'a> {
    clock: WallClock,
    explain: ExplainSettings,
    ifnames: HashMap<u32, String>,
    hold: HoldQueue,
    records: &'a mut Records,
    syslog: Option<SyslogHandle>,
    summary: Summary,
    storms: StormTally,
    stats: DaemonStats,
}

/// Ring-buffer records the daemon itself could not use, reported with the totals.
#[derive(Debug, Default)]
struct DaemonStats {
    /// Payload from a RST's sender after its report was released (RSTs are always reported).
    late_data_followups: u64,
    unknown_events: u64,
    short_events: u64,
}

impl Pipeline<'_> {
    fn drain(&mut self, ring: &mut RingBuf<MapData>) {
        while let Some(item) = ring.next() {
            let event = match decode(&item) {
                Ok(event) => event,
                Err(DecodeError::Short) => {
                    self.stats.short_events += 1;
                    continue;
                }
                Err(DecodeError::UnknownKind(_)) => {
                    self.stats.unknown_events += 1;
                    continue;
                }
            };
            match self.hold.offer(event) {
                Offer::Held | Offer::AttachedToHeld => {}
                Offer::LateDataFollowUp => self.stats.late_data_followups += 1,
                Offer::UnknownKind => self.stats.unknown_events += 1,
            }
        }
    }

    /// Explains and writes every RST whose hold ended by `now_ns`, with its connection's state
    /// as the kernel's flow table holds it now.
    fn release(&mut self, now_ns: u64, kernel: &Kernel) -> anyhow::Result<()> {
        // A failed lookup is a missing entry: the report then stands on the RST's snapshot.
        let flows = |key: &FlowKey| kernel.flow(key).ok().flatten();
        for held in self.hold.release(now_ns) {
            let iface = self
                .ifnames
                .get(&held.event.ifindex)
                .map_or("?", String::as_str);
            let clock = self.clock;
            let report = explain_held(&held, &flows, &self.explain, iface, |ns| {
                clock.to_system_time(ns)
            });
            self.write(report)?;
        }
        Ok(())
    }

    /// Reports what the kernel counted in storms since the last reading, one aggregate per
    /// sender prefix and port.
    fn report_storms(&mut self, kernel: &Kernel) -> anyhow::Result<()> {
        for storm in self.storms.read(&kernel.storms()?) {
            let event = &storm.sample;
            let iface = self.ifnames.get(&event.ifindex).map_or("?", String::as_str);
            let ts = self.clock.to_system_time(event.ts_ns);
            let mut report = explain(event, &[], &self.explain, iface, ts);
            report.aggregate = Some(Aggregate {
                count: storm.count,
                first: self.clock.to_system_time(storm.first_ns),
                last: self.clock.to_system_time(storm.last_ns),
            });
            self.write(report)?;
        }
        Ok(())
    }

    fn write(&mut self, report: crate::report::ResetReport) -> anyhow::Result<()> {
        self.records.write(&report)?;
        self.summary.add(&report);
        if let Some(syslog) = &self.syslog {
            syslog.send(report);
        }
        Ok(())
    }

    /// The summary by class and peer, the kernel's counters and the daemon's own.
    fn totals(&self, kernel: &Kernel) -> anyhow::Result<String> {
        let mut totals = self.summary.render(SUMMARY_PEERS);
        let counters = kernel.counters()?;
        // The LRU map evicts without telling anyone: what was inserted and is no longer there
        // was evicted (or started over after a RST's grace period, counted separately).
        let live = kernel.flow_count()? as u64;
        totals.push_str(&format!(
            "rstwatch: kernel {}\nrstwatch: flows live={live} evicted={}\nrstwatch: daemon \
             held={} late_data_followups={} unknown_events={} short_events={}\n",
            counters.describe(),
            counters.get(Counter::FlowsInserted).saturating_sub(live),
            self.hold.len(),
            self.stats.late_data_followups,
            self.stats.unknown_events,
            self.stats.short_events
        ));
        if let Some(syslog) = &self.syslog {
            let stats = syslog.stats();
            totals.push_str(&format!(
                "rstwatch: syslog connected={} sent={} resent={} folded={} pending={} dropped={}\n",
                stats.connected,
                stats.sent,
                stats.resent,
                stats.folded,
                stats.pending,
                stats.dropped()
            ));
        }
        Ok(totals)
    }
}
