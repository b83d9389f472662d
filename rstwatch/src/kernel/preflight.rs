//! Checks made before touching the kernel, so that the common mistakes get a one-line answer
//! that says what to do instead of a syscall error.

use std::ffi::CString;

use crate::error::UserError;

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The interface's index, or an error naming the interface.
pub fn interface_index(iface: &str) -> Result<u32, UserError> {
    let unknown = || {
        UserError(format!(
            "unknown interface '{iface}': `ip link` lists the interfaces of this host"
        ))
    };
    let name = CString::new(iface).map_err(|_| unknown())?;
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(unknown()),
        index => Ok(index),
    }
}

/// Fails on an interface named twice: attaching it a second time would fail as if another
/// program held its hook.
pub fn distinct_interfaces(ifaces: &[String]) -> Result<(), UserError> {
    for (at, iface) in ifaces.iter().enumerate() {
        if ifaces[..at].contains(iface) {
            return Err(UserError(format!(
                "interface '{iface}' is given twice (-i {iface}): name each interface once"
            )));
        }
    }
    Ok(())
}

/// Link types whose frames start with an Ethernet header, the only framing the kernel
/// programs parse (the loopback device carries a zeroed one).
const ARPHRD_ETHER: u16 = 1;
const ARPHRD_LOOPBACK: u16 = 772;

/// Fails on an interface without Ethernet framing (tun, WireGuard, PPP, IP-in-IP): the
/// programs would read its IP header as an Ethernet header and see no TCP at all.
pub fn require_ethernet(iface: &str) -> Result<(), UserError> {
    match link_type(iface) {
        Ok(ARPHRD_ETHER | ARPHRD_LOOPBACK) => Ok(()),
        Ok(other) => Err(UserError(format!(
            "interface '{iface}' carries IP packets without an Ethernet header (link type {}): \
             rstwatch only parses Ethernet frames; watch the Ethernet interface the traffic \
             crosses instead",
            link_type_name(other)
        ))),
        Err(err) => Err(UserError(format!(
            "cannot read the link type of '{iface}': {err}"
        ))),
    }
}

fn link_type_name(arphrd: u16) -> String {
    match arphrd {
        0xfffe => "none: tun or WireGuard".into(),
        512 => "PPP".into(),
        768 => "IP-in-IP tunnel".into(),
        769 => "IPv6-in-IPv6 tunnel".into(),
        776 => "SIT tunnel".into(),
        778 => "GRE tunnel".into(),
        other => other.to_string(),
    }
}

/// The interface's ARPHRD link type, from SIOCGIFHWADDR (the hardware address family): asked
/// of the kernel in this process's network namespace, unlike /sys which follows its mount.
fn link_type(iface: &str) -> std::io::Result<u16> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

    let name = iface.as_bytes();
    if name.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::from_raw_os_error(libc::ENODEV));
    }
    // SAFETY: socket has no memory-safety preconditions; the fd is owned right away.
    let socket = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if socket < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(socket) };
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, &byte) in request.ifr_name.iter_mut().zip(name) {
        *slot = byte as libc::c_char;
    }
    // SAFETY: the request is a valid ifreq with a NUL-terminated name; the kernel fills
    // ifr_hwaddr.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFHWADDR, &mut request) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
    Ok(unsafe { request.ifr_ifru.ifru_hwaddr.sa_family })
}

/// Whether `iface` is a loopback interface (IFF_LOOPBACK). Every packet a loopback interface
/// transmits comes back through its own receive path, so XDP there already sees each packet
/// once, and TC egress would see it a second time.
pub fn is_loopback(iface: &str) -> bool {
    // SAFETY: a plain datagram socket, closed below; used only for the SIOCGIFFLAGS query.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return false;
    }
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request
        .ifr_name
        .iter_mut()
        .zip(iface.bytes().take(libc::IFNAMSIZ - 1))
    {
        *slot = byte as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the NUL-terminated name and writes ifru_flags in `request`.
    let found = unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut request) } == 0;
    // SAFETY: fd is the socket opened above.
    unsafe { libc::close(fd) };
    // SAFETY: SIOCGIFFLAGS succeeded, so the union holds the flags.
    found && unsafe { request.ifr_ifru.ifru_flags } as libc::c_int & libc::IFF_LOOPBACK != 0
}

/// Fails, naming the first missing capability, unless this process may load and attach BPF.
pub fn require_capabilities() -> Result<(), UserError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let Some(effective) = effective_capabilities(&status) else {
        // Without /proc the kernel's own answer at load time is the best guide.
        return Ok(());
    };
    match missing_capability(effective) {
        None => Ok(()),
        Some(name) => Err(UserError(format!(
            "missing capability {name}: run as root or grant CAP_BPF, CAP_NET_ADMIN and \
             CAP_PERFMON (e.g. `sudo setcap cap_bpf,cap_net_admin,cap_perfmon+ep rstwatch`)"
        ))),
    }
}

fn effective_capabilities(proc_status: &str) -> Option<u64> {
    proc_status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

fn missing_capability(effective: u64) -> Option<&'static str> {
    let has = |cap: u32| effective & (1 << cap) != 0;
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        return Some("CAP_BPF");
    }
    if !has(CAP_NET_ADMIN) {
        return Some("CAP_NET_ADMIN");
    }
    if !has(CAP_PERFMON) && !has(CAP_SYS_ADMIN) {
        return Some("CAP_PERFMON");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_effective_capabilities_from_proc_status() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(effective_capabilities(status), Some(0x1ff_ffff_ffff));
        assert_eq!(effective_capabilities("Name:\tx\n"), None);
    }

    #[test]
    fn names_the_first_missing_capability() {
        assert_eq!(missing_capability(u64::MAX), None);
        assert_eq!(missing_capability(0), Some("CAP_BPF"));
        assert_eq!(missing_capability(1 << CAP_BPF), Some("CAP_NET_ADMIN"));
        assert_eq!(
            missing_capability((1 << CAP_BPF) | (1 << CAP_NET_ADMIN)),
            Some("CAP_PERFMON")
        );
        assert_eq!(
            missing_capability((1 << CAP_SYS_ADMIN) | (1 << CAP_NET_ADMIN)),
            None
        );
    }

    #[test]
    fn an_interface_named_twice_is_refused_as_a_duplicate() {
        let ifaces = ["eth0", "eth1", "eth0"].map(String::from);
        let err = distinct_interfaces(&ifaces).unwrap_err();
        assert!(err.0.contains("'eth0' is given twice"), "{}", err.0);
        assert!(distinct_interfaces(&ifaces[..2]).is_ok());
    }

    #[test]
    fn the_loopback_device_counts_as_ethernet() {
        assert_eq!(link_type("lo").unwrap(), ARPHRD_LOOPBACK);
        assert!(require_ethernet("lo").is_ok());
    }

    #[test]
    fn unknown_interfaces_are_named() {
        let err = interface_index("rw-no-such-if0").unwrap_err();
        assert!(err.0.contains("rw-no-such-if0"));
        assert!(interface_index("lo").is_ok());
    }
}
