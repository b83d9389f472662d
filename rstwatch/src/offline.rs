//! `rstwatch explain FILE`: a capture file through the same flow update, hold and explain
//! steps as `watch`, on the capture's own clock: a RST's hold, the grace period and the idle
//! timeout all run on the packets' timestamps, so a capture explains the same whether it is
//! read as it is written or a week later.

use std::{
    collections::HashMap,
    fs::File,
    io::{IsTerminal as _, Read},
    path::Path,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use rstwatch_common::{
    event::{DIRECTION_EGRESS, DIRECTION_INGRESS},
    Counter, PacketMeta, Settings,
};

use crate::{
    capture::{
        decode::decode_ip,
        link::{network_start, Way},
        CaptureError, CaptureReader,
    },
    cli::ExplainArgs,
    explain::{explain, explain_held, ExplainSettings},
    hold::HoldQueue,
    kernel::UserError,
    replay::{Hook, PacketFilter, Replay},
    report::{Aggregate, ResetReport},
    sink::syslog::SyslogHandle,
    storm::StormTally,
    summary::Summary,
    timeline::Timelines,
    watch::{start_syslog, Records, SUMMARY_PEERS, SYSLOG_SHUTDOWN_GRACE},
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
    let records = Records::open(args.output.as_deref(), args.format)?;
    let syslog = start_syslog(&args.syslog, args.format)?;
    let settings = Settings {
        grace_ns: args.grace.as_nanos() as u64,
        ..Settings::default()
    };
    let mut offline = Offline {
        replay: Replay::new(settings, PacketFilter::new(&args.ports, &args.nets)),
        hold: HoldQueue::new(args.hold.as_nanos() as u64, settings.grace_ns),
        explain: ExplainSettings {
            idle_timeout: args.idle_timeout,
            ..ExplainSettings::default()
        },
        iface_fallback,
        local: PacketFilter::new(&[], &args.local),
        ifnames: HashMap::new(),
        records,
        syslog: syslog.as_ref().map(|(handle, _)| handle.clone()),
        summary: Summary::new(),
        storms: StormTally::new(),
        next_storm_ns: 0,
        timelines: args.flow.clone().map(Timelines::new),
        pkt: PacketMeta::default(),
    };
    let mut progress = Progress::new(file_bytes);
    let mut frames = 0u64;
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
    for (index, interface) in reader.interfaces().iter().enumerate() {
        if let Some(name) = &interface.name {
            offline.ifnames.insert(index as u32 + 1, name.clone());
        }
    }
    offline.finish()?;
    progress.done();
    eprint!("{}", offline.totals(frames));
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

/// From captured frames to written reports.
struct Offline {
    replay: Replay,
    hold: HoldQueue,
    explain: ExplainSettings,
    iface_fallback: String,
    /// `--local`: what this host sent, for captures that do not say.
    local: PacketFilter,
    /// Interface names from the capture, by the index the replay's events carry.
    ifnames: HashMap<u32, String>,
    records: Records,
    syslog: Option<SyslogHandle>,
    summary: Summary,
    storms: StormTally,
    next_storm_ns: u64,
    timelines: Option<Timelines>,
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
        self.replay.count(Counter::Packets);
        let decoded = network_start(link_type, data).and_then(|start| {
            let wire_ip_len = wire_len.saturating_sub(start.offset);
            // The link header's way wins over pcap-ng's flags only when the flags are absent.
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
                return self.release(ts_ns);
            }
        };
        // A capture that does not record the way of each packet is read as `--local` says, or
        // else as a sensor on a mirror port reads its traffic: everything arrives.
        let sent_here = way == Way::Out || (way == Way::Unknown && self.local.sent(&self.pkt));
        let hook = Hook {
            direction: if sent_here {
                DIRECTION_EGRESS
            } else {
                DIRECTION_INGRESS
            },
            ifindex: interface as u32 + 1,
        };
        let hold = &mut self.hold;
        self.replay.packet(&self.pkt, ts_ns, hook, |event| {
            hold.offer(event);
        });
        if let Some(timelines) = &mut self.timelines {
            timelines.packet(&self.pkt, ts_ns);
        }
        self.release(ts_ns)
    }

    /// Explains every RST whose hold ended by `now_ns` (capture time), and reports the storm
    /// counts once per second of capture time.
    fn release(&mut self, now_ns: u64) -> anyhow::Result<()> {
        for held in self.hold.release(now_ns) {
            let iface = self.iface_name(held.event.ifindex);
            let report = explain_held(&held, &self.replay, &self.explain, &iface, capture_time);
            if let Some(timelines) = &mut self.timelines {
                timelines.verdict(&held.event.key, held.event.ts_ns, &report);
            }
            self.write(report)?;
        }
        if now_ns >= self.next_storm_ns {
            self.report_storms()?;
            self.next_storm_ns = now_ns.saturating_add(STORM_PERIOD_NS);
        }
        Ok(())
    }

    fn report_storms(&mut self) -> anyhow::Result<()> {
        for storm in self.storms.read(&self.replay.storms()) {
            let event = &storm.sample;
            let iface = self.iface_name(event.ifindex);
            let mut report = explain(event, &[], &self.explain, &iface, capture_time(event.ts_ns));
            report.aggregate = Some(Aggregate {
                count: storm.count,
                first: capture_time(storm.first_ns),
                last: capture_time(storm.last_ns),
            });
            self.write(report)?;
        }
        Ok(())
    }

    fn iface_name(&self, ifindex: u32) -> String {
        self.ifnames
            .get(&ifindex)
            .cloned()
            .unwrap_or_else(|| self.iface_fallback.clone())
    }

    /// Releases everything still held, as `watch` does on exit, and renders the timelines.
    fn finish(&mut self) -> anyhow::Result<()> {
        self.release(u64::MAX)?;
        self.report_storms()?;
        if let Some(timelines) = &self.timelines {
            print!("{}", timelines.render());
        }
        self.records.flush()
    }

    fn write(&mut self, report: ResetReport) -> anyhow::Result<()> {
        self.summary.add(&report);
        if self.timelines.is_none() {
            self.records.write(&report)?;
        }
        if let Some(syslog) = &self.syslog {
            syslog.send(report);
        }
        Ok(())
    }

    fn totals(&self, frames: u64) -> String {
        let mut totals = self.summary.render(SUMMARY_PEERS);
        totals.push_str(&format!(
            "rstwatch: capture frames={frames} flows={}\nrstwatch: replay {}\n",
            self.replay.flow_count(),
            self.replay.counters().describe()
        ));
        totals
    }
}

/// Capture timestamps are nanoseconds since the Unix epoch.
fn capture_time(ts_ns: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(ts_ns)
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
