//! The syslog sink against a real receiver: a private rsyslogd on 127.0.0.1 per test.
//!
//! Needs the Debian packages `rsyslog`, `rsyslog-gnutls` and `openssl`; a missing one fails
//! the test with the name of the package to install.

use std::{future::Future, path::Path, time::Duration};

use rstwatch::test_support::{
    cef,
    sample::{hostile_report, id_of, numbered_report, HOSTILE},
};
use rstwatch::{
    clock::WallClock,
    explain::ExplainSettings,
    output::{cef::Cef, ecs::Ecs, ocsf::Ocsf, Format},
    pipeline::{aggregate::AggregateConfig, Pipeline, PipelineConfig},
    report::ResetReport,
    sink::{
        stats::SinkStats,
        syslog::{spawn, SyslogHandle, SyslogSink},
        SyslogConfig, SyslogUrl, TlsTrust, Transport,
    },
};
use rstwatch_tests::siem::{
    certs::Certs,
    rfc5424,
    rsyslog::{Input, Rsyslog},
    temp_dir::TempDir,
};
use serde_json::Value;
use tokio::task::JoinHandle;

/// Every test finishes well within a minute or fails.
const TEST_LIMIT: Duration = Duration::from_secs(55);
const ARRIVAL_LIMIT: Duration = Duration::from_secs(20);
const GRACE: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Ecs,
    Ocsf,
    Cef,
}

const KINDS: [Kind; 3] = [Kind::Ecs, Kind::Ocsf, Kind::Cef];

impl Kind {
    fn format(self) -> Box<dyn Format> {
        match self {
            Kind::Ecs => Box::new(Ecs),
            Kind::Ocsf => Box::new(Ocsf),
            Kind::Cef => Box::new(Cef),
        }
    }

    /// Checks that `msg` is what the format claims and returns the report's number (its
    /// community id) and the interface name it carries.
    fn read(self, msg: &str) -> (String, String) {
        match self {
            Kind::Ecs | Kind::Ocsf => {
                let doc: Value = serde_json::from_str(msg)
                    .unwrap_or_else(|error| panic!("{self:?} is not JSON ({error}): {msg}"));
                if self == Kind::Ecs {
                    assert_eq!(doc["ecs"]["version"], "8.11.0", "{msg}");
                    (
                        text(&doc["network"]["community_id"]),
                        text(&doc["observer"]["ingress"]["interface"]["name"]),
                    )
                } else {
                    assert_eq!(doc["class_uid"], 4001, "{msg}");
                    assert_eq!(doc["activity_id"], 5, "{msg}");
                    (
                        text(&doc["connection_info"]["community_uid"]),
                        text(&doc["unmapped"]["iface"]),
                    )
                }
            }
            Kind::Cef => {
                let record =
                    cef::parse(msg).unwrap_or_else(|error| panic!("bad CEF ({error}): {msg}"));
                assert_eq!(record.header[1..3], ["rstwatch", "rstwatch"], "{msg}");
                assert_eq!(record.header[4], "refused", "{msg}");
                let ext = &record.extensions;
                assert_eq!(ext["act"], "refused", "{msg}");
                assert_eq!(ext["cs1"], "responder", "forged key won: {msg}");
                (ext["cs6"].clone(), ext["deviceInboundInterface"].clone())
            }
        }
    }
}

fn text(value: &Value) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"))
        .to_owned()
}

fn url(rsyslog: &Rsyslog, transport: Transport) -> SyslogUrl {
    format!("{}://127.0.0.1:{}", transport.scheme(), rsyslog.port)
        .parse()
        .expect("valid syslog URL")
}

/// A sink to `rsyslog` that retries quickly.
fn config(rsyslog: &Rsyslog, transport: Transport, spool: &Path) -> SyslogConfig {
    let mut config = SyslogConfig::new(url(rsyslog, transport), spool);
    config.hostname = Some("sensor-1".to_owned());
    config.retry_min = Duration::from_millis(50);
    config.retry_max = Duration::from_millis(400);
    config
}

/// Reports published through the pipeline (the daemon's path after `explain`) to a syslog
/// sink in `kind`.
struct Exporter {
    pipeline: Pipeline,
    handle: SyslogHandle,
    task: JoinHandle<()>,
}

impl Exporter {
    fn send(&mut self, report: ResetReport) {
        self.pipeline.publish(report).expect("published");
        self.pipeline.flush().expect("flushed");
    }

    /// Writes out open storm aggregates, then stops the sender within `grace`.
    async fn shutdown(mut self, grace: Duration) -> SinkStats {
        self.pipeline
            .finish(&|_: &rstwatch_common::FlowKey| None)
            .expect("finished");
        let stats = self.handle.shutdown(grace).await;
        self.task.await.expect("the sender task ends cleanly");
        stats
    }
}

/// Every report on its own (no storm folding).
fn start(config: SyslogConfig, kind: Kind) -> Exporter {
    start_folding(config, kind, None)
}

fn start_folding(config: SyslogConfig, kind: Kind, aggregate: Option<AggregateConfig>) -> Exporter {
    let (handle, task) = spawn(config.clone()).expect("the sink starts");
    let mut pipeline = Pipeline::new(PipelineConfig {
        clock: WallClock::new(),
        explain: ExplainSettings::default(),
        ifnames: Default::default(),
        hold_ns: 0,
        link_ns: 0,
        aggregate,
    });
    let sink = SyslogSink::new(handle.clone(), &config);
    pipeline.add_output(kind.format(), vec![Box::new(sink)]);
    Exporter {
        pipeline,
        handle,
        task,
    }
}

async fn stop(exporter: Exporter) -> SinkStats {
    exporter.shutdown(GRACE).await
}

/// Parses every line as RFC 5424 from rstwatch, then as `kind`; returns the report numbers in
/// the order they arrived.
fn read_all(lines: &[String], kind: Kind, expected_iface: &str) -> Vec<String> {
    lines
        .iter()
        .map(|line| {
            let message = rfc5424::parse(line)
                .unwrap_or_else(|error| panic!("not RFC 5424 ({error}): {line}"));
            assert_eq!(message.app_name, "rstwatch", "{line}");
            assert_eq!(message.hostname, "sensor-1", "{line}");
            assert_eq!(message.msgid, "refused", "{line}");
            // local0 (16) * 8 + notice (5).
            assert_eq!(message.pri, 133, "{line}");
            assert!(message.timestamp.ends_with('Z'), "{line}");
            assert!(
                message
                    .structured_data
                    .starts_with("[origin software=\"rstwatch\""),
                "{line}"
            );
            let (id, iface) = kind.read(&message.msg);
            assert_eq!(iface, expected_iface, "{line}");
            id
        })
        .collect()
}

async fn within_limit(test: impl Future<Output = ()>) {
    tokio::time::timeout(TEST_LIMIT, test)
        .await
        .expect("the test took longer than its limit");
}

/// Sends `count` hostile reports in each format through one receiver and checks that each
/// arrives exactly once (and in order, over a stream), parsing as its format says.
async fn every_format_arrives_exactly_once(input: Input, transport: Transport) {
    const COUNT: u32 = 50;
    let dir = TempDir::new("syslog");
    let certs = (input == Input::Tls).then(|| Certs::generate(dir.path()));
    let rsyslog = Rsyslog::start(dir.path(), input, certs.as_ref()).await;
    let mut total = 0;
    for kind in KINDS {
        let mut config = config(
            &rsyslog,
            transport,
            &dir.path().join(format!("spool-{kind:?}")),
        );
        if let Some(certs) = &certs {
            config.tls_trust = TlsTrust::CaFile(certs.ca.clone());
        }
        let mut exporter = start(config, kind);
        for n in 0..COUNT {
            exporter.send(hostile_report(n));
        }
        let stats = stop(exporter).await;
        assert_eq!(stats.dropped(), 0, "{kind:?}: {stats:?}");
        assert_eq!(
            stats.sent + stats.resent,
            u64::from(COUNT),
            "{kind:?}: {stats:?}"
        );
        assert_eq!(stats.pending, 0, "{kind:?}: {stats:?}");

        total += COUNT as usize;
        let lines = rsyslog.wait_for(total, ARRIVAL_LIMIT).await;
        assert_eq!(
            lines.len(),
            total,
            "{kind:?}: duplicates arrived{}",
            rsyslog.log()
        );
        let mut ids = read_all(&lines[total - COUNT as usize..], kind, HOSTILE);
        let expected: Vec<String> = (0..COUNT).map(id_of).collect();
        if transport == Transport::Udp {
            // Datagrams carry no order guarantee; exactly once is what counts.
            ids.sort();
        }
        assert_eq!(ids, expected, "{kind:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_delivers_every_format_exactly_once() {
    within_limit(every_format_arrives_exactly_once(
        Input::Udp,
        Transport::Udp,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_delivers_every_format_exactly_once() {
    within_limit(every_format_arrives_exactly_once(
        Input::Tcp,
        Transport::Tcp,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_delivers_every_format_exactly_once() {
    within_limit(every_format_arrives_exactly_once(
        Input::Tls,
        Transport::Tls,
    ))
    .await;
}

/// Waits until the sink's counters satisfy `done`.
async fn wait_for_stats(handle: &SyslogHandle, what: &str, done: impl Fn(&SinkStats) -> bool) {
    let deadline = tokio::time::Instant::now() + ARRIVAL_LIMIT;
    loop {
        let stats = handle.stats();
        if done(&stats) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `sequenceId` in a message's `[meta sequenceId="N"]` element.
fn sequence_id(structured_data: &str) -> u32 {
    let (_, rest) = structured_data
        .split_once("[meta sequenceId=\"")
        .unwrap_or_else(|| panic!("no sequenceId in {structured_data}"));
    rest[..rest.find('"').expect("closing quote")]
        .parse()
        .expect("a number")
}

/// A receiver that stalls past the I/O timeout, then resumes, may get part of the batch that
/// was in flight twice: syslog has no acknowledgement. Nothing is missing, every repeat has
/// the `sequenceId` and the content of its first copy, and the sink counts the records it
/// re-sent that may be repeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_receiver_gets_every_record_and_repeats_it_can_recognise() {
    within_limit(async {
        /// Reports sent per round while the receiver is stalled, until a write times out.
        const ROUND: u32 = 500;
        const MAX_REPORTS: u32 = 60_000;
        let dir = TempDir::new("syslog-stall");
        let rsyslog = Rsyslog::start(dir.path(), Input::Tcp, None).await;
        let mut config = config(&rsyslog, Transport::Tcp, &dir.path().join("spool"));
        config.io_timeout = Duration::from_millis(300);
        let mut exporter = start(config, Kind::Ecs);

        rsyslog.pause();
        // Socket buffers on both ends absorb megabytes before a write blocks.
        let mut sent = 0;
        while exporter.handle.stats().link_failures == 0 {
            assert!(
                sent < MAX_REPORTS,
                "no write timed out: {:?}",
                exporter.handle.stats()
            );
            for n in sent..sent + ROUND {
                exporter.send(numbered_report(n));
            }
            sent += ROUND;
            wait_for_stats(&exporter.handle, "the queue drained", |stats| {
                stats.sent + stats.pending + stats.dropped() >= u64::from(sent)
                    || stats.link_failures > 0
            })
            .await;
        }
        rsyslog.resume();

        let lines = rsyslog.wait_for(sent as usize, ARRIVAL_LIMIT).await;
        let stats = stop(exporter).await;
        let mut first_copies = std::collections::HashMap::new();
        let mut repeated = std::collections::HashSet::new();
        for line in &lines {
            let message = rfc5424::parse(line).unwrap_or_else(|error| panic!("{error}: {line}"));
            let id = sequence_id(&message.structured_data);
            if let Some(first) = first_copies.insert(id, message.msg.clone()) {
                assert_eq!(first, message.msg, "sequenceId {id} names one record");
                repeated.insert(id);
            }
        }
        assert_eq!(stats.dropped(), 0, "{stats:?}");
        assert_eq!(first_copies.len(), sent as usize, "every record arrived");
        assert!((1..=sent).all(|id| first_copies.contains_key(&id)));
        assert!(
            repeated.len() as u64 <= stats.maybe_duplicated,
            "{} records repeated, {stats:?}",
            repeated.len()
        );
    })
    .await;
}

/// The receiver crashes mid-run and comes back on the same port: what was sent while it was
/// down is spooled, then delivered after it returns, in order, nothing lost or repeated.
async fn receiver_crash_loses_nothing(input: Input, transport: Transport) {
    const BATCH: u32 = 20;
    let dir = TempDir::new("syslog-crash");
    let certs = (input == Input::Tls).then(|| Certs::generate(dir.path()));
    let mut rsyslog = Rsyslog::start(dir.path(), input, certs.as_ref()).await;
    let mut config = config(&rsyslog, transport, &dir.path().join("spool"));
    if let Some(certs) = &certs {
        config.tls_trust = TlsTrust::CaFile(certs.ca.clone());
    }
    let mut exporter = start(config, Kind::Ecs);

    for n in 0..BATCH {
        exporter.send(numbered_report(n));
    }
    rsyslog.wait_for(BATCH as usize, ARRIVAL_LIMIT).await;

    rsyslog.kill();
    for n in BATCH..2 * BATCH {
        exporter.send(numbered_report(n));
    }
    wait_for_stats(
        &exporter.handle,
        "spooling while the receiver is down",
        |stats| stats.spooled == u64::from(BATCH) && !stats.connected,
    )
    .await;

    rsyslog.restart().await;
    for n in 2 * BATCH..3 * BATCH {
        exporter.send(numbered_report(n));
    }
    let lines = rsyslog.wait_for(3 * BATCH as usize, ARRIVAL_LIMIT).await;
    let ids = read_all(&lines, Kind::Ecs, "eth0");
    let expected: Vec<String> = (0..3 * BATCH).map(id_of).collect();
    assert_eq!(
        ids,
        expected,
        "every report once, in order{}",
        rsyslog.log()
    );

    let stats = stop(exporter).await;
    assert_eq!(stats.dropped(), 0, "{stats:?}");
    assert!(stats.resent >= u64::from(BATCH), "{stats:?}");
    assert_eq!(stats.sent + stats.resent, u64::from(3 * BATCH), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_receiver_crash_loses_nothing() {
    within_limit(receiver_crash_loses_nothing(Input::Tcp, Transport::Tcp)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_receiver_crash_loses_nothing() {
    within_limit(receiver_crash_loses_nothing(Input::Tls, Transport::Tls)).await;
}

/// A receiver whose certificate is not signed by the configured CA gets nothing; the records
/// wait in the spool, and the next run of rstwatch (with the right CA) delivers them first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_refuses_an_unverified_receiver_and_the_spool_survives_a_restart() {
    within_limit(async {
        let dir = TempDir::new("syslog-verify");
        let certs = Certs::generate(dir.path());
        let rsyslog = Rsyslog::start(dir.path(), Input::Tls, Some(&certs)).await;
        let spool = dir.path().join("spool");

        let mut wrong_ca = config(&rsyslog, Transport::Tls, &spool);
        wrong_ca.tls_trust = TlsTrust::CaFile(certs.unrelated_ca.clone());
        let mut exporter = start(wrong_ca, Kind::Ocsf);
        for n in 0..5 {
            exporter.send(numbered_report(n));
        }
        wait_for_stats(
            &exporter.handle,
            "spooling for an unverified receiver",
            |stats| stats.spooled == 5,
        )
        .await;
        let stats = exporter.shutdown(Duration::from_millis(500)).await;
        assert_eq!(
            (stats.sent, stats.resent, stats.pending),
            (0, 0, 5),
            "{stats:?}"
        );
        assert!(
            rsyslog.received().is_empty(),
            "an unverified receiver got records"
        );

        let mut right_ca = config(&rsyslog, Transport::Tls, &spool);
        right_ca.tls_trust = TlsTrust::CaFile(certs.ca.clone());
        let mut exporter = start(right_ca, Kind::Ocsf);
        for n in 5..10 {
            exporter.send(numbered_report(n));
        }
        let stats = stop(exporter).await;
        assert_eq!(stats.dropped(), 0, "{stats:?}");
        // New reports queue behind the backlog, so they too come out of the spool.
        assert_eq!(stats.sent + stats.resent, 10, "{stats:?}");
        assert!(stats.resent >= 5, "{stats:?}");
        let lines = rsyslog.wait_for(10, ARRIVAL_LIMIT).await;
        let expected: Vec<String> = (0..10).map(id_of).collect();
        assert_eq!(read_all(&lines, Kind::Ocsf, "eth0"), expected);

        let mut insecure = config(&rsyslog, Transport::Tls, &spool);
        insecure.tls_trust = TlsTrust::Insecure;
        let mut exporter = start(insecure, Kind::Ocsf);
        exporter.send(numbered_report(10));
        assert_eq!(stop(exporter).await.sent, 1);
        rsyslog.wait_for(11, ARRIVAL_LIMIT).await;
    })
    .await;
}

/// A storm of identical resets beyond the rate reaches the receiver as the first few
/// one by one, then one record carrying the count of the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_arrives_folded_with_its_count() {
    within_limit(async {
        let dir = TempDir::new("syslog-storm");
        let rsyslog = Rsyslog::start(dir.path(), Input::Tcp, None).await;
        let config = config(&rsyslog, Transport::Tcp, &dir.path().join("spool"));
        let aggregate = AggregateConfig {
            max_per_window: 5,
            window: Duration::from_secs(30),
            max_keys: 1024,
        };
        let mut exporter = start_folding(config, Kind::Cef, Some(aggregate));
        for n in 0..200 {
            let mut report = numbered_report(n);
            report.dst.set_port(40_000 + n as u16);
            report.orig.set_port(40_000 + n as u16);
            exporter.send(report);
        }
        // Folded by the pipeline, before the sink: storms fold the same for every output.
        let folded = exporter.pipeline.stats().folded;
        let stats = stop(exporter).await;
        assert_eq!(
            (folded, stats.sent, stats.dropped()),
            (195, 6, 0),
            "{stats:?}"
        );

        let lines = rsyslog.wait_for(6, ARRIVAL_LIMIT).await;
        assert_eq!(lines.len(), 6);
        let counts: Vec<String> = lines
            .iter()
            .map(|line| {
                let message = rfc5424::parse(line).expect("RFC 5424");
                let record = cef::parse(&message.msg).expect("CEF");
                record.extensions["cnt"].clone()
            })
            .collect();
        assert_eq!(counts, ["1", "1", "1", "1", "1", "195"]);
        let aggregate = cef::parse(&rfc5424::parse(&lines[5]).expect("RFC 5424").msg)
            .expect("CEF")
            .extensions;
        assert_eq!(
            aggregate["cs6"],
            id_of(5),
            "the first folded reset stands for the storm"
        );
        assert_eq!(aggregate["start"], "1700000000005");
        assert_eq!(aggregate["end"], "1700000000199");
    })
    .await;
}
