//! Zeek conn.log `history` and `conn_state`, derived from the kernel's ordered history: the
//! letters as Zeek writes them (`a d i q` once per direction, `s h f r` again for a new
//! sequence number, `t w` at the 1st, 10th, 100th... occurrence).
//!
//! `conn_state` replays those letters through Zeek's TCP endpoint state machine (inactive,
//! SYN sent, SYN-ACK sent, partial, established, closed, reset) and applies Zeek's conn_state
//! decision to the two final states. Every SYN, FIN and RST that could change an endpoint's
//! state leaves a letter, except a repeat with the same sequence number (which changes
//! nothing) and a SYN together with a FIN or RST (`q`, which cannot say which it carried).

use rstwatch_common::flow::{seen, FlowState, HISTORY_FROM_HIGH};

use crate::{
    event::FlowSide,
    report::{ConnState, History},
};

/// Zeek's history letters: upper case for the originator, lower case for the responder,
/// after `^` when Zeek's heuristic flipped the roles; a trailing `+` when the flow had more
/// letters than the kernel keeps (`HISTORY_CAPACITY`) and the rest were cut.
pub fn history(flow: &FlowState) -> History {
    let mut history = History::new();
    if flow.flipped() {
        history.push_ascii(b'^');
    }
    for e in events(flow) {
        let letter = seen::HISTORY_LETTERS[e.bit as usize];
        history.push_ascii(if e.from_originator {
            letter.to_ascii_uppercase()
        } else {
            letter
        });
    }
    if flow.history_cut() {
        history.push_ascii(b'+');
    }
    history
}

/// Zeek's `conn_state` of the flow.
pub fn conn_state(flow: &FlowState) -> ConnState {
    conn_state_with(flow, &history(flow))
}

/// `conn_state(flow)`, given the flow's `history(flow)` already made.
pub fn conn_state_with(flow: &FlowState, history: &History) -> ConnState {
    let mut replay = Replay::default();
    for e in events(flow) {
        if let Some(segment) = Segment::of(e.bit) {
            replay.packet(e.from_originator, segment);
        }
    }
    let (os, rs) = (replay.orig.state, replay.resp.state);
    let no_payload = flow.dir.iter().all(|d| d.bytes == 0);
    decide(os, rs, no_payload, history)
}

/// One history byte: which event, and whether the originator sent it.
struct Event {
    /// Bit index into `seen`, below `HISTORY_LETTERS.len()`.
    bit: u8,
    from_originator: bool,
}

fn events(flow: &FlowState) -> impl Iterator<Item = Event> + '_ {
    flow.history_events().filter_map(|b| {
        let bit = b & !HISTORY_FROM_HIGH;
        let side = if b & HISTORY_FROM_HIGH != 0 {
            FlowSide::High
        } else {
            FlowSide::Low
        };
        ((bit as usize) < seen::HISTORY_LETTERS.len()).then_some(Event {
            bit,
            from_originator: side == FlowSide::of(flow.originator()),
        })
    })
}

/// Zeek's `conn_state` decision on the two endpoints' final states.
fn decide(os: State, rs: State, no_payload: bool, history: &str) -> ConnState {
    use State::*;
    let inactive = |s: State| matches!(s, Inactive | Partial);
    if rs == Reset {
        if matches!(os, SynSent | SynAckSent) || (os == Reset && no_payload) {
            ConnState::Rej
        } else if inactive(os) {
            ConnState::Rstrh
        } else {
            ConnState::Rstr
        }
    } else if os == Reset {
        if !inactive(rs) {
            ConnState::Rsto
        } else if originator_syn_then_rst(history) {
            ConnState::Rstos0
        } else {
            ConnState::Oth
        }
    } else if os == Closed && rs == Closed {
        ConnState::Sf
    } else if os == Closed {
        if inactive(rs) {
            ConnState::Sh
        } else {
            ConnState::S2
        }
    } else if rs == Closed {
        if inactive(os) {
            ConnState::Shr
        } else {
            ConnState::S3
        }
    } else if os == SynSent && rs == Inactive {
        ConnState::S0
    } else if os == Established && rs == Established {
        ConnState::S1
    } else {
        ConnState::Oth
    }
}

/// Zeek's RSTOS0 pattern `^?S[^HAFGIQ]*R.*`: the originator's SYN, then its RST before any
/// originator SYN-ACK, ACK, FIN, gap, inconsistency or multi-flag packet.
fn originator_syn_then_rst(history: &str) -> bool {
    let history = history.strip_prefix('^').unwrap_or(history);
    let Some(after_syn) = history.strip_prefix('S') else {
        return false;
    };
    after_syn
        .chars()
        .find(|&c| c == 'R' || "HAFGIQ".contains(c))
        == Some('R')
}

/// A Zeek TCP endpoint state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum State {
    #[default]
    Inactive,
    SynSent,
    SynAckSent,
    /// Sent packets without a handshake seen (midstream).
    Partial,
    Established,
    Closed,
    Reset,
}

#[derive(Clone, Copy, Debug, Default)]
struct Endpoint {
    state: State,
    previous: State,
}

impl Endpoint {
    fn set(&mut self, state: State) {
        if state != self.state {
            self.previous = self.state;
            self.state = state;
        }
    }
}

/// The flags of the packet that first showed a history event.
#[derive(Clone, Copy, Debug, Default)]
struct Segment {
    syn: bool,
    ack: bool,
    fin: bool,
    rst: bool,
    payload: bool,
}

impl Segment {
    /// `None` for events that change no endpoint state (retransmission, zero window) and for
    /// `q`, which does not say whether the SYN came with a FIN or a RST.
    fn of(bit: u8) -> Option<Self> {
        let none = Segment::default();
        Some(match 1u16 << bit {
            seen::SYN => Segment { syn: true, ..none },
            seen::SYN_ACK => Segment {
                syn: true,
                ack: true,
                ..none
            },
            seen::ACK => Segment { ack: true, ..none },
            seen::DATA => Segment {
                ack: true,
                payload: true,
                ..none
            },
            seen::FIN => Segment {
                fin: true,
                ack: true,
                ..none
            },
            seen::RST => Segment { rst: true, ..none },
            seen::FIN_RST => Segment {
                fin: true,
                rst: true,
                ..none
            },
            _ => return None,
        })
    }
}

/// Zeek's per-endpoint transitions (its TCP analyzer's state machine), minus the weird-event
/// reporting and the role flips, which the kernel's originator choice covers.
#[derive(Debug, Default)]
struct Replay {
    orig: Endpoint,
    resp: Endpoint,
}

impl Replay {
    fn packet(&mut self, from_originator: bool, seg: Segment) {
        let (me, peer) = if from_originator {
            (&mut self.orig, &mut self.resp)
        } else {
            (&mut self.resp, &mut self.orig)
        };
        match me.state {
            State::Inactive => inactive(me, peer, from_originator, seg),
            State::SynSent | State::SynAckSent => syn_sent(me, seg),
            State::Established | State::Partial => established(me, peer, seg),
            State::Closed => closed(me, peer, seg),
            State::Reset => {}
        }
    }
}

fn inactive(me: &mut Endpoint, peer: &mut Endpoint, from_originator: bool, seg: Segment) {
    if seg.syn {
        if from_originator {
            me.set(if seg.ack {
                State::SynAckSent
            } else {
                State::SynSent
            });
        } else {
            if peer.state == State::SynSent {
                peer.set(State::Established);
            }
            me.set(State::Established);
        }
    }
    if seg.fin {
        me.set(State::Closed);
    }
    if seg.rst {
        me.set(State::Reset);
    }
    if me.state != State::Inactive {
        return;
    }
    // Some stacks ACK a SYN before answering it; that alone does not make a partial flow.
    let early_ack = !from_originator && !seg.payload && peer.state == State::SynSent;
    if early_ack {
        return;
    }
    if seg.ack && peer.state == State::Established {
        // The SYN was missed but the SYN-ACK was not: the connection is established.
        me.set(State::Established);
    } else {
        me.set(State::Partial);
    }
}

fn syn_sent(me: &mut Endpoint, seg: Segment) {
    if seg.fin {
        me.set(State::Closed);
    }
    if seg.rst {
        me.set(State::Reset);
    }
}

fn established(me: &mut Endpoint, peer: &mut Endpoint, seg: Segment) {
    if seg.syn && !seg.ack && me.state == State::Partial && peer.state == State::Inactive {
        me.set(State::SynSent);
    }
    if seg.fin && !seg.rst {
        me.set(State::Closed);
        // The peer's FIN followed by its RST was a normal termination after all.
        if peer.state == State::Reset && peer.previous == State::Closed {
            peer.set(State::Closed);
        }
    }
    if seg.rst {
        me.set(State::Reset);
    }
}

fn closed(me: &mut Endpoint, peer: &Endpoint, seg: Segment) {
    // After a FIN exchange a RST changes nothing: the connection already ended normally.
    if seg.rst && peer.state != State::Closed {
        me.set(State::Reset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explain::conversation::{Conversation, Side::*};

    fn zeek(c: &Conversation) -> (String, ConnState) {
        let flow = c.flow();
        (history(&flow).as_str().to_owned(), conn_state(&flow))
    }

    fn expect(c: &Conversation, history: &str, state: ConnState) {
        assert_eq!(zeek(c), (history.to_owned(), state));
    }

    #[test]
    fn syn_answered_by_rst_is_rej() {
        let mut c = Conversation::v4();
        c.syn(Client).wait_ms(1).rst_ack(Server);
        expect(&c, "Sr", ConnState::Rej);
    }

    #[test]
    fn syn_then_originator_rst_is_rstos0() {
        let mut c = Conversation::v4();
        c.syn(Client).wait_ms(1).rst(Client);
        expect(&c, "SR", ConnState::Rstos0);
    }

    #[test]
    fn syn_early_ack_then_originator_rst_is_rstos0() {
        let mut c = Conversation::v4();
        c.syn(Client).ack(Server).rst(Client);
        expect(&c, "SaR", ConnState::Rstos0);
    }

    #[test]
    fn syn_fin_then_originator_rst_is_oth() {
        let mut c = Conversation::v4();
        c.syn(Client).ack(Server).fin(Client).rst(Client);
        expect(&c, "SaFR", ConnState::Oth);
    }

    #[test]
    fn a_lone_rst_is_oth() {
        let mut c = unlikely_server();
        c.rst(Server);
        expect(&c, "R", ConnState::Oth);
    }

    #[test]
    fn a_lone_rst_from_a_likely_server_port_is_flipped_rstrh() {
        let mut c = Conversation::v4();
        c.rst(Server);
        expect(&c, "^r", ConnState::Rstrh);
    }

    #[test]
    fn midstream_data_from_a_likely_server_port_is_flipped() {
        let mut c = Conversation::v4();
        c.data(Server, 100).ack(Client).rst(Server);
        expect(&c, "^dAr", ConnState::Rstrh);

        let mut c = unlikely_server();
        c.data(Server, 100).ack(Client).rst(Server);
        expect(&c, "DaR", ConnState::Oth);
    }

    /// A conversation whose server port is no likely server port: Zeek flips nothing.
    fn unlikely_server() -> Conversation {
        Conversation::between("198.18.0.1:40000", "198.18.1.2:4001")
    }

    #[test]
    fn established_then_originator_rst_is_rsto() {
        let mut c = Conversation::v4();
        c.handshake()
            .data(Client, 100)
            .data(Server, 1000)
            .rst(Client);
        expect(&c, "ShADdR", ConnState::Rsto);
    }

    #[test]
    fn established_then_responder_rst_is_rstr() {
        let mut c = Conversation::v4();
        c.handshake().data(Client, 100).rst_ack(Server);
        expect(&c, "ShADr", ConnState::Rstr);
    }

    #[test]
    fn syn_ack_then_rst_without_the_syn_is_rstrh() {
        let mut c = unlikely_server();
        c.syn_ack(Server).wait_ms(1).rst(Server);
        expect(&c, "hr", ConnState::Rstrh);
        let mut c = Conversation::v4();
        c.syn_ack(Server).wait_ms(1).rst(Server);
        expect(&c, "^hr", ConnState::Rstrh);
    }

    #[test]
    fn rst_after_both_fins_is_sf() {
        let mut c = Conversation::v4();
        c.handshake().data(Client, 100).data(Server, 1000);
        c.fin(Client).fin(Server).ack(Client).rst(Client);
        expect(&c, "ShADdFfR", ConnState::Sf);
    }

    #[test]
    fn rst_after_one_fin_is_a_reset() {
        let mut c = Conversation::v4();
        c.handshake().data(Client, 100).fin(Server).rst_ack(Client);
        expect(&c, "ShADfR", ConnState::Rsto);
    }

    #[test]
    fn states_without_a_rst() {
        let mut c = Conversation::v4();
        c.syn(Client);
        expect(&c, "S", ConnState::S0);
        c.syn_ack(Server).ack(Client);
        expect(&c, "ShA", ConnState::S1);
        c.fin(Client);
        expect(&c, "ShAF", ConnState::S2);
        c.fin(Server);
        expect(&c, "ShAFf", ConnState::Sf);

        let mut c = Conversation::v4();
        c.handshake().fin(Server);
        expect(&c, "ShAf", ConnState::S3);

        let mut c = Conversation::v4();
        c.syn(Client).fin(Client);
        expect(&c, "SF", ConnState::Sh);

        let mut c = unlikely_server();
        c.syn_ack(Server).fin(Server);
        expect(&c, "hf", ConnState::Shr);

        let mut c = Conversation::v4();
        c.data(Client, 10).data(Server, 10);
        expect(&c, "Dd", ConnState::Oth);
    }

    #[test]
    fn rstos0_pattern_matches_zeeks() {
        assert!(originator_syn_then_rst("SR"));
        assert!(originator_syn_then_rst("^SR"));
        assert!(originator_syn_then_rst("SaR"));
        assert!(originator_syn_then_rst("SdR"));
        assert!(!originator_syn_then_rst("SAR"));
        assert!(!originator_syn_then_rst("SaFR"));
        assert!(!originator_syn_then_rst("R"));
        assert!(!originator_syn_then_rst("S"));
    }

    #[test]
    fn fin_with_rst_is_i_and_resets_the_sender() {
        let mut c = Conversation::v4();
        c.handshake().data(Client, 100);
        c.send(
            Client,
            rstwatch_common::packet::tcp_flags::FIN | rstwatch_common::packet::tcp_flags::RST,
            0,
        );
        expect(&c, "ShADI", ConnState::Rsto);
    }

    #[test]
    fn a_history_longer_than_the_kernel_keeps_ends_with_a_plus() {
        let mut c = Conversation::v4();
        c.handshake();
        for _ in 0..12 {
            c.data(Client, 10).fin(Client);
        }
        expect(&c, "ShADFFFFFFFFFFFF", ConnState::S2);
        c.data(Client, 10).fin(Client);
        expect(&c, "ShADFFFFFFFFFFFF+", ConnState::S2);
    }

    #[test]
    fn repeated_fins_and_rsts_replay_through_the_state_machine() {
        let mut c = Conversation::v4();
        c.handshake().data(Client, 100).fin(Client).rst(Client);
        expect(&c, "ShADFR", ConnState::Rsto);
        c.fin(Server);
        expect(&c, "ShADFRf", ConnState::Sf);
    }
}
