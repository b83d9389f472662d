//! The host's own word on its resets, with real stacks: rstwatch watches the interface of the
//! namespace whose stack resets, and each egress RST must carry what that stack said (the
//! kernel's reason by name, the socket's owner), or say that the stack did not send it.
//! Needs root and a kernel with `enum sk_rst_reason` (6.10+); fails without them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rstwatch_tests::lab::{Family, Lab, SERVER_IFACE};
use rstwatch_tests::process::command_with_default_signals;
use rstwatch_tests::scenarios::{self, CLOSED_PORT, SERVICE_PORT};
use rstwatch_tests::watch::{rstwatch_binary, Watcher};
use serde_json::Value;

const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
const IO_TIMEOUT: Duration = Duration::from_secs(3);
/// A port nothing else in the lab uses, rejected by the firewall in the REJECT test.
const REJECTED_PORT: u16 = 4010;

fn watch_server(lab: &Lab) -> Result<Watcher> {
    Watcher::start(
        &rstwatch_binary()?,
        lab.server_ns(),
        SERVER_IFACE,
        &["--hold", "100ms"],
    )
}

/// The first egress RST from `src`, read until `EVENT_TIMEOUT`.
fn egress_rst_from(watcher: &mut Watcher, src: SocketAddr) -> Result<Value> {
    let events = watcher.events_until(
        |event| {
            event["direction"] == "egress"
                && event["src_ip"] == src.ip().to_string()
                && event["src_port"] == src.port()
        },
        EVENT_TIMEOUT,
    )?;
    Ok(events
        .last()
        .cloned()
        .expect("events_until returns the wanted one last"))
}

fn client_connects_to_a_closed_port_and_the_stack_says_no_socket(family: Family) -> Result<()> {
    let lab = Lab::new("lclosed")?;
    let mut watcher = watch_server(&lab)?;
    let flow = scenarios::closed_port(&lab, family)?;
    let event = egress_rst_from(&mut watcher, flow.server)?;
    assert_eq!(event["class"], "refused", "{event}");
    let local = &event["local"];
    assert_eq!(local["source"], "sent", "{event}");
    assert_eq!(local["reason"], "NO_SOCKET", "{event}");
    assert_eq!(local["state"], Value::Null, "no socket, no state: {event}");
    assert_eq!(
        local["pid"],
        Value::Null,
        "softirq: no process named: {event}"
    );
    Ok(())
}

#[test]
fn closed_port_is_no_socket_v4() -> Result<()> {
    client_connects_to_a_closed_port_and_the_stack_says_no_socket(Family::V4)
}

#[test]
fn closed_port_is_no_socket_v6() -> Result<()> {
    client_connects_to_a_closed_port_and_the_stack_says_no_socket(Family::V6)
}

/// A connection from the lab's client to a listener in the server namespace; returns the
/// client's and the server's ends.
fn connect(lab: &Lab, family: Family, port: u16) -> Result<(TcpStream, TcpStream)> {
    let server_addr = SocketAddr::new(lab.server_addr(family), port);
    let listener = Lab::in_ns(lab.server_ns(), || TcpListener::bind(server_addr))??;
    let client = Lab::in_ns(lab.client_ns(), || {
        TcpStream::connect_timeout(&server_addr, IO_TIMEOUT)
    })??;
    let (server, _) = listener.accept()?;
    client.set_read_timeout(Some(IO_TIMEOUT))?;
    Ok((client, server))
}

#[test]
fn server_closes_with_unread_data_and_the_stack_says_abort_on_close_by_this_process() -> Result<()>
{
    let lab = Lab::new("lunread")?;
    let mut watcher = watch_server(&lab)?;
    let (mut client, server) = connect(&lab, Family::V4, SERVICE_PORT)?;
    let server_addr = server.local_addr()?;
    client.write_all(b"never read by the server\n")?;
    // The data must be in the server's receive queue before it closes.
    wait_until("the server has data queued", || {
        let mut peek = [0u8; 1];
        server.peek(&mut peek).map(|n| n == 1).unwrap_or(false)
    })?;
    drop(server);
    let event = egress_rst_from(&mut watcher, server_addr)?;
    let local = &event["local"];
    assert_eq!(local["reason"], "TCP_ABORT_ON_CLOSE", "{event}");
    // Raised inside close(): the closing process is the owner.
    assert_eq!(local["pid"], std::process::id(), "{event}");
    assert!(local["cgroup_id"].as_u64().is_some(), "{event}");
    assert!(
        client.read(&mut [0; 64]).is_err(),
        "the client saw the reset"
    );
    Ok(())
}

#[test]
fn so_linger_zero_is_the_kernels_tcp_state_reason_and_the_connecting_process() -> Result<()> {
    let lab = Lab::new("llinger")?;
    let mut watcher = Watcher::on_lab_client(&lab)?;
    let flow = scenarios::local_linger_abort(&lab, Family::V4)?;
    let event = egress_rst_from(&mut watcher, flow.client)?;
    let local = &event["local"];
    // close() with SO_LINGER 0 goes through tcp_disconnect, whose reason is TCP_STATE.
    assert_eq!(local["reason"], "TCP_STATE", "{event}");
    // Not a reason only close() raises: the owner comes from the connect() this process made.
    assert_eq!(local["pid"], std::process::id(), "{event}");
    Ok(())
}

#[test]
fn a_firewall_reject_in_the_watched_namespace_is_not_from_the_tcp_stack() -> Result<()> {
    let lab = Lab::new("lreject")?;
    let port = REJECTED_PORT.to_string();
    let status = Command::new("ip")
        .args(["netns", "exec", lab.server_ns(), "iptables", "-I", "INPUT"])
        .args(["-p", "tcp", "--dport", &port])
        .args(["-j", "REJECT", "--reject-with", "tcp-reset"])
        .status()
        .context("running iptables")?;
    ensure!(status.success(), "iptables failed: {status}");
    let mut watcher = watch_server(&lab)?;
    let server_addr = SocketAddr::new(lab.server_addr(Family::V4), REJECTED_PORT);
    let refused = Lab::in_ns(lab.client_ns(), || {
        TcpStream::connect_timeout(&server_addr, IO_TIMEOUT)
    })?;
    ensure!(
        refused.is_err_and(|err| err.kind() == std::io::ErrorKind::ConnectionRefused),
        "the firewall should have refused the connection"
    );
    let event = egress_rst_from(&mut watcher, server_addr)?;
    assert_eq!(event["local"]["source"], "not_tcp_stack", "{event}");
    assert_eq!(event["local"].get("reason"), None, "{event}");
    // The closed port next to it is the stack's own.
    let flow = scenarios::closed_port(&lab, Family::V4)?;
    assert_eq!(flow.server.port(), CLOSED_PORT);
    let event = egress_rst_from(&mut watcher, flow.server)?;
    assert_eq!(event["local"]["reason"], "NO_SOCKET", "{event}");
    Ok(())
}

/// A cgroup v2 directory created for one test, removed when dropped.
struct TestCgroup {
    dir: PathBuf,
    /// Its path relative to the hierarchy's root, as rstwatch reports it.
    relative: String,
}

impl TestCgroup {
    fn create(label: &str) -> Result<TestCgroup> {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
        let root = mounts
            .lines()
            .find_map(|line| {
                let (left, right) = line.split_once(" - ")?;
                (right.split_whitespace().next()? == "cgroup2")
                    .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
            })
            .context("no cgroup v2 hierarchy mounted")?;
        let relative = format!("rstwatch-test-{label}-{}", std::process::id());
        let dir = root.join(&relative);
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(TestCgroup { dir, relative })
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A process that joins `cgroup`, connects from the client namespace to `server`, reads one
/// line of what the server sends and closes with the rest unread.
fn client_in_cgroup(cgroup: &TestCgroup, lab: &Lab, server: SocketAddr) -> Result<Child> {
    let script = format!(
        "echo $$ > {procs} && exec ip netns exec {ns} bash -c \
         'exec 3<>/dev/tcp/{ip}/{port} && read -r line <&3 && exec 3<&-'",
        procs = cgroup.dir.join("cgroup.procs").display(),
        ns = lab.client_ns(),
        ip = server.ip(),
        port = server.port(),
    );
    Command::new("bash")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .spawn()
        .context("starting bash")
}

#[test]
fn a_process_in_a_cgroup_the_test_created_is_named_with_that_cgroup() -> Result<()> {
    let lab = Lab::new("lcgroup")?;
    let cgroup = TestCgroup::create("owner")?;
    // `ip netns exec` would give rstwatch a /sys without the cgroup hierarchy; entering only
    // the network namespace keeps this host's mounts, as a daemon has them.
    let mut command = command_with_default_signals("nsenter");
    command
        .arg(format!("--net=/run/netns/{}", lab.client_ns()))
        .arg(rstwatch_binary()?)
        .args(["watch", "-i", lab.client_iface(), "--format", "json"])
        .args(["--hold", "100ms"]);
    let mut watcher = Watcher::start_command(command)?;
    let server_addr = SocketAddr::new(lab.server_addr(Family::V4), SERVICE_PORT);
    let listener = Lab::in_ns(lab.server_ns(), || TcpListener::bind(server_addr))??;
    let mut child = client_in_cgroup(&cgroup, &lab, server_addr)?;
    let (mut server, client_addr) = listener.accept()?;
    server.write_all(b"first line\nsecond line, never read\n")?;
    let status = child.wait()?;
    ensure!(status.success(), "the client script failed: {status}");
    let event = egress_rst_from(&mut watcher, client_addr)?;
    let local = &event["local"];
    assert_eq!(local["reason"], "TCP_ABORT_ON_CLOSE", "{event}");
    assert_eq!(local["cgroup"], cgroup.relative.as_str(), "{event}");
    let cgroup_id = std::fs::metadata(&cgroup.dir)?.ino();
    assert_eq!(local["cgroup_id"], cgroup_id, "{event}");
    assert_eq!(local["pid"], child.id(), "{event}");
    assert_eq!(local["comm"], "bash", "{event}");
    Ok(())
}

fn wait_until(what: &str, condition: impl Fn() -> bool) -> Result<()> {
    let deadline = Instant::now() + IO_TIMEOUT;
    while Instant::now() < deadline {
        if condition() {
            return Ok(());
        }
        std::thread::yield_now();
    }
    bail!("{what}: not within {IO_TIMEOUT:?}")
}
