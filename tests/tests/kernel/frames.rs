//! The frame a RST's record carries: the kernel copies the start of the frame each hook saw,
//! whatever its length (the short ones in constant-size pieces), and nothing for data.

use rstwatch_common::event::FRAME_BYTES;
use rstwatch_tests::{
    frames::{
        flags::{ACK, PSH, RST},
        Tcp,
    },
    probe::{oldest_kernel_config, tcp, v4, Probe, CLIENT, HTTP, SERVER},
};

/// Every bit of a short frame's length is a piece of its own: lengths from the bare 54-byte
/// RST through each power of two to a frame longer than the copy.
const PAYLOADS: [usize; 9] = [0, 1, 2, 3, 10, 41, 73, 74, 300];

#[test]
fn a_rst_record_carries_the_start_of_its_frame_from_either_hook() {
    rst_records_carry_the_start_of_their_frames(Probe::new());
}

/// Without `bpf_xdp_load_bytes` (before 5.18) the XDP program copies the frame itself.
#[test]
fn a_rst_record_carries_the_start_of_its_frame_with_the_oldest_kernels_fallbacks() {
    rst_records_carry_the_start_of_their_frames(Probe::load(oldest_kernel_config()));
}

fn rst_records_carry_the_start_of_their_frames(mut probe: Probe) {
    for (hook, egress) in [("XDP", false), ("TC", true)] {
        let mut sent = Vec::new();
        for (i, &payload) in PAYLOADS.iter().enumerate() {
            // Flows the table does not know: each RST is reported on its own.
            let port = 41_000 + i as u16 + if egress { 100 } else { 0 };
            let rst = v4(
                SERVER,
                CLIENT,
                60,
                i as u16,
                Tcp {
                    payload: (0..payload).map(|b| b as u8).collect(),
                    ..tcp(HTTP, port, RST | ACK, 7_000 + i as u32, 9)
                },
            );
            let bytes = rst.bytes();
            if egress {
                probe.egress(&rst);
            } else {
                probe.ingress(&rst);
            }
            sent.push(bytes);
        }
        let events = probe.events();
        assert_eq!(events.len(), sent.len(), "{hook}: one record per RST");
        for (event, bytes) in events.iter().zip(&sent) {
            let copied = bytes.len().min(FRAME_BYTES);
            assert_eq!(
                event.frame.wire_len as usize,
                bytes.len(),
                "{hook}: the whole frame's length"
            );
            assert_eq!(
                event.frame.captured_bytes(),
                &bytes[..copied],
                "{hook}: the first {copied} bytes of a {}-byte frame",
                bytes.len()
            );
        }
    }
}

#[test]
fn a_data_follow_up_carries_no_frame() {
    let mut probe = Probe::new();
    let rst = v4(
        SERVER,
        CLIENT,
        60,
        1,
        tcp(HTTP, 42_000, RST | ACK, 7_000, 9),
    );
    let data = v4(
        SERVER,
        CLIENT,
        60,
        2,
        Tcp {
            payload: vec![0x55; 20],
            ..tcp(HTTP, 42_000, PSH | ACK, 7_000, 9)
        },
    );
    probe.ingress(&rst);
    probe.ingress(&data);
    let events = probe.events();
    assert_eq!(
        events.len(),
        2,
        "the RST and its data follow-up: {events:#?}"
    );
    assert_eq!(events[0].frame.captured_bytes(), &rst.bytes()[..]);
    assert_eq!(events[1].frame.captured, 0);
    assert_eq!(events[1].frame.wire_len, 0);
}
