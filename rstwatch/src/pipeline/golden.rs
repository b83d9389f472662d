//! The records of a fixed set of conversations, in every format, byte for byte: the pipeline
//! may be restructured or sped up, its output may not change unnoticed.
//!
//! `RSTWATCH_BLESS=1 cargo test -p rstwatch golden` rewrites `golden/records.txt` after an
//! intended change of the output.

use std::{
    collections::HashMap,
    fmt::Write as _,
    io::Write,
    sync::{Arc, Mutex},
};

use rstwatch_common::{
    event::{record, FlowRecord, PacketRecord, RecordHeader},
    packet::tcp_flags::*,
    EventKind, FlowKey, RstEvent,
};

use crate::{
    clock::WallClock,
    explain::{
        conversation::{established, Conversation, Side::*, HOLD_NS, RTT_MS, SERVER_TTL},
        ExplainSettings,
    },
    output::{cef::Cef, ecs::Ecs, json::Json, ocsf::Ocsf, text::Text, Format},
    pipeline::{Pipeline, PipelineConfig},
    sink::file::WriterSink,
};

const GOLDEN: &str = "src/pipeline/golden/records.txt";
/// 2024-05-01T12:00:00Z at kernel time 0.
const WALL_CLOCK_OFFSET_NS: i128 = 1_714_564_800_000_000_000;

/// Conversations covering every class, both senders, middlebox evidence, follow-ups, a
/// linked answer, IPv6 and a VLAN.
fn conversations() -> Vec<(&'static str, Conversation)> {
    let mut refused = Conversation::v4();
    refused.syn(Client).wait_ms(1).rst_ack(Server);

    let mut teardown = established();
    teardown.fin(Client).fin(Server).ack(Client).rst(Client);

    let mut data_after_close = established();
    data_after_close
        .fin(Server)
        .ack(Client)
        .wait_s(20)
        .data(Client, 40)
        .wait_ms(RTT_MS)
        .rst(Server);

    let mut idle = established();
    idle.wait_s(400)
        .data(Client, 40)
        .wait_ms(RTT_MS)
        .rst(Server);

    let mut injected = established();
    injected
        .wait_ms(5)
        .data(Client, 200)
        .wait_ms(1)
        .send_with(Server, RST | ACK, 0, |p| {
            p.ttl = 60;
            p.ip_id = 7;
        })
        .wait_ms(RTT_MS)
        .data(Server, 500)
        .wait_ms(1)
        .rst(Client);

    let mut burst = established();
    burst.wait_ms(5).data(Client, 200).wait_ms(RTT_MS);
    for _ in 0..3 {
        burst
            .send_with(Server, RST | ACK, 0, |p| {
                p.ttl = SERVER_TTL + 3;
                p.seq = 3_000_001_400 + 1;
            })
            .wait_us(200);
    }

    let mut v6 = Conversation::v6();
    v6.handshake().data(Client, 100).wait_ms(RTT_MS).rst(Client);

    let mut vlan = established();
    vlan.vlan(7)
        .wait_ms(3)
        .rst_ack(Client)
        .wait_s(1)
        .rst(Server);

    let mut local = established();
    local.local(Client).wait_ms(2).rst(Client);

    let mut no_state = Conversation::v6();
    no_state.rst_ack(Server);

    vec![
        ("no_state", no_state),
        ("refused", refused),
        ("teardown", teardown),
        ("data_after_close", data_after_close),
        ("idle_timeout", idle),
        ("injected", injected),
        ("burst", burst),
        ("ipv6", v6),
        ("vlan", vlan),
        ("local", local),
    ]
}

fn formats() -> Vec<(&'static str, Box<dyn Format>)> {
    vec![
        ("text", Box::new(Text::new(false))),
        ("text-colour", Box::new(Text::new(true))),
        ("json", Box::new(Json)),
        ("ecs", Box::new(Ecs)),
        ("ocsf", Box::new(Ocsf)),
        ("cef", Box::new(Cef)),
    ]
}

/// Collects what the pipeline writes.
#[derive(Clone, Default)]
struct Written(Arc<Mutex<Vec<u8>>>);

impl Write for Written {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The records the daemon writes for `c`, in `format`: its events as ring-buffer bytes
/// through the pipeline, each hold released when it ends, with the flow's entry then.
fn records(c: &Conversation, format: Box<dyn Format>) -> Vec<u8> {
    let mut pipeline = Pipeline::new(PipelineConfig {
        clock: WallClock::with_offset(WALL_CLOCK_OFFSET_NS),
        explain: ExplainSettings::default(),
        ifnames: HashMap::from([(c.events()[0].ifindex, "eth0".to_owned())]),
        hold_ns: HOLD_NS,
        link_ns: 1_000_000_000,
        aggregate: None,
    });
    let written = Written::default();
    pipeline.add_output(
        format,
        vec![Box::new(WriterSink::new(Box::new(written.clone())))],
    );
    let hold_ends = c.events().iter().map(|event| event.ts_ns + HOLD_NS);
    let mut times: Vec<u64> = c
        .events()
        .iter()
        .map(|e| e.ts_ns)
        .chain(hold_ends)
        .collect();
    times.sort_unstable();
    times.dedup();
    for now in times {
        let flows = |_: &FlowKey| c.table_at(now);
        pipeline.release(now, &flows).unwrap();
        for event in c.events().iter().filter(|event| event.ts_ns == now) {
            pipeline.offer_record(&event_bytes(event));
        }
    }
    pipeline.finish(&|_: &FlowKey| None).unwrap();
    assert_eq!(pipeline.held(), 0);
    let records = written.0.lock().unwrap().clone();
    records
}

/// The ring-buffer record the kernel sends for `event`: the flow's state with a RST on a
/// known flow, the packet alone otherwise.
fn event_bytes(event: &RstEvent) -> Vec<u8> {
    let rst = event.pkt.is_rst();
    let known = event.flow.packets() != 0;
    let first = event.kind == EventKind::Rst as u8;
    let kind = match (first, rst && known) {
        (true, true) => record::RST,
        (true, false) => record::RST_NO_STATE,
        (false, true) => record::FOLLOW_UP_RST,
        (false, false) => record::FOLLOW_UP,
    };
    let header = |len: usize| RecordHeader {
        kind,
        direction: event.direction,
        len: len as u16,
        ifindex: event.ifindex,
        ts_ns: event.ts_ns,
    };
    if kind == record::RST || kind == record::FOLLOW_UP_RST {
        let len = std::mem::size_of::<FlowRecord>();
        pod_bytes(&FlowRecord {
            header: header(len),
            pkt: event.pkt,
            _pad: 0,
            flow: event.flow,
            frame: event.frame,
        })
    } else {
        let len = std::mem::size_of::<PacketRecord>();
        pod_bytes(&PacketRecord {
            header: header(len),
            pkt: event.pkt,
            _pad: 0,
            frame: event.frame,
        })
    }
}

fn pod_bytes<T: Copy>(value: &T) -> Vec<u8> {
    // SAFETY: the records are plain old data with explicit padding; these bytes are what the
    // ring buffer carries.
    unsafe {
        std::slice::from_raw_parts((value as *const T).cast::<u8>(), std::mem::size_of::<T>())
    }
    .to_vec()
}

#[test]
fn every_format_renders_the_fixed_conversations_byte_for_byte() {
    let mut rendered = String::new();
    for (name, c) in conversations() {
        for (format_name, format) in formats() {
            let records = records(&c, format);
            assert!(!records.is_empty(), "{name} gave no record");
            writeln!(rendered, "## {name} {format_name}").unwrap();
            rendered.push_str(&String::from_utf8(records).expect("records are UTF-8"));
        }
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(GOLDEN);
    if std::env::var_os("RSTWATCH_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &rendered).unwrap();
    }
    let golden = std::fs::read_to_string(&path).expect("the golden records exist");
    for (line, (got, want)) in rendered.lines().zip(golden.lines()).enumerate() {
        assert_eq!(got, want, "line {} of {GOLDEN}", line + 1);
    }
    assert_eq!(rendered.lines().count(), golden.lines().count());
}
