//! `rstwatch watch --metrics ADDR` in a lab: real resets, then the live `/metrics` page, which
//! `promtool check metrics` must accept and whose counters must match what happened; and the
//! records name the node they were seen on (`--node-name`).

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _, Result};
use rstwatch_tests::{
    lab::{Family, Lab},
    scenarios,
    watch::{rstwatch_binary, Watcher},
};
use serde_json::Value;

const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Inside the lab client's namespace: no other process can hold it.
const METRICS_ADDR: &str = "127.0.0.1:9464";
const REFUSED_CONNECTIONS: usize = 3;
/// What the DaemonSet would pass from `spec.nodeName`.
const NODE_NAME: &str = "worker-7";

/// One HTTP/1.1 request for `path` to the metrics endpoint in namespace `ns`: the status line
/// and the body.
fn http_get(ns: &str, path: &str) -> Result<(String, String)> {
    let path = path.to_string();
    Lab::in_ns(ns, move || -> Result<(String, String)> {
        let addr: SocketAddr = METRICS_ADDR.parse()?;
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {METRICS_ADDR}\r\nAccept: */*\r\n\r\n"
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let (head, body) = response
            .split_once("\r\n\r\n")
            .context("no end of the response head")?;
        let status = head.lines().next().unwrap_or_default().to_string();
        Ok((status, body.to_string()))
    })?
}

/// `promtool check metrics` on `page`: its verdict, failing on any complaint.
fn promtool_check(page: &str) -> Result<()> {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("promtool (Debian package prometheus) must be installed")?;
    promtool
        .stdin
        .take()
        .context("promtool stdin")?
        .write_all(page.as_bytes())?;
    let output = promtool.wait_with_output()?;
    ensure!(
        output.status.success(),
        "promtool check metrics failed: {}{}\n{page}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// The value of every series of `name` whose labels include all of `labels` (`key="value"`),
/// summed.
fn sum(page: &str, name: &str, labels: &[&str]) -> u64 {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter(|(series, _)| {
            let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
            series_name == name && labels.iter().all(|label| series_labels.contains(label))
        })
        .map(|(_, value)| value.parse::<u64>().expect("integer sample"))
        .sum()
}

#[test]
fn metrics_count_the_resets_the_lab_provoked_and_promtool_accepts_them() -> Result<()> {
    let lab = Lab::new("metrics")?;
    let mut watcher = Watcher::start(
        &rstwatch_binary()?,
        lab.client_ns(),
        lab.client_iface(),
        &[
            "--hold",
            "100ms",
            "--aggregate-rate",
            "off",
            "--metrics",
            METRICS_ADDR,
            "--node-name",
            NODE_NAME,
        ],
    )?;
    let mut flows = Vec::new();
    for _ in 0..REFUSED_CONNECTIONS {
        flows.push(scenarios::closed_port(&lab, Family::V4)?);
    }
    let forged = scenarios::forged_rst(&lab, Family::V4)?;
    let refused_seen = std::cell::Cell::new(0);
    let events = watcher.events_until(
        |event: &Value| {
            if event["class"] == "refused" {
                refused_seen.set(refused_seen.get() + 1);
            }
            refused_seen.get() == REFUSED_CONNECTIONS
        },
        EVENT_TIMEOUT,
    )?;
    watcher.events_until(|event| event["middlebox"] == true, EVENT_TIMEOUT)?;
    assert!(
        events.iter().all(|event| event["host"] == NODE_NAME),
        "every record names the node: {events:?}"
    );

    let (status, page) = http_get(lab.client_ns(), "/metrics")?;
    assert_eq!(status, "HTTP/1.1 200 OK", "{page}");
    promtool_check(&page)?;

    let iface = format!("interface=\"{}\"", lab.client_iface());
    assert_eq!(
        sum(
            &page,
            "rstwatch_resets_total",
            &[
                "class=\"refused\"",
                "sender=\"responder\"",
                "middlebox=\"false\"",
                "direction=\"ingress\"",
                &iface
            ]
        ),
        REFUSED_CONNECTIONS as u64,
        "{page}"
    );
    assert_eq!(
        sum(&page, "rstwatch_resets_total", &["middlebox=\"true\""]),
        1,
        "the router's forged RST: {page}"
    );
    // This kernel has the stack's reset tracepoints, and nothing flooded them.
    assert_eq!(
        sum(&page, "rstwatch_stack_reset_probes_attached", &[]),
        1,
        "{page}"
    );
    let reported = sum(&page, "rstwatch_resets_total", &[]);
    assert!(
        sum(&page, "rstwatch_kernel_total", &["reason=\"rsts\""]) >= reported,
        "{page}"
    );
    assert_eq!(sum(&page, "rstwatch_events_lost_total", &[]), 0, "{page}");
    // A flow for each refused connection, one for the connection whose RST was forged.
    assert!(
        sum(&page, "rstwatch_flows_inserted_total", &[]) > REFUSED_CONNECTIONS as u64,
        "{page}"
    );
    assert_eq!(
        sum(&page, "rstwatch_flow_table_capacity", &["table=\"ipv4\""]),
        rstwatch::kernel::table_capacity(rstwatch_common::defaults::FLOWS)[0],
        "{page}"
    );
    assert_eq!(
        sum(
            &page,
            "rstwatch_sink_records_sent_total",
            &["sink=\"output\""]
        ),
        reported,
        "every reported reset was written to standard output: {page}"
    );
    assert!(page.contains("rstwatch_build_info{version=\""), "{page}");
    // The flows live are counted in the background, asked for by each scrape: a later scrape
    // shows the lab's flows.
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let (_, later) = http_get(lab.client_ns(), "/metrics")?;
        let live = sum(&later, "rstwatch_flows_live", &[]);
        if live > REFUSED_CONNECTIONS as u64 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "flows_live still {live} after {EVENT_TIMEOUT:?}: {later}"
        );
        std::thread::yield_now();
    }
    // Bounded cardinality: no address or port of the lab is a label value.
    for flow in flows.iter().chain([&forged]) {
        for forbidden in [flow.client.ip().to_string(), flow.server.ip().to_string()] {
            assert!(!page.contains(&forbidden), "{forbidden} is a label: {page}");
        }
        for port in [flow.client.port(), flow.server.port()] {
            assert!(
                !page.contains(&format!("\"{port}\"")),
                "{port} is a label: {page}"
            );
        }
    }

    let (status, _) = http_get(lab.client_ns(), "/")?;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let exit = watcher.stop()?;
    assert!(exit.status.success(), "{exit:?}");
    Ok(())
}

#[test]
fn a_metrics_address_in_use_is_a_user_error() -> Result<()> {
    let lab = Lab::new("metricsbusy")?;
    let output = Lab::in_ns(lab.client_ns(), || -> Result<std::process::Output> {
        let _taken = std::net::TcpListener::bind(METRICS_ADDR)?;
        Ok(Command::new("ip")
            .args(["netns", "exec", lab.client_ns()])
            .arg(rstwatch_binary()?)
            .args(["watch", "-i", lab.client_iface(), "--metrics", METRICS_ADDR])
            .output()?)
    })??;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot listen on --metrics 127.0.0.1:9464"),
        "{stderr}"
    );
    Ok(())
}
