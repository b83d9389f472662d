//! `--metrics ADDR`: Prometheus exposition at `/metrics`.
//!
//! The resets are counted as they are written (`sink::metrics`); everything else is read when
//! a scrape asks for it: the daemon's loop owns the kernel and the pipeline, so the HTTP task
//! sends it a request and gets the rendered page back. Every label has a bounded set of values
//! (classes, reasons, watched interfaces, sink names): never an address or a port.

use std::{net::SocketAddr, time::Duration};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use rstwatch_common::Counter as KernelCounter;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::{mpsc, oneshot, Semaphore},
};

use crate::{
    error::UserError, kernel::Counters, pipeline::PipelineStats, sink::metrics::ResetCounts,
};

/// The longest request head read; a scrape's is a few hundred bytes.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request and read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait before accepting again after `accept` failed.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Scrapes answered at once; more wait for a turn.
const CONCURRENT_SCRAPES: usize = 4;

/// What one scrape reads besides the reset counts.
pub struct Snapshot {
    pub kernel: Counters,
    /// Flows in the kernel's tables now.
    pub flows_live: u64,
    /// Reads of a flow's slot given up because programs kept writing it.
    pub flow_reads_torn: u64,
    /// Entries each flow table may hold, by table name.
    pub flow_capacity: Vec<(&'static str, u64)>,
    pub pipeline: PipelineStats,
    /// Resets waiting for their hold to end.
    pub held: u64,
    pub sinks: Vec<SinkRecords>,
    /// The host's TCP stack as a witness, where the kernel has it.
    pub stack: Option<StackWitnessStats>,
}

/// The stack witness's losses and its steps aside for reset floods (`crate::local::gate`).
pub struct StackWitnessStats {
    pub records_lost: u64,
    pub steps_aside: u64,
    /// Its reset programs are attached now.
    pub attached: bool,
}

/// One sink's records so far.
pub struct SinkRecords {
    /// `output` (standard output or `--output`) or `syslog`.
    pub sink: &'static str,
    pub sent: u64,
    pub dropped: u64,
    /// Records that went through the disk spool.
    pub spooled: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabel {
    table: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabel {
    sink: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Renders the exposition page: the reset counts kept since start, and `snapshot`.
pub fn render(resets: &ResetCounts, snapshot: &Snapshot) -> String {
    let mut registry = Registry::with_prefix("rstwatch");
    // A gauge of 1 rather than OpenMetrics' `info` type, which Prometheus' own text parser
    // (promtool) does not know.
    let build = Family::<BuildLabels, Gauge>::default();
    build
        .get_or_create(&BuildLabels {
            version: env!("CARGO_PKG_VERSION"),
        })
        .set(1);
    registry.register("build_info", "rstwatch's version", build);
    registry.register(
        "resets",
        "Resets reported, by class, claimed sender, middlebox verdict, direction (hook) and \
         interface",
        resets.clone(),
    );

    let kernel = Family::<ReasonLabel, Counter>::default();
    for counter in KernelCounter::ALL {
        kernel
            .get_or_create(&ReasonLabel {
                reason: counter.name(),
            })
            .inc_by(snapshot.kernel.get(counter));
    }
    registry.register(
        "kernel",
        "What the eBPF programs counted, by reason: packets seen, parse failures, flow-table \
         and event outcomes",
        kernel,
    );
    let inserted = snapshot.kernel.get(KernelCounter::FlowsInserted);
    register_counter(
        &mut registry,
        "events_lost",
        "RST events the ring buffer had no room for",
        snapshot.kernel.get(KernelCounter::EventsLost),
    );
    register_counter(
        &mut registry,
        "flows_inserted",
        "Flows the kernel started tracking",
        inserted,
    );
    register_counter(
        &mut registry,
        "flow_reads_torn",
        "Reads of a flow's state given up because the kernel kept writing it",
        snapshot.flow_reads_torn,
    );
    register_gauge(
        &mut registry,
        "flows_live",
        "Flows in the kernel's tables now",
        snapshot.flows_live,
    );
    let capacity = Family::<TableLabel, Gauge>::default();
    for &(table, entries) in &snapshot.flow_capacity {
        capacity
            .get_or_create(&TableLabel { table })
            .set(gauge_value(entries));
    }
    registry.register(
        "flow_table_capacity",
        "Entries each kernel flow table may hold",
        capacity,
    );

    let daemon = Family::<ReasonLabel, Counter>::default();
    for (reason, count) in [
        ("late_data_followup", snapshot.pipeline.late_data_followups),
        ("unknown_event", snapshot.pipeline.unknown_events),
        ("short_event", snapshot.pipeline.short_events),
        ("folded_into_storm", snapshot.pipeline.folded),
    ] {
        daemon.get_or_create(&ReasonLabel { reason }).inc_by(count);
    }
    registry.register(
        "daemon_events",
        "Kernel events the daemon did not report on their own, by reason",
        daemon,
    );
    register_gauge(
        &mut registry,
        "held_resets",
        "Resets waiting for their follow-up evidence before they are reported",
        snapshot.held,
    );
    register_counter(
        &mut registry,
        "states_past_hold_end",
        "Reports whose flow's kernel entry had taken packets past the hold's end, with no event \
         to tell the state before them: they carry the state right after the connection's \
         latest RST within the hold",
        snapshot.pipeline.states_past_hold_end,
    );

    let sent = Family::<SinkLabel, Counter>::default();
    let dropped = Family::<SinkLabel, Counter>::default();
    let spooled = Family::<SinkLabel, Counter>::default();
    for records in &snapshot.sinks {
        let label = SinkLabel { sink: records.sink };
        sent.get_or_create(&label).inc_by(records.sent);
        dropped.get_or_create(&label).inc_by(records.dropped);
        spooled.get_or_create(&label).inc_by(records.spooled);
    }
    registry.register("sink_records_sent", "Records delivered, by sink", sent);
    registry.register(
        "sink_records_dropped",
        "Records lost (queue full, write failed, spool full), by sink",
        dropped,
    );
    registry.register(
        "sink_records_spooled",
        "Records that waited in the disk spool, by sink",
        spooled,
    );

    if let Some(stack) = &snapshot.stack {
        register_counter(
            &mut registry,
            "stack_records_lost",
            "Records of the host TCP stack's resets the kernel could not deliver (over budget or \
             ring full)",
            stack.records_lost,
        );
        register_counter(
            &mut registry,
            "stack_floods_stepped_aside",
            "Times the stack's reset tracepoint programs were detached for a reset flood",
            stack.steps_aside,
        );
        register_gauge(
            &mut registry,
            "stack_reset_probes_attached",
            "1 while the stack's reset tracepoint programs are attached",
            u64::from(stack.attached),
        );
    }

    let mut page = String::new();
    prometheus_client::encoding::text::encode(&mut page, &registry)
        .expect("writing to a String cannot fail");
    prometheus_text(&page)
}

/// OpenMetrics text (what the encoder writes) as Prometheus' own text format 0.0.4, which
/// every Prometheus scrapes and `promtool check metrics` reads: there a counter's HELP and TYPE
/// name its samples' full name (`x_total`, not `x`), and there is no `# EOF`.
fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let comment = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|prefix| Some((prefix, line.strip_prefix(prefix)?)));
        match comment {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                text.push_str(&format!("{prefix}{name}{suffix} {tail}"));
            }
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

fn register_counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let counter = Counter::<u64>::default();
    counter.inc_by(value);
    registry.register(name, help, counter);
}

fn register_gauge(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let gauge = Gauge::<i64>::default();
    gauge.set(gauge_value(value));
    registry.register(name, help, gauge);
}

fn gauge_value(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A scrape waiting for its page.
pub type Scrape = oneshot::Sender<String>;

/// Listens on `addr`; a port in use or an address not on this host is the user's to fix.
pub async fn listen(addr: SocketAddr) -> Result<TcpListener, UserError> {
    TcpListener::bind(addr).await.map_err(|err| {
        UserError(format!(
            "cannot listen on --metrics {addr}: {err}: pick a free port on an address of this \
             host (0.0.0.0:9464 for every IPv4 address)"
        ))
    })
}

/// Answers HTTP requests for `/metrics` with the page the daemon's loop renders for each
/// `Scrape` sent on `scrapes`. Runs until the loop goes away.
pub async fn serve(listener: TcpListener, scrapes: mpsc::Sender<Scrape>) {
    let turns = std::sync::Arc::new(Semaphore::new(CONCURRENT_SCRAPES));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors, most likely: give the open ones time to close.
                log::warn!("--metrics: cannot accept a connection: {err}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(turn) = turns.clone().acquire_owned().await else {
            return;
        };
        let scrapes = scrapes.clone();
        tokio::spawn(async move {
            // A client that stalls loses its answer, nothing else.
            let _ = tokio::time::timeout(CLIENT_TIMEOUT, answer(stream, scrapes)).await;
            drop(turn);
        });
    }
}

/// Reads one request and answers it; the connection closes after the answer.
async fn answer(mut stream: TcpStream, scrapes: mpsc::Sender<Scrape>) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buffer).await?;
        if n == 0 || head.len() + n > MAX_REQUEST_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&buffer[..n]);
    }
    let request_line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut words = request_line.split(|&b| b == b' ');
    let method = words.next().unwrap_or_default();
    let target = words.next().unwrap_or_default();
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    let response = match (method, path) {
        (b"GET" | b"HEAD", b"/metrics") => {
            let (reply, page) = oneshot::channel();
            let page = match scrapes.send(reply).await {
                Ok(()) => page.await.ok(),
                Err(_) => None,
            };
            match page {
                Some(page) => response(
                    "200 OK",
                    "text/plain; version=0.0.4; charset=utf-8",
                    &page,
                    method == b"HEAD",
                ),
                None => response("503 Service Unavailable", "text/plain", "stopping\n", false),
            }
        }
        (b"GET" | b"HEAD", _) => response(
            "404 Not Found",
            "text/plain",
            "rstwatch serves its metrics at /metrics\n",
            method == b"HEAD",
        ),
        _ => response(
            "405 Method Not Allowed",
            "text/plain",
            "GET /metrics\n",
            false,
        ),
    };
    stream.write_all(&response).await?;
    stream.shutdown().await
}

fn response(status: &str, content_type: &str, body: &str, head_only: bool) -> Vec<u8> {
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        response.extend_from_slice(body.as_bytes());
    }
    response
}

#[cfg(test)]
mod tests {
    use rstwatch_common::COUNTER_COUNT;

    use super::*;
    use crate::sink::metrics::ResetLabels;

    #[test]
    fn the_page_carries_resets_kernel_reasons_flows_and_sinks() {
        let resets = ResetCounts::default();
        resets
            .get_or_create(&ResetLabels {
                class: "refused",
                sender: "responder",
                middlebox: "false",
                direction: "ingress",
                interface: "eth0".into(),
            })
            .inc_by(3);
        let mut kernel = [0; COUNTER_COUNT as usize];
        kernel[KernelCounter::FlowsInserted as usize] = 10;
        kernel[KernelCounter::EventsLost as usize] = 2;
        let page = render(
            &resets,
            &Snapshot {
                kernel: Counters(kernel),
                flows_live: 4,
                flow_reads_torn: 0,
                flow_capacity: vec![("main", 131072)],
                pipeline: PipelineStats::default(),
                held: 1,
                sinks: vec![SinkRecords {
                    sink: "syslog",
                    sent: 7,
                    dropped: 1,
                    spooled: 2,
                }],
                stack: Some(StackWitnessStats {
                    records_lost: 5,
                    steps_aside: 1,
                    attached: false,
                }),
            },
        );
        for line in [
            "rstwatch_resets_total{class=\"refused\",sender=\"responder\",middlebox=\"false\",\
             direction=\"ingress\",interface=\"eth0\"} 3",
            "rstwatch_kernel_total{reason=\"events_lost\"} 2",
            "rstwatch_events_lost_total 2",
            "rstwatch_flow_reads_torn_total 0",
            "rstwatch_flows_live 4",
            "rstwatch_flow_table_capacity{table=\"main\"} 131072",
            "rstwatch_sink_records_spooled_total{sink=\"syslog\"} 2",
            "rstwatch_stack_records_lost_total 5",
            "rstwatch_stack_floods_stepped_aside_total 1",
            "rstwatch_stack_reset_probes_attached 0",
            "rstwatch_build_info{version=\"",
        ] {
            assert!(page.contains(line), "{line} missing from\n{page}");
        }
        assert!(
            page.contains("# TYPE rstwatch_resets_total counter\n"),
            "{page}"
        );
        assert!(!page.contains("# EOF"), "{page}");
    }
}
