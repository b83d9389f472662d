//! `rstwatch watch` against real TCP stacks in network namespaces: the resets it reports, the
//! errors it gives, and that it leaves nothing attached when it goes.

use std::{os::unix::process::CommandExt as _, process::Command, time::Duration};

use rstwatch_tests::{
    frame::{TcpSegment, RST},
    lab::{
        Family, Lab, CLIENT_MAC, INITIAL_TTL, ROUTER_CLIENT_IFACE, ROUTER_CLIENT_MAC,
        TTL_VIA_ROUTER,
    },
    packet_socket::PacketSocket,
    process::command_with_default_signals,
    scenarios::{self, SERVICE_PORT},
    watch::{rstwatch_binary, Watcher},
};
use serde_json::Value;

const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

fn watch(lab: &Lab) -> Watcher {
    Watcher::on_lab_client(lab).unwrap()
}

fn is_rst_from(addr: std::net::SocketAddr) -> impl Fn(&Value) -> bool {
    move |event| event["src_ip"] == addr.ip().to_string() && event["src_port"] == addr.port()
}

/// Every rstwatch-owned program still attached to the lab's client interface, by name.
fn attached_programs(lab: &Lab) -> String {
    let output = Command::new("ip")
        .args([
            "netns",
            "exec",
            lab.client_ns(),
            "bpftool",
            "net",
            "show",
            "dev",
        ])
        .arg(lab.client_iface())
        .output()
        .expect("bpftool (Debian package bpftool) must be installed");
    assert!(output.status.success(), "bpftool failed: {output:?}");
    let link = Command::new("ip")
        .args([
            "-n",
            lab.client_ns(),
            "link",
            "show",
            "dev",
            lab.client_iface(),
        ])
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| line.contains("rstwatch"))
            .collect::<Vec<_>>()
            .join("\n"),
        String::from_utf8_lossy(&link.stdout)
            .split_whitespace()
            .filter(|word| word.starts_with("xdp"))
            .collect::<Vec<_>>()
            .join(" ")
    )
}

#[test]
fn client_connects_to_a_closed_port_and_the_servers_rst_arrives_on_ingress() {
    for family in Family::BOTH {
        let lab = Lab::new("closed").unwrap();
        let mut watcher = watch(&lab);
        let flow = scenarios::closed_port(&lab, family).unwrap();
        let events = watcher
            .events_until(is_rst_from(flow.server), EVENT_TIMEOUT)
            .unwrap();
        let exit = watcher.stop().unwrap();
        assert!(exit.status.success(), "{exit:?}");
        let all: Vec<&Value> = events.iter().chain(&exit.events).collect();
        assert_eq!(all.len(), 1, "exactly one reset: {all:?}");
        let rst = all[0];
        assert_eq!(rst["direction"], "ingress");
        assert_eq!(rst["dst_ip"], flow.client.ip().to_string());
        assert_eq!(rst["dst_port"], flow.client.port());
        assert_eq!(rst["ttl"], TTL_VIA_ROUTER, "{family:?}: one router hop");
        assert_eq!(rst["iface"], lab.client_iface());
    }
}

/// More unsolicited RSTs at once than the kernel reports one by one (200 per CPU and second):
/// the rest come as aggregates, and every RST is in the output and the summary exactly once.
#[test]
fn a_storm_of_unsolicited_rsts_is_reported_in_aggregates_and_counted_in_full() {
    const RSTS: u16 = 1000;
    let lab = Lab::new("storm").unwrap();
    let mut watcher = watch(&lab);
    let router = PacketSocket::open(lab.router_ns(), ROUTER_CLIENT_IFACE).unwrap();
    let server = std::net::SocketAddr::new(lab.server_addr(Family::V4), SERVICE_PORT);
    for i in 0..RSTS {
        let rst = TcpSegment {
            src: server,
            dst: std::net::SocketAddr::new(lab.client_addr(Family::V4), 40_000 + i),
            ttl: TTL_VIA_ROUTER,
            ip_id: Some(i),
            seq: 0x5eed_0000 + u32::from(i),
            ack: 0,
            flags: RST,
            payload_len: 0,
        };
        router
            .send(&rst.to_ethernet_frame(ROUTER_CLIENT_MAC, CLIENT_MAC))
            .unwrap();
    }
    let events = watcher
        .events_until(|event| !event["aggregate"].is_null(), EVENT_TIMEOUT)
        .unwrap();
    let exit = watcher.stop().unwrap();
    let all: Vec<&Value> = events.iter().chain(&exit.events).collect();
    let resets: u64 = all
        .iter()
        .map(|event| event["aggregate"]["count"].as_u64().unwrap_or(1))
        .sum();
    assert_eq!(resets, u64::from(RSTS), "every RST once: {all:?}");
    assert!(
        all.len() < usize::from(RSTS) / 2,
        "most RSTs folded into aggregates: {} records",
        all.len()
    );
    for event in &all {
        assert_eq!(event["class"], "no_state");
        assert_eq!(event["src_port"], SERVICE_PORT);
    }
    assert!(
        exit.stderr
            .contains(&format!("rstwatch summary: {RSTS} resets")),
        "{}",
        exit.stderr
    );
    assert!(exit.stderr.contains("rsts_aggregated="), "{}", exit.stderr);
}

#[test]
fn the_verifier_accepts_the_programs_in_generic_and_native_xdp_mode() {
    for mode in ["generic", "native"] {
        let lab = Lab::new("xdpmode").unwrap();
        let binary = rstwatch_binary().unwrap();
        let args = ["--hold", "100ms", "--xdp-mode", mode];
        let mut watcher =
            Watcher::start(&binary, lab.client_ns(), lab.client_iface(), &args).unwrap();
        let flow = scenarios::closed_port(&lab, Family::V4).unwrap();
        watcher
            .events_until(is_rst_from(flow.server), EVENT_TIMEOUT)
            .unwrap_or_else(|err| panic!("--xdp-mode {mode}: {err:#}"));
        let exit = watcher.stop().unwrap();
        assert!(exit.status.success(), "--xdp-mode {mode}: {exit:?}");
        assert!(exit.stderr.contains("flows live="), "{}", exit.stderr);
    }
}

#[test]
fn client_aborts_with_linger_zero_and_its_own_rst_leaves_on_egress() {
    for family in Family::BOTH {
        let lab = Lab::new("linger").unwrap();
        let mut watcher = watch(&lab);
        let flow = scenarios::local_linger_abort(&lab, family).unwrap();
        let events = watcher
            .events_until(is_rst_from(flow.client), EVENT_TIMEOUT)
            .unwrap();
        let exit = watcher.stop().unwrap();
        let all: Vec<&Value> = events.iter().chain(&exit.events).collect();
        assert_eq!(all.len(), 1, "exactly one reset: {all:?}");
        let rst = all[0];
        assert_eq!(rst["direction"], "egress");
        assert_eq!(rst["dst_ip"], flow.server.ip().to_string());
        assert_eq!(rst["dst_port"], flow.server.port());
        assert_eq!(rst["ttl"], INITIAL_TTL, "{family:?}: sent by this host");
    }
}

#[test]
fn nothing_stays_attached_after_sigint_or_sigkill() {
    let lab = Lab::new("detach").unwrap();
    let watcher = watch(&lab);
    assert!(
        !attached_programs(&lab).is_empty(),
        "attached while running"
    );
    watcher.stop().unwrap();
    assert_eq!(attached_programs(&lab), "", "after SIGINT");

    let watcher = watch(&lab);
    // SAFETY: kill has no memory-safety preconditions; the pid is our live child.
    unsafe { libc::kill(watcher.pid() as libc::pid_t, libc::SIGKILL) };
    drop(watcher);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    // The kernel releases BPF links when the last file descriptor closes, at process exit.
    while !attached_programs(&lab).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(attached_programs(&lab), "", "after SIGKILL");
}

/// SIGINT and SIGTERM, which a program started by [`ignoring_interrupts`] starts with ignored.
const IGNORED: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

/// `program` started with the [`IGNORED`] signals ignored, as a script's background job
/// (`cmd &`), `nohup` or a CI runner may start it.
fn ignoring_interrupts(program: &str) -> Command {
    let mut command = command_with_default_signals(program);
    // SAFETY: runs in the child between fork and exec, after the reset to default actions,
    // and only calls signal, which is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            for signal in IGNORED {
                if libc::signal(signal, libc::SIG_IGN) == libc::SIG_ERR {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        })
    };
    command
}

/// A shell starts a script's background job (`rstwatch watch ... &`) with SIGINT ignored, and
/// so do `nohup` and some CI runners; a supervisor may pass SIGTERM ignored on as well. rstwatch
/// must still stop cleanly on either, and leave nothing attached.
#[test]
fn sigint_and_sigterm_stop_it_even_when_it_starts_with_them_ignored() {
    // The premise: what `ignoring_interrupts` starts does start with both ignored.
    let output = ignoring_interrupts("grep")
        .args(["^SigIgn:", "/proc/self/status"])
        .output()
        .unwrap();
    let ignored = String::from_utf8_lossy(&output.stdout);
    let mask = u64::from_str_radix(ignored.trim_start_matches("SigIgn:").trim(), 16).unwrap();
    for signal in IGNORED {
        assert_ne!(mask & (1 << (signal - 1)), 0, "signal {signal}: {ignored}");
    }

    let lab = Lab::new("ignored").unwrap();
    let binary = rstwatch_binary().unwrap();
    for (signal, name) in [(libc::SIGINT, "SIGINT"), (libc::SIGTERM, "SIGTERM")] {
        let mut command = ignoring_interrupts("ip");
        command
            .args(["netns", "exec", lab.client_ns()])
            .arg(&binary)
            .args(["watch", "-i", lab.client_iface(), "--format", "json"]);
        let watcher = Watcher::start_command(command).unwrap();
        let exit = watcher
            .stop_with(signal)
            .unwrap_or_else(|err| panic!("{name}: {err:#}"));
        assert!(exit.status.success(), "{name}: {exit:?}");
        assert!(
            exit.stderr.contains("rstwatch summary: "),
            "{name}: no summary, so no clean shutdown: {}",
            exit.stderr
        );
        assert_eq!(attached_programs(&lab), "", "after {name}");
    }
}

/// Runs rstwatch to completion through `wrapper` (e.g. `ip netns exec NS`).
fn run_rstwatch(wrapper: &[&str], args: &[&str]) -> (i32, String) {
    let binary = rstwatch_binary().unwrap();
    let output = match wrapper.split_first() {
        Some((program, rest)) => Command::new(program)
            .args(rest)
            .arg(&binary)
            .args(args)
            .output(),
        None => Command::new(&binary).args(args).output(),
    }
    .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn bad_input_gets_one_line_and_exit_code_2() {
    let lab = Lab::new("badinput").unwrap();
    let in_lab = ["ip", "netns", "exec", lab.client_ns()];
    let unprivileged = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
    ];
    let cases: [(&[&str], &[&str], &str); 6] = [
        (
            &in_lab,
            &["watch", "-i", "rw-nonexistent0"],
            "unknown interface 'rw-nonexistent0'",
        ),
        (
            &in_lab,
            &["watch", "-i", "lo", "--net", "10.0.0.0/33"],
            "10.1.2.0/24",
        ),
        (
            &in_lab,
            &["watch", "-i", "lo", "--port", "70000"],
            "1 to 65535",
        ),
        (
            &in_lab,
            &["watch", "-i", "lo", "--idle-timeout", "30"],
            "like 30s",
        ),
        // The loopback device has no driver-level XDP.
        (
            &in_lab,
            &["watch", "-i", "lo", "--xdp-mode", "native"],
            "--xdp-mode generic",
        ),
        (
            &unprivileged,
            &["watch", "-i", "lo"],
            "missing capability CAP_BPF",
        ),
    ];
    for (wrapper, args, says) in cases {
        let (code, stderr) = run_rstwatch(wrapper, args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(
            stderr.contains(says),
            "{args:?} should say {says:?}: {stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
}
