//! `cargo xtask demo`: builds the lab, runs rstwatch on the client's interface with its
//! terminal output, provokes every kind of reset with real TCP stacks, one sentence each, then
//! explains tcpdump's capture of the same interface offline with `rstwatch explain`, and tears
//! everything down.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use rstwatch_tests::{
    capture::{Capture, ALL_TCP},
    lab::{Family, Lab, ROUTER_IDLE_TIMEOUT},
    process::command_with_default_signals,
    scenarios,
    watch::rstwatch_binary,
};

/// Time for the last reset's hold (the default 300 ms) to end and its line to appear before
/// the next scenario.
const SETTLE: Duration = Duration::from_millis(700);

fn main() -> Result<()> {
    let binary = rstwatch_binary()?;
    let lab = Lab::new("demo").context("building the lab (run as root)")?;
    println!(
        "Lab: client {} -- router (forwards, firewall) -- server {}; rstwatch watches {} in the client namespace.\n",
        lab.client_addr(Family::V4),
        lab.server_addr(Family::V4),
        lab.client_iface()
    );
    // The router forgets idle flows after ROUTER_IDLE_TIMEOUT; rstwatch's idle threshold sits
    // just below it so that the router's reset reads as the idle timeout it is.
    let idle = format!("{}ms", ROUTER_IDLE_TIMEOUT.as_millis() * 2 / 3);
    // Only the network namespace is entered: `ip netns exec` would hide the cgroup hierarchy,
    // and with it the cgroup paths of the sockets the kernel names for egress resets.
    let mut rstwatch = command_with_default_signals("nsenter")
        .arg(format!("--net=/run/netns/{}", lab.client_ns()))
        .arg(&binary)
        .args(["watch", "-i", lab.client_iface(), "--format", "text"])
        .args(["--idle-timeout", &idle])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting rstwatch")?;
    // Headers are all `rstwatch explain` needs; a short snapshot keeps tcpdump's buffer clear.
    let capture = Capture::start_with(lab.client_ns(), lab.client_iface(), &["-s", "128"], ALL_TCP)
        .context("starting tcpdump")?;
    let (ready_tx, ready) = mpsc::channel();
    let stderr = rstwatch.stderr.take().context("rstwatch stderr")?;
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.starts_with("rstwatch: watching ") {
                let _ = ready_tx.send(());
            }
            eprintln!("{line}");
        }
    });
    if ready.recv_timeout(Duration::from_secs(20)).is_err() {
        let _ = rstwatch.kill();
        bail!("rstwatch did not start watching within 20 s");
    }

    let mut failed = Vec::new();
    for scenario in scenarios::ALL {
        println!("\n== {}: {}", scenario.name, scenario.about);
        if let Err(err) = (scenario.run)(&lab, Family::V4) {
            println!("   (scenario failed: {err:#})");
            failed.push(scenario.name);
        }
        thread::sleep(SETTLE);
    }
    println!("\n== IPv6: a closed port, for good measure");
    if let Err(err) = scenarios::closed_port(&lab, Family::V6) {
        println!("   (scenario failed: {err:#})");
        failed.push("closed_port (IPv6)");
    }
    thread::sleep(SETTLE);

    // SAFETY: kill has no memory-safety preconditions; the pid is our live child.
    unsafe { libc::kill(rstwatch.id() as libc::pid_t, libc::SIGINT) };
    let status = rstwatch.wait()?;
    let file = capture.finish()?;
    println!(
        "\n== Offline: rstwatch explain on tcpdump's capture of {} (--local names the client)",
        lab.client_iface()
    );
    let local = lab.client_addr(Family::V4).to_string();
    let local6 = lab.client_addr(Family::V6).to_string();
    let offline = Command::new(&binary)
        .arg("explain")
        .arg(&file.path)
        .args(["--format", "text", "--idle-timeout", &idle])
        .args(["--local", &local, "--local", &local6])
        .status()
        .context("running rstwatch explain")?;
    drop(lab);
    println!("\nLab torn down: namespaces deleted, rstwatch detached ({status}).");
    if !offline.success() {
        failed.push("rstwatch explain on the capture");
    }
    if !failed.is_empty() {
        bail!("scenarios that did not run: {}", failed.join(", "));
    }
    Ok(())
}
