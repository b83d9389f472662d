//! Proves the lab against the kernel: every scenario puts on the client's wire exactly the RSTs
//! it claims, as tcpdump on the client interface sees them. Needs root; fails without it.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::Result;
use rstwatch_tests::capture::{Capture, ALL_TCP, RSTS_ONLY};
use rstwatch_tests::frame::{TcpSegment, ACK, FIN, RST};
use rstwatch_tests::lab::{Family, Lab, StaleCleanupLock, INITIAL_TTL, TTL_VIA_ROUTER};
use rstwatch_tests::scenarios::{
    self, Flow, FORGED_RST_TTL, STREAMED_BEFORE_ABORT, UNSOLICITED_CLIENT_PORT,
};
use rstwatch_tests::watch::Watcher;

/// Runs `scenario` in a fresh lab while tcpdump captures `filter` on the client interface.
fn capture_scenario(
    label: &str,
    filter: &str,
    family: Family,
    scenario: fn(&Lab, Family) -> Result<Flow>,
) -> Result<(Flow, Vec<TcpSegment>)> {
    let lab = Lab::new(label)?;
    let capture = Capture::start(lab.client_ns(), lab.client_iface(), filter)?;
    let flow = scenario(&lab, family)?;
    Ok((flow, capture.stop()?))
}

/// The position of the only RST among `packets`.
fn only_rst(packets: &[TcpSegment]) -> usize {
    let rsts: Vec<usize> = (0..packets.len())
        .filter(|&i| packets[i].is_rst())
        .collect();
    assert_eq!(rsts.len(), 1, "expected exactly one RST in {packets:#?}");
    rsts[0]
}

fn assert_sent(packet: &TcpSegment, src: SocketAddr, dst: SocketAddr, ttl: u8) {
    assert_eq!(
        (packet.src, packet.dst, packet.ttl),
        (src, dst, ttl),
        "{packet:#?}"
    );
}

fn has_flag(flag: u8) -> impl Fn(&TcpSegment) -> bool {
    move |packet| packet.flags & flag != 0
}

fn client_connects_to_a_closed_port_and_the_server_stack_refuses(family: Family) -> Result<()> {
    let (flow, rsts) = capture_scenario("closed", RSTS_ONLY, family, scenarios::closed_port)?;
    let rst = &rsts[only_rst(&rsts)];
    assert_sent(rst, flow.server, flow.client, TTL_VIA_ROUTER);
    assert_eq!(rst.flags, RST | ACK);
    Ok(())
}

#[test]
fn closed_port_v4() -> Result<()> {
    client_connects_to_a_closed_port_and_the_server_stack_refuses(Family::V4)
}

#[test]
fn closed_port_v6() -> Result<()> {
    client_connects_to_a_closed_port_and_the_server_stack_refuses(Family::V6)
}

fn client_half_closes_then_aborts_with_a_teardown_rst(family: Family) -> Result<()> {
    let (flow, packets) = capture_scenario(
        "finabort",
        ALL_TCP,
        family,
        scenarios::client_fin_then_abort,
    )?;
    let rst = only_rst(&packets);
    assert_sent(&packets[rst], flow.client, flow.server, INITIAL_TTL);
    let client_fin = packets
        .iter()
        .position(|packet| packet.src == flow.client && has_flag(FIN)(packet))
        .expect("the client's FIN");
    assert!(client_fin < rst, "{packets:#?}");
    let after_fin = &packets[client_fin + 1..rst];
    let server_sent_data = after_fin
        .iter()
        .any(|p| p.src == flow.server && p.payload_len > 0);
    assert!(!server_sent_data, "{packets:#?}");
    Ok(())
}

#[test]
fn client_fin_then_abort_v4() -> Result<()> {
    client_half_closes_then_aborts_with_a_teardown_rst(Family::V4)
}

#[test]
fn client_fin_then_abort_v6() -> Result<()> {
    client_half_closes_then_aborts_with_a_teardown_rst(Family::V6)
}

fn client_sends_after_the_server_closed_and_the_server_stack_resets(family: Family) -> Result<()> {
    let (flow, packets) =
        capture_scenario("dataafter", ALL_TCP, family, scenarios::data_after_close)?;
    let rst = only_rst(&packets);
    assert_sent(&packets[rst], flow.server, flow.client, TTL_VIA_ROUTER);
    let server_fin = packets
        .iter()
        .position(|packet| packet.src == flow.server && has_flag(FIN)(packet))
        .expect("the server's FIN");
    let late_data = packets
        .iter()
        .rposition(|packet| packet.src == flow.client && packet.payload_len > 0)
        .expect("the client's data");
    assert!(server_fin < late_data && late_data < rst, "{packets:#?}");
    assert!(!packets
        .iter()
        .any(|p| p.src == flow.client && has_flag(FIN)(p)));
    Ok(())
}

#[test]
fn data_after_close_v4() -> Result<()> {
    client_sends_after_the_server_closed_and_the_server_stack_resets(Family::V4)
}

#[test]
fn data_after_close_v6() -> Result<()> {
    client_sends_after_the_server_closed_and_the_server_stack_resets(Family::V6)
}

fn server_aborts_midstream_without_a_fin(family: Family) -> Result<()> {
    let (flow, packets) = capture_scenario(
        "srvabort",
        ALL_TCP,
        family,
        scenarios::server_abort_midstream,
    )?;
    let rst = only_rst(&packets);
    assert_sent(&packets[rst], flow.server, flow.client, TTL_VIA_ROUTER);
    assert!(!packets.iter().any(has_flag(FIN)), "{packets:#?}");
    let streamed: u32 = packets[..rst]
        .iter()
        .filter(|packet| packet.src == flow.server)
        .map(|packet| packet.payload_len)
        .sum();
    assert_eq!(streamed as usize, STREAMED_BEFORE_ABORT);
    Ok(())
}

#[test]
fn server_abort_midstream_v4() -> Result<()> {
    server_aborts_midstream_without_a_fin(Family::V4)
}

#[test]
fn server_abort_midstream_v6() -> Result<()> {
    server_aborts_midstream_without_a_fin(Family::V6)
}

fn router_rejects_the_client_after_the_idle_timeout(family: Family) -> Result<()> {
    let (flow, packets) = capture_scenario("idle", ALL_TCP, family, scenarios::idle_timeout)?;
    let rst = only_rst(&packets);
    // In the server's name, but with the TTL of a packet that crossed no router.
    assert_sent(&packets[rst], flow.server, flow.client, INITIAL_TTL);
    let genuine = packets[..rst]
        .iter()
        .filter(|packet| packet.src == flow.server);
    assert!(genuine.clone().count() > 0 && genuine.clone().all(|p| p.ttl == TTL_VIA_ROUTER));
    let answered = &packets[rst - 1];
    assert!(
        answered.src == flow.client && answered.payload_len > 0,
        "{packets:#?}"
    );
    assert_eq!(packets[rst].seq, answered.ack);
    Ok(())
}

#[test]
fn idle_timeout_v4() -> Result<()> {
    router_rejects_the_client_after_the_idle_timeout(Family::V4)
}

#[test]
fn idle_timeout_v6() -> Result<()> {
    router_rejects_the_client_after_the_idle_timeout(Family::V6)
}

fn router_forges_a_rst_the_server_never_sent(family: Family) -> Result<()> {
    let (flow, packets) = capture_scenario("forged", ALL_TCP, family, scenarios::forged_rst)?;
    let from_server = |packet: &&TcpSegment| packet.src == flow.server;
    let server_rsts: Vec<&TcpSegment> = packets
        .iter()
        .filter(from_server)
        .filter(|p| p.is_rst())
        .collect();
    assert_eq!(server_rsts.len(), 1, "{packets:#?}");
    let forged = server_rsts[0];
    assert_sent(forged, flow.server, flow.client, FORGED_RST_TTL);
    let forged_at = packets.iter().position(|packet| packet == forged).unwrap();
    let (before, after) = (&packets[..forged_at], &packets[forged_at + 1..]);
    let genuine_before: Vec<&TcpSegment> = before.iter().filter(from_server).collect();
    assert!(genuine_before
        .iter()
        .all(|packet| packet.ttl == TTL_VIA_ROUTER));
    if family == Family::V4 {
        assert!(!genuine_before
            .iter()
            .any(|packet| packet.ip_id == forged.ip_id));
    }
    let last_data = genuine_before
        .iter()
        .rfind(|p| p.payload_len > 0)
        .expect("server data");
    assert_eq!(forged.seq, last_data.next_seq());
    // The server never learnt: it keeps streaming, and the client's stack resets that data.
    let data_after = after
        .iter()
        .position(|p| p.src == flow.server && p.payload_len > 0);
    let data_after = data_after.expect("server data after the forged RST");
    let client_rst = after
        .iter()
        .position(|p| p.src == flow.client && p.is_rst());
    assert!(
        client_rst.expect("the client's RST") > data_after,
        "{packets:#?}"
    );
    Ok(())
}

#[test]
fn forged_rst_v4() -> Result<()> {
    router_forges_a_rst_the_server_never_sent(Family::V4)
}

#[test]
fn forged_rst_v6() -> Result<()> {
    router_forges_a_rst_the_server_never_sent(Family::V6)
}

fn a_rst_for_a_flow_never_seen_reaches_the_client(family: Family) -> Result<()> {
    let (flow, rsts) =
        capture_scenario("unsolicited", RSTS_ONLY, family, scenarios::unsolicited_rst)?;
    let rst = &rsts[only_rst(&rsts)];
    assert_sent(rst, flow.server, flow.client, TTL_VIA_ROUTER);
    assert_eq!((rst.dst.port(), rst.flags), (UNSOLICITED_CLIENT_PORT, RST));
    Ok(())
}

#[test]
fn unsolicited_rst_v4() -> Result<()> {
    a_rst_for_a_flow_never_seen_reaches_the_client(Family::V4)
}

#[test]
fn unsolicited_rst_v6() -> Result<()> {
    a_rst_for_a_flow_never_seen_reaches_the_client(Family::V6)
}

fn client_aborts_with_linger_zero_and_its_rst_leaves_the_client(family: Family) -> Result<()> {
    let (flow, rsts) =
        capture_scenario("linger", RSTS_ONLY, family, scenarios::local_linger_abort)?;
    let rst = &rsts[only_rst(&rsts)];
    assert_sent(rst, flow.client, flow.server, INITIAL_TTL);
    Ok(())
}

#[test]
fn local_linger_abort_v4() -> Result<()> {
    client_aborts_with_linger_zero_and_its_rst_leaves_the_client(Family::V4)
}

#[test]
fn local_linger_abort_v6() -> Result<()> {
    client_aborts_with_linger_zero_and_its_rst_leaves_the_client(Family::V6)
}

fn netns_exists(ns: &str) -> bool {
    Path::new("/run/netns").join(ns).exists()
}

#[test]
fn dropping_a_lab_deletes_its_namespaces() -> Result<()> {
    let lab = Lab::new("drop")?;
    let namespaces = [lab.client_ns(), lab.router_ns(), lab.server_ns()].map(String::from);
    assert!(namespaces.iter().all(|ns| netns_exists(ns)));
    drop(lab);
    assert!(!namespaces.iter().any(|ns| netns_exists(ns)));
    Ok(())
}

/// A child process killed when the test ends, however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // Fails only if the child already exited, which is what the test wants anyway.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_new_lab_removes_what_a_dead_run_left() -> Result<()> {
    // Above Linux's PID_MAX_LIMIT, so this owner is certainly not running.
    let stale = "rw-stale-4194305-0-client";
    // No lab may look for stale namespaces until the sleep is inside this one: one that listed
    // its (still empty) process list before would delete it and leave the sleep running.
    let cleanup = StaleCleanupLock::acquire()?;
    let made = Command::new("ip").args(["netns", "add", stale]).status()?;
    assert!(made.success());
    let mut left_running = KillOnDrop(
        Command::new("ip")
            .args(["netns", "exec", stale, "sleep", "30"])
            .spawn()?,
    );
    // The lab finds leftovers by `ip netns pids`: wait until the sleep is inside.
    let entered = wait_until(Duration::from_secs(10), || {
        Command::new("ip")
            .args(["netns", "pids", stale])
            .output()
            .is_ok_and(|out| !out.stdout.trim_ascii().is_empty())
    });
    assert!(entered, "sleep did not enter {stale}");
    drop(cleanup);
    let _lab = Lab::new("fresh")?;
    assert!(!netns_exists(stale));
    let ended = wait_until(Duration::from_secs(5), || {
        left_running
            .0
            .try_wait()
            .is_ok_and(|status| status.is_some())
    });
    assert!(ended, "sleep survived");
    Ok(())
}

#[test]
fn in_ns_creates_sockets_inside_the_namespace() -> Result<()> {
    let lab = Lab::new("inns")?;
    let client_addr = lab.client_addr(Family::V4);
    let inside = Lab::in_ns(lab.client_ns(), || {
        std::net::TcpListener::bind((client_addr, 0))
    })?;
    assert!(inside.is_ok(), "{inside:?}");
    let outside = std::net::TcpListener::bind((client_addr, 0));
    assert!(
        outside.is_err(),
        "{client_addr} should exist only in the client namespace"
    );
    Ok(())
}

/// An executable file deleted when the test ends, however it ends.
struct TempScript(PathBuf);

impl TempScript {
    fn new(name: &str, text: &str) -> Result<TempScript> {
        let path = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let script = TempScript(path);
        std::fs::write(&script.0, text)?;
        std::fs::set_permissions(&script.0, std::fs::Permissions::from_mode(0o755))?;
        Ok(script)
    }
}

impl Drop for TempScript {
    fn drop(&mut self) {
        // Nothing to do if it was never written.
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn watcher_runs_its_binary_in_the_namespace_with_json_output() -> Result<()> {
    let lab = Lab::new("watcher")?;
    let fake_rstwatch = TempScript::new(
        "fake-rstwatch",
        "#!/bin/sh\necho 'rstwatch: watching (fake)' >&2\nprintf '{\"args\":\"%s\",\"netns\":\"%s\"}\\n' \"$*\" \"$(ip netns identify)\"\n",
    )?;
    let extra_args = ["--port", "4001"];
    let mut watcher = Watcher::start(
        &fake_rstwatch.0,
        lab.client_ns(),
        lab.client_iface(),
        &extra_args,
    )?;
    let events = watcher.events_until(|_| true, Duration::from_secs(5))?;
    let expected_args = format!("watch -i {} --format json --port 4001", lab.client_iface());
    assert_eq!(events[0]["args"], expected_args.as_str());
    assert_eq!(events[0]["netns"], lab.client_ns());
    // The script may or may not have exited before the SIGINT; either way nothing else came.
    assert!(watcher.stop()?.events.is_empty());
    Ok(())
}

/// Polls `done` every 10 ms until it holds or `limit` passes; true if it held.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
