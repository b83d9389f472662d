//! TC egress on kernels without TCX (before 6.6): a `clsact` qdisc plus a netlink `bpf`
//! filter. Unlike a BPF link, such a filter outlives the process when it is killed with
//! SIGKILL, so rstwatch attaches it at a fixed priority and handle under the program's name,
//! recognises its own stale filter by all three, and removes it at the next start or on
//! `rstwatch detach`. It never removes a qdisc, nor a filter that differs in any of the three.
//!
//! A live rstwatch holds a per-interface lock (an abstract Unix socket) while its filter is
//! attached; the lock dies with the process, even on SIGKILL. A filter of ours whose lock is
//! free is stale; one whose lock is held belongs to a live rstwatch and is left alone (a
//! second rstwatch on the same interface through netlink is refused: the kernel allows one
//! filter per priority and handle).

use std::{
    io,
    mem::size_of,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use aya::programs::{
    links::Link as _,
    tc::{SchedClassifierLink, TcAttachType, TcHandle},
};

/// Priority (`tc filter show` calls it `pref`) of rstwatch's egress filter: fixed, so a stale
/// filter is recognisable; ASCII "rs".
pub const FILTER_PRIORITY: u16 = 0x7273;
/// Handle of rstwatch's egress filter at that priority.
pub const FILTER_HANDLE: u32 = 1;

// Netlink and TC constants from the kernel's uapi headers (rtnetlink.h, pkt_sched.h).
const TC_H_CLSACT_EGRESS: u32 = 0xffff_fff3;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_BPF_NAME: u16 = 7;
const TCA_BPF_ID: u16 = 11;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// A tc filter (the kernel's classifier object, listed by `tc filter show`) of kind `bpf` on an
/// interface's egress hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcFilter {
    pub priority: u16,
    pub handle: u32,
    pub name: String,
    pub program_id: u32,
}

impl TcFilter {
    /// Attached by an rstwatch: its name, priority and handle all match.
    pub fn is_rstwatch(&self, program_name: &str) -> bool {
        self.name == program_name
            && self.priority == FILTER_PRIORITY
            && self.handle == FILTER_HANDLE
    }
}

impl std::fmt::Display for TcFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "bpf filter {} (pref {}, handle {:#x}, program id {})",
            self.name, self.priority, self.handle, self.program_id
        )
    }
}

/// The exclusive claim of a live rstwatch on one interface's egress filter: a listening Unix
/// socket bound to an abstract name derived from the interface index. Abstract names need no
/// file system permission (rstwatch may run with capabilities only), belong to the network
/// namespace (where interface indexes are unique), and vanish when the process dies, however.
#[derive(Debug)]
pub struct EgressLock {
    _socket: OwnedFd,
}

/// Whether a live rstwatch owns the interface's filter.
pub enum LockState {
    /// Nobody did: the lock is now ours.
    Acquired(EgressLock),
    /// Another live rstwatch (this pid, when the kernel tells) holds it.
    HeldBy(Option<u32>),
}

/// Tries to take the interface's lock without waiting.
pub fn lock(ifindex: u32) -> io::Result<LockState> {
    let (address, len) = lock_address(ifindex);
    let socket = unix_socket()?;
    // SAFETY: address is a valid sockaddr_un of `len` bytes; the socket is ours.
    let bound = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&address as *const libc::sockaddr_un).cast(),
            len,
        )
    };
    if bound == 0 {
        // SAFETY: listen(2) on our bound socket, so the holder's pid can be asked for.
        if unsafe { libc::listen(socket.as_raw_fd(), 1) } != 0 {
            return Err(io::Error::last_os_error());
        }
        return Ok(LockState::Acquired(EgressLock { _socket: socket }));
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EADDRINUSE) {
        return Err(err);
    }
    Ok(LockState::HeldBy(holder_pid(&address, len)))
}

/// The pid of the process listening on the lock's address (SO_PEERCRED of a connection).
fn holder_pid(address: &libc::sockaddr_un, len: libc::socklen_t) -> Option<u32> {
    let probe = unix_socket().ok()?;
    // SAFETY: valid address and descriptor; ucred is plain data of the size passed.
    unsafe {
        if libc::connect(
            probe.as_raw_fd(),
            (address as *const libc::sockaddr_un).cast(),
            len,
        ) != 0
        {
            return None;
        }
        let mut credentials: libc::ucred = std::mem::zeroed();
        let mut size = size_of::<libc::ucred>() as libc::socklen_t;
        if libc::getsockopt(
            probe.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut credentials as *mut libc::ucred).cast(),
            &mut size,
        ) != 0
        {
            return None;
        }
        u32::try_from(credentials.pid).ok()
    }
}

fn unix_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned from here on.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `@rstwatch-egress-IFINDEX` (a leading NUL byte makes the name abstract).
fn lock_address(ifindex: u32) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: sockaddr_un is plain data; all zeroes is valid.
    let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    address.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let name = format!("rstwatch-egress-{ifindex}");
    for (slot, byte) in address.sun_path[1..].iter_mut().zip(name.bytes()) {
        *slot = byte as libc::c_char;
    }
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + 1 + name.len();
    (address, len as libc::socklen_t)
}

/// Removes rstwatch's stale egress filter from `iface`, if there is one and no live rstwatch
/// owns it. Returns what was removed.
pub fn remove_stale(iface: &str, ifindex: u32, program_name: &str) -> io::Result<Option<TcFilter>> {
    let Some(stale) = egress_filters(ifindex)?
        .into_iter()
        .find(|filter| filter.is_rstwatch(program_name))
    else {
        return Ok(None);
    };
    SchedClassifierLink::attached(
        iface,
        TcAttachType::Egress,
        stale.priority,
        TcHandle::from(stale.handle),
        None,
    )
    .map_err(io::Error::other)?
    .detach()
    .map_err(io::Error::other)?;
    Ok(Some(stale))
}

/// Every `bpf` filter on the egress hook of interface `ifindex` (none without a `clsact`
/// qdisc), through an RTM_GETTFILTER dump.
pub fn egress_filters(ifindex: u32) -> io::Result<Vec<TcFilter>> {
    let socket = NetlinkSocket::open()?;
    let request = FilterDumpRequest {
        header: libc::nlmsghdr {
            nlmsg_len: size_of::<FilterDumpRequest>() as u32,
            nlmsg_type: libc::RTM_GETTFILTER,
            nlmsg_flags: (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16,
            nlmsg_seq: 1,
            nlmsg_pid: 0,
        },
        tc: TcMsg {
            family: libc::AF_UNSPEC as u8,
            pad: [0; 3],
            ifindex: ifindex as i32,
            handle: 0,
            parent: TC_H_CLSACT_EGRESS,
            info: 0,
        },
    };
    // SAFETY: FilterDumpRequest is repr(C) plain data without padding.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (&request as *const FilterDumpRequest).cast::<u8>(),
            size_of::<FilterDumpRequest>(),
        )
    };
    socket.send(bytes)?;
    let mut filters = Vec::new();
    let mut buffer = vec![0u8; 32 * 1024];
    loop {
        let len = socket.recv(&mut buffer)?;
        let mut messages = &buffer[..len];
        while messages.len() >= size_of::<libc::nlmsghdr>() {
            let msg_len = u32::from_ne_bytes(messages[0..4].try_into().unwrap()) as usize;
            let msg_type = u16::from_ne_bytes(messages[4..6].try_into().unwrap());
            if msg_len < size_of::<libc::nlmsghdr>() || msg_len > messages.len() {
                return Err(io::Error::other("malformed netlink reply"));
            }
            let body = &messages[size_of::<libc::nlmsghdr>()..msg_len];
            match msg_type as i32 {
                libc::NLMSG_DONE => return Ok(filters),
                libc::NLMSG_ERROR => {
                    let errno = i32::from_ne_bytes(body[0..4].try_into().unwrap());
                    // No clsact qdisc: no egress filters at all.
                    if errno == -libc::EINVAL || errno == -libc::ENOENT {
                        return Ok(filters);
                    }
                    return Err(io::Error::from_raw_os_error(-errno));
                }
                t if t == libc::RTM_NEWTFILTER as i32 => {
                    if let Some(filter) = parse_filter(body) {
                        filters.push(filter);
                    }
                }
                _ => {}
            }
            let advance = align4(msg_len).min(messages.len());
            messages = &messages[advance..];
        }
    }
}

/// A filter from one RTM_NEWTFILTER message: `tcmsg` then attributes; only `bpf` filters with
/// a handle (the dump also lists each priority's header without one).
fn parse_filter(body: &[u8]) -> Option<TcFilter> {
    let tc = body.get(..size_of::<TcMsg>())?;
    let handle = u32::from_ne_bytes(tc[8..12].try_into().ok()?);
    let info = u32::from_ne_bytes(tc[16..20].try_into().ok()?);
    let mut kind = None;
    let mut name = String::new();
    let mut program_id = 0;
    for (attr_type, value) in attributes(&body[size_of::<TcMsg>()..]) {
        match attr_type {
            TCA_KIND => kind = Some(c_string(value)),
            TCA_OPTIONS => {
                for (option, value) in attributes(value) {
                    match option {
                        TCA_BPF_NAME => name = c_string(value),
                        TCA_BPF_ID if value.len() >= 4 => {
                            program_id = u32::from_ne_bytes(value[..4].try_into().ok()?)
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    (kind.as_deref() == Some("bpf") && handle != 0).then_some(TcFilter {
        priority: (info >> 16) as u16,
        handle,
        name,
        program_id,
    })
}

/// Netlink attributes (`len: u16, type: u16, value`, each padded to 4 bytes).
fn attributes(mut bytes: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if bytes.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([bytes[0], bytes[1]]) as usize;
        let attr_type = u16::from_ne_bytes([bytes[2], bytes[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > bytes.len() {
            return None;
        }
        let value = &bytes[4..len];
        bytes = &bytes[align4(len).min(bytes.len())..];
        Some((attr_type, value))
    })
}

fn c_string(value: &[u8]) -> String {
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).into_owned()
}

fn align4(len: usize) -> usize {
    (len + 3) & !3
}

#[repr(C)]
struct TcMsg {
    family: u8,
    pad: [u8; 3],
    ifindex: i32,
    handle: u32,
    parent: u32,
    info: u32,
}

#[repr(C)]
struct FilterDumpRequest {
    header: libc::nlmsghdr,
    tc: TcMsg,
}

struct NetlinkSocket(OwnedFd);

impl NetlinkSocket {
    fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2); the descriptor is owned from here on.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        // SAFETY: the buffer is valid for its length.
        let sent = unsafe { libc::send(self.0.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn recv(&self, buffer: &mut [u8]) -> io::Result<usize> {
        // SAFETY: the buffer is valid for its length.
        let len = unsafe {
            libc::recv(
                self.0.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                0,
            )
        };
        if len < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(len as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(attr_type: u16, value: &[u8]) -> Vec<u8> {
        let mut bytes = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
        bytes.extend_from_slice(&attr_type.to_ne_bytes());
        bytes.extend_from_slice(value);
        bytes.resize(align4(bytes.len()), 0);
        bytes
    }

    fn filter_message(kind: &str, priority: u16, handle: u32, name: &str) -> Vec<u8> {
        let mut body = vec![0u8; size_of::<TcMsg>()];
        body[8..12].copy_from_slice(&handle.to_ne_bytes());
        body[16..20].copy_from_slice(&(u32::from(priority) << 16 | 0x0300).to_ne_bytes());
        body.extend(attr(TCA_KIND, format!("{kind}\0").as_bytes()));
        let mut options = attr(TCA_BPF_NAME, format!("{name}\0").as_bytes());
        options.extend(attr(TCA_BPF_ID, &42u32.to_ne_bytes()));
        body.extend(attr(TCA_OPTIONS, &options));
        body
    }

    #[test]
    fn reads_a_bpf_filters_priority_handle_name_and_program() {
        let filter = parse_filter(&filter_message(
            "bpf",
            FILTER_PRIORITY,
            1,
            "rstwatch_tc_egress",
        ))
        .unwrap();
        assert_eq!(
            filter,
            TcFilter {
                priority: FILTER_PRIORITY,
                handle: 1,
                name: "rstwatch_tc_egress".into(),
                program_id: 42,
            }
        );
        assert!(filter.is_rstwatch("rstwatch_tc_egress"));
    }

    #[test]
    fn a_held_lock_names_its_holder_and_is_free_again_once_dropped() {
        // An index no interface has, so no real rstwatch's lock is in the way.
        let ifindex = 0xfff0_0000 + std::process::id() % 0xffff;
        let LockState::Acquired(lock) = lock(ifindex).unwrap() else {
            panic!("a fresh lock is free");
        };
        let LockState::HeldBy(holder) = super::lock(ifindex).unwrap() else {
            panic!("a held lock is not free");
        };
        assert_eq!(holder, Some(std::process::id()));
        drop(lock);
        assert!(matches!(
            super::lock(ifindex).unwrap(),
            LockState::Acquired(_)
        ));
    }

    #[test]
    fn other_filters_are_never_taken_for_ours() {
        assert_eq!(parse_filter(&filter_message("matchall", 1, 1, "x")), None);
        let named_alike = parse_filter(&filter_message("bpf", 1, 1, "rstwatch_tc_egress"));
        assert!(!named_alike.unwrap().is_rstwatch("rstwatch_tc_egress"));
        let same_place = parse_filter(&filter_message("bpf", FILTER_PRIORITY, 1, "cilium"));
        assert!(!same_place.unwrap().is_rstwatch("rstwatch_tc_egress"));
        let other_handle = parse_filter(&filter_message(
            "bpf",
            FILTER_PRIORITY,
            2,
            "rstwatch_tc_egress",
        ));
        assert!(!other_handle.unwrap().is_rstwatch("rstwatch_tc_egress"));
    }
}
