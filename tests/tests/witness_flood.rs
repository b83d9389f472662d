//! A flood the host's stack answers with resets: the stack witness's tracepoint programs lose
//! records, step aside (detached) for a pause, make no "not from the TCP stack" claim
//! meanwhile, and are attached again when it ends. Needs root and a kernel with
//! `enum sk_rst_reason` (6.10+); fails without them.
//!
//! A binary of its own: the tracepoints fire for every reset on the host, so the flood would
//! also spend the budget of any other test's rstwatch running beside it.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use rstwatch_tests::frame::{TcpSegment, SYN};
use rstwatch_tests::lab::{Family, Lab, CLIENT_MAC, ROUTER_CLIENT_MAC, SERVER_IFACE};
use rstwatch_tests::packet_socket::PacketSocket;
use rstwatch_tests::scenarios;
use rstwatch_tests::watch::{rstwatch_binary, Watcher};
use serde_json::Value;

/// The flooded port: closed, and not the scenarios' `CLOSED_PORT` checked after the flood.
const FLOODED_PORT: u16 = 4020;
/// SYNs sent between looks at rstwatch's stderr.
const BURST: u32 = 1_000;
/// The flood's bound in time: two pauses of 1 and 2 s, each after the witness spent its
/// budget of 20,000 records per CPU and second.
const FLOOD_TIMEOUT: Duration = Duration::from_secs(40);
/// Quiet with the programs attached this long after the flood (50 drain ticks): no record
/// of the flood is left to lose.
const QUIET: Duration = Duration::from_secs(1);
/// Longer than a third pause (4 s), which the flood's last SYNs could start.
const RETURN_TIMEOUT: Duration = Duration::from_secs(6);
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

const STEPPED_ASIDE: &str = "rstwatch: the stack's reset tracepoints lost records";
const ATTACHED_AGAIN: &str = "rstwatch: the stack's reset tracepoints are attached again";

#[test]
fn a_reset_flood_steps_the_witness_aside_and_it_returns_when_the_pause_ends() -> Result<()> {
    let lab = Lab::new("wflood")?;
    let mut watcher = Watcher::start(
        &rstwatch_binary()?,
        lab.server_ns(),
        SERVER_IFACE,
        &["--hold", "100ms"],
    )?;
    let raw = PacketSocket::open(lab.client_ns(), lab.client_iface())?;
    let server = SocketAddr::new(lab.server_addr(Family::V4), FLOODED_PORT);
    let client: IpAddr = lab.client_addr(Family::V4);
    let start = Instant::now();
    let mut sent = 0u32;
    // The flood goes on through two pauses: the second (2 s) outlasts the match window the
    // lost records themselves cover, so a claim on its RSTs is held back by the pause alone.
    let mut said = Vec::new();
    while said.len() < 4 {
        for _ in 0..BURST {
            let syn = TcpSegment {
                // Client ports below Linux's ephemeral range: no socket of the client has them.
                src: SocketAddr::new(client, 1024 + (sent % 30_000) as u16),
                dst: server,
                ttl: 64,
                ip_id: Some(sent as u16),
                seq: sent,
                ack: 0,
                flags: SYN,
                payload_len: 0,
            };
            raw.send(&syn.to_ethernet_frame(CLIENT_MAC, ROUTER_CLIENT_MAC))?;
            sent = sent.wrapping_add(1);
        }
        let wanted = if said.len() % 2 == 0 {
            STEPPED_ASIDE
        } else {
            ATTACHED_AGAIN
        };
        if let Some(line) = watcher.stderr_line(|line| line.starts_with(wanted), Duration::ZERO) {
            said.push(line);
        }
        ensure!(
            start.elapsed() < FLOOD_TIMEOUT,
            "{sent} SYNs in {:?}: rstwatch said only {said:?}",
            start.elapsed()
        );
    }
    ensure!(
        said[0].contains("detached for 1s"),
        "the first pause: {said:?}"
    );
    ensure!(
        said[2].contains("detached for 2s"),
        "the second pause doubles: {said:?}"
    );
    // The last SYNs may have spent the budget again: the witness is back once stderr is
    // quiet with the programs attached.
    let mut attached = true;
    loop {
        let timeout = if attached { QUIET } else { RETURN_TIMEOUT };
        match watcher.stderr_line(
            |line| line.starts_with(STEPPED_ASIDE) || line == ATTACHED_AGAIN,
            timeout,
        ) {
            Some(line) => attached = line == ATTACHED_AGAIN,
            None => break,
        }
    }
    ensure!(attached, "the reset tracepoints stayed detached");

    // Back: a refused connection is the stack's own again, with its reason.
    let flow = scenarios::closed_port(&lab, Family::V4)?;
    let events = watcher.events_until(
        |event| {
            event["direction"] == "egress"
                && event["src_port"] == flow.server.port()
                && event["dst_port"] == flow.client.port()
        },
        EVENT_TIMEOUT,
    )?;
    let refused = events.last().expect("the wanted event is last");
    assert_eq!(refused["local"]["reason"], "NO_SOCKET", "{refused}");
    // No RST of the flood, answered by the stack while its programs were away, is called
    // someone else's.
    let mut all = events.clone();
    let exit = watcher.stop()?;
    ensure!(exit.status.success(), "rstwatch failed: {exit:?}");
    all.extend(exit.events);
    let claimed: Vec<&Value> = (all.iter())
        .filter(|event| event["local"]["source"] == "not_tcp_stack")
        .collect();
    assert!(
        claimed.is_empty(),
        "{} claimed: {:?}",
        claimed.len(),
        claimed.first()
    );
    let summary = (exit.stderr.lines())
        .find(|line| line.starts_with("rstwatch: stack witness "))
        .with_context(|| format!("no witness line in the summary: {}", exit.stderr))?;
    ensure!(
        !summary.contains("floods_stepped_aside=0"),
        "the summary counts the step aside: {summary}"
    );
    Ok(())
}
