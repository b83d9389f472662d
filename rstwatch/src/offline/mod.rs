//! `rstwatch explain FILE`: a capture file through the same flow update, hold and explain
//! steps as `watch`, on the capture's own clock: a RST's hold, the grace period and the idle
//! timeout all run on the packets' timestamps, so a capture explains the same whether it is
//! read as it is written or a week later.

pub mod capture;
pub mod replay;
pub mod timeline;

use std::{
    fs::File,
    io::{IsTerminal as _, Read},
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rstwatch_common::{
    event::{DIRECTION_EGRESS, DIRECTION_INGRESS},
    Counter, PacketMeta, SeenAt, Settings,
};

use self::{
    capture::{
        headers::decode_ip,
        link::{network_start, Way},
        CaptureError, CaptureReader,
    },
    replay::{PacketFilter, Replay},
    timeline::Timelines,
};
use crate::{
    assembly::{open_records_synchronous, RecordsFormat, Syslog, SUMMARY_PEERS},
    cli::ExplainArgs,
    clock::WallClock,
    error::UserError,
    explain::ExplainSettings,
    output::{format, FormatKind},
    pipeline::{Pipeline, PipelineConfig},
    report::ResetReport,
    sink::Sink,
};

/// Storm counts are turned into aggregate reports once per second of capture time, as
/// `watch` reads the kernel's once per second.
const STORM_PERIOD_NS: u64 = 1_000_000_000;
/// A file this large gets progress lines on stderr even when stderr is not a terminal.
const LARGE_FILE_BYTES: u64 = 256 << 20;
/// Frames between looks at the clock for progress.
const PROGRESS_CHECK_FRAMES: u64 = 65_536;
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
const PROGRESS_EVERY_LOGGED: Duration = Duration::from_secs(10);

pub async fn run(args: ExplainArgs) -> anyhow::Result<()> {
    let (input, iface_fallback, file_bytes) = open(&args.file)?;
    let mut reader = CaptureReader::new(input)
        .map_err(|err| UserError(format!("cannot read {}: {err}", args.file.display())))?;
    let settings = args.connections.settings(Settings {
        grace_ns: args.grace.as_nanos() as u64,
        ..Settings::default()
    });
    let server_ports = args.connections.server_ports();
    // The first frame is read before the pipeline starts: a pcap-ng file describes its
    // interfaces (and their names) in blocks ahead of it.
    let first = match reader.next_frame() {
        Ok(frame) => frame.map(|f| {
            (
                f.link_type,
                f.data.to_vec(),
                f.wire_len,
                f.ts_ns,
                f.interface,
                f.way,
            )
        }),
        Err(err) => return Err(broken_file(&args.file, &err).into()),
    };
    let ifnames = reader
        .interfaces()
        .iter()
        .enumerate()
        .map(|(index, interface)| {
            let name = interface
                .name
                .clone()
                .unwrap_or_else(|| iface_fallback.clone());
            (index as u32 + 1, name)
        })
        .collect();
    let mut pipeline = Pipeline::new(PipelineConfig {
        // Capture timestamps are wall-clock time already.
        clock: WallClock::with_offset(0),
        explain: ExplainSettings {
            idle_timeout: args.idle_timeout,
            server_ports,
            vlan_key: settings.vlan_key != 0,
            ..ExplainSettings::default()
        },
        ifnames,
        hold_ns: args.hold.as_nanos() as u64,
        link_ns: settings.grace_ns,
        // The folding of identical resets counts them per second of the reader's own time,
        // which a replay running far faster than the capture would fold wholesale: a file's
        // every reset is written.
        aggregate: None,
    });
    let syslog = Syslog::start(&args.syslog, args.format)?;
    let timelines = args
        .flow
        .clone()
        .map(|filter| Arc::new(Mutex::new(Timelines::new(filter))));
    let mut records_sinks: Vec<Box<dyn Sink>> = Vec::new();
    let records_format = match &timelines {
        Some(timelines) => {
            records_sinks.push(Box::new(VerdictSink(timelines.clone())));
            None
        }
        None => {
            let (records, records_format) =
                open_records_synchronous(args.output.as_deref(), args.format)?;
            records_sinks.push(Box::new(records));
            Some(records_format)
        }
    };
    if let Some(syslog) = &syslog {
        pipeline.add_output(format(syslog.body, false), vec![Box::new(syslog.sink())]);
    }
    pipeline.add_output(
        records_format.map_or_else(|| format(FormatKind::Json, false), RecordsFormat::format),
        records_sinks,
    );
    let mut offline = Offline {
        replay: Replay::new(
            settings,
            PacketFilter::new(&args.ports, &args.nets),
            server_ports,
        ),
        pipeline,
        local: PacketFilter::new(&[], &args.local),
        next_storm_ns: 0,
        timelines,
        pkt: PacketMeta::default(),
    };
    let mut progress = Progress::new(file_bytes);
    let mut frames = 0u64;
    if let Some((link_type, data, wire_len, ts_ns, interface, way)) = first {
        offline.frame(link_type, &data, wire_len, ts_ns, interface, way)?;
        frames += 1;
    }
    let broken = loop {
        let frame = match reader.next_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) => break None,
            Err(err) => break Some(err),
        };
        let (ts_ns, interface) = (frame.ts_ns, frame.interface);
        let way = frame.way;
        offline.frame(
            frame.link_type,
            frame.data,
            frame.wire_len,
            ts_ns,
            interface,
            way,
        )?;
        frames += 1;
        if frames.is_multiple_of(PROGRESS_CHECK_FRAMES) {
            progress.report(frames, reader.offset());
        }
    };
    offline.finish()?;
    progress.done();
    eprint!("{}", offline.totals(frames));
    if let Some(syslog) = syslog {
        syslog.shut_down(offline.pipeline.stats().folded).await?;
    }
    match broken {
        None => Ok(()),
        Some(err) => Err(broken_file(&args.file, &err).into()),
    }
}

fn broken_file(path: &Path, err: &CaptureError) -> UserError {
    UserError(format!(
        "{} is cut short or damaged: {} (frame {}); the {} frames before it were explained",
        path.display(),
        err,
        err.frames + 1,
        err.frames
    ))
}

/// The input, the interface name to use when the capture names none, and the file's size.
fn open(path: &Path) -> anyhow::Result<(Box<dyn Read>, String, Option<u64>)> {
    if path == Path::new("-") {
        return Ok((Box::new(std::io::stdin().lock()), "stdin".to_owned(), None));
    }
    let file = File::open(path).map_err(|err| {
        UserError(format!(
            "cannot open {}: {err}: check the path and that it is readable",
            path.display()
        ))
    })?;
    let size = file.metadata().ok().map(|m| m.len());
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    Ok((Box::new(file), name, size))
}

/// From captured frames to the pipeline.
struct Offline {
    replay: Replay,
    pipeline: Pipeline,
    /// `--local`: what this host sent, for captures that do not say.
    local: PacketFilter,
    next_storm_ns: u64,
    timelines: Option<Arc<Mutex<Timelines>>>,
    /// The packet being decoded, reused.
    pkt: PacketMeta,
}

impl Offline {
    fn frame(
        &mut self,
        link_type: u32,
        data: &[u8],
        wire_len: usize,
        ts_ns: u64,
        interface: usize,
        way: Way,
    ) -> anyhow::Result<()> {
        // Every hold that ended by this packet is released before it is stepped: a report is the
        // connection as of its hold's end, and this packet is past it (`crate::pipeline::hold`).
        self.release(ts_ns)?;
        self.replay.count(Counter::Packets);
        let decoded = network_start(link_type, data).and_then(|start| {
            let wire_ip_len = wire_len.saturating_sub(start.offset);
            // The link header's way counts only where the file records none of its own.
            let way = if way == Way::Unknown { start.way } else { way };
            decode_ip(
                start.network,
                &data[start.offset.min(data.len())..],
                wire_ip_len,
                start.vlan,
                &mut self.pkt,
            )
            .map(|()| way)
        });
        let way = match decoded {
            Ok(way) => way,
            Err(reason) => {
                self.replay.count(reason);
                return Ok(());
            }
        };
        // A capture that does not record the way of each packet is read as `--local` says, or
        // else as a sensor on a mirror port reads its traffic: everything arrives.
        let sent_here = way == Way::Out || (way == Way::Unknown && self.local.sent(&self.pkt));
        let seen = SeenAt {
            direction: if sent_here {
                DIRECTION_EGRESS
            } else {
                DIRECTION_INGRESS
            },
            ifindex: interface as u32 + 1,
        };
        let pipeline = &mut self.pipeline;
        self.replay
            .packet(&self.pkt, ts_ns, seen, |event| pipeline.offer(event));
        if let Some(timelines) = &self.timelines {
            lock(timelines).packet(&self.pkt, ts_ns);
        }
        Ok(())
    }

    /// Explains every RST whose hold ended by `now_ns` (capture time), with the replay's
    /// table as the packets before `now_ns` left it, and reports the storm
    /// counts once per second of capture time, as `watch` reads the kernel's once a second.
    fn release(&mut self, now_ns: u64) -> anyhow::Result<()> {
        self.pipeline.release(now_ns, &self.replay)?;
        if now_ns >= self.next_storm_ns {
            self.pipeline.report_storms(&self.replay.storms())?;
            self.next_storm_ns = now_ns.saturating_add(STORM_PERIOD_NS);
        }
        Ok(())
    }

    /// Releases everything still held, as `watch` does on exit, and prints the timelines.
    fn finish(&mut self) -> anyhow::Result<()> {
        self.pipeline.release(u64::MAX, &self.replay)?;
        self.pipeline.report_storms(&self.replay.storms())?;
        self.pipeline.finish(&self.replay)?;
        if let Some(timelines) = &self.timelines {
            print!("{}", lock(timelines).render());
        }
        Ok(())
    }

    fn totals(&self, frames: u64) -> String {
        let mut totals = self.pipeline.summary().render(SUMMARY_PEERS);
        totals.push_str(&format!(
            "rstwatch: capture frames={frames} flows={}\nrstwatch: replay {}\n",
            self.replay.flow_count(),
            self.replay.counters().describe()
        ));
        totals
    }
}

fn lock(timelines: &Mutex<Timelines>) -> std::sync::MutexGuard<'_, Timelines> {
    timelines
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `--flow`: the verdicts go under their RSTs in the timelines instead of out as records.
struct VerdictSink(Arc<Mutex<Timelines>>);

impl Sink for VerdictSink {
    fn write(&mut self, report: &ResetReport, _record: &[u8]) -> anyhow::Result<()> {
        lock(&self.0).verdict(report);
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Progress on stderr: a line rewritten in place on a terminal, a line every few seconds for
/// a large file otherwise, nothing for a small one.
struct Progress {
    file_bytes: Option<u64>,
    terminal: bool,
    every: Option<Duration>,
    last: Instant,
    shown: bool,
}

impl Progress {
    fn new(file_bytes: Option<u64>) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let large = file_bytes.is_some_and(|b| b >= LARGE_FILE_BYTES);
        let every = if terminal {
            Some(PROGRESS_EVERY)
        } else if large {
            Some(PROGRESS_EVERY_LOGGED)
        } else {
            None
        };
        Self {
            file_bytes,
            terminal,
            every,
            last: Instant::now(),
            shown: false,
        }
    }

    fn report(&mut self, frames: u64, offset: u64) {
        let Some(every) = self.every else {
            return;
        };
        if self.last.elapsed() < every {
            return;
        }
        self.last = Instant::now();
        let share = self
            .file_bytes
            .filter(|&b| b > 0)
            .map(|b| format!(" ({:.0}%)", offset as f64 * 100.0 / b as f64))
            .unwrap_or_default();
        let line = format!("rstwatch: {frames} frames read{share}");
        if self.terminal {
            eprint!("\r{line}");
            self.shown = true;
        } else {
            eprintln!("{line}");
        }
    }

    fn done(&self) {
        if self.shown {
            eprintln!();
        }
    }
}
