//! Each kind of TCP reset, provoked between real Linux stacks in a [`Lab`].
//!
//! Every scenario returns once the RST it provokes has done its work (a socket saw it, or it was
//! seen arriving at the client) and takes under a second, except [`idle_timeout`], which waits
//! out the router's conntrack timeout (about 4.5 s). Sockets are created in
//! their namespace and then driven from the calling thread; every blocking call has a timeout.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use crate::frame::{TcpSegment, ACK, RST};
use crate::lab::{
    Family, Lab, CLIENT_MAC, IDLE_PORT, INITIAL_TTL, ROUTER_CLIENT_IFACE, ROUTER_CLIENT_MAC,
    ROUTER_IDLE_TIMEOUT, ROUTER_SERVER_MAC, SERVER_IFACE, SERVER_MAC,
};
use crate::packet_socket::PacketSocket;

/// The server port the scenarios talk to (except [`closed_port`] and [`idle_timeout`]).
pub const SERVICE_PORT: u16 = 4001;
/// A server port nothing listens on.
pub const CLOSED_PORT: u16 = 4000;
/// The client port of [`unsolicited_rst`]'s RST: below Linux's ephemeral range, so unused.
pub const UNSOLICITED_CLIENT_PORT: u16 = 30_000;
/// The TTL / hop limit of the RST the router forges in [`forged_rst`]: a nearby device's, not
/// the server's [`crate::lab::TTL_VIA_ROUTER`].
pub const FORGED_RST_TTL: u8 = 255;

/// What the server of [`server_abort_midstream`] sends before it aborts, one chunk per request.
pub const STREAMED_BEFORE_ABORT: usize = 64 * 1024;

const IO_TIMEOUT: Duration = Duration::from_secs(3);
const REQUESTED_CHUNK_LEN: usize = 16 * 1024;
/// Idle time beyond the router's conntrack timeout, so that the entry has surely expired.
const IDLE_MARGIN: Duration = Duration::from_millis(1500);
/// How long the client of [`data_after_close`] waits before sending on the closed connection.
const PAUSE_BEFORE_LATE_DATA: Duration = Duration::from_millis(300);
/// Genuine server segments the router lets through before forging its RST.
const SEGMENTS_BEFORE_FORGED_RST: usize = 3;
const REQUEST: &[u8] = b"GET /report\n";
const RESPONSE: &[u8] = b"200 OK\n";
const STREAM_CHUNK: [u8; 1000] = [b's'; 1000];
/// Long enough that the router's forged RST reaches the client before the server's next
/// segment moves the sequence number it must carry, even on a loaded machine.
const STREAM_INTERVAL: Duration = Duration::from_millis(200);

/// The connection a scenario used, as the client sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    pub client: SocketAddr,
    pub server: SocketAddr,
}

/// A scenario as the demo plays it.
pub struct Scenario {
    pub name: &'static str,
    /// One sentence: what the scenario provokes and why a real stack sends that RST.
    pub about: &'static str,
    pub run: fn(&Lab, Family) -> Result<Flow>,
}

/// The sentences live here once: in each scenario's documentation and in [`ALL`].
macro_rules! about {
    (closed_port) => {
        "The client connects to a port nothing listens on: the server's stack answers the SYN \
         with a RST because no socket will take the connection."
    };
    (client_fin_then_abort) => {
        "The client sends its request, half-closes with a FIN, and once the server has read it \
         all closes with SO_LINGER 0: its stack tears the connection down with a RST instead of \
         waiting for the server's FIN, a clean-up some applications do."
    };
    (data_after_close) => {
        "The server answers and closes (FIN), the client only ACKs and sends more data a little \
         later: the server's stack answers with a RST because nobody will ever read that data."
    };
    (server_abort_midstream) => {
        "The server streams chunks on request and then closes with SO_LINGER 0 instead of \
         sending the next one: its stack discards the connection with a RST, as when an \
         application crashes or a user cancels."
    };
    (idle_timeout) => {
        "The client stays silent longer than the router's conntrack timeout and then sends: the \
         router has forgotten the flow and rejects the packet with a RST it sends itself in the \
         server's name."
    };
    (forged_rst) => {
        "While the server streams, the router injects a RST in the server's name with the right \
         sequence number but its own TTL and IP ID: the client's stack accepts it, and the \
         server, which never sent it, keeps sending."
    };
    (unsolicited_rst) => {
        "A RST arrives at the client for a connection it never had: the stack drops it \
         silently, as it does with the backscatter of spoofed scans."
    };
    (local_linger_abort) => {
        "The client closes with SO_LINGER 0 after an exchange: its own stack sends a RST instead \
         of a FIN, the way applications abort connections they no longer want."
    };
}

/// Every scenario, in the order the demo plays them.
pub const ALL: [Scenario; 8] = [
    Scenario {
        name: "closed_port",
        about: about!(closed_port),
        run: closed_port,
    },
    Scenario {
        name: "client_fin_then_abort",
        about: about!(client_fin_then_abort),
        run: client_fin_then_abort,
    },
    Scenario {
        name: "data_after_close",
        about: about!(data_after_close),
        run: data_after_close,
    },
    Scenario {
        name: "server_abort_midstream",
        about: about!(server_abort_midstream),
        run: server_abort_midstream,
    },
    Scenario {
        name: "idle_timeout",
        about: about!(idle_timeout),
        run: idle_timeout,
    },
    Scenario {
        name: "forged_rst",
        about: about!(forged_rst),
        run: forged_rst,
    },
    Scenario {
        name: "unsolicited_rst",
        about: about!(unsolicited_rst),
        run: unsolicited_rst,
    },
    Scenario {
        name: "local_linger_abort",
        about: about!(local_linger_abort),
        run: local_linger_abort,
    },
];

#[doc = about!(closed_port)]
pub fn closed_port(lab: &Lab, family: Family) -> Result<Flow> {
    let server = SocketAddr::new(lab.server_addr(family), CLOSED_PORT);
    let client_any_port = SocketAddr::new(lab.client_addr(family), 0);
    Lab::in_ns(lab.client_ns(), || {
        let socket = Socket::new(
            Domain::for_address(server),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        // Bound first, so that the port is known even though the connection fails.
        socket.bind(&client_any_port.into())?;
        let client = socket.local_addr()?.as_socket().context("client address")?;
        match socket.connect_timeout(&server.into(), IO_TIMEOUT) {
            Err(error) if error.kind() == ErrorKind::ConnectionRefused => {
                Ok(Flow { client, server })
            }
            Err(error) => Err(error).with_context(|| format!("connecting to {server}")),
            Ok(()) => bail!("something listens on {server}"),
        }
    })?
}

#[doc = about!(client_fin_then_abort)]
pub fn client_fin_then_abort(lab: &Lab, family: Family) -> Result<Flow> {
    let (mut client, mut server, flow) = connection(lab, family, SERVICE_PORT)?;
    request_response(&mut client, &mut server)?;
    client.shutdown(Shutdown::Write)?;
    // Had the server closed too, the client would be in TIME_WAIT and close silently.
    ensure!(
        server.read(&mut [0; 1])? == 0,
        "server expected EOF after the client's FIN"
    );
    abort(client)?;
    wait_for_reset(&server, "the server")?;
    Ok(flow)
}

#[doc = about!(data_after_close)]
pub fn data_after_close(lab: &Lab, family: Family) -> Result<Flow> {
    let (mut client, mut server, flow) = connection(lab, family, SERVICE_PORT)?;
    request_response(&mut client, &mut server)?;
    drop(server);
    ensure!(
        client.read(&mut [0; 1])? == 0,
        "client expected the server's FIN"
    );
    thread::sleep(PAUSE_BEFORE_LATE_DATA);
    client.write_all(REQUEST)?;
    wait_for_reset(&client, "the client")?;
    Ok(flow)
}

#[doc = about!(server_abort_midstream)]
pub fn server_abort_midstream(lab: &Lab, family: Family) -> Result<Flow> {
    let (mut client, mut server, flow) = connection(lab, family, SERVICE_PORT)?;
    let mut chunk = [0; REQUESTED_CHUNK_LEN];
    for _ in 0..STREAMED_BEFORE_ABORT / REQUESTED_CHUNK_LEN {
        client.write_all(b"NEXT")?;
        server.read_exact(&mut [0; 4])?;
        server.write_all(&chunk)?;
        client.read_exact(&mut chunk)?;
    }
    // The client's last request carries the ACK of everything it received, so that nothing of
    // the client's reaches the server after the abort and draws a second RST.
    client.write_all(b"NEXT")?;
    server.read_exact(&mut [0; 4])?;
    abort(server)?;
    wait_for_reset(&client, "the client")?;
    Ok(flow)
}

#[doc = about!(idle_timeout)]
pub fn idle_timeout(lab: &Lab, family: Family) -> Result<Flow> {
    let (mut client, mut server, flow) = connection(lab, family, IDLE_PORT)?;
    request_response(&mut client, &mut server)?;
    thread::sleep(ROUTER_IDLE_TIMEOUT + IDLE_MARGIN);
    client.write_all(REQUEST)?;
    wait_for_reset(&client, "the client")?;
    // The server never learnt of the reset; a normal close would send a FIN, which the client
    // stack would answer with a second RST.
    close_silently(server)?;
    Ok(flow)
}

#[doc = about!(forged_rst)]
pub fn forged_rst(lab: &Lab, family: Family) -> Result<Flow> {
    let (client, server, flow) = connection(lab, family, SERVICE_PORT)?;
    server.set_nodelay(true)?;
    let router = PacketSocket::open(lab.router_ns(), ROUTER_CLIENT_IFACE)?;
    thread::scope(|scope| {
        let streaming = scope.spawn(|| stream_until_reset(&server));
        forge_rst_behind_server_data(&router, &flow, || Ok(()))?;
        wait_for_reset(&client, "the client")?;
        streaming.join().expect("streaming thread panicked")
    })?;
    Ok(flow)
}

/// [`forged_rst`] one step at a time: the server sends its chunks, the router forges its RST
/// behind the last, and once the client's socket is reset `between` runs; only then does the
/// server, which never learnt of the reset, send its next chunk, which the client's stack
/// answers with a RST of its own.
pub fn forged_rst_answered_after(
    lab: &Lab,
    family: Family,
    between: impl FnOnce() -> Result<()>,
) -> Result<Flow> {
    let (client, server, flow) = connection(lab, family, SERVICE_PORT)?;
    server.set_nodelay(true)?;
    let router = PacketSocket::open(lab.router_ns(), ROUTER_CLIENT_IFACE)?;
    forge_rst_behind_server_data(&router, &flow, || {
        (&server).write_all(&STREAM_CHUNK)?;
        Ok(())
    })?;
    wait_for_reset(&client, "the client")?;
    between()?;
    (&server).write_all(&STREAM_CHUNK)?;
    wait_for_reset(&server, "the server")?;
    Ok(flow)
}

/// Waits for `SEGMENTS_BEFORE_FORGED_RST` of the server's data segments at the router, running
/// `before_each` before each wait, then forges the RST behind the last.
fn forge_rst_behind_server_data(
    router: &PacketSocket,
    flow: &Flow,
    mut before_each: impl FnMut() -> Result<()>,
) -> Result<()> {
    let mut last_data = None;
    for _ in 0..SEGMENTS_BEFORE_FORGED_RST {
        before_each()?;
        last_data = Some(router.next_segment(IO_TIMEOUT, |segment| {
            segment.src == flow.server && segment.dst == flow.client && segment.payload_len > 0
        })?);
    }
    forge_rst(router, flow, &last_data.context("no server segment seen")?)
}

/// The router's RST in the server's name, right behind the server's `last_data`, with the
/// router's own TTL and an IP ID far from the server's.
fn forge_rst(router: &PacketSocket, flow: &Flow, last_data: &TcpSegment) -> Result<()> {
    let forged = TcpSegment {
        src: flow.server,
        dst: flow.client,
        ttl: FORGED_RST_TTL,
        ip_id: last_data.ip_id.map(|id| id.wrapping_add(0x8000)),
        seq: last_data.next_seq(),
        ack: last_data.ack,
        flags: RST | ACK,
        payload_len: 0,
    };
    router.send(&forged.to_ethernet_frame(ROUTER_CLIENT_MAC, CLIENT_MAC))?;
    Ok(())
}

#[doc = about!(unsolicited_rst)]
pub fn unsolicited_rst(lab: &Lab, family: Family) -> Result<Flow> {
    let flow = Flow {
        client: SocketAddr::new(lab.client_addr(family), UNSOLICITED_CLIENT_PORT),
        server: SocketAddr::new(lab.server_addr(family), SERVICE_PORT),
    };
    let rst = TcpSegment {
        src: flow.server,
        dst: flow.client,
        ttl: INITIAL_TTL,
        ip_id: Some(0),
        seq: 0x5eed_0000,
        ack: 0,
        flags: RST,
        payload_len: 0,
    };
    let client_iface = PacketSocket::open(lab.client_ns(), lab.client_iface())?;
    let server_iface = PacketSocket::open(lab.server_ns(), SERVER_IFACE)?;
    server_iface.send(&rst.to_ethernet_frame(SERVER_MAC, ROUTER_SERVER_MAC))?;
    client_iface.next_segment(IO_TIMEOUT, |segment| {
        segment.is_rst() && segment.src == flow.server && segment.dst == flow.client
    })?;
    Ok(flow)
}

#[doc = about!(local_linger_abort)]
pub fn local_linger_abort(lab: &Lab, family: Family) -> Result<Flow> {
    let (mut client, mut server, flow) = connection(lab, family, SERVICE_PORT)?;
    request_response(&mut client, &mut server)?;
    abort(client)?;
    wait_for_reset(&server, "the server")?;
    Ok(flow)
}

/// A listener in the server namespace, a connection to it from the client namespace, and the
/// server's end of it. Both ends time out on reads and writes.
fn connection(lab: &Lab, family: Family, port: u16) -> Result<(TcpStream, TcpStream, Flow)> {
    let server_addr = SocketAddr::new(lab.server_addr(family), port);
    let listener = Lab::in_ns(lab.server_ns(), || TcpListener::bind(server_addr))?
        .with_context(|| format!("listening on {server_addr}"))?;
    let client = Lab::in_ns(lab.client_ns(), || {
        TcpStream::connect_timeout(&server_addr, IO_TIMEOUT)
    })?
    .with_context(|| format!("connecting to {server_addr}"))?;
    // The handshake is complete, so accept returns at once.
    let (server, _) = listener.accept()?;
    for stream in [&client, &server] {
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
    }
    let flow = Flow {
        client: client.local_addr()?,
        server: server_addr,
    };
    Ok((client, server, flow))
}

fn request_response(client: &mut TcpStream, server: &mut TcpStream) -> Result<()> {
    client.write_all(REQUEST)?;
    server.read_exact(&mut [0; REQUEST.len()])?;
    server.write_all(RESPONSE)?;
    client.read_exact(&mut [0; RESPONSE.len()])?;
    Ok(())
}

/// Closes with SO_LINGER 0, which makes the stack send a RST instead of a FIN.
fn abort(stream: TcpStream) -> Result<()> {
    SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
    drop(stream);
    Ok(())
}

/// Closes without sending anything: in TCP repair mode the stack just forgets the connection.
fn close_silently(stream: TcpStream) -> Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: on is a c_int and its size is passed with it.
    let set = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_REPAIR,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if set != 0 {
        return Err(std::io::Error::last_os_error()).context("TCP_REPAIR needs CAP_NET_ADMIN");
    }
    drop(stream);
    Ok(())
}

/// Waits until a RST has reset `stream`, without sending anything on it.
fn wait_for_reset(stream: &TcpStream, whose: &str) -> Result<()> {
    let deadline = Instant::now() + IO_TIMEOUT;
    while Instant::now() < deadline {
        if let Some(error) = stream.take_error()? {
            // A connection the peer had already closed reports EPIPE instead of ECONNRESET.
            ensure!(
                matches!(
                    error.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
                ),
                "{whose} socket failed with {error}, expected a reset"
            );
            return Ok(());
        }
        thread::sleep(Duration::from_millis(10));
    }
    bail!("no RST reset {whose} socket within {IO_TIMEOUT:?}")
}

/// Writes a chunk every [`STREAM_INTERVAL`] until the connection is reset: the server of
/// [`forged_rst`] never sent a RST, so it keeps sending after the forged one.
fn stream_until_reset(server: &TcpStream) -> Result<()> {
    let deadline = Instant::now() + IO_TIMEOUT;
    while Instant::now() < deadline {
        match (&*server).write_all(&STREAM_CHUNK) {
            Ok(()) => thread::sleep(STREAM_INTERVAL),
            Err(error)
                if matches!(
                    error.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
                ) =>
            {
                return Ok(())
            }
            Err(error) => return Err(error).context("server streaming"),
        }
    }
    bail!("the server's stream was not reset within {IO_TIMEOUT:?}")
}
