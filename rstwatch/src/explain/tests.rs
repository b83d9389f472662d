//! Scenarios, each a scripted conversation replayed through the kernel's flow update, and the
//! report the classifier gives on its first RST.

use std::time::Duration;

use rstwatch_common::packet::tcp_flags::{ACK, FIN, RST};

use super::{
    conversation::{established, Conversation, Side::*, RTT_MS, SERVER_TTL},
    zeek, ExplainSettings,
};
use crate::report::{ConnState, Direction, Evidence, ResetClass, Sender};

/// `established`, then the client sends more and the server's RST comes back after a full
/// round trip, as the real server's would.
fn server_resets_request() -> Conversation {
    let mut c = established();
    c.wait_ms(5).data(Client, 200).wait_ms(RTT_MS);
    c
}

mod class {
    use super::*;

    #[test]
    fn client_connects_to_a_closed_port_is_refused() {
        let mut c = Conversation::v4();
        c.syn(Client).wait_ms(1).rst_ack(Server);
        let r = c.explain();
        assert_eq!(r.class, ResetClass::Refused);
        assert_eq!(r.sender, Sender::Responder);
        assert_eq!(r.conn_state, ConnState::Rej);
        assert_eq!(r.history, "Sr");
    }

    #[test]
    fn refused_wins_over_a_long_silence() {
        let mut c = Conversation::v4();
        c.syn(Client).wait_s(40).rst_ack(Server);
        assert_eq!(c.explain().class, ResetClass::Refused);
    }

    #[test]
    fn rst_after_the_responder_answered_is_not_refused() {
        let mut c = Conversation::v4();
        c.syn(Client).wait_ms(RTT_MS).syn_ack(Server).rst(Client);
        assert_eq!(c.explain().class, ResetClass::Abort);
    }

    /// The case that started rstwatch: client silent 60+ s, small block, server FINs, client only ACKs, sends again
    /// 14-22 s later, server RSTs.
    #[test]
    fn client_keeps_sending_after_server_closed_is_data_after_close() {
        let mut c = established();
        c.wait_s(65)
            .data(Client, 40)
            .wait_ms(RTT_MS)
            .fin(Server)
            .ack(Client);
        c.wait_s(18).data(Client, 40).wait_ms(RTT_MS).rst(Server);
        let r = c.explain();
        assert_eq!(r.class, ResetClass::DataAfterClose);
        assert_eq!(r.sender, Sender::Responder);
        assert!(!r.middlebox, "{:?}", r.evidence);
    }

    #[test]
    fn data_after_close_wins_over_a_long_silence() {
        let mut c = established();
        c.fin(Server)
            .ack(Client)
            .wait_s(120)
            .data(Client, 40)
            .wait_ms(RTT_MS);
        c.rst(Server);
        assert_eq!(c.explain().class, ResetClass::DataAfterClose);
    }

    #[test]
    fn data_crossing_the_fin_is_data_after_close() {
        let mut c = established();
        // The server's FIN does not acknowledge the client's data: they crossed.
        c.data(Client, 100)
            .send_with(Server, FIN | ACK, 0, |p| p.ack = p.ack.wrapping_sub(100))
            .rst(Server);
        assert_eq!(c.explain().class, ResetClass::DataAfterClose);
    }

    #[test]
    fn rst_after_both_fins_is_teardown() {
        let mut c = established();
        c.fin(Client).fin(Server).ack(Client).rst(Client);
        let r = c.explain();
        assert_eq!(r.class, ResetClass::Teardown);
        assert_eq!(r.class.severity(), crate::report::Severity::Benign);
    }

    #[test]
    fn rst_answering_the_peers_fin_is_teardown() {
        let mut c = established();
        c.fin(Client).wait_ms(RTT_MS).rst_ack(Server);
        assert_eq!(c.explain().class, ResetClass::Teardown);
    }

    #[test]
    fn fin_then_rst_from_the_same_side_is_teardown() {
        let mut c = established();
        c.fin(Server).rst(Server);
        assert_eq!(c.explain().class, ResetClass::Teardown);
    }

    #[test]
    fn teardown_wins_over_a_long_silence() {
        let mut c = established();
        c.fin(Client).fin(Server).wait_s(4).rst(Client);
        let settings = ExplainSettings {
            idle_timeout: Duration::from_secs(1),
            ..ExplainSettings::default()
        };
        assert_eq!(c.explain_with(&settings).class, ResetClass::Teardown);
    }

    #[test]
    fn a_rst_after_the_close_delay_meets_no_connection() {
        let mut c = established();
        c.fin(Client).fin(Server).ack(Client).wait_s(7).rst(Server);
        let r = c.explain();
        assert_eq!(r.class, ResetClass::NoState);
        assert_eq!((r.history.as_str(), r.conn_state), ("^r", ConnState::Rstrh));
        assert_eq!(r.sender, Sender::Responder);
    }

    #[test]
    fn acknowledged_payload_after_a_half_close_then_rst_is_not_teardown() {
        let mut c = Conversation::v4();
        c.handshake().data(Server, 500).fin(Server);
        c.wait_ms(RTT_MS)
            .data(Client, 100)
            .ack(Server)
            .wait_ms(5)
            .rst(Server);
        assert_eq!(c.explain().class, ResetClass::Abort);
    }

    #[test]
    fn rst_after_a_long_silence_is_idle_timeout() {
        let mut c = established();
        c.wait_s(31).rst(Server);
        let r = c.explain();
        assert_eq!(r.class, ResetClass::IdleTimeout);
        assert_eq!(r.idle_ms, Some(31_000));
    }

    #[test]
    fn rst_answering_the_first_packet_after_a_long_silence_is_idle_timeout() {
        let mut c = established();
        c.wait_s(300).data(Client, 10).wait_ms(2).rst_ack(Server);
        let r = c.explain();
        assert_eq!(r.class, ResetClass::IdleTimeout);
        assert_eq!(r.idle_ms, Some(300_000));
    }

    /// A flow's times are kept coarser as it ages (`rstwatch_common::span::Span`): three
    /// days in, an idle time still shows to the ms and the handshake's RTT to the µs.
    #[test]
    fn flows_lasting_days_keep_their_idle_time_and_rtt() {
        let three_days = || {
            let mut c = established();
            for _ in 0..3 {
                c.wait_s(86_400).data(Client, 10).wait_ms(1).ack(Server);
            }
            c
        };
        let mut answered = three_days();
        answered
            .wait_s(3 * 3_600)
            .wait_us(123_456)
            .data(Client, 10)
            .wait_ms(2)
            .rst_ack(Server);
        let r = answered.explain();
        assert_eq!(r.class, ResetClass::IdleTimeout);
        assert_eq!(r.idle_ms, Some(3 * 3_600_000 + 123));
        assert_eq!(r.rtt_us, Some(RTT_MS * 1_000));

        let mut silent = three_days();
        silent.wait_s(3 * 3_600).wait_us(7_999).rst(Server);
        let r = silent.explain();
        assert_eq!(r.class, ResetClass::IdleTimeout);
        assert_eq!(r.idle_ms, Some(3 * 3_600_000 + 7));
    }

    #[test]
    fn silence_shorter_than_the_idle_timeout_is_abort() {
        let mut c = established();
        c.wait_s(29).rst(Server);
        assert_eq!(c.explain().class, ResetClass::Abort);
        let shorter = ExplainSettings {
            idle_timeout: Duration::from_secs(10),
            ..ExplainSettings::default()
        };
        assert_eq!(c.explain_with(&shorter).class, ResetClass::IdleTimeout);
    }

    #[test]
    fn silence_of_exactly_the_idle_timeout_is_idle_timeout() {
        let mut c = established();
        c.wait_s(30).rst(Server);
        assert_eq!(c.explain().class, ResetClass::IdleTimeout);
    }

    #[test]
    fn client_aborts_mid_stream_is_abort() {
        let mut c = established();
        c.rst(Client);
        let r = c.explain();
        assert_eq!(r.class, ResetClass::Abort);
        assert_eq!(r.sender, Sender::Originator);
        assert_eq!(r.direction, Direction::Egress);
        assert_eq!(r.conn_state, ConnState::Rsto);
    }

    #[test]
    fn rst_for_a_flow_never_seen_is_no_state() {
        let mut c = Conversation::between("198.18.0.1:40000", "198.18.1.2:4001");
        c.rst_ack(Server);
        let r = c.explain();
        assert_eq!(r.class, ResetClass::NoState);
        assert_eq!(r.sender, Sender::Unknown);
        assert!(r.originator_inferred);
        assert_eq!(r.idle_ms, None);
        assert_eq!(r.expected_ttl, None);
        assert_eq!(r.rtt_us, None);
        assert_eq!(r.history, "R");
        assert_eq!(r.conn_state, ConnState::Oth);
        assert!(r.evidence.is_empty());
    }

    #[test]
    fn midstream_flow_has_no_known_sender() {
        let mut c = Conversation::v4();
        c.data(Client, 100).data(Server, 100).rst(Server);
        let r = c.explain();
        assert_eq!(r.class, ResetClass::Abort);
        assert_eq!(r.sender, Sender::Unknown);
        assert!(r.originator_inferred);
    }

    #[test]
    fn missed_syn_still_knows_the_sender_from_the_syn_ack() {
        let mut c = Conversation::v4();
        c.syn_ack(Server).ack(Client).data(Client, 10).rst(Server);
        let r = c.explain();
        assert_eq!(r.sender, Sender::Responder);
        assert!(!r.originator_inferred);
        assert_eq!(r.orig.to_string(), "198.18.0.1:40000");
    }
}

mod evidence {
    use super::*;

    #[test]
    fn genuine_rst_from_the_server_has_no_evidence() {
        let mut c = server_resets_request();
        c.rst_ack(Server);
        let r = c.explain();
        assert_eq!(r.evidence, []);
        assert!(!r.middlebox);
        assert_eq!(r.expected_ttl, Some(SERVER_TTL));
        assert_eq!(r.ttl, SERVER_TTL);
    }

    #[test]
    fn different_ttl_alone_is_not_a_middlebox() {
        let mut c = server_resets_request();
        c.send_with(Server, RST | ACK, 0, |p| p.ttl = 61);
        let r = c.explain();
        assert_eq!(r.evidence, [Evidence::TtlMismatch]);
        assert!(!r.middlebox);
    }

    #[test]
    fn unrouted_ttl_from_a_routed_endpoint_is_a_middlebox() {
        let mut c = server_resets_request();
        c.send_with(Server, RST | ACK, 0, |p| p.ttl = 64);
        let r = c.explain();
        assert_eq!(r.evidence, [Evidence::TtlMismatch]);
        assert!(r.middlebox);
    }

    #[test]
    fn initial_ttl_from_one_router_before_the_endpoint_is_a_middlebox() {
        let mut c = Conversation::v4();
        c.ttl(Server, 63).handshake().wait_ms(RTT_MS);
        c.send_with(Server, RST | ACK, 0, |p| p.ttl = 64);
        let r = c.explain();
        assert_eq!(r.evidence, [Evidence::TtlMismatch]);
        assert!(
            r.middlebox,
            "the router itself answered in the server's name"
        );
    }

    #[test]
    fn unrouted_ttl_right_after_the_handshake_is_a_middlebox() {
        let mut c = Conversation::v4();
        c.handshake().wait_ms(RTT_MS);
        c.send_with(Server, RST | ACK, 0, |p| p.ttl = 255);
        let r = c.explain();
        assert_eq!(r.evidence, [Evidence::TtlMismatch]);
        assert!(r.middlebox);
    }

    #[test]
    fn initial_ttl_below_the_genuine_one_is_not_enough() {
        let mut c = Conversation::v4();
        c.ttl(Server, 127).handshake().wait_ms(RTT_MS);
        c.send_with(Server, RST | ACK, 0, |p| p.ttl = 64);
        let r = c.explain();
        assert_eq!(r.evidence, [Evidence::TtlMismatch]);
        assert!(!r.middlebox, "it came from farther away than the endpoint");
    }

    #[test]
    fn initial_ttl_from_an_endpoint_on_the_same_link_is_not_enough() {
        let mut c = Conversation::v4();
        c.ttl(Server, 64).handshake().wait_ms(RTT_MS);
        c.send_with(Server, RST | ACK, 0, |p| p.ttl = 128);
        let r = c.explain();
        assert_eq!(r.evidence, [Evidence::TtlMismatch]);
        assert!(!r.middlebox, "the endpoint's own TTL is not routed either");
    }

    #[test]
    fn ttl_mismatch_corroborated_by_ip_id_is_a_middlebox() {
        let mut c = server_resets_request();
        c.send_with(Server, RST | ACK, 0, |p| {
            p.ttl = 60;
            p.ip_id = 7;
        });
        let r = c.explain();
        assert_eq!(r.evidence, [Evidence::TtlMismatch, Evidence::IpIdAnomaly]);
        assert!(r.middlebox);
    }

    #[test]
    fn ip_id_far_from_the_senders_counter_is_an_anomaly() {
        let mut c = server_resets_request();
        c.send_with(Server, RST | ACK, 0, |p| {
            p.ip_id = p.ip_id.wrapping_add(20_000)
        });
        let r = c.explain();
        assert_eq!(r.evidence, [Evidence::IpIdAnomaly]);
        assert!(!r.middlebox, "one signal is not proof");
    }

    #[test]
    fn ip_id_repeating_the_last_one_is_an_anomaly() {
        let mut c = server_resets_request();
        c.send_with(Server, RST | ACK, 0, |p| p.ip_id = p.ip_id.wrapping_sub(1));
        assert_eq!(c.explain().evidence, [Evidence::IpIdAnomaly]);
    }

    #[test]
    fn ip_id_zero_with_df_is_a_genuine_stateless_rst() {
        let mut c = server_resets_request();
        c.send_with(Server, RST | ACK, 0, |p| p.ip_id = 0);
        assert_eq!(c.explain().evidence, []);
    }

    #[test]
    fn random_ip_ids_say_nothing() {
        let mut c = Conversation::v4();
        c.syn(Client).wait_ms(RTT_MS);
        for id in [40_000, 12, 61_000, 9_000] {
            c.ip_id(Server, id).data(Server, 10);
        }
        c.wait_ms(RTT_MS)
            .send_with(Server, RST, 0, |p| p.ip_id = 33_333);
        assert!(!c.explain().evidence.contains(&Evidence::IpIdAnomaly));
    }

    #[test]
    fn nonzero_ip_id_from_a_sender_of_zero_ids_is_an_anomaly() {
        let mut c = Conversation::v4();
        c.syn(Client).wait_ms(RTT_MS);
        for _ in 0..3 {
            c.ip_id(Server, 0).data(Server, 10);
        }
        c.wait_ms(RTT_MS)
            .send_with(Server, RST, 0, |p| p.ip_id = 4_321);
        assert!(c.explain().evidence.contains(&Evidence::IpIdAnomaly));
    }

    #[test]
    fn ipv6_has_no_ip_id_to_judge() {
        let mut c = Conversation::v6();
        c.handshake().data(Client, 10).wait_ms(RTT_MS);
        c.send_with(Server, RST, 0, |p| p.ip_id = 999);
        let r = c.explain();
        assert_eq!(r.ip_id, None);
        assert!(!r.evidence.contains(&Evidence::IpIdAnomaly));
    }

    #[test]
    fn rst_outside_the_receivers_window_is_out_of_window() {
        let mut c = server_resets_request();
        c.send_with(Server, RST, 0, |p| p.seq = p.seq.wrapping_add(1_000_000));
        assert_eq!(c.explain().evidence, [Evidence::SeqOutOfWindow]);
    }

    #[test]
    fn rst_inside_the_scaled_window_is_not_out_of_window() {
        // The client advertised 1000 << 7 bytes.
        let mut c = server_resets_request();
        c.send_with(Server, RST, 0, |p| p.seq = p.seq.wrapping_add(100_000));
        assert_eq!(c.explain().evidence, []);
    }

    #[test]
    fn rst_answering_a_syn_is_not_judged_by_its_sequence_number() {
        let mut c = Conversation::v4();
        c.syn(Client)
            .wait_ms(1)
            .send_with(Server, RST | ACK, 0, |p| p.seq = 0);
        assert_eq!(c.explain().evidence, []);
    }

    #[test]
    fn endpoint_sending_after_its_rst_is_a_middlebox() {
        let mut c = server_resets_request();
        c.rst(Server).wait_ms(1).data(Server, 500);
        let r = c.explain();
        assert_eq!(r.evidence, [Evidence::DataAfterRst]);
        assert!(r.middlebox);
        assert_eq!(r.followups, 1);
    }

    #[test]
    fn receiver_sending_after_the_rst_is_not_data_after_rst() {
        let mut c = server_resets_request();
        c.rst(Server).wait_ms(1).data(Client, 500);
        assert_eq!(c.explain().evidence, []);
    }

    #[test]
    fn rsts_with_shifting_sequence_numbers_are_a_middlebox() {
        let mut c = server_resets_request();
        c.rst(Server)
            .send_with(Server, RST, 0, |p| p.seq = p.seq.wrapping_add(1_460));
        let r = c.explain();
        assert_eq!(r.evidence, [Evidence::RstSeqChange]);
        assert!(r.middlebox);
    }

    #[test]
    fn repeated_rsts_with_one_sequence_number_are_not_a_seq_change() {
        let mut c = server_resets_request();
        c.rst(Server).wait_ms(1).rst(Server);
        let r = c.explain();
        assert_eq!(r.evidence, []);
        assert_eq!(r.followups, 1);
    }

    #[test]
    fn rst_faster_than_the_round_trip_allows_is_fast() {
        let mut c = established();
        c.wait_ms(5).data(Client, 200).wait_ms(1).rst_ack(Server);
        let r = c.explain();
        assert_eq!(r.evidence, [Evidence::FastRst]);
        assert!(!r.middlebox);
    }

    #[test]
    fn rst_on_a_sub_millisecond_path_is_never_fast() {
        let mut c = Conversation::v4();
        c.syn(Client).wait_ms(1).syn_ack(Server).ack(Client);
        c.data(Client, 200).rst_ack(Server);
        assert_eq!(c.explain().evidence, [], "jitter, not evidence");
    }

    #[test]
    fn rst_after_half_a_round_trip_is_not_fast() {
        let mut c = established();
        c.wait_ms(5)
            .data(Client, 200)
            .wait_ms(RTT_MS / 2)
            .rst_ack(Server);
        assert_eq!(c.explain().evidence, []);
    }

    #[test]
    fn fast_rst_with_a_ttl_mismatch_is_a_middlebox() {
        let mut c = established();
        c.wait_ms(5).data(Client, 200).wait_ms(1);
        c.send_with(Server, RST | ACK, 0, |p| p.ttl = 58);
        let r = c.explain();
        assert_eq!(r.evidence, [Evidence::TtlMismatch, Evidence::FastRst]);
        assert!(r.middlebox);
    }

    #[test]
    fn egress_rst_is_never_fast_nor_a_middlebox() {
        let mut c = established();
        c.local(Server).wait_ms(5).data(Client, 200).wait_ms(1);
        c.rst(Server).wait_ms(1).data(Server, 100);
        let r = c.explain();
        assert_eq!(r.direction, Direction::Egress);
        assert_eq!(r.evidence, [Evidence::DataAfterRst]);
        assert!(!r.middlebox);
    }

    #[test]
    fn tls_alert_shortly_before_is_context_only() {
        let mut c = established();
        c.tls_alert(Client).wait_ms(RTT_MS).rst_ack(Server);
        let r = c.explain();
        assert_eq!(r.evidence, [Evidence::TlsAlertBefore]);
        assert!(!r.middlebox);
    }

    #[test]
    fn tls_alert_long_before_is_not_reported() {
        let mut c = established();
        c.tls_alert(Server).wait_s(10).rst_ack(Server);
        assert_eq!(c.explain().evidence, []);
    }
}

mod report {
    use super::*;

    #[test]
    fn ipv4_report_names_the_flow_in_standard_forms() {
        let mut c = server_resets_request();
        c.rst_ack(Server);
        let r = c.explain();
        assert_eq!(&*r.iface, "eth0");
        assert_eq!(r.direction, Direction::Ingress);
        assert_eq!(r.src.to_string(), "198.18.1.2:80");
        assert_eq!(r.dst.to_string(), "198.18.0.1:40000");
        assert_eq!(r.orig.to_string(), "198.18.0.1:40000");
        assert_eq!(r.resp.to_string(), "198.18.1.2:80");
        assert_eq!(r.community_id, "1:m4Ien//KTz7fgaSi9qyji8Mv2JM=");
        assert_eq!(
            r.wireshark_filter.to_string(),
            "ip.addr==198.18.1.2 && ip.addr==198.18.0.1 && tcp.port==80 && tcp.port==40000"
        );
        assert_eq!(r.rtt_us, Some(RTT_MS * 1_000));
        assert_eq!(r.flags, RST | ACK);
        assert!(r.ip_id.is_some());
        assert!(r.df);
        assert_eq!(r.history, "ShADdr");
        assert_eq!(r.conn_state, ConnState::Rstr);
    }

    #[test]
    fn packet_counts_include_the_rst() {
        let mut c = server_resets_request();
        c.rst_ack(Server);
        let r = c.explain();
        assert_eq!((r.orig_pkts, r.orig_bytes), (4, 500));
        assert_eq!((r.resp_pkts, r.resp_bytes), (3, 1_400));
    }

    #[test]
    fn report_history_matches_the_kernels_table_after_the_rst() {
        let mut c = established();
        c.fin(Client).rst_ack(Server);
        let flow = c.flow();
        let r = c.explain();
        assert_eq!(r.history, zeek::history(&flow));
        assert_eq!(r.conn_state, zeek::conn_state(&flow));
    }

    #[test]
    fn ipv6_report() {
        let mut c = Conversation::v6();
        c.handshake().data(Client, 10).wait_ms(RTT_MS).rst(Server);
        let r = c.explain();
        assert_eq!(r.src.to_string(), "[2001:db8::2]:443");
        assert_eq!(r.ip_id, None);
        assert!(r
            .wireshark_filter
            .to_string()
            .starts_with("ipv6.addr==2001:db8::2 && "));
        assert_eq!(r.community_id, "1:RYG3Msb11GthNt1OYXJouPzmrvA=");
    }

    #[test]
    fn tagged_flow_keeps_its_vlan() {
        let mut c = Conversation::v4();
        c.vlan(42).syn(Client).rst_ack(Server);
        let r = c.explain();
        assert_eq!(r.vlan, 42);
        assert!(r.wireshark_filter.to_string().ends_with(" && vlan.id==42"));
    }
}

/// Every RST gets a report of its own unless it folds into a held report of the same sender;
/// conn_state and history are Zeek's as of the end of the hold.
mod every_rst {
    use super::*;
    use crate::explain::conversation::HOLD_NS;

    #[test]
    fn a_refused_retry_with_the_same_isn_is_a_second_rej() {
        let mut c = Conversation::v4();
        c.syn(Client).wait_ms(1).rst_ack(Server).wait_ms(500);
        let isn = c
            .rst_event()
            .flow
            .dir
            .iter()
            .find(|d| d.pkts > 0)
            .unwrap()
            .next_seq
            - 1;
        c.send_with(Client, rstwatch_common::packet::tcp_flags::SYN, 0, |p| {
            p.seq = isn
        })
        .wait_ms(1)
        .rst_ack(Server);
        let reports = c.reports();
        let summary: Vec<_> = reports
            .iter()
            .map(|r| (r.class, r.conn_state, r.history.as_str(), r.related_to))
            .collect();
        assert_eq!(
            summary,
            [
                (ResetClass::Refused, ConnState::Rej, "Sr", None),
                (ResetClass::Refused, ConnState::Rej, "Sr", None),
            ],
            "each attempt is its own connection, as Zeek logs it"
        );
    }

    #[test]
    fn the_clients_own_rst_after_a_forged_one_is_reported_and_linked() {
        let mut c = server_resets_request();
        c.send_with(Server, RST | ACK, 0, |p| p.ttl = 64)
            .wait_ms(RTT_MS / 2)
            .data(Server, 500)
            .wait_us(30)
            .rst(Client);
        let reports = c.reports();
        assert_eq!(reports.len(), 2, "{reports:#?}");
        let (forged, answer) = (&reports[0], &reports[1]);
        assert_eq!(forged.sender, Sender::Responder);
        assert!(forged.middlebox);
        assert!(forged.evidence.contains(&Evidence::DataAfterRst));
        assert_eq!(
            forged.followups, 1,
            "the server's data, not the client's RST"
        );
        assert_eq!(answer.sender, Sender::Originator);
        assert_eq!(answer.direction, Direction::Egress);
        assert_eq!(answer.related_to, Some(forged.ts));
        assert!(!answer.middlebox);
    }

    #[test]
    fn a_report_released_late_is_the_connection_at_its_hold_end() {
        let mut c = server_resets_request();
        c.send_with(Server, RST | ACK, 0, |p| p.ttl = 64)
            .wait_ms(HOLD_NS / 1_000_000)
            .data(Server, 500)
            .wait_us(300)
            .rst(Client);
        let on_time = c.reports();
        assert_eq!(
            on_time[0].history, "ShADdr",
            "nothing from the hold's end on"
        );
        assert_eq!(on_time[0].followups, 0, "the server's data came at the end");
        let verdicts = |reports: &[crate::report::ResetReport]| {
            reports
                .iter()
                .map(|r| (r.history, r.conn_state, r.followups, r.evidence))
                .collect::<Vec<_>>()
        };
        for late_ms in [1, 20, 1_000] {
            assert_eq!(
                verdicts(&c.reports_released_late(late_ms * 1_000_000)),
                verdicts(&on_time),
                "released {late_ms} ms after the hold's end"
            );
        }
    }

    #[test]
    fn a_rst_after_the_hold_gets_its_own_report() {
        let mut c = server_resets_request();
        c.rst_ack(Server)
            .wait_ms(HOLD_NS / 1_000_000 + 100)
            .send_with(Server, RST | ACK, 0, |p| p.seq = p.seq.wrapping_add(1));
        let reports = c.reports();
        assert_eq!(reports.len(), 2);
        assert_eq!(reports[0].followups, 0);
        assert_eq!(reports[1].related_to, Some(reports[0].ts));
        assert_eq!(
            reports[1].history, "ShADdrr",
            "a RST with a new sequence number"
        );
    }

    #[test]
    fn a_second_rst_of_the_same_sender_within_the_hold_folds_into_its_report() {
        let mut c = server_resets_request();
        c.rst_ack(Server).wait_ms(1).rst_ack(Server);
        let reports = c.reports();
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].followups, 1);
    }

    #[test]
    fn a_fin_right_after_the_rst_changes_conn_state_as_in_zeek() {
        let mut c = established();
        c.wait_ms(5).fin(Client).rst(Client);
        let without = c.reports();
        assert_eq!(
            (without[0].conn_state, without[0].history.as_str()),
            (ConnState::Rsto, "ShADdFR")
        );

        c.wait_us(5).fin(Server);
        let with = c.reports();
        assert_eq!(
            (with[0].conn_state, with[0].history.as_str()),
            (ConnState::Sf, "ShADdFRf"),
            "the server's FIN 5 us after the RST: Zeek calls the RST a normal termination"
        );
        assert_eq!(
            with[0].class, without[0].class,
            "the class is judged before the RST"
        );
        assert_eq!(with[0].resp_pkts, without[0].resp_pkts + 1);
    }

    #[test]
    fn packets_after_the_hold_are_not_in_its_report() {
        let mut c = established();
        c.wait_ms(5).fin(Client).rst(Client);
        c.wait_ms(HOLD_NS / 1_000_000 + 1).fin(Server);
        assert_eq!(c.reports()[0].conn_state, ConnState::Rsto);
    }
}

mod rst_burst {
    use super::*;

    #[test]
    fn identical_rsts_unlike_the_endpoints_packets_are_a_burst_from_a_middlebox() {
        let mut c = server_resets_request();
        for _ in 0..3 {
            c.send_with(Server, RST | ACK, 0, |p| {
                p.ttl = SERVER_TTL + 3;
                p.seq = 3_000_001_400 + 1;
            })
            .wait_us(200);
        }
        let reports = c.reports();
        assert_eq!(reports.len(), 1);
        let r = &reports[0];
        assert_eq!(r.followups, 2);
        assert_eq!(r.evidence, [Evidence::TtlMismatch, Evidence::RstBurst]);
        assert!(r.middlebox);
    }

    #[test]
    fn a_stack_answering_two_segments_with_the_same_rst_is_no_burst() {
        let mut c = server_resets_request();
        c.rst_ack(Server).wait_us(300).rst_ack(Server);
        let r = &c.reports()[0];
        assert_eq!(r.followups, 1);
        assert_eq!(r.evidence, []);
        assert!(!r.middlebox);
    }

    #[test]
    fn identical_rsts_far_apart_are_no_burst() {
        let mut c = server_resets_request();
        let seq = 3_000_001_401;
        c.send_with(Server, RST | ACK, 0, |p| {
            p.ttl = SERVER_TTL + 3;
            p.seq = seq;
        })
        .wait_ms(50)
        .send_with(Server, RST | ACK, 0, |p| {
            p.ttl = SERVER_TTL + 3;
            p.seq = seq;
        });
        assert_eq!(c.reports()[0].evidence, [Evidence::TtlMismatch]);
    }
}

mod capture_point {
    use super::*;

    #[test]
    fn the_near_sides_own_quick_rst_is_not_fast_at_a_sensor() {
        let mut c = established();
        c.sensor()
            .wait_ms(5)
            .data(Server, 100)
            .wait_us(20)
            .rst(Client);
        let r = c.explain();
        assert_eq!(r.direction, Direction::Ingress);
        assert_eq!(r.sender, Sender::Originator);
        assert_eq!(
            r.evidence,
            [],
            "the client next to the sensor answers in microseconds"
        );
    }

    #[test]
    fn the_far_sides_quick_rst_is_still_fast_at_a_sensor() {
        let mut c = established();
        c.sensor()
            .wait_ms(5)
            .data(Client, 100)
            .wait_us(20)
            .rst_ack(Server);
        assert_eq!(c.explain().evidence, [Evidence::FastRst]);
    }

    #[test]
    fn at_a_sensor_next_to_the_server_the_client_is_the_far_side() {
        let mut c = Conversation::v4();
        c.sensor()
            .syn(Client)
            .syn_ack(Server)
            .wait_ms(RTT_MS)
            .ack(Client);
        c.wait_ms(5).data(Server, 100).wait_us(20).rst(Client);
        assert_eq!(c.explain().evidence, [Evidence::FastRst]);
        let mut c = Conversation::v4();
        c.sensor()
            .syn(Client)
            .syn_ack(Server)
            .wait_ms(RTT_MS)
            .ack(Client);
        c.wait_ms(5).data(Client, 100).wait_us(20).rst_ack(Server);
        assert_eq!(c.explain().evidence, [], "the server is next to the sensor");
    }
}
