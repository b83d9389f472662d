//! Packets no socket API sends, put on the lab's wire between real stacks: a client retrying a
//! refused connection with the very same SYN (a raw socket), and a burst of identical RSTs a
//! router injects in the server's name.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use rstwatch_tests::{
    capture::{Capture, RSTS_ONLY},
    frame::{TcpSegment, ACK, RST, SYN},
    lab::{Family, Lab, CLIENT_MAC, ROUTER_CLIENT_IFACE, ROUTER_CLIENT_MAC},
    packet_socket::PacketSocket,
    watch::Watcher,
};
use serde_json::Value;

const REPORT_TIMEOUT: Duration = Duration::from_secs(10);
const IO_TIMEOUT: Duration = Duration::from_secs(3);
/// A client port below Linux's ephemeral range: no socket of the client uses it.
const RAW_CLIENT_PORT: u16 = 30_001;
const CLOSED_PORT: u16 = 4000;
const SERVICE_PORT: u16 = 4001;
/// Copies of the RST the router injects, back to back.
const BURST: usize = 3;

fn watch(lab: &Lab) -> Watcher {
    Watcher::on_lab_client(lab).unwrap()
}

#[test]
fn a_refused_syn_retried_with_the_same_isn_is_two_refused_connections() {
    for family in Family::BOTH {
        let lab = Lab::new("sameisn").unwrap();
        let client = SocketAddr::new(lab.client_addr(family), RAW_CLIENT_PORT);
        let server = SocketAddr::new(lab.server_addr(family), CLOSED_PORT);
        let capture = Capture::start(lab.client_ns(), lab.client_iface(), RSTS_ONLY).unwrap();
        let watcher = watch(&lab);
        let raw = PacketSocket::open(lab.client_ns(), lab.client_iface()).unwrap();
        let syn = TcpSegment {
            src: client,
            dst: server,
            ttl: 64,
            ip_id: Some(1),
            seq: 1_000_000,
            ack: 0,
            flags: SYN,
            payload_len: 0,
        };
        for attempt in 0..2 {
            raw.send(&syn.to_ethernet_frame(CLIENT_MAC, ROUTER_CLIENT_MAC))
                .unwrap();
            raw.next_segment(IO_TIMEOUT, |s| s.src == server && s.is_rst())
                .unwrap_or_else(|err| panic!("{family:?} attempt {attempt}: {err:#}"));
        }
        let rsts = capture.stop().unwrap().len();
        assert_eq!(rsts, 2, "{family:?}: the server refused both attempts");
        let reports = watcher.stop_after(rsts, REPORT_TIMEOUT).unwrap();
        let verdicts: Vec<_> = reports
            .iter()
            .map(|r| {
                (
                    r["class"].as_str().unwrap(),
                    r["conn_state"].as_str().unwrap(),
                    r["history"].as_str().unwrap(),
                    r["related_to"].is_null(),
                )
            })
            .collect();
        assert_eq!(
            verdicts,
            [
                ("refused", "REJ", "Sr", true),
                ("refused", "REJ", "Sr", true)
            ],
            "{family:?}: each attempt is a connection of its own, as Zeek logs it: {reports:#?}"
        );
    }
}

#[test]
fn a_burst_of_identical_rsts_from_the_router_is_an_injection() {
    for family in Family::BOTH {
        let lab = Lab::new("burst").unwrap();
        let service = SocketAddr::new(lab.server_addr(family), SERVICE_PORT);
        let listener = Lab::in_ns(lab.server_ns(), || TcpListener::bind(service))
            .unwrap()
            .unwrap();
        let mut client = Lab::in_ns(lab.client_ns(), || {
            TcpStream::connect_timeout(&service, IO_TIMEOUT)
        })
        .unwrap()
        .unwrap();
        let (mut server, _) = listener.accept().unwrap();
        client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let client_addr = client.local_addr().unwrap();
        client.write_all(b"GET /\n").unwrap();
        server.read_exact(&mut [0; 6]).unwrap();

        let capture = Capture::start(lab.client_ns(), lab.client_iface(), RSTS_ONLY).unwrap();
        let watcher = watch(&lab);
        let router = PacketSocket::open(lab.router_ns(), ROUTER_CLIENT_IFACE).unwrap();
        server.write_all(&[b'x'; 500]).unwrap();
        let data = router
            .next_segment(IO_TIMEOUT, |s| s.src == service && s.payload_len > 0)
            .unwrap();
        client.read_exact(&mut [0; 500]).unwrap();
        let forged = TcpSegment {
            src: service,
            dst: client_addr,
            ttl: 255,
            ip_id: data.ip_id.map(|id| id.wrapping_add(0x8000)),
            seq: data.next_seq(),
            ack: data.ack,
            flags: RST | ACK,
            payload_len: 0,
        };
        let frame = forged.to_ethernet_frame(ROUTER_CLIENT_MAC, CLIENT_MAC);
        for _ in 0..BURST {
            router.send(&frame).unwrap();
        }
        let rsts = capture.stop().unwrap().len();
        assert_eq!(rsts, BURST, "{family:?}");
        let reports = watcher.stop_after(1, REPORT_TIMEOUT).unwrap();
        assert_eq!(reports.len(), 1, "{family:?}: {reports:#?}");
        let report = &reports[0];
        assert_eq!(
            report["followups"],
            BURST - 1,
            "{family:?}: the copies fold into the first report: {report}"
        );
        let evidence = report["evidence"].as_array().unwrap();
        assert!(
            evidence.contains(&Value::from("rst_burst")),
            "{family:?}: {report}"
        );
        assert_eq!(report["middlebox"], true, "{family:?}: {report}");
    }
}
