//! The join of the stack's records with wire RSTs, without a kernel.

use rstwatch_common::{
    event::{DIRECTION_EGRESS, DIRECTION_INGRESS},
    local::{local_flags, local_kind, tcp_state, LocalResetRecord},
    packet::{
        tcp_flags::{ACK, RST, SYN},
        FAMILY_IPV4,
    },
    PacketMeta, RstEvent,
};

use super::*;

fn v4(last: u8) -> [u8; 16] {
    let mut addr = [0; 16];
    addr[10] = 0xff;
    addr[11] = 0xff;
    addr[12..].copy_from_slice(&[198, 18, 0, last]);
    addr
}

const SERVER: u8 = 2;
const CLIENT: u8 = 1;

/// A RST from the server (port 80) to the client (port 40000), seen at `direction`.
fn wire_rst(direction: u8, seq: u32) -> RstEvent {
    let pkt = PacketMeta {
        src_addr: v4(SERVER),
        dst_addr: v4(CLIENT),
        src_port: 80,
        dst_port: 40000,
        seq,
        tcp_flags: RST | ACK,
        family: FAMILY_IPV4,
        ..PacketMeta::default()
    };
    let mut event = RstEvent {
        ts_ns: 5_000_000,
        direction,
        pkt,
        ..RstEvent::default()
    };
    event.key = rstwatch_common::FlowKey::of(&pkt).0;
    event
}

/// The server's stack sending a RST in answer to the client's SYN (seq 1000, no ACK).
fn refused_by_stack(reason: u32) -> LocalResetRecord {
    LocalResetRecord {
        ts_ns: 4_999_000,
        local_addr: v4(SERVER),
        remote_addr: v4(CLIENT),
        local_port: 80,
        remote_port: 40000,
        kind: local_kind::SENT,
        flags: local_flags::REASON | local_flags::ANSWERS_SEGMENT,
        reason,
        answered_seq: 1000,
        answered_flags: SYN,
        ..LocalResetRecord::default()
    }
}

fn reasons() -> HashMap<u32, String> {
    [
        (1, "NO_SOCKET"),
        (11, "TCP_ABORT_ON_CLOSE"),
        (14, "TCP_STATE"),
    ]
    .into_iter()
    .map(|(value, name)| (value, name.to_owned()))
    .collect()
}

fn comm(name: &str) -> [u8; 16] {
    let mut raw = [0; 16];
    raw[..name.len()].copy_from_slice(name.as_bytes());
    raw
}

#[test]
fn a_refusal_by_the_stack_is_joined_with_its_reason_and_the_rst_sequence_it_implies() {
    let mut join = LocalJoin::new(reasons(), true);
    join.offer(&refused_by_stack(1));
    // A RST answering a segment without ACK carries sequence number 0.
    let evidence = join.evidence_for(&wire_rst(DIRECTION_EGRESS, 0)).unwrap();
    assert_eq!(evidence.reason(), Some("NO_SOCKET"));
    assert_eq!(
        evidence.describe(),
        "kernel: NO_SOCKET",
        "no socket: no owner to name"
    );
    // Consumed: the next RST of that 4-tuple has no record of its own.
    assert_eq!(
        join.evidence_for(&wire_rst(DIRECTION_EGRESS, 0)),
        Some(LocalEvidence::NotFromStack)
    );
}

#[test]
fn an_egress_rst_with_another_sequence_number_is_not_the_stacks() {
    let mut join = LocalJoin::new(reasons(), true);
    join.offer(&refused_by_stack(1));
    assert_eq!(
        join.evidence_for(&wire_rst(DIRECTION_EGRESS, 77)),
        Some(LocalEvidence::NotFromStack)
    );
}

#[test]
fn without_complete_coverage_an_unmatched_rst_is_not_judged() {
    let mut join = LocalJoin::new(HashMap::new(), false);
    assert_eq!(join.evidence_for(&wire_rst(DIRECTION_EGRESS, 0)), None);
    join.offer(&LocalResetRecord {
        flags: local_flags::ANSWERS_SEGMENT,
        ..refused_by_stack(0)
    });
    let evidence = join.evidence_for(&wire_rst(DIRECTION_EGRESS, 0)).unwrap();
    assert_eq!(evidence.reason(), None);
    assert_eq!(
        evidence.describe(),
        "kernel: sent (no reason on this kernel)"
    );
}

#[test]
fn a_close_with_unread_data_names_the_closing_process_and_the_cgroup() {
    let mut join = LocalJoin::new(reasons(), true);
    join.offer(&LocalResetRecord {
        flags: local_flags::REASON | local_flags::SOCKET | local_flags::CGROUP,
        reason: 11,
        state: tcp_state::CLOSE,
        cgroup_id: u64::MAX,
        current_pid: 412,
        current_comm: comm("nginx"),
        ..refused_by_stack(11)
    });
    let evidence = join.evidence_for(&wire_rst(DIRECTION_EGRESS, 9)).unwrap();
    let owner = evidence.owner().unwrap();
    assert_eq!(
        (owner.pid, owner.comm.as_deref()),
        (Some(412), Some("nginx"))
    );
    assert_eq!(owner.cgroup_id, Some(u64::MAX));
    assert!(evidence
        .describe()
        .starts_with("kernel: TCP_ABORT_ON_CLOSE by nginx[412] (cgroup "));
    assert_eq!(evidence.to_json()["state"], "CLOSE");
}

#[test]
fn the_task_running_a_reply_is_never_named_only_a_recorded_owner() {
    let mut join = LocalJoin::new(reasons(), true);
    let mut record = LocalResetRecord {
        flags: local_flags::REASON | local_flags::SOCKET | local_flags::ANSWERS_SEGMENT,
        reason: 14,
        state: tcp_state::ESTABLISHED,
        current_pid: 99,
        current_comm: comm("ksoftirqd/0"),
        ..refused_by_stack(14)
    };
    join.offer(&record);
    let evidence = join.evidence_for(&wire_rst(DIRECTION_EGRESS, 0)).unwrap();
    assert_eq!(evidence.owner().unwrap().pid, None);
    record.flags |= local_flags::OWNER;
    record.owner_pid = 7;
    record.owner_comm = comm("curl");
    join.offer(&record);
    let evidence = join.evidence_for(&wire_rst(DIRECTION_EGRESS, 0)).unwrap();
    assert_eq!(evidence.owner().unwrap().pid, Some(7));
}

#[test]
fn a_received_rst_names_the_local_socket_and_ingress_is_never_called_not_from_stack() {
    let mut join = LocalJoin::new(reasons(), true);
    assert_eq!(join.evidence_for(&wire_rst(DIRECTION_INGRESS, 0)), None);
    join.offer(&LocalResetRecord {
        ts_ns: 5_000_100,
        local_addr: v4(CLIENT),
        remote_addr: v4(SERVER),
        local_port: 40000,
        remote_port: 80,
        kind: local_kind::RECEIVED,
        flags: local_flags::SOCKET | local_flags::OWNER,
        state: tcp_state::SYN_SENT,
        owner_pid: 5,
        owner_comm: comm("curl"),
        ..LocalResetRecord::default()
    });
    let evidence = join.evidence_for(&wire_rst(DIRECTION_INGRESS, 0)).unwrap();
    assert_eq!(evidence.source(), "received");
    assert_eq!(
        evidence.describe(),
        "kernel: received by a socket of curl[5]"
    );
    assert_eq!(evidence.to_json()["state"], "SYN-SENT");
}

#[test]
fn while_records_were_lost_an_unmatched_rst_is_not_judged() {
    let mut join = LocalJoin::new(reasons(), true);
    let rst = wire_rst(DIRECTION_EGRESS, 0);
    join.note_lost(3, rst.ts_ns);
    assert_eq!(join.evidence_for(&rst), None);
    let mut later = rst;
    later.ts_ns += 2 * MATCH_WINDOW_NS;
    join.note_lost(3, later.ts_ns);
    assert_eq!(join.evidence_for(&later), Some(LocalEvidence::NotFromStack));
}

#[test]
fn old_records_are_forgotten_and_far_records_never_match() {
    let mut join = LocalJoin::new(reasons(), true);
    join.offer(&refused_by_stack(1));
    let mut late = wire_rst(DIRECTION_EGRESS, 0);
    late.ts_ns += 10 * MATCH_WINDOW_NS;
    assert_eq!(join.evidence_for(&late), Some(LocalEvidence::NotFromStack));
    join.forget_before(late.ts_ns, 0);
    assert!(join.pending.is_empty() && join.arrivals.is_empty());
}

mod formats {
    use crate::report::{Direction, ResetReport};
    use crate::{
        output::{cef::Cef, ecs::Ecs, json::Json, ocsf::Ocsf, text::Text, Format},
        test_support::sample,
    };

    use super::super::{LocalEvidence, Owner};

    const CONTAINER: &str = "3f4e5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7081";

    fn nginx_abort() -> ResetReport {
        let mut report = sample::middlebox_report();
        report.direction = Direction::Egress;
        report.local = Some(LocalEvidence::Sent {
            reason: Some("TCP_ABORT_ON_CLOSE".to_owned()),
            state: Some("CLOSE"),
            owner: Owner {
                cgroup_id: Some(4242),
                cgroup: Some(format!("system.slice/docker-{CONTAINER}.scope")),
                container_id: Some(CONTAINER.to_owned()),
                pid: Some(412),
                comm: Some("nginx".to_owned()),
            },
        });
        report
    }

    fn render(format: &dyn Format, report: &ResetReport) -> String {
        let mut out = Vec::new();
        format.render(report, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn json(format: &dyn Format, report: &ResetReport) -> serde_json::Value {
        serde_json::from_str(&render(format, report)).unwrap()
    }

    #[test]
    fn the_text_line_names_the_reason_the_process_and_the_cgroup() {
        let line = render(&Text::new(false), &nginx_abort());
        assert!(
            line.contains(&format!(
                "; kernel: TCP_ABORT_ON_CLOSE by nginx[412] (system.slice/docker-{CONTAINER}.scope);"
            )),
            "{line}"
        );
    }

    #[test]
    fn json_has_local_only_when_known() {
        let record = json(&Json, &nginx_abort());
        assert_eq!(record["local"]["reason"], "TCP_ABORT_ON_CLOSE");
        assert_eq!(record["local"]["pid"], 412);
        assert_eq!(record["local"]["container_id"], CONTAINER);
        let without = json(&Json, &sample::middlebox_report());
        assert!(without.get("local").is_none());
    }

    #[test]
    fn ecs_maps_the_owner_to_process_and_container() {
        let doc = json(&Ecs, &nginx_abort());
        assert_eq!(doc["process"]["pid"], 412);
        assert_eq!(doc["process"]["name"], "nginx");
        assert_eq!(doc["container"]["id"], CONTAINER);
        assert_eq!(doc["rstwatch"]["local"]["reason"], "TCP_ABORT_ON_CLOSE");
    }

    #[test]
    fn ocsf_maps_the_owner_to_the_actors_process() {
        let event = json(&Ocsf, &nginx_abort());
        assert_eq!(event["actor"]["process"]["pid"], 412);
        assert_eq!(event["actor"]["process"]["name"], "nginx");
        assert_eq!(event["unmapped"]["local"]["cgroup_id"], 4242);
    }

    #[test]
    fn cef_names_the_source_process_and_says_what_the_kernel_said() {
        let record = render(&Cef, &nginx_abort());
        assert!(record.contains(" spid=412 sproc=nginx "), "{record}");
        assert!(
            record.contains("msg=kernel: TCP_ABORT_ON_CLOSE by nginx[412]"),
            "{record}"
        );
    }

    #[test]
    fn every_format_says_when_the_stack_did_not_send_it() {
        let mut report = sample::middlebox_report();
        report.direction = Direction::Egress;
        report.local = Some(LocalEvidence::NotFromStack);
        let said = "not sent by this host's TCP stack";
        assert!(render(&Text::new(false), &report).contains(said));
        assert!(render(&Cef, &report).contains(said));
        assert_eq!(json(&Json, &report)["local"]["source"], "not_tcp_stack");
        assert_eq!(
            json(&Ecs, &report)["rstwatch"]["local"]["source"],
            "not_tcp_stack"
        );
        assert_eq!(
            json(&Ocsf, &report)["unmapped"]["local"]["source"],
            "not_tcp_stack"
        );
    }
}
