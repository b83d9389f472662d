//! Per-packet cost of rstwatch's XDP program under BPF_PROG_TEST_RUN, each figure measured
//! alternately with the empty XDP program over the same frame, so a noisy machine moves both.

use anyhow::{ensure, Context, Result};
use aya::{
    maps::{MapData, RingBuf},
    programs::{TestRun, TestRunOptions},
};
use rstwatch::kernel::Kernel;
use rstwatch_common::{event::FlowRecord, Counter};

use crate::baseline::EmptyXdp;

const XDP_PASS: u32 = 2;
/// Alternating rounds per figure; the median of each side is reported.
const ROUNDS: usize = 5;

/// One figure: rstwatch's average ns per packet and the empty program's, same run.
#[derive(Clone, Debug)]
pub struct Cost {
    pub case: String,
    /// How the figure was taken: `repeat` (one frame run N times in the kernel) or
    /// `single-shot` (one syscall per frame, each with its own flow).
    pub method: &'static str,
    pub runs: u64,
    pub ns: f64,
    pub empty_ns: f64,
}

impl Cost {
    pub fn ratio(&self) -> f64 {
        self.ns / self.empty_ns
    }
}

/// The kernel's average ns per run of rstwatch's XDP program over `frame`.
pub fn run(kernel: &Kernel, frame: &[u8], repeat: u32) -> Result<u32> {
    let result = kernel
        .xdp()
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::default()
        })
        .context("BPF_PROG_TEST_RUN on rstwatch_xdp")?;
    ensure!(
        result.return_value == XDP_PASS,
        "rstwatch_xdp returned {} instead of XDP_PASS",
        result.return_value
    );
    Ok(result.duration.as_nanos() as u32)
}

/// `frame` run `repeat` times per round, rstwatch and the empty program alternately.
pub fn repeated(
    kernel: &Kernel,
    empty: &EmptyXdp,
    case: &str,
    frame: &[u8],
    repeat: u32,
) -> Result<Cost> {
    let mut ns = Vec::with_capacity(ROUNDS);
    let mut empty_ns = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        empty_ns.push(empty.run(frame, repeat)?);
        ns.push(run(kernel, frame, repeat)?);
    }
    Ok(Cost {
        case: case.to_owned(),
        method: "repeat",
        runs: (ROUNDS as u64) * u64::from(repeat),
        ns: median(ns),
        empty_ns: median(empty_ns),
    })
}

/// A RST that produces an event on every run, in batches the ring buffer can hold, drained
/// between batches: the success path, not the ring-full path. The kernel must be loaded with
/// `grace_ns = 0`, so that each RST ends the previous one's grace period, starts the flow over
/// and is a first RST again.
pub fn rst_events(
    kernel: &Kernel,
    ring: &mut RingBuf<MapData>,
    ring_bytes: u32,
    empty: &EmptyXdp,
    case: &str,
    frame: &[u8],
) -> Result<Cost> {
    let batch = ring_capacity(ring_bytes) * 3 / 4;
    let mut ns = Vec::with_capacity(ROUNDS);
    let mut empty_ns = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        drain(ring);
        let before = kernel.counters()?;
        empty_ns.push(empty.run(frame, batch)?);
        ns.push(run(kernel, frame, batch)?);
        let after = kernel.counters()?;
        let sent = after.get(Counter::EventsSent) - before.get(Counter::EventsSent);
        ensure!(
            sent == u64::from(batch)
                && after.get(Counter::EventsLost) == before.get(Counter::EventsLost),
            "{case}: {batch} RSTs sent {sent} events ({})",
            after.describe()
        );
    }
    drain(ring);
    Ok(Cost {
        case: case.to_owned(),
        method: "repeat, ring drained per batch",
        runs: (ROUNDS as u64) * u64::from(batch),
        ns: median(ns),
        empty_ns: median(empty_ns),
    })
}

/// Each of `count` runs is one syscall over `frame` after `patch(frame, i)` gave it its own
/// flow; the empty program is run the same way over the unpatched frame.
pub fn single_shots(
    kernel: &Kernel,
    empty: &EmptyXdp,
    case: &str,
    frame: &[u8],
    range: std::ops::Range<u32>,
    mut patch: impl FnMut(&mut [u8], u32),
) -> Result<Cost> {
    let mut patched = frame.to_vec();
    let mut total = 0u64;
    let mut empty_total = 0u64;
    for i in range.clone() {
        patch(&mut patched, i);
        total += u64::from(run(kernel, &patched, 1)?);
        empty_total += u64::from(empty.run(frame, 1)?);
    }
    let runs = u64::from(range.end - range.start);
    Ok(Cost {
        case: case.to_owned(),
        method: "single-shot",
        runs,
        ns: total as f64 / runs as f64,
        empty_ns: empty_total as f64 / runs as f64,
    })
}

/// RST records with a flow (the largest kind) a ring buffer of `ring_bytes` holds: each has
/// an 8-byte header, 8-byte aligned.
pub fn ring_capacity(ring_bytes: u32) -> u32 {
    let record = (std::mem::size_of::<FlowRecord>() as u32).next_multiple_of(8) + 8;
    ring_bytes / record
}

fn drain(ring: &mut RingBuf<MapData>) {
    while ring.next().is_some() {}
}

fn median(mut values: Vec<u32>) -> f64 {
    values.sort_unstable();
    f64::from(values[values.len() / 2])
}
