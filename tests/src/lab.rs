//! Three network namespaces, client — router — server, with real Linux TCP stacks.
//!
//! ```text
//!  client ns                 router ns                    server ns
//!  rw-c0 ──────────────── rw-rc0   rw-rs0 ──────────────── rw-s0
//!  198.18.0.2/24   198.18.0.1/24   198.18.1.1/24   198.18.1.2/24
//!  2001:db8:0:1::2/64  2001:db8:0:1::1/64  2001:db8:0:2::1/64  2001:db8:0:2::2/64
//! ```
//!
//! The router forwards IPv4 and IPv6, so the server's packets reach the client one hop down
//! ([`TTL_VIA_ROUTER`]), and it is a stateful firewall: connections to [`IDLE_PORT`] whose
//! conntrack entry expired after [`ROUTER_IDLE_TIMEOUT`] are rejected with a RST the router
//! itself sends ([`INITIAL_TTL`]).

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

use crate::process::run;

/// The TTL / hop limit every namespace's stack puts in the packets it originates.
pub const INITIAL_TTL: u8 = 64;
/// The TTL / hop limit of a packet forwarded once by the router, e.g. the server's at the client.
pub const TTL_VIA_ROUTER: u8 = INITIAL_TTL - 1;
/// The server port whose flows the router rejects with a RST once their conntrack entry expired.
pub const IDLE_PORT: u16 = 4002;
/// How long the router's conntrack keeps an established flow that carries no packets.
pub const ROUTER_IDLE_TIMEOUT: Duration = Duration::from_secs(3);

pub const CLIENT_IFACE: &str = "rw-c0";
pub const ROUTER_CLIENT_IFACE: &str = "rw-rc0";
pub const ROUTER_SERVER_IFACE: &str = "rw-rs0";
pub const SERVER_IFACE: &str = "rw-s0";

// Fixed, locally administered MACs: every lab has its own namespaces, so they never clash, and
// frames injected with AF_PACKET need no neighbour lookup.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0x72, 0x77, 0, 0, 0x01];
pub const ROUTER_CLIENT_MAC: [u8; 6] = [0x02, 0x72, 0x77, 0, 0, 0x02];
pub const ROUTER_SERVER_MAC: [u8; 6] = [0x02, 0x72, 0x77, 0, 0, 0x03];
pub const SERVER_MAC: [u8; 6] = [0x02, 0x72, 0x77, 0, 0, 0x04];

/// Every namespace a lab creates starts with this; stale ones are recognised by it.
const NETNS_PREFIX: &str = "rw-";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];
}

/// One end of a link: its interface, MAC, and address in each family (/24 and /64).
struct Endpoint {
    iface: &'static str,
    mac: [u8; 6],
    v4: Ipv4Addr,
    v6: Ipv6Addr,
}

const CLIENT: Endpoint = Endpoint {
    iface: CLIENT_IFACE,
    mac: CLIENT_MAC,
    v4: Ipv4Addr::new(198, 18, 0, 2),
    v6: Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 2),
};
const ROUTER_CLIENT_SIDE: Endpoint = Endpoint {
    iface: ROUTER_CLIENT_IFACE,
    mac: ROUTER_CLIENT_MAC,
    v4: Ipv4Addr::new(198, 18, 0, 1),
    v6: Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 1),
};
const ROUTER_SERVER_SIDE: Endpoint = Endpoint {
    iface: ROUTER_SERVER_IFACE,
    mac: ROUTER_SERVER_MAC,
    v4: Ipv4Addr::new(198, 18, 1, 1),
    v6: Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 1),
};
const SERVER: Endpoint = Endpoint {
    iface: SERVER_IFACE,
    mac: SERVER_MAC,
    v4: Ipv4Addr::new(198, 18, 1, 2),
    v6: Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 2),
};

impl Endpoint {
    fn addr(&self, family: Family) -> IpAddr {
        match family {
            Family::V4 => self.v4.into(),
            Family::V6 => self.v6.into(),
        }
    }
}

/// Sysctls the router needs, written after the firewall rules so that conntrack is already
/// active in the router namespace, and read back to prove they took.
fn router_sysctls() -> [(&'static str, String); 4] {
    [
        ("net.ipv4.ip_forward", "1".into()),
        ("net.ipv6.conf.all.forwarding", "1".into()),
        (
            "net.netfilter.nf_conntrack_tcp_timeout_established",
            ROUTER_IDLE_TIMEOUT.as_secs().to_string(),
        ),
        // A mid-stream packet of a flow conntrack forgot must be INVALID, not picked up again.
        ("net.netfilter.nf_conntrack_tcp_loose", "0".into()),
    ]
}

/// A running lab; dropping it deletes its namespaces (and with them the veth pairs).
pub struct Lab {
    client_ns: String,
    router_ns: String,
    server_ns: String,
}

impl Lab {
    /// Builds a fresh lab whose namespaces are named `rw-LABEL-PID-N-{client,router,server}`,
    /// after deleting the namespaces (and killing the processes in them) that labs of processes
    /// no longer running left behind.
    pub fn new(label: &str) -> Result<Lab> {
        static NEXT_LAB: AtomicU32 = AtomicU32::new(0);
        ensure!(
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric()),
            "lab label {label:?} must be non-empty ASCII letters and digits"
        );
        remove_stale_namespaces()?;
        let id = format!(
            "{NETNS_PREFIX}{label}-{}-{}",
            std::process::id(),
            NEXT_LAB.fetch_add(1, Ordering::Relaxed)
        );
        let lab = Lab {
            client_ns: format!("{id}-client"),
            router_ns: format!("{id}-router"),
            server_ns: format!("{id}-server"),
        };
        lab.build()
            .with_context(|| format!("building lab {id} (is this running as root?)"))?;
        Ok(lab)
    }

    pub fn client_ns(&self) -> &str {
        &self.client_ns
    }

    pub fn router_ns(&self) -> &str {
        &self.router_ns
    }

    pub fn server_ns(&self) -> &str {
        &self.server_ns
    }

    pub fn client_iface(&self) -> &str {
        CLIENT.iface
    }

    pub fn client_addr(&self, family: Family) -> IpAddr {
        CLIENT.addr(family)
    }

    pub fn server_addr(&self, family: Family) -> IpAddr {
        SERVER.addr(family)
    }

    /// Runs `f` on a new thread that has joined namespace `ns`, so the sockets it creates live
    /// there (and stay there when handed back to another thread).
    pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
        let netns = File::open(format!("/run/netns/{ns}"))
            .with_context(|| format!("opening network namespace {ns}"))?;
        thread::scope(|scope| {
            let joined = scope.spawn(|| {
                // SAFETY: setns only changes the namespace of this short-lived thread.
                if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    let error = std::io::Error::last_os_error();
                    bail!("joining network namespace {ns}: {error}");
                }
                Ok(f())
            });
            joined
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    fn build(&self) -> Result<()> {
        for ns in [&self.client_ns, &self.router_ns, &self.server_ns] {
            run("ip", &["netns", "add", ns])?;
            // Addresses must be usable at once: no duplicate address detection.
            sysctl(ns, "net.ipv6.conf.all.accept_dad", "0")?;
            sysctl(ns, "net.ipv6.conf.default.accept_dad", "0")?;
            ip(ns, &["link", "set", "lo", "up"])?;
        }
        self.link(&self.client_ns, &CLIENT, &ROUTER_CLIENT_SIDE)?;
        self.link(&self.server_ns, &SERVER, &ROUTER_SERVER_SIDE)?;
        self.add_firewall()?;
        for (key, value) in router_sysctls() {
            sysctl(&self.router_ns, key, &value)?;
            let actual = run(
                "ip",
                &["netns", "exec", &self.router_ns, "sysctl", "-n", key],
            )?;
            ensure!(
                actual.trim() == value,
                "{key} is {} in {}, expected {value}",
                actual.trim(),
                self.router_ns
            );
        }
        Ok(())
    }

    /// Joins `host` in namespace `host_ns` to `router_side` in the router namespace, and routes
    /// everything from the host through the router.
    fn link(&self, host_ns: &str, host: &Endpoint, router_side: &Endpoint) -> Result<()> {
        let router = &self.router_ns;
        #[rustfmt::skip]
        ip(router, &[
            "link", "add", router_side.iface, "address", &mac_text(router_side.mac),
            "type", "veth", "peer", "name", host.iface, "address", &mac_text(host.mac),
            "netns", host_ns,
        ])?;
        for (ns, end) in [(host_ns, host), (router.as_str(), router_side)] {
            ip(
                ns,
                &["addr", "add", &format!("{}/24", end.v4), "dev", end.iface],
            )?;
            ip(
                ns,
                &["addr", "add", &format!("{}/64", end.v6), "dev", end.iface],
            )?;
            ip(ns, &["link", "set", end.iface, "up"])?;
        }
        let gateway_v4 = router_side.v4.to_string();
        let gateway_v6 = router_side.v6.to_string();
        ip(
            host_ns,
            &["-4", "route", "add", "default", "via", &gateway_v4],
        )?;
        ip(
            host_ns,
            &["-6", "route", "add", "default", "via", &gateway_v6],
        )
    }

    /// The `conntrack` match also turns connection tracking on in the router namespace.
    fn add_firewall(&self) -> Result<()> {
        let port = IDLE_PORT.to_string();
        for iptables in ["iptables", "ip6tables"] {
            #[rustfmt::skip]
            run("ip", &[
                "netns", "exec", &self.router_ns, iptables,
                "-A", "FORWARD", "-p", "tcp", "--dport", &port,
                "-m", "conntrack", "--ctstate", "INVALID",
                "-j", "REJECT", "--reject-with", "tcp-reset",
            ])?;
        }
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.client_ns, &self.router_ns, &self.server_ns] {
            if let Err(error) = delete_namespace(ns) {
                eprintln!("lab clean-up: {error:#}");
            }
        }
    }
}

fn mac_text(mac: [u8; 6]) -> String {
    let octets: Vec<String> = mac.iter().map(|octet| format!("{octet:02x}")).collect();
    octets.join(":")
}

fn ip(ns: &str, args: &[&str]) -> Result<()> {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    run("ip", &all).map(drop)
}

fn sysctl(ns: &str, key: &str, value: &str) -> Result<()> {
    let setting = format!("{key}={value}");
    run("ip", &["netns", "exec", ns, "sysctl", "-q", "-w", &setting]).map(drop)
}

/// Deletes `ns` if it exists; a namespace someone else already removed is not an error.
fn delete_namespace(ns: &str) -> Result<()> {
    if std::path::Path::new("/run/netns").join(ns).exists() {
        run("ip", &["netns", "delete", ns])?;
    }
    Ok(())
}

/// Held while stale namespaces are looked for and removed, by every lab of every test process:
/// labs built in parallel must not race to delete the same namespace, and a lab must not list
/// a namespace's processes while another one is still entering it.
pub struct StaleCleanupLock {
    _locked: File,
}

impl StaleCleanupLock {
    /// Blocks until no other lab, in this process or another, is removing stale namespaces.
    pub fn acquire() -> Result<Self> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open("/run/rstwatch-lab.lock")
            .context("opening /run/rstwatch-lab.lock")?;
        // SAFETY: flock on an open descriptor has no memory-safety preconditions; the lock is
        // released when the file (its open description) is closed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error()).context("locking /run/rstwatch-lab.lock");
        }
        Ok(Self { _locked: file })
    }
}

/// A lab namespace is stale when the process named in it (`rw-LABEL-PID-N-ROLE`) is gone,
/// e.g. a test run that was killed before its `Drop` could run.
fn remove_stale_namespaces() -> Result<()> {
    let _cleaning = StaleCleanupLock::acquire()?;
    for ns in run("ip", &["netns", "list"])?
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|ns| owner_pid(ns).is_some_and(|pid| !process_exists(pid)))
    {
        for pid in run("ip", &["netns", "pids", ns])?.split_whitespace() {
            // Processes a dead lab left running, e.g. a tcpdump; killed by their own id.
            let pid: libc::pid_t = pid.parse().context("reading `ip netns pids`")?;
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        delete_namespace(ns)?;
    }
    Ok(())
}

fn owner_pid(ns: &str) -> Option<u32> {
    let mut parts = ns.strip_prefix(NETNS_PREFIX)?.rsplit('-');
    let _role = parts.next()?;
    let _lab_number: u32 = parts.next()?.parse().ok()?;
    parts.next()?.parse().ok()
}

fn process_exists(pid: u32) -> bool {
    std::path::Path::new("/proc").join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_is_read_from_the_namespace_name() {
        assert_eq!(owner_pid("rw-closed-4242-7-router"), Some(4242));
        assert_eq!(owner_pid("rw-a-b-4242-7-client"), Some(4242));
        assert_eq!(owner_pid("rw-x-client"), None);
        assert_eq!(owner_pid("other-closed-4242-7-router"), None);
    }

    #[test]
    fn mac_is_written_as_ip_expects_it() {
        assert_eq!(mac_text(ROUTER_SERVER_MAC), "02:72:77:00:00:03");
    }
}
