//! `rstwatch explain FILE`: captures of the lab's scenarios, written by tcpdump in every link
//! type rstwatch reads, explained offline with the verdicts `rstwatch watch` gave live on the
//! same packets.

use std::{
    fs::File,
    net::SocketAddr,
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use pcap_file::{
    pcap::{PcapPacket, PcapReader, PcapWriter},
    DataLink,
};
use rstwatch_tests::{
    capture::{Capture, CaptureFile, ALL_TCP},
    frame::{TcpSegment, ACK, RST, SYN},
    lab::{Family, Lab, CLIENT_IFACE, CLIENT_MAC, ROUTER_CLIENT_MAC, ROUTER_IDLE_TIMEOUT},
    packet_socket::PacketSocket,
    process::run,
    scenarios::{self, Flow, Scenario},
    watch::{rstwatch_binary, Watcher},
};
use serde_json::Value;

const EVENT_TIMEOUT: Duration = Duration::from_secs(15);
/// With XDP attached, a veth merges received segments (GRO) before the packet tap: tcpdump
/// gets 64 KiB frames that fill its default buffer within a few, and drops what follows when it
/// falls behind on a loaded machine. Headers only (a snapshot length of 128 bytes, which
/// `explain` handles as payload missing) and a larger buffer keep every packet.
const SMALL_SNAPSHOT: [&str; 4] = ["-s", "128", "-B", "16384"];
const CAPTURE_POLL: Duration = Duration::from_millis(100);
/// Evidence that depends on sub-millisecond timing: `fast_rst` compares the RST's delay with
/// half the handshake's round trip, `rst_burst` the gaps between RSTs, and tcpdump stamps a
/// packet at a slightly different point of its path than XDP and TC do (microseconds apart on
/// a veth, enough to tip a comparison that close). Every other signal is read from packet
/// fields, identical in both.
const TIMING_EVIDENCE: [&str; 2] = ["fast_rst", "rst_burst"];
/// Fields that must be equal live and offline for each RST.
const VERDICT_FIELDS: [&str; 6] = [
    "class",
    "sender",
    "middlebox",
    "conn_state",
    "history",
    "community_id",
];

/// `--hold` in these tests.
const HOLD: Duration = Duration::from_millis(300);

/// The options `watch` and `explain` share in these tests: the idle threshold just below the
/// router's conntrack timeout, so the router's reset reads as the timeout it is.
fn common_options() -> Vec<String> {
    let idle = format!("{}ms", ROUTER_IDLE_TIMEOUT.as_millis() * 2 / 3);
    vec![
        "--hold".into(),
        format!("{}ms", HOLD.as_millis()),
        "--idle-timeout".into(),
        idle,
    ]
}

/// `rstwatch explain FILE --format json` and what it printed.
fn explain_file(path: &Path, extra: &[&str]) -> (Vec<Value>, Output) {
    let output = Command::new(rstwatch_binary().unwrap())
        .arg("explain")
        .arg(path)
        .args(["--format", "json"])
        .args(common_options())
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (records(&output.stdout), output)
}

fn records(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

fn on_flow(flow: &Flow, record: &Value) -> bool {
    let ports = [record["src_port"].as_u64(), record["dst_port"].as_u64()];
    ports.contains(&Some(flow.client.port().into()))
        && ports.contains(&Some(flow.server.port().into()))
}

/// What identifies a RST packet in a record.
fn rst_id(record: &Value) -> String {
    ["src_ip", "src_port", "dst_ip", "dst_port", "seq", "ack"]
        .iter()
        .map(|k| record[k].to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The verdict fields compared, timing evidence left out.
fn verdict(record: &Value) -> Vec<String> {
    let mut fields: Vec<String> = VERDICT_FIELDS
        .iter()
        .map(|k| format!("{k}={}", record[k]))
        .collect();
    let evidence: Vec<&str> = record["evidence"]
        .as_array()
        .expect("evidence is a list")
        .iter()
        .filter_map(Value::as_str)
        .filter(|e| !TIMING_EVIDENCE.contains(e))
        .collect();
    fields.push(format!("evidence={evidence:?}"));
    fields
}

fn by_rst(mut records: Vec<Value>) -> Vec<Value> {
    records.sort_by_key(rst_id);
    records
}

/// tcpdump capturing the client interface (headers only) and `rstwatch watch` on it, both
/// started.
fn capture_and_watch(lab: &Lab) -> (Capture, Watcher) {
    let capture =
        Capture::start_with(lab.client_ns(), CLIENT_IFACE, &SMALL_SNAPSHOT, ALL_TCP).unwrap();
    let options = common_options();
    let options: Vec<&str> = options.iter().map(String::as_str).collect();
    let watcher = Watcher::start(
        &rstwatch_binary().unwrap(),
        lab.client_ns(),
        lab.client_iface(),
        &options,
    )
    .unwrap();
    (capture, watcher)
}

/// Runs `scenario` under `rstwatch watch` on the client interface while tcpdump captures the
/// same interface (headers only), then explains the capture (`--local` names the client, whose packets the
/// watcher sees on TC egress: a pcap file does not record directions) and compares every
/// RST's verdict.
fn live_and_offline_agree(scenario: &Scenario, family: Family) {
    let lab = Lab::new("equiv").unwrap();
    let (capture, mut watcher) = capture_and_watch(&lab);
    let flow = (scenario.run)(&lab, family).unwrap();
    let mut live = watcher
        .events_until(|record| on_flow(&flow, record), EVENT_TIMEOUT)
        .unwrap();
    let exit = watcher.stop().unwrap();
    assert!(exit.status.success(), "{exit:?}");
    live.extend(exit.events);
    let (offline, output) = explain_captured(capture, &lab, family, &flow, &live);
    assert_same_verdicts(scenario.name, &flow, live, offline, &output);
}

/// Every RST of `flow` is reported live and offline, with the same verdict.
fn assert_same_verdicts(
    name: &str,
    flow: &Flow,
    live: Vec<Value>,
    offline: Vec<Value>,
    output: &Output,
) {
    let live = by_rst(live.into_iter().filter(|r| on_flow(flow, r)).collect());
    let offline = by_rst(offline.into_iter().filter(|r| on_flow(flow, r)).collect());
    let ids = |records: &[Value]| records.iter().map(rst_id).collect::<Vec<_>>();
    assert_eq!(
        ids(&live),
        ids(&offline),
        "{name}: the same RSTs live and offline\nlive: {live:#?}\noffline: {offline:#?}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for (live, offline) in live.iter().zip(&offline) {
        assert_eq!(
            verdict(live),
            verdict(offline),
            "{name}: the same verdict on {}\nlive: {live:#}\noffline: {offline:#}",
            rst_id(live)
        );
    }
}

/// A process stopped with SIGSTOP, continued when this is dropped, failure or not.
struct Stopped(u32);

impl Stopped {
    fn new(pid: u32) -> Self {
        // SAFETY: kill has no memory-safety preconditions; the pid is our live child.
        assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) }, 0);
        Self(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as in `new`.
        unsafe { libc::kill(self.0 as libc::pid_t, libc::SIGCONT) };
    }
}

/// Waits until `instant` has passed: the condition here is the time itself.
fn wait_until(instant: Instant) {
    std::thread::sleep(instant.saturating_duration_since(Instant::now()));
}

/// The first RST's report is the connection as of the end of its hold, live and offline:
/// the packets after it (the server's next chunk, the client's RST answering it) are neither
/// follow-ups nor in its Zeek state. `watch` is stopped for the whole scenario, so that it
/// releases the report only after those packets are in the kernel's flow table, as happens
/// when they come just after the hold's end and before the daemon's next release.
#[test]
fn packets_after_the_hold_are_in_no_report_live_or_offline() {
    for family in Family::BOTH {
        let lab = Lab::new("holdend").unwrap();
        let (capture, mut watcher) = capture_and_watch(&lab);
        let stopped = Stopped::new(watcher.pid());
        // The client's socket is reset once its kernel has seen the forged RST: its hold has
        // ended by a hold from now.
        let flow = scenarios::forged_rst_answered_after(&lab, family, || {
            wait_until(Instant::now() + HOLD);
            Ok(())
        })
        .unwrap();
        drop(stopped);
        let mut live = Vec::new();
        while live.iter().filter(|r| on_flow(&flow, r)).count() < 2 {
            live.extend(
                watcher
                    .events_until(|record| on_flow(&flow, record), EVENT_TIMEOUT)
                    .unwrap(),
            );
        }
        let exit = watcher.stop().unwrap();
        assert!(exit.status.success(), "{exit:?}");
        // The forged RST's entry held both later packets when the daemon went on, and the
        // first of them sent no state (it is data): the report took the state right after
        // the forged RST, which nothing came between, and the daemon counted it.
        assert!(
            exit.stderr.contains("states_past_hold_end=1 "),
            "{family:?}: {}",
            exit.stderr
        );
        live.extend(exit.events);
        let (offline, output) = explain_captured(capture, &lab, family, &flow, &live);
        for records in [&live, &offline] {
            let forged = records
                .iter()
                .find(|r| on_flow(&flow, r) && r["sender"] == "responder")
                .unwrap_or_else(|| panic!("{family:?}: the forged RST's report: {records:#?}"));
            let history = forged["history"].as_str().unwrap();
            assert!(!history.contains('R'), "{family:?}: {forged:#}");
            assert_eq!(forged["followups"], 0, "{family:?}: {forged:#}");
        }
        assert_same_verdicts("holdend", &flow, live, offline, &output);
    }
}

/// Once the capture holds every packet of `live`'s reports, explains it (`--local` names the
/// client, as the watcher saw it on TC egress) and checks that `explain` succeeded.
fn explain_captured(
    capture: Capture,
    lab: &Lab,
    family: Family,
    flow: &Flow,
    live: &[Value],
) -> (Vec<Value>, Output) {
    wait_until_captured(capture.path(), flow, live);
    let file = capture.finish().unwrap();
    let local = lab.client_addr(family).to_string();
    let (offline, output) = explain_file(&file.path, &["--local", &local]);
    assert!(output.status.success(), "{output:?}");
    (offline, output)
}

/// Waits until tcpdump, which falls behind on a loaded machine, has written every RST the
/// watcher reported: the file is explained as it grows until it holds them all.
fn wait_until_captured(path: &Path, flow: &Flow, live: &[Value]) {
    let wanted: Vec<String> = live
        .iter()
        .filter(|r| on_flow(flow, r))
        .map(rst_id)
        .collect();
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let (offline, _) = explain_file(path, &[]);
        let captured: Vec<String> = offline.iter().map(rst_id).collect();
        if wanted.iter().all(|id| captured.contains(id)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "tcpdump did not write {wanted:?} within {EVENT_TIMEOUT:?}; it has {captured:?}"
        );
        std::thread::sleep(CAPTURE_POLL);
    }
}

#[test]
fn every_scenario_explains_the_same_from_a_capture_as_live_v4() {
    for scenario in &scenarios::ALL {
        live_and_offline_agree(scenario, Family::V4);
    }
}

#[test]
fn every_scenario_explains_the_same_from_a_capture_as_live_v6() {
    for scenario in &scenarios::ALL {
        live_and_offline_agree(scenario, Family::V6);
    }
}

/// Captures `scenario` on `iface` of the client namespace with tcpdump `options`.
fn capture(
    iface: &str,
    options: &[&str],
    family: Family,
    scenario: fn(&Lab, Family) -> anyhow::Result<Flow>,
) -> (Flow, CaptureFile) {
    let lab = Lab::new("linktype").unwrap();
    let capture = Capture::start_with(lab.client_ns(), iface, options, ALL_TCP).unwrap();
    let flow = scenario(&lab, family).unwrap();
    (flow, capture.finish().unwrap())
}

/// The link type tcpdump wrote, read back from the file's header.
fn link_type(path: &Path) -> DataLink {
    PcapReader::new(File::open(path).unwrap())
        .unwrap()
        .header()
        .datalink
}

/// The one record of a refused connection: the server's stack answered the SYN.
fn assert_refused(flow: &Flow, records: &[Value], iface: &str) {
    let mine: Vec<&Value> = records.iter().filter(|r| on_flow(flow, r)).collect();
    assert_eq!(mine.len(), 1, "one reset for {flow:?}: {records:#?}");
    let record = mine[0];
    assert_eq!(record["class"], "refused", "{record:#}");
    assert_eq!(record["sender"], "responder", "{record:#}");
    assert_eq!(record["middlebox"], false, "{record:#}");
    assert_eq!(record["conn_state"], "REJ", "{record:#}");
    assert_eq!(record["iface"], iface, "{record:#}");
    assert_eq!(record["src_ip"], flow.server.ip().to_string(), "{record:#}");
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn an_ethernet_capture_of_a_refused_connection_reads_refused() {
    let (flow, file) = capture(CLIENT_IFACE, &[], Family::V4, scenarios::closed_port);
    assert_eq!(link_type(&file.path), DataLink::ETHERNET);
    let (records, output) = explain_file(&file.path, &[]);
    assert!(output.status.success(), "{output:?}");
    assert_refused(&flow, &records, &file_name(&file.path));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("rstwatch summary: 1 resets")
            && stderr.contains("refused                 1"),
        "the summary at the end: {stderr}"
    );
}

#[test]
fn linux_cooked_v1_and_v2_captures_read_and_say_which_way_packets_went() {
    for (name, link) in [
        ("LINUX_SLL", DataLink::LINUX_SLL),
        ("LINUX_SLL2", DataLink::LINUX_SLL2),
    ] {
        let (flow, file) = capture("any", &["-y", name], Family::V6, scenarios::closed_port);
        assert_eq!(link_type(&file.path), link);
        let (records, output) = explain_file(&file.path, &[]);
        assert!(output.status.success(), "{output:?}");
        assert_refused(&flow, &records, &file_name(&file.path));
        // The client's own abort left the host: the cooked header says outgoing.
        let (flow, file) = capture(
            "any",
            &["-y", name],
            Family::V4,
            scenarios::local_linger_abort,
        );
        let (records, _) = explain_file(&file.path, &[]);
        let mine: Vec<&Value> = records.iter().filter(|r| on_flow(&flow, r)).collect();
        assert_eq!(mine.len(), 1, "{name}: {records:#?}");
        assert_eq!(mine[0]["direction"], "egress", "{name}: {:#}", mine[0]);
        assert_eq!(mine[0]["src_ip"], flow.client.ip().to_string());
    }
}

/// `editcap -C 14 -T ENCAP` cuts the Ethernet header off every frame and relabels the file.
fn without_ethernet(file: &CaptureFile, encapsulation: &str) -> CaptureFile {
    let out = CaptureFile {
        path: file.path.with_extension(format!("{encapsulation}.pcap")),
    };
    #[rustfmt::skip]
    run("editcap", &[
        "-F", "pcap", "-C", "14", "-T", encapsulation,
        file.path.to_str().unwrap(), out.path.to_str().unwrap(),
    ])
    .unwrap();
    out
}

#[test]
fn raw_ip_captures_read_in_every_numbering() {
    for (family, encapsulation, link) in [
        (Family::V4, "rawip", DataLink::RAW),
        (Family::V6, "rawip", DataLink::RAW),
        (Family::V4, "rawip4", DataLink::IPV4),
        (Family::V6, "rawip6", DataLink::IPV6),
    ] {
        let (flow, ethernet) = capture(CLIENT_IFACE, &[], family, scenarios::closed_port);
        let raw = without_ethernet(&ethernet, encapsulation);
        assert_eq!(link_type(&raw.path), link, "{encapsulation}");
        let (records, output) = explain_file(&raw.path, &[]);
        assert!(output.status.success(), "{output:?}");
        assert_refused(&flow, &records, &file_name(&raw.path));
    }
}

/// Rewrites an Ethernet capture as BSD loopback: each frame's Ethernet header replaced by
/// the 4-byte address family in little-endian order, as a little-endian BSD host writes it.
fn as_bsd_null(ethernet: &CaptureFile) -> CaptureFile {
    const AF_INET: u32 = 2;
    const AF_INET6_FREEBSD: u32 = 28;
    let out = CaptureFile {
        path: ethernet.path.with_extension("null.pcap"),
    };
    let mut reader = PcapReader::new(File::open(&ethernet.path).unwrap()).unwrap();
    let mut header = reader.header();
    header.datalink = DataLink::NULL;
    let mut writer = PcapWriter::with_header(File::create(&out.path).unwrap(), header).unwrap();
    while let Some(packet) = reader.next_packet() {
        let packet = packet.unwrap();
        let family = match packet.data[12..14] {
            [0x08, 0x00] => AF_INET,
            _ => AF_INET6_FREEBSD,
        };
        let mut data = family.to_le_bytes().to_vec();
        data.extend_from_slice(&packet.data[14..]);
        let orig_len = packet.orig_len - 10;
        writer
            .write_packet(&PcapPacket::new(packet.timestamp, orig_len, &data))
            .unwrap();
    }
    out
}

#[test]
fn bsd_loopback_captures_read_for_both_families() {
    for family in [Family::V4, Family::V6] {
        let (flow, ethernet) = capture(CLIENT_IFACE, &[], family, scenarios::closed_port);
        let null = as_bsd_null(&ethernet);
        assert_eq!(link_type(&null.path), DataLink::NULL);
        let (records, output) = explain_file(&null.path, &[]);
        assert!(output.status.success(), "{output:?}");
        assert_refused(&flow, &records, &file_name(&null.path));
    }
}

#[test]
fn a_vlan_tagged_capture_reads_with_its_vlan() {
    const VLAN: u16 = 100;
    // The kernel here has no 802.1Q module for a VLAN sub-interface: the tagged conversation
    // is sent as whole frames through a packet socket, which tcpdump sees as it sees any
    // frame the interface sends: a SYN from the client and the server's RST refusing it.
    let lab = Lab::new("vlan").unwrap();
    let client = SocketAddr::new(lab.client_addr(Family::V4), 40_100);
    let server = SocketAddr::new(lab.server_addr(Family::V4), 9);
    let capture = Capture::start(lab.client_ns(), CLIENT_IFACE, "vlan and tcp").unwrap();
    let socket = PacketSocket::open(lab.client_ns(), CLIENT_IFACE).unwrap();
    let segment = |src, dst, flags, seq, ack| TcpSegment {
        src,
        dst,
        ttl: 64,
        ip_id: Some(1),
        seq,
        ack,
        flags,
        payload_len: 0,
    };
    for frame in [
        segment(client, server, SYN, 1000, 0),
        segment(server, client, RST | ACK, 0, 1001),
    ] {
        socket
            .send(&tagged(
                &frame.to_ethernet_frame(CLIENT_MAC, ROUTER_CLIENT_MAC),
                VLAN,
            ))
            .unwrap();
    }
    let file = capture.finish().unwrap();
    let (records, output) = explain_file(&file.path, &[]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0]["class"], "refused", "{:#}", records[0]);
    assert_eq!(records[0]["vlan"], VLAN, "{:#}", records[0]);
    assert_eq!(records[0]["src_port"], 9, "{:#}", records[0]);
}

/// `frame` with an 802.1Q tag inserted after its MAC addresses.
fn tagged(frame: &[u8], vlan: u16) -> Vec<u8> {
    let mut out = frame[..12].to_vec();
    out.extend_from_slice(&0x8100u16.to_be_bytes());
    out.extend_from_slice(&vlan.to_be_bytes());
    out.extend_from_slice(&frame[12..]);
    out
}

#[test]
fn a_capture_cut_by_a_short_snaplen_counts_the_payload_from_the_ip_length() {
    // 60 bytes keep the Ethernet and IP headers and part of TCP's options, none of the 1000-byte
    // chunks the server streams.
    let (flow, file) = capture(
        CLIENT_IFACE,
        &["-s", "60"],
        Family::V4,
        scenarios::server_abort_midstream,
    );
    let (records, output) = explain_file(&file.path, &[]);
    assert!(output.status.success(), "{output:?}");
    let (full, full_file) = capture(
        CLIENT_IFACE,
        &[],
        Family::V4,
        scenarios::server_abort_midstream,
    );
    let (full_records, _) = explain_file(&full_file.path, &[]);
    let one = |flow: &Flow, records: &[Value]| -> Value {
        let mine: Vec<&Value> = records.iter().filter(|r| on_flow(flow, r)).collect();
        assert_eq!(mine.len(), 1, "{records:#?}");
        mine[0].clone()
    };
    let (cut, whole) = (one(&flow, &records), one(&full, &full_records));
    assert_eq!(cut["class"], "abort", "{cut:#}");
    assert!(
        cut["resp_bytes"].as_u64().unwrap() >= scenarios::STREAMED_BEFORE_ABORT as u64,
        "the streamed bytes count though the capture holds none of them: {cut:#}"
    );
    for key in [
        "class",
        "sender",
        "conn_state",
        "history",
        "resp_bytes",
        "orig_bytes",
    ] {
        assert_eq!(cut[key], whole[key], "{key}: cut {cut:#} whole {whole:#}");
    }
}

#[test]
fn a_capture_read_from_a_pipe_explains_as_the_file_does() {
    let (flow, file) = capture(CLIENT_IFACE, &[], Family::V4, scenarios::closed_port);
    let output = Command::new(rstwatch_binary().unwrap())
        .args(["explain", "-", "--format", "json"])
        .stdin(File::open(&file.path).unwrap())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_refused(&flow, &records(&output.stdout), "stdin");
}

#[test]
fn a_truncated_capture_explains_what_it_holds_and_says_where_it_breaks() {
    let (_, file) = capture(CLIENT_IFACE, &[], Family::V4, scenarios::closed_port);
    let frame_lens: Vec<usize> = {
        let mut reader = PcapReader::new(File::open(&file.path).unwrap()).unwrap();
        std::iter::from_fn(|| reader.next_packet().map(|p| p.unwrap().data.len())).collect()
    };
    let last_len = *frame_lens.last().expect("the capture holds frames");
    let mut bytes = std::fs::read(&file.path).unwrap();
    // A pcap record is a 16-byte header and the frame: cut the last one in its middle.
    let last_record_offset = bytes.len() - last_len - 16;
    bytes.truncate(bytes.len() - last_len / 2);
    let cut = CaptureFile {
        path: file.path.with_extension("cut.pcap"),
    };
    std::fs::write(&cut.path, &bytes).unwrap();
    let (_, output) = explain_file(&cut.path, &[]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let read = frame_lens.len() - 1;
    assert!(
        stderr.contains(&format!(
            "at byte offset {last_record_offset} (after {read} frames)"
        )),
        "the error names where the file breaks: {stderr}"
    );
    assert!(
        stderr.contains(&format!("capture frames={read} ")),
        "the frames before the break were explained: {stderr}"
    );
    let garbage = CaptureFile {
        path: file.path.with_extension("garbage"),
    };
    std::fs::write(&garbage.path, b"this is not a capture file at all").unwrap();
    let (_, output) = explain_file(&garbage.path, &[]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("not a pcap or pcap-ng capture"),
        "{output:?}"
    );
}

#[test]
fn flow_prints_the_conversation_with_the_verdict_under_its_rst() {
    let (flow, file) = capture(
        CLIENT_IFACE,
        &[],
        Family::V4,
        scenarios::server_abort_midstream,
    );
    let filter = format!("tcp.port=={}", flow.client.port());
    let output = Command::new(rstwatch_binary().unwrap())
        .arg("explain")
        .arg(&file.path)
        .args(["--flow", &filter])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with(&format!(
            "conversation 0: {} <-> {}",
            flow.client, flow.server
        )),
        "{text}"
    );
    assert!(
        lines[1].contains("-> [S]") && lines[1].contains("seq=0"),
        "{text}"
    );
    assert!(
        lines[2].contains("<- [S.]") && lines[2].contains("ack=1"),
        "{text}"
    );
    let rst = lines
        .iter()
        .position(|l| l.contains("<- [R"))
        .unwrap_or_else(|| panic!("the server's RST: {text}"));
    assert!(
        lines[rst + 1].contains("=> abort sender=responder middlebox=no"),
        "the verdict right under the RST: {text}"
    );
}
