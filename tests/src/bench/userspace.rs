//! Userspace throughput: events the kernel put in the ring buffer, run through the daemon's
//! own pipeline (`rstwatch::pipeline::Pipeline`) on one thread, streaming as `watch` runs it:
//! each drain of the ring is followed by a release of what is due (every flow's state read
//! back from the kernel's table, as at the end of a hold), then by a flush of the sinks. The
//! sinks: one that discards (the pipeline's own cost), a synchronous file writer, and the
//! writer thread `watch` hands its records to (`LineSink`, one block per flush).
//!
//! Each configuration runs `REPETITIONS` times, the configurations in turn, so that what the
//! shared machine does meanwhile falls on all of them alike; a configuration's figure is its
//! median run, printed with the lowest and highest rate.

use std::{
    fs::File,
    io::{self, Write},
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use rstwatch::{
    clock::{monotonic_ns, WallClock},
    explain::ExplainSettings,
    kernel::{Kernel, KernelConfig},
    output::{cef::Cef, ecs::Ecs, json::Json, ocsf::Ocsf, text::Text, Format},
    pipeline::{Pipeline, PipelineConfig},
    report::ResetClass,
    sink::{
        file::{Destination, LineSink, WriterSink},
        Sink,
    },
};
use rstwatch_common::Counter;

use super::{
    kernel_cost::{ring_capacity, run},
    packets::{flow_endpoint, segment, set_destination, set_source, CLIENT_V4, SERVER_V4},
};
use crate::frame::{ACK, RST, SYN};

const RING_BYTES: u32 = 64 << 20;
/// Records taken per drain: what one wakeup of the daemon finds in a busy ring.
pub const DRAIN_BATCH: usize = 4096;
/// How long the writer thread may take to write what is queued once a run ends.
const WRITER_GRACE: Duration = Duration::from_secs(30);
/// Flows per run start after the kernel-cost runs' flow numbers.
const FIRST_FLOW: u32 = 1 << 22;
/// Runs of each configuration.
pub const REPETITIONS: usize = 3;

/// Makes a format for one run.
type NewFormat = fn() -> Box<dyn Format>;

/// One configuration of the pipeline, timed.
#[derive(Clone, Debug)]
pub struct Run {
    /// Format, and where records went.
    pub name: String,
    pub events: u64,
    pub records: u64,
    pub elapsed: Duration,
    /// CPU time (user and system) of the thread that ran the pipeline over the run: on a
    /// machine shared with other work, what one core spent, where `elapsed` also counts the
    /// time the thread waited for a CPU.
    pub cpu: Duration,
    /// The lowest and highest events per CPU second over the configuration's repetitions.
    pub cpu_rate_range: (f64, f64),
}

impl Run {
    /// Events per second of wall-clock time.
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }

    /// Events per second of the pipeline thread's CPU time: the figure per core.
    pub fn events_per_cpu_second(&self) -> f64 {
        self.events as f64 / self.cpu.as_secs_f64()
    }

    /// The median of `runs` by events per CPU second, with their range.
    fn median(mut runs: Vec<Run>) -> Run {
        runs.sort_by(|a, b| {
            a.events_per_cpu_second()
                .total_cmp(&b.events_per_cpu_second())
        });
        let range = (
            runs[0].events_per_cpu_second(),
            runs[runs.len() - 1].events_per_cpu_second(),
        );
        Run {
            cpu_rate_range: range,
            ..runs.swap_remove(runs.len() / 2)
        }
    }
}

/// CPU time the calling thread has used so far.
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec it is given.
    let done = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(
        done, 0,
        "CLOCK_THREAD_CPUTIME_ID is always available on Linux"
    );
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// What one core does with the kernel's events.
#[derive(Clone, Debug)]
pub struct Throughput {
    /// JSON, records rendered and discarded: the pipeline's own cost.
    pub json: Run,
    /// JSON written to a real file in batches (one write(2) per drain).
    pub json_file: Run,
    /// JSON handed to the writer thread `watch` writes its records with (`LineSink`), into a
    /// real file: the daemon's own path.
    pub json_threaded: Run,
    /// Every format, records discarded.
    pub formats: Vec<Run>,
    /// Reports by class in the JSON run, to show the events are real conversations (`abort`
    /// expected).
    pub classes: String,
}

impl Throughput {
    /// JSON events per second of one core's CPU time.
    pub fn events_per_second(&self) -> f64 {
        self.json.events_per_cpu_second()
    }
}

/// Takes the records and counts them: the cost of rendering without the cost of a device.
struct Discard(Arc<AtomicU64>);

impl Sink for Discard {
    fn write(&mut self, _: &rstwatch::report::ResetReport, record: &[u8]) -> Result<()> {
        self.0.fetch_add(1, Ordering::Relaxed);
        std::hint::black_box(record);
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Counts the records a `WriterSink` writes.
struct CountingFile {
    file: File,
    records: Arc<AtomicU64>,
}

impl Write for CountingFile {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let written = self.file.write(bytes)?;
        let lines = bytes[..written].iter().filter(|&&b| b == b'\n').count();
        self.records.fetch_add(lines as u64, Ordering::Relaxed);
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Fills the ring with RSTs ending real conversations (SYN, SYN-ACK, data, RST from the
/// server: `abort`) once per configuration, then times the pipeline over them. `scratch` is a
/// directory on a real file system for the file run.
pub fn measure(scratch: &Path) -> Result<Throughput> {
    let kernel_config = KernelConfig {
        ring_bytes: RING_BYTES,
        ..KernelConfig::default()
    };
    let mut kernel = Kernel::load(&kernel_config)?;
    let mut ring = kernel.take_events()?;
    let per_run = ring_capacity(RING_BYTES) * 3 / 4;
    let mut next_flow = FIRST_FLOW;
    let formats: [(&str, NewFormat); 5] = [
        ("json", || Box::new(Json)),
        ("text", || Box::new(Text::new(false))),
        ("ecs", || Box::new(Ecs)),
        ("ocsf", || Box::new(Ocsf)),
        ("cef", || Box::new(Cef)),
    ];
    std::fs::create_dir_all(scratch)?;
    let file_path = scratch.join("userspace-records.json");

    let mut by_format: Vec<Vec<Run>> = vec![Vec::new(); formats.len()];
    let (mut json_files, mut json_threads) = (Vec::new(), Vec::new());
    let mut classes = String::new();
    let mut dropped = 0;
    for repetition in 1..=REPETITIONS {
        for ((name, format), runs) in formats.iter().zip(&mut by_format) {
            let records = Arc::new(AtomicU64::new(0));
            let sink = Box::new(Discard(Arc::clone(&records)));
            let (run, summary) = timed(
                &mut kernel,
                &mut ring,
                &mut next_flow,
                per_run,
                format(),
                sink,
                || Ok(records.load(Ordering::Relaxed)),
            )?;
            eprintln!(
                "bench: userspace {name} ({repetition}/{REPETITIONS}): {:.2} M events/s of CPU \
                 time ({:.2} M/s wall clock)",
                run.events_per_cpu_second() / 1e6,
                run.events_per_second() / 1e6
            );
            if *name == "json" {
                classes = summary;
            }
            runs.push(Run {
                name: format!("{name}, records discarded"),
                ..run
            });
        }
        let records = Arc::new(AtomicU64::new(0));
        let file = File::create(&file_path)
            .with_context(|| format!("creating {}", file_path.display()))?;
        let sink = Box::new(WriterSink::new(Box::new(CountingFile {
            file,
            records: Arc::clone(&records),
        })));
        let (json_file, _) = timed(
            &mut kernel,
            &mut ring,
            &mut next_flow,
            per_run,
            Box::new(Json),
            sink,
            || Ok(records.load(Ordering::Relaxed)),
        )?;
        std::fs::remove_file(&file_path)?;
        eprintln!(
            "bench: userspace json to a file ({repetition}/{REPETITIONS}): {:.2} M events/s of \
             CPU time ({:.2} M/s wall clock)",
            json_file.events_per_cpu_second() / 1e6,
            json_file.events_per_second() / 1e6
        );
        json_files.push(json_file);
        let lines = LineSink::start(Destination::File(file_path.clone()))
            .map_err(|err| anyhow::anyhow!("{err}"))?;
        let writer = lines.clone();
        let full_queue = std::cell::Cell::new(0);
        let (json_threaded, _) = timed(
            &mut kernel,
            &mut ring,
            &mut next_flow,
            per_run,
            Box::new(Json),
            Box::new(lines),
            || {
                // The writer finishes what is queued. Lines the queue had no room for were
                // dropped and counted, as `watch` drops them when its destination cannot keep
                // up: they were rendered and handed over all the same.
                let stats = writer.close(WRITER_GRACE);
                ensure!(
                    stats.dropped_write_failed == 0 && stats.queued == 0,
                    "the writer thread failed: {stats:?}"
                );
                full_queue.set(stats.dropped_queue_full);
                Ok(stats.written + stats.dropped_queue_full)
            },
        )?;
        std::fs::remove_file(&file_path)?;
        eprintln!(
            "bench: userspace json through the writer thread ({repetition}/{REPETITIONS}): \
             {:.2} M events/s of CPU time ({:.2} M/s wall clock), {} records dropped by a full \
             queue",
            json_threaded.events_per_cpu_second() / 1e6,
            json_threaded.events_per_second() / 1e6,
            full_queue.get()
        );
        dropped += full_queue.get();
        json_threads.push(Run {
            records: json_threaded.records - full_queue.get(),
            ..json_threaded
        });
    }
    let threaded_name = match dropped {
        0 => format!("json, `watch`'s writer thread to {}", scratch.display()),
        n => format!(
            "json, `watch`'s writer thread to {} ({n} records dropped over {REPETITIONS} runs: \
             the writer fell behind)",
            scratch.display()
        ),
    };
    let runs: Vec<Run> = by_format.into_iter().map(Run::median).collect();
    let json = runs[0].clone();
    Ok(Throughput {
        json,
        json_file: Run {
            name: format!("json, written to {}", scratch.display()),
            ..Run::median(json_files)
        },
        json_threaded: Run {
            name: threaded_name,
            ..Run::median(json_threads)
        },
        formats: runs,
        classes,
    })
}

/// One run: fills the ring, then times the pipeline draining it batch by batch.
fn timed(
    kernel: &mut Kernel,
    ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
    next_flow: &mut u32,
    conversations: u32,
    format: Box<dyn Format>,
    sink: Box<dyn Sink>,
    written: impl FnOnce() -> Result<u64>,
) -> Result<(Run, String)> {
    let sent_before = kernel.counters()?.get(Counter::EventsSent);
    let mut conversation = [
        segment(CLIENT_V4, SERVER_V4, SYN, 0),
        segment(SERVER_V4, CLIENT_V4, SYN | ACK, 0),
        segment(CLIENT_V4, SERVER_V4, ACK, 100),
        segment(SERVER_V4, CLIENT_V4, RST | ACK, 0),
    ];
    for _ in 0..conversations {
        let client = flow_endpoint(*next_flow);
        *next_flow += 1;
        for (i, frame) in conversation.iter_mut().enumerate() {
            if i % 2 == 0 {
                set_source(frame, client);
            } else {
                set_destination(frame, client);
            }
            run(kernel, frame, 1)?;
        }
    }
    let counters = kernel.counters()?;
    let events = counters.get(Counter::EventsSent) - sent_before;
    ensure!(
        events == u64::from(conversations) && counters.get(Counter::EventsLost) == 0,
        "{conversations} conversations produced {events} events ({})",
        counters.describe()
    );

    let mut pipeline = Pipeline::new(PipelineConfig {
        clock: WallClock::new(),
        explain: ExplainSettings::default(),
        ifnames: [(1, "bench0".to_owned())].into(),
        hold_ns: 0,
        link_ns: 0,
        // Every event is its own flow: nothing to fold, and folding is not what is timed.
        aggregate: None,
    });
    pipeline.add_output(format, vec![sink]);
    let flows: &Kernel = kernel;
    let started = Instant::now();
    let cpu_before = thread_cpu_time();
    loop {
        let mut drained = 0;
        while drained < DRAIN_BATCH {
            let Some(item) = ring.next() else { break };
            pipeline.offer_record(&item);
            drained += 1;
        }
        pipeline.release(monotonic_ns(), flows)?;
        if drained < DRAIN_BATCH {
            break;
        }
    }
    pipeline.finish(flows)?;
    let elapsed = started.elapsed();
    let cpu = thread_cpu_time() - cpu_before;
    let written = written()?;
    ensure!(written == events, "{events} events gave {written} records");
    let rate = events as f64 / cpu.as_secs_f64();
    let summary = pipeline.summary();
    let classes = ResetClass::ALL
        .iter()
        .filter(|class| summary.count(**class) != 0)
        .map(|class| format!("{}={}", class.as_str(), summary.count(*class)))
        .collect::<Vec<_>>()
        .join(" ");
    Ok((
        Run {
            name: String::new(),
            events,
            records: written,
            elapsed,
            cpu,
            cpu_rate_range: (rate, rate),
        },
        classes,
    ))
}
