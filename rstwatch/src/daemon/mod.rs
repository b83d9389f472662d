//! `rstwatch watch`: attach, hand the ring buffer's records to the pipeline, signals (SIGINT
//! and SIGTERM flush what is pending and print the totals, SIGUSR1 prints them, SIGHUP reopens
//! `--output` and `--pcap`), `--metrics` scrapes, and watched interfaces that go away and come
//! back.

pub mod metrics;

use std::{collections::HashMap, time::Duration};

use aya::{
    maps::{MapData, RingBuf},
    programs::XdpMode,
};
use rstwatch_common::{features::ProgramFeatures, Counter, PortSet, Settings};
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};

use self::metrics::{Scrape, SinkRecords, Snapshot, StackWitnessStats};
use crate::{
    assembly::{open_records, Syslog, SUMMARY_PEERS},
    cli::{AggregateRate, OnOff, TcAttachArg, WatchArgs, XdpModeArg},
    clock::{monotonic_ns, WallClock},
    explain::ExplainSettings,
    kernel::features::KernelFeatures,
    kernel::ifaces::{Change, Interfaces},
    kernel::preflight,
    kernel::{table_capacity, Kernel, KernelConfig, TcAttach, VerifierRejection},
    local::{
        gate::{FloodGate, GateAction},
        witness,
    },
    output::{format, node::with_node_name, Format, FormatKind},
    pipeline::{aggregate::AggregateConfig, Pipeline, PipelineConfig},
    sink::{
        file::{Destination, LineSink, LineStats},
        metrics::{MetricsSink, ResetCounts},
        pcap::{Interface, PcapSink, ReopenRequest},
        Sink,
    },
};

/// How often the ring buffer is drained and held RSTs are checked for release. The kernel
/// wakes the daemon only once the ring fills past a threshold, so this bounds the latency.
const RELEASE_TICK: Duration = Duration::from_millis(20);
/// How long after a packet's timestamp its event may still be on its way into the ring buffer
/// (the program takes the time, steps the flow, then reserves and submits): far more than a
/// program run takes.
const EVENT_LAG_NS: u64 = 1_000_000;
/// How often the kernel's storm counts are read and reported as aggregates.
const STORM_TICK: Duration = Duration::from_secs(1);
/// How often the watched interfaces are checked for having gone or come back.
const INTERFACE_TICK: Duration = Duration::from_millis(250);
/// How long the output writer may keep writing what is queued after SIGINT/SIGTERM; the rest
/// is lost, and counted.
const OUTPUT_SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    preflight::distinct_interfaces(&args.ifaces)?;
    let mut ifnames = HashMap::new();
    for iface in &args.ifaces {
        ifnames.insert(preflight::interface_index(iface)?, iface.clone());
        preflight::require_ethernet(iface)?;
    }
    preflight::require_capabilities()?;
    let (records, records_format) = open_records(args.output.as_ref(), args.format)?;
    let syslog = Syslog::start(&args.syslog, args.format)?;
    let metrics_listener = match args.metrics {
        Some(addr) => Some(metrics::listen(addr).await?),
        None => None,
    };
    // Before anything is attached, and long before the line saying so: a signal that came
    // earlier would get its default action, which for SIGUSR1 and SIGHUP is to exit.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut user1 = signal(SignalKind::user_defined1())?;
    let mut hangup = signal(SignalKind::hangup())?;

    let features = KernelFeatures::detect();
    for missing in features.missing() {
        eprintln!("rstwatch: {missing}");
    }
    let server_ports = args.connections.server_ports();
    let mut kernel = Kernel::load(&kernel_config(&args, server_ports, features.programs))
        .inspect_err(|err| {
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
    let witness = match kernel.attach_stack_witness() {
        Ok(witness) => {
            for degraded in &witness.degraded {
                eprintln!("rstwatch: {degraded}");
            }
            Some(witness)
        }
        Err(unavailable) => {
            eprintln!("rstwatch: {}", unavailable.0);
            None
        }
    };
    // SAFETY: the ring buffer owns its fd and lives inside the AsyncFd until both drop.
    let mut events =
        unsafe { AsyncFd::register_with_interest(kernel.take_events()?, Interest::READABLE) }
            .map_err(std::io::Error::from)?;
    let mut interfaces =
        Interfaces::new(ifnames.iter().map(|(&index, name)| (name.clone(), index)));
    let mut pipeline = Pipeline::new(PipelineConfig {
        clock: WallClock::new(),
        explain: ExplainSettings {
            idle_timeout: args.idle_timeout,
            server_ports,
            vlan_key: args.connections.vlan_key == OnOff::On,
            ..ExplainSettings::default()
        },
        ifnames,
        hold_ns: args.hold.as_nanos() as u64,
        link_ns: args.grace.as_nanos() as u64,
        aggregate: match args.aggregate_rate {
            AggregateRate::Off => None,
            AggregateRate::PerSecond(rate) => Some(AggregateConfig::per_second(rate)),
        },
    });
    let mut stack = witness.map(|witness| {
        pipeline.witness_stack(witness.join);
        let gate = FloodGate::new(witness::lost_records(&witness.lost), monotonic_ns());
        StackWitness {
            ring: witness.ring,
            lost: witness.lost,
            probes: witness.probes,
            gate,
        }
    });
    let mut records_sinks: Vec<Box<dyn Sink>> = vec![Box::new(records.clone())];
    if let Some(syslog) = &syslog {
        let (sink, body) = (Box::new(syslog.sink()), syslog.body);
        if records_format.renders_as(body) {
            records_sinks.push(sink);
        } else {
            pipeline.add_output(named(body, format(body, false), &args), vec![sink]);
        }
    }
    let resets = ResetCounts::default();
    let pcap_reopen = ReopenRequest::default();
    if let Some(path) = &args.pcap {
        let interfaces = (args.ifaces.iter())
            .map(|name| {
                Ok(Interface {
                    index: preflight::interface_index(name)?,
                    name: name.clone(),
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let max_bytes = args.pcap_max_mib.map(|mib| mib << 20);
        let sink = PcapSink::create(path, max_bytes, interfaces, pcap_reopen.clone())?;
        records_sinks.push(Box::new(sink));
    }
    let mut scrapes = metrics_listener.map(|listener| {
        records_sinks.push(Box::new(MetricsSink::new(resets.clone())));
        let (scrape, scrapes) = mpsc::channel(1);
        tokio::spawn(metrics::serve(listener, scrape));
        scrapes
    });
    pipeline.add_output(
        named(records_format.kind, records_format.format(), &args),
        records_sinks,
    );
    eprintln!(
        "rstwatch: watching {} (XDP ingress{}); Ctrl-C to stop, SIGUSR1 for counters",
        args.ifaces.join(", "),
        if egress_attached { ", TC egress" } else { "" }
    );

    let mut tick = tokio::time::interval(RELEASE_TICK);
    let mut storm_tick = tokio::time::interval(STORM_TICK);
    let mut interface_tick = tokio::time::interval(INTERFACE_TICK);
    loop {
        tokio::select! {
            guard = events.readable_mut() => {
                let mut guard = guard?;
                drain(&mut pipeline, guard.get_inner_mut());
                guard.clear_ready();
            }
            _ = tick.tick() => {
                // The time is taken before the drain, and the holds released are those that
                // ended `EVENT_LAG_NS` before it: every event of a packet seen before their
                // end is drained by then, and joins them as it does offline.
                let now = monotonic_ns();
                drain_stack(&mut pipeline, stack.as_mut(), &mut kernel);
                drain(&mut pipeline, events.get_mut());
                pipeline.release(now.saturating_sub(EVENT_LAG_NS), &kernel)?;
            }
            _ = storm_tick.tick() => pipeline.report_storms(&kernel.storms()?)?,
            _ = user1.recv() => {
                let view = View { pipeline: &pipeline, kernel: &kernel, records: &records, syslog: syslog.as_ref(), stack: stack.as_ref() };
                eprint!("{}", view.totals(&interfaces)?);
            }
            _ = hangup.recv() => {
                reopen(&records);
                pcap_reopen.request();
            }
            scrape = next_scrape(&mut scrapes) => {
                let view = View { pipeline: &pipeline, kernel: &kernel, records: &records, syslog: syslog.as_ref(), stack: stack.as_ref() };
                let page = view.metrics_page(&resets, &args)?;
                // The client may have gone: its page is simply not sent.
                let _ = scrape.send(page);
            }
            _ = interface_tick.tick() => {
                let egress = (!args.no_egress).then_some(tc_attach);
                follow_interfaces(&mut interfaces, &mut pipeline, &mut kernel, mode, egress);
            }
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
        }
    }
    drain_stack(&mut pipeline, stack.as_mut(), &mut kernel);
    drain(&mut pipeline, events.get_mut());
    pipeline.release(u64::MAX, &kernel)?;
    pipeline.report_storms(&kernel.storms()?)?;
    pipeline.finish(&kernel)?;
    let output = records.close(OUTPUT_SHUTDOWN_GRACE);
    let view = View {
        pipeline: &pipeline,
        kernel: &kernel,
        records: &records,
        syslog: syslog.as_ref(),
        stack: stack.as_ref(),
    };
    eprint!("{}", view.totals(&interfaces)?);
    if output.queued > 0 {
        eprintln!(
            "rstwatch: {}: {} records still queued were lost at exit (the writer was stalled)",
            records.destination().describe(),
            output.queued
        );
    }
    if let Some(syslog) = syslog {
        syslog.shut_down(pipeline.stats().folded).await?;
    }
    Ok(())
}

fn kernel_config(
    args: &WatchArgs,
    server_ports: &PortSet,
    features: ProgramFeatures,
) -> KernelConfig {
    KernelConfig {
        flows: args.flows,
        ring_bytes: args.ring_mib << 20,
        settings: args.connections.settings(Settings {
            grace_ns: args.grace.as_nanos() as u64,
            ..Settings::default()
        }),
        ports: args.ports.clone(),
        nets: args.nets.clone(),
        server_ports: *server_ports,
        features,
    }
}

/// `format` (of kind `kind`) with `--node-name` added to its records, if given.
fn named(kind: FormatKind, format: Box<dyn Format>, args: &WatchArgs) -> Box<dyn Format> {
    match &args.node_name {
        Some(node) => with_node_name(kind, format, node),
        None => format,
    }
}

/// Log rotation: the next records go to a freshly opened `--output`.
fn reopen(records: &LineSink) {
    match records.destination() {
        Destination::File(_) => records.reopen(),
        Destination::Stdout => {
            eprintln!("rstwatch: SIGHUP: records go to standard output, nothing to reopen")
        }
    }
}

/// Reports watched interfaces that disappeared, and attaches again to those that are back.
fn follow_interfaces(
    interfaces: &mut Interfaces,
    pipeline: &mut Pipeline,
    kernel: &mut Kernel,
    mode: XdpMode,
    egress: Option<TcAttach>,
) {
    for change in interfaces.poll() {
        match change {
            Change::Gone { name } => eprintln!(
                "rstwatch: interface {name} disappeared: its resets are not seen until an \
                 interface of that name returns"
            ),
            Change::Back { name, index } => {
                // The name may now belong to another kind of device: same checks as at start.
                let egress = egress.filter(|_| !preflight::is_loopback(&name));
                let attached = preflight::require_ethernet(&name)
                    .map_err(anyhow::Error::from)
                    .and_then(|()| kernel.attach(&name, mode, egress));
                match attached {
                    Ok(_) => {
                        pipeline.name_interface(index, name.clone());
                        eprintln!(
                            "rstwatch: interface {name} is back (index {index}): attached again"
                        );
                    }
                    Err(err) => eprintln!(
                        "rstwatch: interface {name} is back (index {index}) but is not \
                         watched: {err:#}"
                    ),
                }
            }
        }
    }
}

/// The next `--metrics` scrape; never, without `--metrics`.
async fn next_scrape(scrapes: &mut Option<mpsc::Receiver<Scrape>>) -> Scrape {
    match scrapes {
        Some(scrapes) => match scrapes.recv().await {
            Some(scrape) => scrape,
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// What the summary and the metrics page read, borrowed from the daemon's loop.
struct View<'a> {
    pipeline: &'a Pipeline,
    kernel: &'a Kernel,
    records: &'a LineSink,
    syslog: Option<&'a Syslog>,
    stack: Option<&'a StackWitness>,
}

impl View<'_> {
    /// The `--metrics` page: the reset counts and what the kernel, the pipeline and the sinks
    /// counted until now. The flows live are counted from the mapped tables' keys.
    fn metrics_page(&self, resets: &ResetCounts, args: &WatchArgs) -> anyhow::Result<String> {
        let output = self.records.stats();
        let mut sinks = vec![SinkRecords {
            sink: "output",
            sent: output.written,
            dropped: output.dropped(),
            spooled: 0,
        }];
        if let Some(syslog) = self.syslog {
            let stats = syslog.handle.stats();
            sinks.push(SinkRecords {
                sink: "syslog",
                sent: stats.sent + stats.resent,
                dropped: stats.dropped(),
                spooled: stats.spooled,
            });
        }
        let snapshot = Snapshot {
            kernel: self.kernel.counters()?,
            flows_live: self.kernel.flow_count(),
            flow_reads_torn: self.kernel.torn_reads(),
            flow_capacity: {
                let [v4, v6] = table_capacity(args.flows);
                vec![("ipv4", v4), ("ipv6", v6)]
            },
            pipeline: self.pipeline.stats(),
            held: self.pipeline.held() as u64,
            sinks,
            stack: self.stack.map(|stack| StackWitnessStats {
                records_lost: witness::lost_records(&stack.lost),
                steps_aside: stack.gate.steps_aside,
                attached: !stack.gate.is_aside(),
            }),
        };
        Ok(metrics::render(resets, &snapshot))
    }

    /// The summary by class and peer, the kernel's counters and the daemon's own.
    fn totals(&self, interfaces: &Interfaces) -> anyhow::Result<String> {
        let mut totals = self.pipeline.summary().render(SUMMARY_PEERS);
        let counters = self.kernel.counters()?;
        let stats = self.pipeline.stats();
        totals.push_str(&format!(
            "rstwatch: kernel {}\nrstwatch: flows live={} evicted={} reads_torn={}\nrstwatch: \
             daemon held={} late_data_followups={} states_past_hold_end={} unknown_events={} \
             short_events={} interfaces_lost={}\n",
            counters.describe(),
            self.kernel.flow_count(),
            counters.get(Counter::FlowsEvicted),
            self.kernel.torn_reads(),
            self.pipeline.held(),
            stats.late_data_followups,
            stats.states_past_hold_end,
            stats.unknown_events,
            stats.short_events,
            interfaces.lost
        ));
        totals.push_str(&describe_output(self.records));
        if let Some(stack) = self.stack {
            let gate = &stack.gate;
            totals.push_str(&format!(
                "rstwatch: stack witness records_lost={} floods_stepped_aside={} aside={:.1}s{}\n",
                witness::lost_records(&stack.lost),
                gate.steps_aside,
                gate.aside_total_ns(monotonic_ns()) as f64 / 1e9,
                if gate.is_aside() { " (aside now)" } else { "" }
            ));
        }
        if let Some(syslog) = self.syslog {
            let sink = syslog.handle.stats();
            totals.push_str(&format!(
                "rstwatch: syslog connected={} link_failures={} sent={} resent={} \
                 maybe_duplicated={} folded={} pending={} dropped={}\n",
                sink.connected,
                sink.link_failures,
                sink.sent,
                sink.resent,
                sink.maybe_duplicated,
                stats.folded,
                sink.pending,
                sink.dropped()
            ));
        }
        Ok(totals)
    }
}

/// The output writer's counts, for the totals.
fn describe_output(records: &LineSink) -> String {
    let stats: LineStats = records.stats();
    format!(
        "rstwatch: output {} written={} queued={} dropped={} (queue_full={} \
         write_failed={})\n",
        records.destination().describe(),
        stats.written,
        stats.queued,
        stats.dropped(),
        stats.dropped_queue_full,
        stats.dropped_write_failed
    )
}

/// Hands every record in the ring buffer to the pipeline.
fn drain(pipeline: &mut Pipeline, ring: &mut RingBuf<MapData>) {
    while let Some(item) = ring.next() {
        pipeline.offer_record(&item);
    }
}

/// The host's TCP stack as a witness, while the kernel has it.
struct StackWitness {
    ring: RingBuf<MapData>,
    lost: aya::maps::PerCpuArray<MapData, u64>,
    probes: witness::ResetProbes,
    gate: FloodGate,
}

/// Hands every record of the TCP stack's own ring buffer to the pipeline, with the count of
/// those the kernel lost, and steps the reset programs aside while they lose records to a
/// flood (`crate::local::gate`).
fn drain_stack(pipeline: &mut Pipeline, stack: Option<&mut StackWitness>, kernel: &mut Kernel) {
    let Some(stack) = stack else {
        return;
    };
    let now = monotonic_ns();
    let lost = witness::lost_records(&stack.lost);
    pipeline.stack_records_lost(lost, now);
    while let Some(item) = stack.ring.next() {
        pipeline.offer_stack_record(&item);
    }
    match stack.gate.observe(lost, now) {
        GateAction::Keep => {}
        GateAction::StepAside => {
            let pause = stack.gate.aside_until_ns() - now;
            match kernel.set_reset_probes(&mut stack.probes, false) {
                Ok(()) => eprintln!(
                    "rstwatch: the stack's reset tracepoints lost records (a reset flood): \
                     detached for {}s, no \"not from the TCP stack\" claim meanwhile",
                    pause / 1_000_000_000
                ),
                Err(err) => eprintln!("rstwatch: stack witness: {err}"),
            }
        }
        GateAction::Return => match kernel.set_reset_probes(&mut stack.probes, true) {
            Ok(()) => eprintln!("rstwatch: the stack's reset tracepoints are attached again"),
            Err(err) => {
                stack.gate.stay_aside(now);
                eprintln!(
                    "rstwatch: stack witness: {err}; the stack's resets are no longer \
                     reported"
                );
            }
        },
    }
    if stack.gate.is_aside() {
        pipeline.stack_blind(now);
    }
}
