//! From the kernel's ring-buffer records to written records, the one path every entry point
//! runs (the `watch` daemon, the benchmark, the offline replay):
//!
//! decode (`decode`, with the host stack's word joined from `crate::local`) -> hold (`hold`)
//! -> explain (`crate::explain`) -> aggregate (`aggregate`, storm folding, for every sink) ->
//! render once per format (`crate::output`) -> sinks (`crate::sink`). The kernel's own storm
//! counts (`storm`) join at the aggregate step; every report is tallied for the closing
//! summary (`summary`).
//!
//! The pipeline owns no kernel and no clock of its own: the caller says what time it is
//! (`release`) and where the flows' current state is read (`FlowStateSource`), so a recorded
//! capture replays exactly as it ran.

pub mod aggregate;
pub mod decode;
#[cfg(test)]
mod golden;
pub mod hold;
pub mod storm;
pub mod summary;

use std::{collections::HashMap, sync::Arc, time::Instant};

use foldhash::HashMap as FastMap;

use rstwatch_common::{RstEvent, StormCount, StormKey};

use self::{
    aggregate::{AggregateConfig, Aggregator},
    decode::DecodeError,
};
use crate::{
    clock::WallClock,
    explain::{captured_frames, explain, explain_held, ExplainSettings},
    local::LocalJoin,
    output::Format,
    pipeline::hold::{AtHoldEnd, FlowStateSource, HoldQueue, Offer},
    pipeline::storm::StormTally,
    pipeline::summary::Summary,
    report::{Aggregate, ResetReport},
    sink::Sink,
};

/// How many released RSTs ahead the flow state is asked for early: each read of the kernel's
/// table waits on memory unless it was asked for a while before.
const LOOKUP_AHEAD: usize = 8;

/// How the pipeline is set up; everything but the sinks.
pub struct PipelineConfig {
    /// Kernel time to wall-clock time.
    pub clock: WallClock,
    pub explain: ExplainSettings,
    /// Interface names by index, for the reports.
    pub ifnames: HashMap<u32, String>,
    /// How long a RST is held for its follow-ups.
    pub hold_ns: u64,
    /// How long a report stays linkable to later RSTs of its connection (the kernel's grace).
    pub link_ns: u64,
    /// Storm folding; `None` writes every reset on its own.
    pub aggregate: Option<AggregateConfig>,
}

/// Records the pipeline could not use, and resets folded into storm aggregates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Payload from a RST's sender after its report was released (RSTs are always reported).
    pub late_data_followups: u64,
    pub unknown_events: u64,
    pub short_events: u64,
    /// Resets folded into storm aggregates (they are in an aggregate's count, not lost).
    pub folded: u64,
    /// Reports whose connection's entry had taken packets past the hold's end, with no event
    /// to tell the state before them, by the time their hold was released: they carry the
    /// state right after the connection's latest RST within the hold (`crate::pipeline::hold`).
    pub states_past_hold_end: u64,
}

/// One format and the sinks that take its records.
struct Output {
    format: Box<dyn Format>,
    sinks: Vec<Box<dyn Sink>>,
    record: Vec<u8>,
}

pub struct Pipeline {
    clock: WallClock,
    explain: ExplainSettings,
    /// Shared with every report of the interface.
    ifnames: FastMap<u32, Arc<str>>,
    /// The name of an interface not in `ifnames`.
    unknown_iface: Arc<str>,
    /// Some sink takes the frames the kernel copied (`Sink::takes_frames`).
    frames_wanted: bool,
    hold: HoldQueue,
    aggregator: Option<Aggregator>,
    outputs: Vec<Output>,
    summary: Summary,
    /// What of the kernel's storm counts was reported already.
    storms: StormTally,
    stats: PipelineStats,
    /// Reports leaving the aggregator, reused between releases.
    publish: Vec<ResetReport>,
    /// The host's TCP stack's own records of its resets, where they are watched.
    local: Option<LocalJoin>,
    hold_ns: u64,
}

impl Pipeline {
    pub fn new(config: PipelineConfig) -> Self {
        Self {
            clock: config.clock,
            explain: config.explain,
            ifnames: (config.ifnames.into_iter())
                .map(|(index, name)| (index, Arc::from(name)))
                .collect(),
            unknown_iface: Arc::from("?"),
            frames_wanted: false,
            hold: HoldQueue::new(config.hold_ns, config.link_ns),
            aggregator: config.aggregate.map(Aggregator::new),
            outputs: Vec::new(),
            summary: Summary::new(),
            storms: StormTally::new(),
            stats: PipelineStats::default(),
            publish: Vec::new(),
            local: None,
            hold_ns: config.hold_ns,
        }
    }

    /// Joins every RST with what the host's TCP stack recorded about it (`crate::local`).
    pub fn witness_stack(&mut self, join: LocalJoin) {
        self.local = Some(join);
    }

    /// The kernel's count of the stack's records it lost, read at kernel time `now_ns`.
    pub fn stack_records_lost(&mut self, lost_total: u64, now_ns: u64) {
        if let Some(local) = &mut self.local {
            local.note_lost(lost_total, now_ns);
        }
    }

    /// The stack's reset programs are detached at kernel time `now_ns` (a reset flood).
    pub fn stack_blind(&mut self, now_ns: u64) {
        if let Some(local) = &mut self.local {
            local.note_blind(now_ns);
        }
    }

    /// Takes one record of the stack's ring buffer.
    pub fn offer_stack_record(&mut self, bytes: &[u8]) {
        if let Some(local) = &mut self.local {
            local.offer_record(bytes);
        }
    }

    /// Adds an output: `sinks` take the records rendered in `format` (rendered once for all).
    pub fn add_output(&mut self, format: Box<dyn Format>, sinks: Vec<Box<dyn Sink>>) {
        self.frames_wanted |= sinks.iter().any(|sink| sink.takes_frames());
        self.outputs.push(Output {
            format,
            sinks,
            record: Vec::with_capacity(2048),
        });
    }

    /// Takes one ring-buffer record: decoded and held until its hold ends.
    pub fn offer_record(&mut self, bytes: &[u8]) {
        match decode::event(bytes) {
            Ok(event) => self.offer(event),
            Err(DecodeError::Short) => self.stats.short_events += 1,
            Err(DecodeError::UnknownKind(_)) => self.stats.unknown_events += 1,
        }
    }

    /// Takes one kernel event: held until its hold ends.
    pub fn offer(&mut self, mut event: RstEvent) {
        // The event's key is derived from its packet; the flow tables drop the VLAN from
        // theirs unless told to keep it, and the held reports must find the same entries.
        if !self.explain.vlan_key {
            event.key.vlan = 0;
        }
        match self.hold.offer(event) {
            Offer::Held | Offer::AttachedToHeld => {}
            Offer::LateDataFollowUp => self.stats.late_data_followups += 1,
            Offer::UnknownKind => self.stats.unknown_events += 1,
        }
    }

    /// Explains and writes every RST whose hold ended by `now_ns` (kernel time), with its
    /// connection's state at the hold's end as `flows` tells it (`crate::pipeline::hold`), and
    /// writes out storm aggregates whose window ended; then flushes every sink.
    pub fn release(&mut self, now_ns: u64, flows: &impl FlowStateSource) -> anyhow::Result<()> {
        self.explain_and_publish(now_ns, flows)?;
        self.hold.forget_released(now_ns);
        if let Some(local) = &mut self.local {
            local.forget_before(now_ns, self.hold_ns);
        }
        if let Some(aggregator) = &mut self.aggregator {
            aggregator.flush_due(Instant::now(), &mut self.publish);
            self.write_published()?;
        }
        self.flush()
    }

    /// Reports what the kernel counted in storms since the last reading (`counts`, its STORMS
    /// map), one aggregate per sender prefix and port, then flushes.
    pub fn report_storms(&mut self, counts: &[(StormKey, Vec<StormCount>)]) -> anyhow::Result<()> {
        for storm in self.storms.read(counts) {
            let event = &storm.sample;
            let iface = self
                .ifnames
                .get(&event.ifindex)
                .unwrap_or(&self.unknown_iface);
            let ts = self.clock.to_system_time(event.ts_ns);
            let mut report = explain(event, &[], &self.explain, iface, ts);
            report.aggregate = Some(Aggregate {
                count: storm.count,
                first: self.clock.to_system_time(storm.first_ns),
                last: self.clock.to_system_time(storm.last_ns),
            });
            self.publish(report)?;
        }
        self.flush()
    }

    /// Releases everything held and every storm aggregate, then flushes (at the end of a run).
    pub fn finish(&mut self, flows: &impl FlowStateSource) -> anyhow::Result<()> {
        self.explain_and_publish(u64::MAX, flows)?;
        if let Some(aggregator) = &mut self.aggregator {
            aggregator.flush_all(&mut self.publish);
            self.write_published()?;
        }
        self.flush()
    }

    /// Takes an explained report from here on: counted, folded in a storm or rendered and
    /// written (sinks are flushed by `release`, `finish` or `flush`).
    pub fn publish(&mut self, report: ResetReport) -> anyhow::Result<()> {
        self.summary.add(&report);
        match &mut self.aggregator {
            Some(aggregator) => {
                self.stats.folded += aggregator.offer(report, Instant::now(), &mut self.publish);
                self.write_published()
            }
            None => write(&mut self.outputs, &report),
        }
    }

    pub fn flush(&mut self) -> anyhow::Result<()> {
        for sink in self.outputs.iter_mut().flat_map(|o| o.sinks.iter_mut()) {
            sink.flush()?;
        }
        Ok(())
    }

    /// Names interface `index` in reports: a watched interface that came back under a new
    /// index.
    pub fn name_interface(&mut self, index: u32, name: String) {
        self.ifnames.insert(index, Arc::from(name));
    }

    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    pub fn stats(&self) -> PipelineStats {
        self.stats
    }

    /// RSTs waiting for their hold to end.
    pub fn held(&self) -> usize {
        self.hold.len()
    }

    /// Explains and publishes every RST whose hold ended by `now_ns`, each read where it is
    /// held.
    fn explain_and_publish(
        &mut self,
        now_ns: u64,
        flows: &impl FlowStateSource,
    ) -> anyhow::Result<()> {
        while let Some(held) = self.hold.next_due(now_ns) {
            if let Some(ahead) = self.hold.due_ahead(now_ns, LOOKUP_AHEAD) {
                flows.prefetch(&ahead.event.key);
            }
            let iface = (self.ifnames.get(&held.event.ifindex)).unwrap_or(&self.unknown_iface);
            let clock = self.clock;
            let at_hold_end = held.state_at_hold_end(flows);
            if let AtHoldEnd::AfterRst {
                entry_past_end: true,
                ..
            } = at_hold_end
            {
                self.stats.states_past_hold_end += 1;
            }
            let wall_clock = |ns| clock.to_system_time(ns);
            let mut report = explain_held(held, at_hold_end, &self.explain, iface, wall_clock);
            if self.frames_wanted {
                report.frames = captured_frames(held, wall_clock);
            }
            report.local = self
                .local
                .as_mut()
                .and_then(|local| local.evidence_for(&held.event));
            self.hold.drop_front();
            self.publish(report)?;
        }
        Ok(())
    }

    /// Writes each report leaving the aggregator.
    fn write_published(&mut self) -> anyhow::Result<()> {
        for report in self.publish.drain(..) {
            write(&mut self.outputs, &report)?;
        }
        Ok(())
    }
}

/// Renders `report` once per format and hands it to the format's sinks.
fn write(outputs: &mut [Output], report: &ResetReport) -> anyhow::Result<()> {
    for output in outputs {
        output.record.clear();
        output.format.render(report, &mut output.record);
        for sink in &mut output.sinks {
            sink.write(report, &output.record)?;
        }
    }
    Ok(())
}
