//! `rstwatch watch -i lo`: a loopback interface hands every packet it sends back to its own
//! receive path, so XDP and TC egress would each see it. rstwatch must count each packet once:
//! no duplicate taken for a retransmission, no second copy of a RST taken for a follow-up, and
//! as many reports as tshark sees RSTs on the same interface.

use std::{
    io::{ErrorKind, Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use rstwatch_tests::{
    capture::{Capture, ALL_TCP},
    lab::{Family, Lab},
    watch::{rstwatch_binary, Watcher},
};
use serde_json::Value;
use socket2::SockRef;

const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
const IO_TIMEOUT: Duration = Duration::from_secs(3);
const CLOSED_PORT: u16 = 4000;
const SERVICE_PORT: u16 = 4001;

fn loopback(family: Family) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Family::V6 => IpAddr::V6(Ipv6Addr::LOCALHOST),
    }
}

/// A connect to a closed port (refused), then a request and response on a connection the
/// client aborts with SO_LINGER 0. Returns the aborted connection's client address.
fn refused_then_aborted(ns: &str, family: Family) -> SocketAddr {
    let closed = SocketAddr::new(loopback(family), CLOSED_PORT);
    let service = SocketAddr::new(loopback(family), SERVICE_PORT);
    Lab::in_ns(ns, || {
        let refused = TcpStream::connect_timeout(&closed, IO_TIMEOUT)
            .expect_err("nothing listens on the closed port");
        assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);

        let listener = TcpListener::bind(service).unwrap();
        let mut client = TcpStream::connect_timeout(&service, IO_TIMEOUT).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        for stream in [&client, &server] {
            stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        }
        client.write_all(b"GET /\n").unwrap();
        server.read_exact(&mut [0; 6]).unwrap();
        server.write_all(&[b'x'; 3000]).unwrap();
        client.read_exact(&mut [0; 3000]).unwrap();
        let client_addr = client.local_addr().unwrap();
        SockRef::from(&client)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(client);
        let mut buf = [0; 1];
        let reset = server
            .read(&mut buf)
            .expect_err("the client's RST resets the server");
        assert_eq!(reset.kind(), ErrorKind::ConnectionReset);
        client_addr
    })
    .unwrap()
}

#[test]
fn on_loopback_each_packet_counts_once_and_every_rst_is_reported_once() {
    for family in Family::BOTH {
        let lab = Lab::new("loop").unwrap();
        let ns = lab.client_ns();
        let capture = Capture::start(ns, "lo", ALL_TCP).unwrap();
        let binary = rstwatch_binary().unwrap();
        let mut watcher = Watcher::start(&binary, ns, "lo", &["--hold", "100ms"]).unwrap();
        let client = refused_then_aborted(ns, family);
        let is_abort = |event: &Value| {
            event["src_port"] == client.port() && event["src_ip"] == client.ip().to_string()
        };
        let mut reports = watcher.events_until(is_abort, EVENT_TIMEOUT).unwrap();
        let exit = watcher.stop().unwrap();
        assert!(exit.status.success(), "{exit:?}");
        reports.extend(exit.events);
        let segments = capture.stop().unwrap();
        let rsts = segments.iter().filter(|s| s.is_rst()).count();

        assert_eq!(
            reports.len(),
            rsts,
            "{family:?}: tshark saw {rsts} RSTs on lo, rstwatch reported {reports:#?}"
        );
        assert_eq!(rsts, 2, "{family:?}: {segments:#?}");
        for report in &reports {
            let history = report["history"].as_str().unwrap();
            assert!(
                !history.contains(['t', 'T']),
                "{family:?}: a duplicate taken for a retransmission: {report}"
            );
            assert_eq!(
                report["followups"], 0,
                "{family:?}: a second copy taken for a follow-up: {report}"
            );
            assert_eq!(report["direction"], "ingress", "XDP alone is attached");
        }
        let refused = &reports[0];
        assert_eq!(refused["src_port"], CLOSED_PORT);
        assert_eq!(
            (
                refused["class"].as_str(),
                refused["conn_state"].as_str(),
                refused["history"].as_str()
            ),
            (Some("refused"), Some("REJ"), Some("Sr"))
        );
        let aborted = &reports[1];
        assert_eq!(aborted["class"], "abort");
        assert_eq!(aborted["conn_state"], "RSTO");
        let client_packets = segments
            .iter()
            .filter(|s| s.src == client && !s.is_rst())
            .count();
        let server_packets = segments.iter().filter(|s| s.dst == client).count();
        assert_eq!(
            (aborted["orig_pkts"].as_u64(), aborted["resp_pkts"].as_u64()),
            (Some(client_packets as u64 + 1), Some(server_packets as u64)),
            "{family:?}: each side's packets (the client's RST included) once, as tshark \
             counts them"
        );
    }
}
