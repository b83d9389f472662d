//! Every kind of reset, provoked by real Linux TCP stacks in the lab and explained by
//! `rstwatch watch` on the client's interface: class, claimed sender, middlebox verdict and
//! evidence, and the JSON keys every record carries.

use std::time::Duration;

use rstwatch::output::json::REQUIRED_KEYS;
use rstwatch_tests::{
    lab::{Family, Lab, ROUTER_IDLE_TIMEOUT},
    scenarios::{self, Flow},
    watch::{rstwatch_binary, Watcher},
};
use serde_json::Value;

const EVENT_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs `scenario` in a fresh lab under `rstwatch watch EXTRA` and returns the scenario's flow
/// and every record rstwatch printed by the time it stopped.
fn explain(
    label: &str,
    family: Family,
    extra: &[&str],
    scenario: ScenarioFn,
    wait_for: impl Fn(&Flow, &Value) -> bool,
) -> (Flow, Vec<Value>) {
    let lab = Lab::new(label).unwrap();
    let mut watcher = watch(&lab, extra);
    let flow = scenario(&lab, family).unwrap();
    let mut records = watcher
        .events_until(|record| wait_for(&flow, record), EVENT_TIMEOUT)
        .unwrap();
    let exit = watcher.stop().unwrap();
    assert!(exit.status.success(), "{exit:?}");
    records.extend(exit.events);
    (flow, records)
}

/// rstwatch on the lab's client interface with EXTRA arguments, its idle threshold just below
/// the router's conntrack timeout so that the router's reset reads as the timeout it is.
fn watch(lab: &Lab, extra: &[&str]) -> Watcher {
    let idle = format!("{}ms", ROUTER_IDLE_TIMEOUT.as_millis() * 2 / 3);
    let mut args = vec!["--hold", "300ms", "--idle-timeout", &idle];
    args.extend_from_slice(extra);
    Watcher::start(
        &rstwatch_binary().unwrap(),
        lab.client_ns(),
        lab.client_iface(),
        &args,
    )
    .unwrap()
}

fn on_flow(flow: &Flow, record: &Value) -> bool {
    let ports = [record["src_port"].as_u64(), record["dst_port"].as_u64()];
    ports.contains(&Some(flow.client.port().into()))
        && ports.contains(&Some(flow.server.port().into()))
}

/// The one record for the scenario's flow (rstwatch reports each reset once).
fn the_reset(flow: &Flow, records: &[Value]) -> Value {
    let mine: Vec<&Value> = records.iter().filter(|r| on_flow(flow, r)).collect();
    assert_eq!(mine.len(), 1, "one reset for {flow:?}: {records:#?}");
    mine[0].clone()
}

fn evidence(record: &Value) -> Vec<&str> {
    record["evidence"]
        .as_array()
        .expect("evidence is a list")
        .iter()
        .map(|e| e.as_str().expect("evidence names are strings"))
        .collect()
}

fn assert_verdict(record: &Value, class: &str, sender: &str, middlebox: bool) {
    assert_eq!(record["class"], class, "{record:#}");
    assert_eq!(record["sender"], sender, "{record:#}");
    assert_eq!(record["middlebox"], middlebox, "{record:#}");
}

#[test]
fn connect_to_a_closed_port_is_refused_v4_and_v6() {
    for family in Family::BOTH {
        let (flow, records) = explain("refused", family, &[], scenarios::closed_port, on_flow);
        let rst = the_reset(&flow, &records);
        assert_verdict(&rst, "refused", "responder", false);
        assert_eq!(rst["conn_state"], "REJ");
        assert_eq!(rst["orig_ip"], flow.client.ip().to_string());
        assert_eq!(rst["resp_port"], flow.server.port());
        for key in REQUIRED_KEYS {
            assert!(
                rst.get(key).is_some(),
                "{family:?}: key {key} missing: {rst:#}"
            );
        }
    }
}

#[test]
fn client_fin_then_abortive_close_is_teardown() {
    let (flow, records) = explain(
        "teardown",
        Family::V4,
        &[],
        scenarios::client_fin_then_abort,
        on_flow,
    );
    let rst = the_reset(&flow, &records);
    assert_verdict(&rst, "teardown", "originator", false);
    assert_eq!(rst["direction"], "egress");
}

#[test]
fn server_closes_and_the_client_sends_later_is_data_after_close() {
    let (flow, records) = explain("dac", Family::V4, &[], scenarios::data_after_close, on_flow);
    let rst = the_reset(&flow, &records);
    assert_verdict(&rst, "data_after_close", "responder", false);
    assert_eq!(evidence(&rst), Vec::<&str>::new());
}

#[test]
fn server_linger_zero_mid_stream_is_abort() {
    let (flow, records) = explain(
        "abort",
        Family::V4,
        &[],
        scenarios::server_abort_midstream,
        on_flow,
    );
    let rst = the_reset(&flow, &records);
    assert_verdict(&rst, "abort", "responder", false);
    assert_eq!(rst["expected_ttl"], rst["ttl"], "the server's own RST");
}

#[test]
fn idle_past_the_routers_timeout_is_idle_timeout_from_a_middlebox() {
    let (flow, records) = explain("idle", Family::V4, &[], scenarios::idle_timeout, on_flow);
    let rst = the_reset(&flow, &records);
    assert_verdict(&rst, "idle_timeout", "responder", true);
    assert!(evidence(&rst).contains(&"ttl_mismatch"), "{rst:#}");
    assert_eq!(rst["ttl"], 64, "the router's own RST");
    assert!(rst["idle_ms"].as_u64().unwrap() >= ROUTER_IDLE_TIMEOUT.as_millis() as u64);
}

#[test]
fn rst_forged_by_the_router_while_the_server_streams_is_a_middlebox() {
    for family in Family::BOTH {
        let (flow, records) = explain("forged", family, &[], scenarios::forged_rst, on_flow);
        // The forged RST, then the client's own RSTs answering the server's next data: each
        // is its own report, linked to the forged one.
        let resets: Vec<&Value> = records.iter().filter(|r| on_flow(&flow, r)).collect();
        let (rst, answers) = resets.split_first().expect("the forged RST's report");
        for answer in answers {
            assert_eq!(answer["sender"], "originator", "{family:?}: {answer:#}");
            assert_eq!(answer["related_to"], rst["ts"], "{family:?}: {answer:#}");
        }
        assert_eq!(rst["sender"], "responder", "{rst:#}");
        assert_eq!(rst["middlebox"], true, "{family:?}: {rst:#}");
        let evidence = evidence(rst);
        assert!(evidence.contains(&"ttl_mismatch"), "{family:?}: {rst:#}");
        assert!(evidence.contains(&"data_after_rst"), "{family:?}: {rst:#}");
    }
}

#[test]
fn bare_rst_for_a_flow_never_seen_is_no_state() {
    let (flow, records) = explain(
        "nostate",
        Family::V4,
        &[],
        scenarios::unsolicited_rst,
        on_flow,
    );
    let rst = the_reset(&flow, &records);
    assert_verdict(&rst, "no_state", "unknown", false);
    assert_eq!(rst["conn_state"], "OTH");
}

/// A scenario of `rstwatch_tests::scenarios`.
type ScenarioFn = fn(&Lab, Family) -> anyhow::Result<Flow>;

/// Runs `excluded` then `included` under rstwatch with `filter`: the included reset must be
/// reported and the excluded one must not.
fn assert_filter(
    label: &str,
    filter: &[&str],
    excluded: (ScenarioFn, Family),
    included: (ScenarioFn, Family),
) {
    let lab = Lab::new(label).unwrap();
    let mut watcher = watch(&lab, filter);
    let excluded = (excluded.0)(&lab, excluded.1).unwrap();
    let included = (included.0)(&lab, included.1).unwrap();
    let mut records = watcher
        .events_until(|r| on_flow(&included, r), EVENT_TIMEOUT)
        .unwrap();
    records.extend(watcher.stop().unwrap().events);
    assert!(
        !records.iter().any(|r| on_flow(&excluded, r)),
        "{filter:?} let {excluded:?} through: {records:#?}"
    );
}

#[test]
fn port_filter_keeps_only_the_selected_port() {
    // The closed port is not selected: its reset must not appear, the service's must.
    let port = scenarios::SERVICE_PORT.to_string();
    assert_filter(
        "portfilter",
        &["--port", &port],
        (scenarios::closed_port, Family::V4),
        (scenarios::local_linger_abort, Family::V4),
    );
}

#[test]
fn net_filter_keeps_only_the_selected_network() {
    // Only IPv6 is selected: the IPv4 reset must not appear, the IPv6 one must.
    assert_filter(
        "netfilter",
        &["--net", "2001:db8::/32"],
        (scenarios::closed_port, Family::V4),
        (scenarios::closed_port, Family::V6),
    );
}
