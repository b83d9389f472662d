//! Zeek's connection semantics at the edges, on captures these tests write: a connection first
//! seen from a likely server port has its roles flipped (`^`), a 4-tuple used again after Zeek's
//! reset and close delays is a new connection, and VLAN tags are part of the flow key only with
//! `--vlan-key on`. Each RST's `conn_state`, `history`, `sender` and class are what Zeek's
//! conn.log says of the connection (class and sender read from Zeek's roles).

use std::{fs::File, net::Ipv4Addr, process::Command, time::Duration};

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use rstwatch_tests::{
    capture::CaptureFile,
    frames::{
        flags::{ACK, FIN, PSH, RST, SYN},
        Frame, Tcp, Vlan,
    },
    watch::rstwatch_binary,
};
use serde_json::Value;

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
const CLIENT_PORT: u16 = 40000;
/// HTTPS: one of the built-in likely server ports.
const HTTPS: u16 = 443;
/// A port no list calls a server's.
const UNLIKELY: u16 = 4001;
/// Between packets of one exchange.
const GAP: Duration = Duration::from_millis(1);
/// Longer than Zeek's close and reset delays (5 s, rstwatch's defaults too).
const PAST_THE_DELAY: Duration = Duration::from_secs(7);
/// Shorter than them.
const WITHIN_THE_DELAY: Duration = Duration::from_secs(3);
const CLIENT_VLAN: u16 = 10;
const SERVER_VLAN: u16 = 20;

#[derive(Clone, Copy, PartialEq, Eq)]
enum From {
    Client,
    Server,
}

/// A capture being written: packets of one 4-tuple, each after the wait before it.
struct Trace {
    server_port: u16,
    /// VLAN tags of the client's and the server's packets (none when 0).
    vlans: [u16; 2],
    packets: Vec<(Duration, Vec<u8>)>,
    now: Duration,
}

impl Trace {
    fn new(server_port: u16) -> Self {
        Self {
            server_port,
            vlans: [0, 0],
            packets: Vec::new(),
            now: Duration::from_secs(1_700_000_000),
        }
    }

    fn tagged(mut self, client: u16, server: u16) -> Self {
        self.vlans = [client, server];
        self
    }

    fn wait(&mut self, time: Duration) -> &mut Self {
        self.now += time;
        self
    }

    fn send(&mut self, from: From, flags: u8, seq: u32, ack: u32, payload: usize) -> &mut Self {
        let (src, dst, sport, dport, vlan) = match from {
            From::Client => (CLIENT, SERVER, CLIENT_PORT, self.server_port, self.vlans[0]),
            From::Server => (SERVER, CLIENT, self.server_port, CLIENT_PORT, self.vlans[1]),
        };
        let tcp = Tcp {
            seq,
            ack,
            payload: vec![0x42; payload],
            ..Tcp::new(sport, dport, flags)
        };
        let mut frame = Frame::tcp_v4(src, dst, tcp);
        if vlan != 0 {
            frame = frame.with_vlans(&[Vlan::dot1q(vlan)]);
        }
        self.now += GAP;
        self.packets.push((self.now, frame.bytes_with_checksums()));
        self
    }

    /// SYN, SYN-ACK, ACK, then 100 bytes from the client and 200 from the server, each
    /// acknowledged: client sequence numbers from 1001 to 1101, the server's 5001 to 5201.
    fn established(&mut self) -> &mut Self {
        self.send(From::Client, SYN, 1000, 0, 0)
            .send(From::Server, SYN | ACK, 5000, 1001, 0)
            .send(From::Client, ACK, 1001, 5001, 0)
            .send(From::Client, PSH | ACK, 1001, 5001, 100)
            .send(From::Server, ACK, 5001, 1101, 0)
            .send(From::Server, PSH | ACK, 5001, 1101, 200)
            .send(From::Client, ACK, 1101, 5201, 0)
    }

    /// The capture as a pcap file.
    fn write(&self, name: &str) -> CaptureFile {
        let file = CaptureFile {
            path: std::env::temp_dir().join(format!(
                "rstwatch-zeek-edges-{name}-{}.pcap",
                std::process::id()
            )),
        };
        let mut writer =
            PcapWriter::with_header(File::create(&file.path).unwrap(), PcapHeader::default())
                .unwrap();
        for (ts, bytes) in &self.packets {
            writer
                .write_packet(&PcapPacket::new(*ts, bytes.len() as u32, bytes))
                .unwrap();
        }
        file
    }
}

/// `rstwatch explain` of the capture, as JSON records, one per RST.
fn explain(trace: &Trace, name: &str, options: &[&str]) -> Vec<Value> {
    let file = trace.write(name);
    let output = Command::new(rstwatch_binary().unwrap())
        .arg("explain")
        .arg(&file.path)
        .args(["--format", "json"])
        .args(options)
        .output()
        .unwrap();
    assert!(output.status.success(), "{name}: {output:?}");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// The record's verdict as Zeek's conn.log and rstwatch's class say it.
fn verdict(record: &Value) -> [&str; 4] {
    ["conn_state", "history", "sender", "class"].map(|key| {
        record[key]
            .as_str()
            .unwrap_or_else(|| panic!("no {key}: {record:#}"))
    })
}

#[test]
fn a_connection_first_seen_from_a_server_port_has_its_roles_flipped() {
    // The capture starts mid-stream: the server's data, the client's ACK and data, then the
    // server aborts.
    let midstream = |port| {
        let mut trace = Trace::new(port);
        trace
            .send(From::Server, PSH | ACK, 5001, 1001, 200)
            .send(From::Client, ACK, 1001, 5201, 0)
            .send(From::Client, PSH | ACK, 1001, 5201, 100)
            .send(From::Server, RST, 5201, 0, 0);
        trace
    };
    let records = explain(&midstream(HTTPS), "midstream", &[]);
    assert_eq!(records.len(), 1, "{records:#?}");
    let rst = &records[0];
    assert_eq!(verdict(rst), ["RSTRH", "^dADr", "responder", "abort"]);
    assert_eq!(
        (&rst["orig_port"], &rst["resp_port"]),
        (&CLIENT_PORT.into(), &HTTPS.into())
    );

    // From a port no server is known on, Zeek keeps the first sender as the originator.
    let records = explain(&midstream(UNLIKELY), "midstream-unlikely", &[]);
    assert_eq!(verdict(&records[0]), ["OTH", "DadR", "unknown", "abort"]);

    // `--server-port` makes it one.
    let port = UNLIKELY.to_string();
    let records = explain(
        &midstream(UNLIKELY),
        "midstream-server-port",
        &["--server-port", &port],
    );
    assert_eq!(
        verdict(&records[0]),
        ["RSTRH", "^dADr", "responder", "abort"]
    );
}

#[test]
fn a_four_tuple_used_again_after_the_reset_delay_is_a_new_connection() {
    let mut trace = Trace::new(HTTPS);
    trace
        .established()
        .send(From::Server, RST, 5201, 0, 0)
        .wait(PAST_THE_DELAY)
        .send(From::Server, RST, 9000, 0, 0);
    let records = explain(&trace, "reset-reused", &[]);
    assert_eq!(records.len(), 2, "{records:#?}");
    assert_eq!(
        verdict(&records[0]),
        ["RSTR", "ShADadr", "responder", "abort"]
    );
    assert_eq!(
        verdict(&records[1]),
        ["RSTRH", "^r", "responder", "no_state"],
        "a lone RST after the delay: a new connection, flipped"
    );
    assert_eq!(records[1]["related_to"], Value::Null, "{:#}", records[1]);
}

#[test]
fn a_four_tuple_used_again_after_the_close_delay_is_a_new_connection() {
    let closed = |wait| {
        let mut trace = Trace::new(HTTPS);
        trace
            .established()
            .send(From::Client, FIN | ACK, 1101, 5201, 0)
            .send(From::Server, FIN | ACK, 5201, 1102, 0)
            .send(From::Client, ACK, 1102, 5202, 0)
            .wait(wait)
            .send(From::Server, RST, 5202, 0, 0);
        trace
    };
    let records = explain(&closed(PAST_THE_DELAY), "close-reused", &[]);
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(
        verdict(&records[0]),
        ["RSTRH", "^r", "responder", "no_state"]
    );

    let records = explain(&closed(WITHIN_THE_DELAY), "close-within", &[]);
    assert_eq!(
        verdict(&records[0]),
        ["SF", "ShADadFfr", "responder", "teardown"],
        "within the delay the RST belongs to the closed connection"
    );

    // A longer delay keeps the flow.
    let records = explain(
        &closed(PAST_THE_DELAY),
        "close-longer-delay",
        &["--close-delay", "10s"],
    );
    assert_eq!(verdict(&records[0])[3], "teardown");
}

#[test]
fn directions_tagged_with_different_vlans_are_one_connection_unless_vlan_key_is_on() {
    // A router on a stick: the client's packets on one VLAN, the server's on another; the
    // client closes, the server resets.
    let mut trace = Trace::new(HTTPS).tagged(CLIENT_VLAN, SERVER_VLAN);
    trace
        .established()
        .send(From::Client, FIN | ACK, 1101, 5201, 0)
        .send(From::Server, RST, 5201, 0, 0);
    let records = explain(&trace, "vlan-off", &[]);
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(
        verdict(&records[0]),
        ["RSTR", "ShADadFr", "responder", "teardown"]
    );
    assert_eq!(records[0]["vlan"], SERVER_VLAN, "the RST's own tag");
    let explicit = explain(&trace, "vlan-off-explicit", &["--vlan-key", "off"]);
    assert_eq!(
        verdict(&explicit[0]),
        verdict(&records[0]),
        "off is the default"
    );

    // Keyed by VLAN, the server's half is a connection of its own: a SYN-ACK first from a
    // server port (flipped), its data, its RST; none of the client's packets.
    let records = explain(&trace, "vlan-on", &["--vlan-key", "on"]);
    assert_eq!(
        verdict(&records[0]),
        ["RSTRH", "^hadr", "responder", "abort"]
    );
}
