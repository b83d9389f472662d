//! TC egress through a `clsact` qdisc and a netlink filter, as on kernels without TCX
//! (forced here with `--tc-attach netlink`): it reports egress resets, it is removed on exit,
//! a SIGKILL's stale filter is removed at the next start or by `rstwatch detach`, and nobody
//! else's filter or qdisc is ever touched.

use std::{process::Command, time::Duration};

use rstwatch_tests::{
    lab::{Family, Lab},
    scenarios,
    watch::{rstwatch_binary, Watcher},
};
use serde_json::Value;

const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// rstwatch's filter as `tc filter show` prints it: fixed priority (`pref`), handle and name.
const OUR_FILTER: &str = "pref 29299 bpf chain 0 handle 0x1 rstwatch_tc_egress";
/// Someone else's filter, placed by the test before rstwatch starts; it never matches, so
/// packets go on to rstwatch's filter behind it.
const FOREIGN_FILTER: &str = "pref 1 u32 chain 0 fh 800::800";

fn tc(lab: &Lab, args: &[&str]) -> String {
    let output = Command::new("ip")
        .args(["netns", "exec", lab.client_ns(), "tc"])
        .args(args)
        .output()
        .expect("tc (Debian package iproute2) must be installed");
    assert!(output.status.success(), "tc {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn egress_filters(lab: &Lab) -> String {
    tc(
        lab,
        &["filter", "show", "dev", lab.client_iface(), "egress"],
    )
}

/// The lab's client interface with a clsact qdisc and a foreign filter, both the test's own.
fn lab_with_foreign_filter(label: &str) -> Lab {
    let lab = Lab::new(label).unwrap();
    let iface = lab.client_iface().to_owned();
    tc(&lab, &["qdisc", "add", "dev", &iface, "clsact"]);
    tc(
        &lab,
        &[
            "filter",
            "add",
            "dev",
            &iface,
            "egress",
            "prio",
            "1",
            "u32",
            "match",
            "u32",
            "0x01020304",
            "0xffffffff",
            "at",
            "0",
            "classid",
            "1:1",
        ],
    );
    lab
}

fn assert_foreign_state_intact(lab: &Lab, when: &str) {
    assert!(
        egress_filters(lab).contains(FOREIGN_FILTER),
        "{when}: the foreign filter must stay: {}",
        egress_filters(lab)
    );
    let qdiscs = tc(lab, &["qdisc", "show", "dev", lab.client_iface()]);
    assert!(
        qdiscs.contains("qdisc clsact"),
        "{when}: the clsact qdisc must stay: {qdiscs}"
    );
}

fn watch_netlink(lab: &Lab) -> Watcher {
    let binary = rstwatch_binary().unwrap();
    Watcher::start(
        &binary,
        lab.client_ns(),
        lab.client_iface(),
        &["--hold", "100ms", "--tc-attach", "netlink"],
    )
    .unwrap()
}

fn sigkill(watcher: Watcher) {
    // SAFETY: kill has no memory-safety preconditions; the pid is our live child.
    unsafe { libc::kill(watcher.pid() as libc::pid_t, libc::SIGKILL) };
    drop(watcher);
}

fn detach(lab: &Lab) -> (i32, String) {
    let output = Command::new("ip")
        .args(["netns", "exec", lab.client_ns()])
        .arg(rstwatch_binary().unwrap())
        .args(["detach", "-i", lab.client_iface()])
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[test]
fn netlink_filter_reports_the_hosts_own_rst_and_is_removed_on_sigint() {
    let lab = lab_with_foreign_filter("nlrst");
    let mut watcher = watch_netlink(&lab);
    assert!(egress_filters(&lab).contains(OUR_FILTER), "attached");
    let flow = scenarios::local_linger_abort(&lab, Family::V4).unwrap();
    let events = watcher
        .events_until(
            |event: &Value| {
                event["src_port"] == flow.client.port() && event["direction"] == "egress"
            },
            EVENT_TIMEOUT,
        )
        .unwrap();
    assert_eq!(events.last().unwrap()["class"], "abort", "{events:?}");
    let exit = watcher.stop().unwrap();
    assert!(exit.status.success(), "{exit:?}");
    assert!(
        !egress_filters(&lab).contains("rstwatch"),
        "after SIGINT: {}",
        egress_filters(&lab)
    );
    assert_foreign_state_intact(&lab, "after SIGINT");
}

#[test]
fn a_stale_filter_left_by_sigkill_is_removed_at_the_next_start() {
    let lab = lab_with_foreign_filter("nlstale");
    sigkill(watch_netlink(&lab));
    let stale = egress_filters(&lab);
    assert!(stale.contains(OUR_FILTER), "a SIGKILL leaves it: {stale}");

    let watcher = watch_netlink(&lab);
    let said = watcher.startup_lines().join("\n");
    assert!(
        said.contains("removed the stale bpf filter rstwatch_tc_egress (pref 29299"),
        "one line says so: {said}"
    );
    let filters = egress_filters(&lab);
    assert_eq!(filters.matches(OUR_FILTER).count(), 1, "{filters}");
    assert_ne!(filters, stale, "the new filter runs a new program");
    assert_foreign_state_intact(&lab, "after the restart");
    watcher.stop().unwrap();
    assert!(!egress_filters(&lab).contains("rstwatch"));
}

#[test]
fn rstwatch_detach_removes_the_stale_filter_and_nothing_else() {
    let lab = lab_with_foreign_filter("nldetach");
    let (code, said) = detach(&lab);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("nothing of rstwatch's attached"), "{said}");

    sigkill(watch_netlink(&lab));
    assert!(egress_filters(&lab).contains(OUR_FILTER));
    let (code, said) = detach(&lab);
    assert_eq!(code, 0, "{said}");
    assert!(
        said.contains("removed the bpf filter rstwatch_tc_egress (pref 29299"),
        "{said}"
    );
    assert!(!egress_filters(&lab).contains("rstwatch"));
    assert_foreign_state_intact(&lab, "after detach");
}

#[test]
fn a_live_rstwatchs_filter_is_neither_detached_nor_taken_for_stale() {
    let lab = lab_with_foreign_filter("nllive");
    let watcher = watch_netlink(&lab);
    let (code, said) = detach(&lab);
    assert_eq!(code, 2, "{said}");
    assert!(
        said.contains(&format!("a live rstwatch (pid {})", watcher.pid())),
        "{said}"
    );
    assert!(egress_filters(&lab).contains(OUR_FILTER));
    watcher.stop().unwrap();
}
