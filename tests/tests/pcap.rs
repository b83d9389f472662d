//! `rstwatch watch --pcap FILE` in a lab: real resets, then tshark reads the pcap-ng. Every
//! reported RST is there with the bytes the kernel saw, on its interface's block, with its
//! verdict as a packet comment that names a middlebox exactly when the report does; SIGHUP
//! starts a fresh file after the old one was moved away.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};
use rstwatch_tests::{
    lab::{Family, Lab},
    scenarios,
    watch::{rstwatch_binary, Watcher},
};
use serde_json::Value;

const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
const REFUSED_CONNECTIONS: usize = 3;

/// A directory of this test process, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> Result<Self> {
        let path =
            std::env::temp_dir().join(format!("rstwatch-pcap-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `tshark -r file [-Y filter] -T fields -e field...`: one row per frame, its fields split at
/// tabs.
fn tshark(file: &Path, filter: Option<&str>, fields: &[&str]) -> Result<Vec<Vec<String>>> {
    let mut command = Command::new("tshark");
    command.arg("-r").arg(file).args(["-T", "fields"]);
    if let Some(filter) = filter {
        command.args(["-Y", filter]);
    }
    for field in fields {
        command.args(["-e", field]);
    }
    let output = command
        .output()
        .context("tshark (Debian package tshark) must be installed")?;
    ensure!(
        output.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?
        .lines()
        .map(|line| line.split('\t').map(str::to_owned).collect())
        .collect())
}

/// A RST's addresses and ports, as the JSON report or tshark gives them.
fn endpoints(src_ip: &str, src_port: &str, dst_ip: &str, dst_port: &str) -> String {
    format!("{src_ip}:{src_port} > {dst_ip}:{dst_port}")
}

fn json_endpoints(event: &Value) -> String {
    let text = |field: &str| match &event[field] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    endpoints(
        &text("src_ip"),
        &text("src_port"),
        &text("dst_ip"),
        &text("dst_port"),
    )
}

/// Waits until `file` is there and tshark finds `wanted` frames of `filter` in it.
fn wait_for_frames(file: &Path, filter: &str, wanted: usize) -> Result<()> {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        if file.exists() && tshark(file, Some(filter), &["frame.number"])?.len() >= wanted {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} never held {wanted} frames of {filter}", file.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn tshark_finds_every_reported_rst_with_its_verdict_as_a_comment() -> Result<()> {
    let lab = Lab::new("pcap")?;
    let dir = TempDir::new("verdicts")?;
    let pcap = dir.0.join("resets.pcapng");
    let mut watcher = Watcher::start(
        &rstwatch_binary()?,
        lab.client_ns(),
        lab.client_iface(),
        &[
            "--hold",
            "100ms",
            "--aggregate-rate",
            "off",
            "--pcap",
            pcap.to_str().context("a UTF-8 path")?,
        ],
    )?;
    for _ in 0..REFUSED_CONNECTIONS {
        scenarios::closed_port(&lab, Family::V4)?;
    }
    scenarios::forged_rst(&lab, Family::V4)?;
    let refused_seen = std::cell::Cell::new(0);
    let mut events = watcher.events_until(
        |event: &Value| {
            if event["class"] == "refused" {
                refused_seen.set(refused_seen.get() + 1);
            }
            refused_seen.get() == REFUSED_CONNECTIONS
        },
        EVENT_TIMEOUT,
    )?;
    if !events.iter().any(|event| event["middlebox"] == true) {
        events.extend(watcher.events_until(|event| event["middlebox"] == true, EVENT_TIMEOUT)?);
    }
    let exit = watcher.stop()?;
    assert!(exit.status.success(), "{exit:?}");
    events.extend(exit.events);

    // One frame per report carries a verdict; follow-up RSTs say they are follow-ups.
    let verdicts = tshark(
        &pcap,
        Some("frame.comment contains \"rstwatch: \" && !(frame.comment contains \"follow-up\")"),
        &["ip.src", "tcp.srcport", "ip.dst", "tcp.dstport"],
    )?;
    assert_eq!(verdicts.len(), events.len(), "{verdicts:?} {events:#?}");
    let reported: BTreeSet<String> = events.iter().map(json_endpoints).collect();
    let in_pcap: BTreeSet<String> = verdicts
        .iter()
        .map(|row| endpoints(&row[0], &row[1], &row[2], &row[3]))
        .collect();
    assert_eq!(
        in_pcap, reported,
        "the kernel's bytes are the reported RSTs"
    );

    // Every frame is a RST: the reports' and their follow-up RSTs'.
    let followups = tshark(
        &pcap,
        Some("frame.comment contains \"follow-up\""),
        &["frame.number"],
    )?;
    let rsts = tshark(&pcap, Some("tcp.flags.reset == 1"), &["frame.number"])?;
    let all = tshark(&pcap, None, &["frame.number"])?;
    assert_eq!(rsts.len(), events.len() + followups.len());
    assert_eq!(all.len(), rsts.len(), "nothing but RSTs");

    let middlebox_reports = events
        .iter()
        .filter(|event| event["middlebox"] == true)
        .count();
    assert!(
        middlebox_reports >= 1,
        "the router's forged RST: {events:#?}"
    );
    let middlebox_frames = tshark(
        &pcap,
        Some("frame.comment contains \"middlebox\""),
        &["frame.comment"],
    )?;
    assert_eq!(
        middlebox_frames.len(),
        middlebox_reports,
        "{middlebox_frames:?}"
    );

    let interfaces = tshark(&pcap, None, &["frame.interface_name"])?;
    assert!(
        interfaces.iter().all(|row| row[0] == lab.client_iface()),
        "every frame on the watched interface's block: {interfaces:?}"
    );
    Ok(())
}

#[test]
fn sighup_starts_a_fresh_pcap_after_it_was_moved_away() -> Result<()> {
    let lab = Lab::new("pcaphup")?;
    let dir = TempDir::new("hup")?;
    let pcap = dir.0.join("resets.pcapng");
    let moved = dir.0.join("resets.pcapng.old");
    let mut watcher = Watcher::start(
        &rstwatch_binary()?,
        lab.client_ns(),
        lab.client_iface(),
        &[
            "--hold",
            "100ms",
            "--pcap",
            pcap.to_str().context("a UTF-8 path")?,
        ],
    )?;
    scenarios::closed_port(&lab, Family::V4)?;
    watcher.events_until(|event| event["class"] == "refused", EVENT_TIMEOUT)?;
    wait_for_frames(&pcap, "tcp.flags.reset == 1", 1)?;
    std::fs::rename(&pcap, &moved)?;
    // SAFETY: kill(2) on the watcher's own pid.
    ensure!(unsafe { libc::kill(watcher.pid() as i32, libc::SIGHUP) } == 0);
    // The new file appears at the first write after the signal.
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while !pcap.exists() {
        ensure!(Instant::now() < deadline, "SIGHUP did not reopen --pcap");
        std::thread::sleep(Duration::from_millis(50));
    }
    scenarios::closed_port(&lab, Family::V4)?;
    watcher.events_until(|event| event["class"] == "refused", EVENT_TIMEOUT)?;
    wait_for_frames(&pcap, "tcp.flags.reset == 1", 1)?;
    let exit = watcher.stop()?;
    assert!(exit.status.success(), "{exit:?}");
    assert_eq!(
        tshark(&moved, Some("tcp.flags.reset == 1"), &["frame.number"])?.len(),
        1,
        "the first reset stayed in the moved file"
    );
    assert_eq!(
        tshark(&pcap, Some("tcp.flags.reset == 1"), &["frame.number"])?.len(),
        1,
        "the second went to the reopened one"
    );
    Ok(())
}
