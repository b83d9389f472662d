//! An AF_PACKET socket on one interface of a lab namespace: it sees the frames the interface
//! sends and receives, and sends whole Ethernet frames the stack never saw.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::frame::{parse_ethernet_frame, TcpSegment};
use crate::lab::Lab;

/// How long one read waits, so that callers can keep their own deadline.
const READ_POLL: Duration = Duration::from_millis(50);

pub struct PacketSocket {
    socket: Socket,
    description: String,
}

impl PacketSocket {
    /// Opens a socket bound to `iface` in namespace `ns`, receiving every protocol.
    pub fn open(ns: &str, iface: &str) -> Result<PacketSocket> {
        let description = format!("packet socket on {iface} in {ns}");
        let socket = Lab::in_ns(ns, || open_bound(iface))?
            .with_context(|| format!("opening {description}"))?;
        Ok(PacketSocket {
            socket,
            description,
        })
    }

    /// Reads frames until one is a TCP segment `wanted` accepts, for at most `timeout`.
    /// Frames this socket sent itself are not looped back to it.
    pub fn next_segment(
        &self,
        timeout: Duration,
        wanted: impl Fn(&TcpSegment) -> bool,
    ) -> Result<TcpSegment> {
        let deadline = Instant::now() + timeout;
        let mut frame = vec![0u8; 65_536 + 128];
        while Instant::now() < deadline {
            let len = match (&self.socket).read(&mut frame) {
                Ok(len) => len,
                // A signal to the test process (a child exiting) interrupts the read: retry.
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(error) => {
                    return Err(error).with_context(|| format!("reading {}", self.description))
                }
            };
            match parse_ethernet_frame(&frame[..len]) {
                Some(segment) if wanted(&segment) => return Ok(segment),
                _ => {}
            }
        }
        bail!(
            "no matching TCP segment on {} within {timeout:?}",
            self.description
        )
    }

    pub fn send(&self, frame: &[u8]) -> Result<()> {
        let sent = self
            .socket
            .send(frame)
            .with_context(|| format!("sending a frame on {}", self.description))?;
        ensure!(
            sent == frame.len(),
            "{} sent {sent} of {} bytes",
            self.description,
            frame.len()
        );
        Ok(())
    }
}

/// Must run inside the interface's namespace: the name is resolved there.
fn open_bound(iface: &str) -> Result<Socket> {
    let name = std::ffi::CString::new(iface)?;
    // SAFETY: name is a valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    ensure!(
        ifindex != 0,
        "no interface {iface}: {}",
        io::Error::last_os_error()
    );
    let all_protocols = (libc::ETH_P_ALL as u16).to_be();
    let protocol = Protocol::from(i32::from(all_protocols));
    let socket = Socket::new(Domain::PACKET, Type::RAW, Some(protocol))
        .context("socket(AF_PACKET) needs CAP_NET_RAW")?;
    // SAFETY: the zeroed storage is filled in as a sockaddr_ll, the length set to match.
    let (_, address) = unsafe {
        SockAddr::try_init(|storage, len| {
            let link = storage.cast::<libc::sockaddr_ll>();
            (*link).sll_family = libc::AF_PACKET as u16;
            (*link).sll_protocol = all_protocols;
            (*link).sll_ifindex = ifindex as i32;
            *len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            Ok(())
        })
    }?;
    socket.bind(&address).context("binding to the interface")?;
    socket.set_read_timeout(Some(READ_POLL))?;
    Ok(socket)
}
