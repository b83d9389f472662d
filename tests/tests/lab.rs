//! Proves the lab against the kernel. Needs root; fails without it.

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::Result;
use rstwatch_tests::lab::{Family, Lab};

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
    let made = Command::new("ip").args(["netns", "add", stale]).status()?;
    assert!(made.success());
    let mut left_running = KillOnDrop(
        Command::new("ip")
            .args(["netns", "exec", stale, "sleep", "30"])
            .spawn()?,
    );
    std::thread::sleep(Duration::from_millis(200));
    let _lab = Lab::new("fresh")?;
    assert!(!netns_exists(stale));
    assert!(left_running.0.try_wait()?.is_some(), "sleep survived");
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
