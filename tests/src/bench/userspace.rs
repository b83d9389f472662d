//! Userspace throughput: events the kernel put in the ring buffer, drained, decoded, held for
//! follow-ups, explained and rendered as JSON by the daemon's own code, on one thread.

use std::{
    fs::File,
    io::Write as _,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use rstwatch::{
    clock::WallClock,
    explain::{explain, ExplainSettings},
    hold::HoldQueue,
    kernel::{Kernel, KernelConfig},
    output::{Format, Json},
    report::ResetClass,
    summary::Summary,
    watch::decode,
};
use rstwatch_common::Counter;

use super::{
    kernel_cost::{ring_capacity, run},
    packets::{flow_endpoint, segment, set_destination, set_source, CLIENT_V4, SERVER_V4},
};
use crate::frame::{ACK, RST, SYN};

const RING_BYTES: u32 = 64 << 20;
const ROUNDS: u32 = 3;
/// Flows per round start after the kernel-cost runs' flow numbers.
const FIRST_FLOW: u32 = 1 << 22;

/// What one core does with the kernel's events.
#[derive(Clone, Debug)]
pub struct Throughput {
    pub events: u64,
    /// Drain, decode, hold, explain, render to a buffer.
    pub pipeline: Duration,
    /// Writing each record with its own write(2) to /dev/null, as `--output FILE` does.
    pub writes: Duration,
    /// Reports by class, to show the events are real conversations (`abort` expected).
    pub classes: String,
}

impl Throughput {
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.pipeline.as_secs_f64()
    }

    pub fn events_per_second_written(&self) -> f64 {
        self.events as f64 / (self.pipeline + self.writes).as_secs_f64()
    }
}

/// Fills the ring with RSTs ending real conversations (SYN, SYN-ACK, data, RST from the
/// server: `abort`), then times the daemon's pipeline over them.
pub fn measure() -> Result<Throughput> {
    let kernel_config = KernelConfig {
        ring_bytes: RING_BYTES,
        ..KernelConfig::default()
    };
    let mut kernel = Kernel::load(&kernel_config)?;
    let mut ring = kernel.take_events()?;
    let per_round = ring_capacity(RING_BYTES) * 3 / 4;
    let mut conversation = [
        segment(CLIENT_V4, SERVER_V4, SYN, 0),
        segment(SERVER_V4, CLIENT_V4, SYN | ACK, 0),
        segment(CLIENT_V4, SERVER_V4, ACK, 100),
        segment(SERVER_V4, CLIENT_V4, RST | ACK, 0),
    ];
    let json = Json;
    let settings = ExplainSettings::default();
    let clock = WallClock::new();
    let mut summary = Summary::new();
    let mut total = Throughput {
        events: 0,
        pipeline: Duration::ZERO,
        writes: Duration::ZERO,
        classes: String::new(),
    };
    let mut dev_null = File::options()
        .append(true)
        .open("/dev/null")
        .context("opening /dev/null")?;
    for round in 0..ROUNDS {
        let sent_before = kernel.counters()?.get(Counter::EventsSent);
        for flow in 0..per_round {
            let client = flow_endpoint(FIRST_FLOW + round * per_round + flow);
            for (i, frame) in conversation.iter_mut().enumerate() {
                if i % 2 == 0 {
                    set_source(frame, client);
                } else {
                    set_destination(frame, client);
                }
                run(&kernel, frame, 1)?;
            }
        }
        let counters = kernel.counters()?;
        let events = counters.get(Counter::EventsSent) - sent_before;
        ensure!(
            events == u64::from(per_round) && counters.get(Counter::EventsLost) == 0,
            "{per_round} conversations produced {events} events ({})",
            counters.describe()
        );

        let mut lines = Vec::with_capacity(per_round as usize);
        let started = Instant::now();
        let mut hold = HoldQueue::new(0, 0);
        while let Some(item) = ring.next() {
            if let Some(event) = decode(&item) {
                hold.offer(event);
            }
        }
        let mut line = Vec::with_capacity(1024);
        for held in hold.release_all() {
            let ts = clock.to_system_time(held.event.ts_ns);
            let report = explain(&held.event, &held.followups, &settings, "bench0", ts);
            line.clear();
            json.render(&report, &mut line);
            line.push(b'\n');
            summary.add(&report);
            lines.push(line.clone());
        }
        total.pipeline += started.elapsed();
        ensure!(
            lines.len() as u64 == events,
            "{events} events gave {} records",
            lines.len()
        );

        let started = Instant::now();
        for line in &lines {
            dev_null.write_all(line)?;
        }
        total.writes += started.elapsed();
        total.events += events;
        eprintln!(
            "bench: userspace round {}/{ROUNDS}: {events} events",
            round + 1
        );
    }
    total.classes = ResetClass::ALL
        .iter()
        .filter(|class| summary.count(**class) != 0)
        .map(|class| format!("{}={}", class.as_str(), summary.count(*class)))
        .collect::<Vec<_>>()
        .join(" ");
    Ok(total)
}
