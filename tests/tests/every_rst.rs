//! Every RST on the wire is reported: for each scenario of the lab, played between real
//! stacks, rstwatch on the client interface reports exactly as many RSTs as tshark sees there.

use std::time::Duration;

use rstwatch_tests::{
    capture::{Capture, RSTS_ONLY},
    lab::{Family, Lab},
    scenarios::{self, Scenario},
    watch::{rstwatch_binary, Watcher},
};
use serde_json::Value;

/// Past the hold (100 ms here) and the daemon's release tick, with room for a loaded machine.
const REPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Plays `scenario` with tshark and rstwatch on the client interface; returns the reports and
/// the number of RSTs tshark saw.
fn reports_and_rsts(scenario: &Scenario, family: Family) -> (Vec<Value>, usize) {
    let lab = Lab::new("everyrst").unwrap();
    let capture = Capture::start(lab.client_ns(), lab.client_iface(), RSTS_ONLY).unwrap();
    let binary = rstwatch_binary().unwrap();
    let watcher = Watcher::start(
        &binary,
        lab.client_ns(),
        lab.client_iface(),
        &["--hold", "100ms"],
    )
    .unwrap();
    (scenario.run)(&lab, family).unwrap_or_else(|err| panic!("{}: {err:#}", scenario.name));
    let rsts = capture.stop().unwrap().len();
    let reports = watcher
        .stop_after(rsts, REPORT_TIMEOUT)
        .unwrap_or_else(|err| panic!("{}: {rsts} RSTs on the wire: {err:#}", scenario.name));
    (reports, rsts)
}

#[test]
fn every_scenarios_rsts_are_all_reported() {
    for scenario in &scenarios::ALL {
        let (reports, rsts) = reports_and_rsts(scenario, Family::V4);
        assert!(rsts > 0, "{}: no RST on the wire", scenario.name);
        assert_eq!(
            reports.len(),
            rsts,
            "{}: tshark saw {rsts} RSTs, rstwatch reported {reports:#?}",
            scenario.name
        );
    }
}

/// The router forges a RST in the server's name; the server keeps sending and the client's own
/// stack answers that data with RSTs: each of those is its own report, linked to the forged
/// one, not hidden in it as a follow-up.
#[test]
fn the_clients_own_rst_after_a_forged_one_is_reported_linked_to_it() {
    let forged_rst = scenarios::ALL
        .iter()
        .find(|s| s.name == "forged_rst")
        .unwrap();
    for family in Family::BOTH {
        let (reports, rsts) = reports_and_rsts(forged_rst, family);
        assert_eq!(reports.len(), rsts, "{family:?}: {reports:#?}");
        let forged = &reports[0];
        assert_eq!(
            (forged["sender"].as_str(), forged["direction"].as_str()),
            (Some("responder"), Some("ingress"))
        );
        assert_eq!(forged["middlebox"], true, "{family:?}: {forged}");
        let answers = &reports[1..];
        assert!(!answers.is_empty(), "{family:?}: {reports:#?}");
        for answer in answers {
            assert_eq!(
                (answer["sender"].as_str(), answer["direction"].as_str()),
                (Some("originator"), Some("egress")),
                "{family:?}: {answer}"
            );
            assert_eq!(answer["middlebox"], false, "{family:?}: {answer}");
            assert_eq!(
                answer["related_to"], forged["ts"],
                "{family:?}: the client's RSTs follow the forged one: {answer}"
            );
        }
    }
}
