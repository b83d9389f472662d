//! `cargo xtask bench`: measures the performance targets (docs/performance.md) in one run and
//! prints a table, a Markdown results section for docs/performance.md, and (with `--json FILE`)
//! a machine-readable report.
//! Needs root. Kernel figures are always compared with the empty XDP program measured in the
//! same run: the machine is shared and noisy, the ratios are what to read.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{ensure, Context, Result};
use aya::maps::{MapData, RingBuf};
use rstwatch::kernel::{Kernel, KernelConfig};
use rstwatch_common::{Counter, Settings};
use rstwatch_tests::{
    baseline::EmptyXdp,
    bench::{
        capture_replay,
        flood::{self, Flood, FloodKind, Hooked},
        kernel_cost::{repeated, rst_events, run, single_shots, Cost},
        memory::{self, FlowTables},
        packets::{
            as_udp, flow_endpoint, segment, set_source, vlan_tagged, CLIENT_V4, CLIENT_V6,
            SERVER_V4, SERVER_V6,
        },
        userspace::{self, Throughput},
    },
    frame::{ACK, RST, SYN},
    watch::rstwatch_binary,
};
use serde_json::{json, Value};

const FULL_TABLE: u32 = 1 << 20;
const RING_BYTES: u32 = 64 << 20;
/// Runs per round of a repeated figure.
const REPEAT: u32 = 1_000_000;
/// Single-shot runs per SYN figure.
const SAMPLE: u32 = 16_384;
const PREFILL_CHUNK: u32 = 1 << 18;
const FILTER_PORT: u16 = 4333;
const VLAN: u16 = 100;
const FLOOD_SECONDS: u64 = 3;
const FLOOD_REPETITIONS: usize = 5;
const TARGET_FLOOD_RATIO: f64 = 0.90;
const TARGET_DAEMON_CPU: f64 = 0.10;
/// Where the userspace run writes its records file: a real file system, not /dev/null.
const USERSPACE_SCRATCH: &str = "target/bench";

const TARGET_NOT_TCP_RATIO: f64 = 1.5;
const TARGET_FILTERED_RATIO: f64 = 2.0;
const TARGET_DATA_RATIO: f64 = 4.0;
const TARGET_RST_RATIO: f64 = 6.0;
const TARGET_EVENTS_PER_SECOND: f64 = 1e6;
const TARGET_TABLE_MIB: f64 = 128.0;
const TARGET_ALL_MAPS_MIB: f64 = 144.0;

#[derive(Clone, Copy)]
enum Target {
    Ratio(f64),
    None,
}

struct Row {
    table: &'static str,
    cost: Cost,
    target: Target,
}

impl Row {
    fn met(&self) -> Option<bool> {
        match self.target {
            Target::Ratio(max) => Some(self.cost.ratio() <= max),
            Target::None => None,
        }
    }

    fn target_text(&self) -> String {
        match self.target {
            Target::Ratio(max) => format!("<= {max}x"),
            Target::None => "-".into(),
        }
    }
}

/// The frames of the kernel-cost cases.
struct Frames {
    syn: Vec<u8>,
    data: Vec<u8>,
    rst: Vec<u8>,
    udp: Vec<u8>,
    syn_v6: Vec<u8>,
    data_v6: Vec<u8>,
    rst_v6: Vec<u8>,
    syn_vlan: Vec<u8>,
    data_vlan: Vec<u8>,
}

impl Frames {
    fn new() -> Self {
        let syn = segment(CLIENT_V4, SERVER_V4, SYN, 0);
        let data = segment(CLIENT_V4, SERVER_V4, ACK, 100);
        Frames {
            udp: as_udp(&data),
            rst: segment(SERVER_V4, CLIENT_V4, RST | ACK, 0),
            syn_v6: segment(CLIENT_V6, SERVER_V6, SYN, 0),
            data_v6: segment(CLIENT_V6, SERVER_V6, ACK, 100),
            rst_v6: segment(SERVER_V6, CLIENT_V6, RST | ACK, 0),
            syn_vlan: vlan_tagged(&syn, VLAN),
            data_vlan: vlan_tagged(&data, VLAN),
            syn,
            data,
        }
    }
}

fn main() -> Result<()> {
    let mode = mode()?;
    // SAFETY: geteuid has no preconditions.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "the benchmark loads eBPF and builds network namespaces: run it as root"
    );
    let json_path = match mode {
        Mode::All { json_path } => json_path,
        Mode::Userspace => return userspace_only(),
        Mode::Flood(kinds) => return floods_only(&kinds),
        Mode::Capture => {
            let capture = capture_replay::measure(&rstwatch_binary()?, &std::env::temp_dir())?;
            println!("{}", capture.markdown());
            return Ok(());
        }
    };
    let rstwatch = rstwatch_binary()?;
    let empty = EmptyXdp::load().context("loading the empty XDP program")?;
    let frames = Frames::new();
    let mut rows = Vec::new();

    eprintln!("bench: kernel cost, flow table nearly empty");
    let config = KernelConfig {
        flows: FULL_TABLE,
        ring_bytes: RING_BYTES,
        // Every RST is a first RST again (see kernel_cost::rst_events).
        settings: Settings {
            grace_ns: 0,
            ..Settings::default()
        },
        ..KernelConfig::default()
    };
    let mut kernel = Kernel::load(&config)?;
    let mut ring = kernel.take_events()?;
    steady_cases(&kernel, &mut ring, &empty, &frames, "empty", &mut rows)?;
    let new_flow = |frame: &mut [u8], i: u32| set_source(frame, flow_endpoint(i));
    rows.push(Row {
        table: "empty",
        cost: single_shots(
            &kernel,
            &empty,
            "SYN, new flow",
            &frames.syn,
            0..SAMPLE,
            new_flow,
        )?,
        target: Target::None,
    });

    // The table fills with flows whose first packet seen is data; the first of them are the
    // 4-tuples of the SYNs above, whose flows they complete.
    let mut filled = 0;
    while filled < FULL_TABLE - SAMPLE {
        let end = (filled + PREFILL_CHUNK).min(FULL_TABLE - SAMPLE);
        let chunk = single_shots(&kernel, &empty, "data", &frames.data, filled..end, new_flow)?;
        eprintln!(
            "bench: filled {end} flows (data, new flow {:.0} ns, empty {:.0} ns single-shot)",
            chunk.ns, chunk.empty_ns
        );
        filled = end;
    }
    let last = filled..FULL_TABLE;
    let fill_end = single_shots(
        &kernel,
        &empty,
        "TCP data, new flow",
        &frames.data,
        last,
        new_flow,
    )?;
    rows.push(Row {
        table: "last 16 Ki of 1 Mi",
        cost: fill_end,
        target: Target::None,
    });
    let beyond = FULL_TABLE..FULL_TABLE + SAMPLE;
    let evicting = single_shots(
        &kernel,
        &empty,
        "TCP data, new flow, evicts",
        &frames.data,
        beyond,
        new_flow,
    )?;
    rows.push(Row {
        table: "full (1 Mi)",
        cost: evicting,
        target: Target::None,
    });
    // How long a walk of the full tables takes (the summary's count and the metrics page's).
    let walk = Instant::now();
    let flows = kernel.flow_count() as usize;
    eprintln!(
        "bench: kernel cost, flow table full ({flows} flows, counted in {:.2} s)",
        walk.elapsed().as_secs_f64()
    );
    // Data packets of flows scattered over the table: each run misses the CPU caches, unlike
    // a repeated frame.
    let mut data_spread = frames.data.clone();
    set_source(&mut data_spread, flow_endpoint(0));
    let scattered = |frame: &mut [u8], i: u32| {
        let flow = FULL_TABLE / 4 + (i.wrapping_mul(40_503) % (FULL_TABLE / 2));
        set_source(frame, flow_endpoint(flow));
    };
    rows.push(Row {
        table: "full (1 Mi)",
        cost: single_shots(
            &kernel,
            &empty,
            "TCP data, known flows scattered over the table",
            &data_spread,
            0..SAMPLE,
            scattered,
        )?,
        target: Target::Ratio(TARGET_DATA_RATIO),
    });
    steady_cases(
        &kernel,
        &mut ring,
        &empty,
        &frames,
        "full (1 Mi)",
        &mut rows,
    )?;
    drop(ring);
    drop(kernel);
    // The maps as the daemon makes them at this `--flows` (the runs above use a larger ring).
    let daemon = Kernel::load(&KernelConfig {
        flows: config.flows,
        ..KernelConfig::default()
    })?;
    let memory = memory::flow_tables(&config)?;
    drop(daemon);

    eprintln!("bench: kernel cost, --port filter");
    let filtering = Kernel::load(&KernelConfig {
        ports: vec![FILTER_PORT],
        ..KernelConfig::default()
    })?;
    let excluded = repeated(
        &filtering,
        &empty,
        "TCP excluded by --port",
        &frames.data,
        REPEAT,
    )?;
    ensure!(
        filtering.counters()?.get(Counter::Filtered) >= u64::from(REPEAT),
        "the --port filter did not exclude the frame: {}",
        filtering.counters()?.describe()
    );
    rows.push(Row {
        table: "-",
        cost: excluded,
        target: Target::Ratio(TARGET_FILTERED_RATIO),
    });
    drop(filtering);

    eprintln!("bench: userspace throughput");
    let throughput = userspace::measure(Path::new(USERSPACE_SCRATCH))?;
    let floods = measure_floods(&rstwatch, &FLOODS)?;

    eprintln!("bench: capture files, rstwatch explain and tshark alternating");
    let capture = capture_replay::measure(&rstwatch, &std::env::temp_dir())?;

    let mut results = results_markdown(&rows, &throughput, &floods, &memory, flows);
    results.push_str(&capture.markdown());
    println!("{results}");
    if let Some(path) = json_path {
        let mut report = json_report(&rows, &throughput, &floods, &memory, flows);
        report["capture_replay"] = json!({
            "packets": capture.packets,
            "resets": capture.resets,
            "rstwatch_seconds": capture.rstwatch_secs,
            "tshark_seconds": capture.tshark_secs,
            "rstwatch_packets_per_second": capture.rstwatch_rate(),
            "tshark_packets_per_second": capture.tshark_rate(),
        });
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        std::fs::write(path.with_extension("md"), &results)?;
        eprintln!(
            "bench: wrote {} and {}",
            path.display(),
            path.with_extension("md").display()
        );
    }
    Ok(())
}

/// What to run: everything, with the report written to `--json FILE` if given, or only the
/// userspace pipeline (`--userspace`, for profiling it), or only `rstwatch explain` against
/// tshark (`--capture`), or only the floods (`--flood`, to iterate on the kernel path; one of
/// them with `--flood rst`, `syn` or `closed-port`).
enum Mode {
    All { json_path: Option<PathBuf> },
    Userspace,
    Capture,
    Flood(Vec<FloodKind>),
}

const FLOODS: [FloodKind; 3] = [FloodKind::Rst, FloodKind::Syn, FloodKind::ClosedPortSyn];

fn mode() -> Result<Mode> {
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next()) {
        (None, _) => Ok(Mode::All { json_path: None }),
        (Some("--json"), Some(path)) => Ok(Mode::All {
            json_path: Some(path.into()),
        }),
        (Some("--userspace"), None) => Ok(Mode::Userspace),
        (Some("--capture"), None) => Ok(Mode::Capture),
        (Some("--flood"), None) => Ok(Mode::Flood(FLOODS.to_vec())),
        (Some("--flood"), Some(kind)) => Ok(Mode::Flood(vec![match kind.as_str() {
            "rst" => FloodKind::Rst,
            "syn" => FloodKind::Syn,
            "closed-port" => FloodKind::ClosedPortSyn,
            other => anyhow::bail!("--flood {other}: the floods are rst, syn and closed-port"),
        }])),
        _ => anyhow::bail!(
            "usage: rstwatch-bench [--json FILE | --userspace | --capture | --flood [rst | syn | \
             closed-port]]"
        ),
    }
}

fn userspace_markdown(md: &mut String, throughput: &Throughput) {
    let eps = throughput.events_per_second();
    let _ = writeln!(
        md,
        "\nUserspace, one core, streaming as `watch` runs (drain {} records, release, flush): \
         {} events drained, decoded, held, explained (each flow's state read back from the \
         kernel's table) and rendered as JSON at **{:.2} M events per second of the pipeline \
         thread's CPU time** (target >= 1 M per core: {}). Classes: {}. Each configuration \
         ran {} times, the configurations in turn: the median run, with the lowest and highest \
         rate. Wall-clock rates also count the time the thread waited for a CPU on a shared \
         machine.\n\n\
         | format, destination | M events/s of CPU time (lowest-highest) | M events/s wall clock |\n\
         |---|---:|---:|",
        userspace::DRAIN_BATCH,
        throughput.json.events,
        eps / 1e6,
        verdict(Some(eps >= TARGET_EVENTS_PER_SECOND)),
        throughput.classes,
        userspace::REPETITIONS
    );
    for run in throughput
        .formats
        .iter()
        .chain([&throughput.json_file, &throughput.json_threaded])
    {
        let _ = writeln!(
            md,
            "| {} | {:.2} ({:.2}-{:.2}) | {:.2} |",
            run.name,
            run.events_per_cpu_second() / 1e6,
            run.cpu_rate_range.0 / 1e6,
            run.cpu_rate_range.1 / 1e6,
            run.events_per_second() / 1e6
        );
    }
}

/// The userspace figures alone.
fn userspace_only() -> Result<()> {
    let throughput = userspace::measure(Path::new(USERSPACE_SCRATCH))?;
    let mut md = String::new();
    userspace_markdown(&mut md, &throughput);
    println!("{md}");
    Ok(())
}

/// The floods `kinds`, each watcher in turn.
fn measure_floods(rstwatch: &Path, kinds: &[FloodKind]) -> Result<Vec<Flood>> {
    let mut floods = Vec::new();
    for &kind in kinds {
        eprintln!(
            "bench: {}, {FLOOD_REPETITIONS} x {FLOOD_SECONDS} s per watcher, alternating",
            kind.name()
        );
        floods.push(flood::measure(
            rstwatch,
            kind,
            FLOOD_SECONDS,
            FLOOD_REPETITIONS,
        )?);
    }
    Ok(floods)
}

fn floods_only(kinds: &[FloodKind]) -> Result<()> {
    let mut md = String::new();
    for flood in measure_floods(&rstwatch_binary()?, kinds)? {
        flood_markdown(&mut md, &flood);
    }
    println!("{md}");
    Ok(())
}

/// The repeated-frame cases, on whatever the table holds now.
fn steady_cases(
    kernel: &Kernel,
    ring: &mut RingBuf<MapData>,
    empty: &EmptyXdp,
    frames: &Frames,
    table: &'static str,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let mut push = |cost: Cost, target: Target| {
        rows.push(Row {
            table,
            cost,
            target,
        })
    };
    push(
        repeated(kernel, empty, "UDP (not TCP)", &frames.udp, REPEAT)?,
        Target::Ratio(TARGET_NOT_TCP_RATIO),
    );
    for (case, syn, data) in [
        ("TCP data, known flow", &frames.syn, &frames.data),
        (
            "TCP data, known flow, IPv6",
            &frames.syn_v6,
            &frames.data_v6,
        ),
        (
            "TCP data, known flow, VLAN",
            &frames.syn_vlan,
            &frames.data_vlan,
        ),
    ] {
        run(kernel, syn, 1)?;
        push(
            repeated(kernel, empty, case, data, REPEAT)?,
            Target::Ratio(TARGET_DATA_RATIO),
        );
    }
    for (case, frame) in [
        ("RST with event", &frames.rst),
        ("RST with event, IPv6", &frames.rst_v6),
    ] {
        push(
            rst_events(kernel, ring, RING_BYTES, empty, case, frame)?,
            Target::Ratio(TARGET_RST_RATIO),
        );
    }
    Ok(())
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "-",
    }
}

fn flood_markdown(md: &mut String, flood: &Flood) {
    let _ = writeln!(
        md,
        "\n{}, trafgen into a veth, {} runs of each watcher alternating (median rates; the ratio \
         is the median of each repetition's rate over the empty program's in that repetition):\n",
        flood.kind.name(),
        flood
            .runs
            .iter()
            .filter(|(hooked, _)| *hooked == Hooked::Rstwatch)
            .count()
    );
    let _ = writeln!(
        md,
        "| attached | packets/s received | ratio to the empty program (lowest-highest) | CPU of the process | target | |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---|---|");
    for hooked in Hooked::ALL {
        let (target, met) = match hooked {
            Hooked::Rstwatch => {
                let met = flood.ratio(hooked) >= TARGET_FLOOD_RATIO
                    && flood.cpu_share(hooked) <= TARGET_DAEMON_CPU;
                (
                    format!(
                        ">= {TARGET_FLOOD_RATIO}x, daemon <= {:.0}%",
                        TARGET_DAEMON_CPU * 100.0
                    ),
                    Some(met),
                )
            }
            _ => ("-".to_owned(), None),
        };
        let cpu = match hooked {
            Hooked::Rstwatch | Hooked::Tcpdump => {
                format!("{:.0}%", 100.0 * flood.cpu_share(hooked))
            }
            _ => "-".to_owned(),
        };
        let _ = writeln!(
            md,
            "| {} | {:.2} M | {:.2}x ({:.2}-{:.2}) | {} | {} | {} |",
            hooked.name(),
            flood.rate(hooked) / 1e6,
            flood.ratio(hooked),
            flood.ratio_range(hooked).0,
            flood.ratio_range(hooked).1,
            cpu,
            target,
            verdict(met)
        );
    }
    let side = |name: &str| -> u64 { flood.rstwatch.iter().map(|r| r.counter(name)).sum() };
    let xdp_s: f64 = flood.rstwatch.iter().map(|r| r.xdp_cpu_s).sum();
    let xdp_runs: u64 = flood.rstwatch.iter().map(|r| r.xdp_runs).sum();
    let reported: u64 = flood.rstwatch.iter().map(|r| r.reported).sum();
    let _ = writeln!(
        md,
        "\nrstwatch, all runs: {} RSTs seen, {} sent as events, {} counted in storm aggregates \
         ({} without room in the storm map), {} lost, {} lost to a busy slot, {} follow-ups \
         suppressed: **{} unaccounted** (target 0: {}); {} resets reported (aggregates by their \
         count); {} flows inserted, {} evicted ({} established); XDP program {:.0} ns/run.",
        side("rsts"),
        side("events_sent"),
        side("rsts_aggregated"),
        side("storm_map_full"),
        side("events_lost"),
        side("rst_updates_lost"),
        side("followups_suppressed"),
        flood.unaccounted(),
        verdict(Some(flood.unaccounted() == 0)),
        reported,
        side("flows_inserted"),
        side("flows_evicted"),
        side("established_evicted"),
        xdp_s * 1e9 / xdp_runs.max(1) as f64
    );
    let tcpdump_dropped: u64 = flood.tcpdump.iter().map(|t| t.dropped_by_kernel).sum();
    let tcpdump_seen: u64 = flood.tcpdump.iter().map(|t| t.received_by_filter).sum();
    let _ = writeln!(
        md,
        "tcpdump, all runs: {tcpdump_seen} packets received by its filter, {tcpdump_dropped} \
         dropped by the kernel."
    );
    if flood.kind == FloodKind::Syn {
        let (explained, total) = flood.established_explained();
        let _ = writeln!(
            md,
            "Established flows explained correctly after the SYN flood (abort, their history \
             starting with the SYN sent before the flood): **{explained}/{total}** (target all: \
             {}).",
            verdict(Some(explained == total && total > 0))
        );
    }
}

fn results_markdown(
    rows: &[Row],
    throughput: &Throughput,
    floods: &[Flood],
    memory: &FlowTables,
    flows: usize,
) -> String {
    let mut md = String::new();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let _ = writeln!(
        md,
        "Kernel {}, {} CPUs, BPF_PROG_TEST_RUN; empty XDP program measured alternately in the \
         same run.\n",
        kernel.trim(),
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    let _ = writeln!(
        md,
        "| case | flow table | method | ns/packet | empty ns | ratio | target | |"
    );
    let _ = writeln!(md, "|---|---|---|---:|---:|---:|---|---|");
    for row in rows {
        let cost = &row.cost;
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.0} | {:.0} | {:.1}x | {} | {} |",
            cost.case,
            row.table,
            cost.method,
            cost.ns,
            cost.empty_ns,
            cost.ratio(),
            row.target_text(),
            verdict(row.met())
        );
    }
    userspace_markdown(&mut md, throughput);
    for flood in floods {
        flood_markdown(&mut md, flood);
    }
    let _ = writeln!(
        md,
        "\nFlow tables (fdinfo memlock, the kernel's own account): {} flows held after {} new \
         flows; the sets and their tags (4 B a set): IPv4 {:.1} MiB for {} flows = {:.0} \
         bytes/flow (sets of {} B), IPv6 {:.1} MiB for {} flows = {:.0} bytes/flow (sets of {} \
         B): {:.1} MiB (target <= {} MiB: {}). \
         Every map of the process: {:.1} MiB (target <= {} MiB: {}). Per flow elsewhere, the \
         same account: Cilium conntrack 136 B (IPv4), Katran 120 B, Calico 168 B, Retina 208 B; \
         rstwatch's LRU hash before this table, 312 B (362.5 MiB in all).",
        flows,
        FULL_TABLE + 2 * SAMPLE,
        memory.v4.mib(),
        memory.v4.flows,
        memory.v4.bytes_per_flow(),
        memory.v4.set_bytes,
        memory.v6.mib(),
        memory.v6.flows,
        memory.v6.bytes_per_flow(),
        memory.v6.set_bytes,
        memory.mib(),
        TARGET_TABLE_MIB,
        verdict(Some(memory.mib() <= TARGET_TABLE_MIB)),
        memory.all_maps_mib(),
        TARGET_ALL_MAPS_MIB,
        verdict(Some(memory.all_maps_mib() <= TARGET_ALL_MAPS_MIB)),
    );
    md
}

fn flood_json(flood: &Flood) -> Value {
    let runs: Vec<Value> = flood
        .runs
        .iter()
        .map(|(hooked, run)| {
            json!({
                "attached": hooked.name(),
                "seconds": run.seconds,
                "sent": run.sent,
                "received": run.received,
                "rate": run.rate(),
                "cpu_s": run.cpu_s,
            })
        })
        .collect();
    let rstwatch: Vec<Value> = flood
        .rstwatch
        .iter()
        .map(|r| {
            json!({
                "counters": r.counters,
                "reported": r.reported,
                "unaccounted": r.unaccounted(),
                "xdp_cpu_s": r.xdp_cpu_s,
                "xdp_runs": r.xdp_runs,
                "established": r.established,
                "established_explained": r.established_explained,
            })
        })
        .collect();
    let tcpdump: Vec<Value> = flood
        .tcpdump
        .iter()
        .map(|t| {
            json!({
                "received_by_filter": t.received_by_filter,
                "captured": t.captured,
                "dropped_by_kernel": t.dropped_by_kernel,
            })
        })
        .collect();
    let ratios: serde_json::Map<String, Value> = Hooked::ALL
        .iter()
        .map(|h| (h.name().to_owned(), json!(flood.ratio(*h))))
        .collect();
    json!({
        "flood": flood.kind.name(),
        "runs": runs,
        "ratio_to_empty_program": ratios,
        "rstwatch_cpu_share": flood.cpu_share(Hooked::Rstwatch),
        "tcpdump_cpu_share": flood.cpu_share(Hooked::Tcpdump),
        "unaccounted": flood.unaccounted(),
        "rstwatch": rstwatch,
        "tcpdump": tcpdump,
        "met": flood.ratio(Hooked::Rstwatch) >= TARGET_FLOOD_RATIO
            && flood.cpu_share(Hooked::Rstwatch) <= TARGET_DAEMON_CPU
            && flood.unaccounted() == 0,
    })
}

fn json_report(
    rows: &[Row],
    throughput: &Throughput,
    floods: &[Flood],
    memory: &FlowTables,
    flows: usize,
) -> Value {
    let kernel_cost: Vec<Value> = rows
        .iter()
        .map(|row| {
            json!({
                "case": row.cost.case,
                "flow_table": row.table,
                "method": row.cost.method,
                "runs": row.cost.runs,
                "ns": row.cost.ns,
                "empty_ns": row.cost.empty_ns,
                "ratio": row.cost.ratio(),
                "target": row.target_text(),
                "met": row.met(),
            })
        })
        .collect();
    json!({
        "kernel_release": std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default().trim(),
        "cpus": std::thread::available_parallelism().map_or(0, usize::from),
        "kernel_cost": kernel_cost,
        "userspace": {
            "events": throughput.json.events,
            "events_per_cpu_second": throughput.events_per_second(),
            "runs": throughput
                .formats
                .iter()
                .chain([&throughput.json_file, &throughput.json_threaded])
                .map(|run| json!({
                    "name": run.name,
                    "events": run.events,
                    "records": run.records,
                    "seconds": run.elapsed.as_secs_f64(),
                    "cpu_seconds": run.cpu.as_secs_f64(),
                    "events_per_second": run.events_per_second(),
                    "events_per_cpu_second": run.events_per_cpu_second(),
                    "events_per_cpu_second_lowest": run.cpu_rate_range.0,
                    "events_per_cpu_second_highest": run.cpu_rate_range.1,
                }))
                .collect::<Vec<_>>(),
            "classes": throughput.classes,
            "met": throughput.events_per_second() >= TARGET_EVENTS_PER_SECOND,
        },
        "floods": floods.iter().map(flood_json).collect::<Vec<_>>(),
        "flow_table": {
            "flows_held": flows,
            "ipv4_flows": memory.v4.flows,
            "ipv4_memlock_bytes": memory.v4.memlock_bytes,
            "ipv4_bytes_per_flow": memory.v4.bytes_per_flow(),
            "ipv6_flows": memory.v6.flows,
            "ipv6_memlock_bytes": memory.v6.memlock_bytes,
            "ipv6_bytes_per_flow": memory.v6.bytes_per_flow(),
            "mib": memory.mib(),
            "all_maps_mib": memory.all_maps_mib(),
            "met": memory.mib() <= TARGET_TABLE_MIB
                && memory.all_maps_mib() <= TARGET_ALL_MAPS_MIB,
        },
    })
}
