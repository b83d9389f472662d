//! What becomes of a packet whose flow the flow table does not hold: decided here once, for
//! the kernel programs (`rstwatch-ebpf/src/track.rs`) and for the capture replay
//! (`rstwatch/src/offline/replay.rs`), which each carry the decision out with their own storage.
//!
//! A RST creates no flow: it is a follow-up of a recent RST of its flow; or, beyond the
//! per-second budget of such RSTs sent one by one, it is counted in its storm; or else it is
//! reported alone (there is no state to send) and remembered for its follow-ups. Any other
//! packet is first a follow-up of a recent RST of its flow when it carries payload from that
//! RST's sender, then starts its flow, unless it is a bare SYN beyond the half-open budget.

use crate::{
    budget::RateWindow,
    packet::{tcp_flags, PacketMeta},
    settings::Settings,
};

/// An unknown-flow RST, kept so that what follows it within the grace period is reported as
/// its follow-ups. The kernel keeps a few per CPU, each with its flow's key; the replay one
/// per flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecentRst {
    /// When it was seen; 0 in a slot never used.
    pub rst_ns: u64,
    /// Its direction in its flow.
    pub rst_dir: u8,
    /// Follow-ups sent for it.
    pub followups: u8,
    pub _pad: [u8; 6],
}

impl RecentRst {
    /// A RST seen at `now` in direction `dir` of its flow.
    #[inline(always)]
    pub const fn new(now: u64, dir: u8) -> Self {
        Self {
            rst_ns: now,
            rst_dir: dir,
            followups: 0,
            _pad: [0; 6],
        }
    }

    /// Whether what comes at `now` is still within its grace period.
    #[inline(always)]
    pub const fn within_grace(&self, now: u64, settings: &Settings) -> bool {
        self.rst_ns != 0 && now.saturating_sub(self.rst_ns) <= settings.grace_ns
    }

    /// Takes one follow-up from the limit: false once `followup_limit` were sent. The count
    /// is a u8: a limit above 255 means 255, not a counter that wraps.
    #[inline(always)]
    pub fn take_followup(&mut self, settings: &Settings) -> bool {
        if (self.followups as u32) < settings.followup_limit.min(u8::MAX as u32) {
            self.followups += 1;
            true
        } else {
            false
        }
    }

    /// Whether `pkt`, sent in direction `dir` of the flow, is payload from the RST's sender:
    /// evidence on the RST, a follow-up.
    #[inline(always)]
    pub const fn followed_by_data(&self, dir: u8, pkt: &PacketMeta) -> bool {
        dir == self.rst_dir && pkt.payload_len > 0
    }
}

/// The per-second budgets of what packets of flows the table does not hold may cost one by
/// one. The kernel keeps them per CPU, the replay once.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budgets {
    /// Unknown-flow RSTs sent one by one (`Settings::unknown_rsts_per_sec`).
    pub unknown_rsts: RateWindow,
    /// Flows of SYNs started (`Settings::half_open_per_sec`).
    pub half_open: RateWindow,
}

/// What becomes of a packet whose flow the table does not hold (`unheld`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unheld {
    /// A RST after a recent RST of its flow: that RST's follow-up, sent as
    /// `record::FOLLOW_UP` unless `RecentRst::take_followup` refuses
    /// (`Counter::FollowUpsSuppressed`).
    RstFollowUp,
    /// A RST beyond the budget of unknown-flow RSTs: counted in its storm
    /// (`Counter::RstsAggregated`).
    RstInStorm,
    /// A RST reported alone, as `record::RST_NO_STATE`, and remembered (`RecentRst::new`).
    RstAlone,
    /// Any other packet: first a follow-up of the recent RST when `data_followup` (as
    /// `RstFollowUp`), then its flow as `start` says.
    Packet { data_followup: bool, start: Start },
}

/// Whether a packet that is not a RST starts its flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// A bare SYN, within the budget: it only opens its flow, which never takes an
    /// established flow's slot.
    Opening,
    /// Any other packet: its flow starts with it, mid-conversation.
    Midstream,
    /// A bare SYN beyond the budget (`Counter::SynsUntracked`): not tracked at all, its flow
    /// starts at its next packet. A SYN alone proves nothing about its sender, and a flood
    /// spoofs millions.
    Untracked,
}

/// What becomes of `pkt`, sent in direction `dir` of a flow the table does not hold, at
/// `now`: `recent` is the flow's recent RST when one is within its grace period, `budgets`
/// the budgets the packet may take from.
#[inline(always)]
pub fn unheld(
    pkt: &PacketMeta,
    dir: u8,
    recent: Option<&RecentRst>,
    budgets: &mut Budgets,
    now: u64,
    settings: &Settings,
) -> Unheld {
    if pkt.is_rst() {
        return if recent.is_some() {
            Unheld::RstFollowUp
        } else if !budgets
            .unknown_rsts
            .take(now, settings.unknown_rsts_per_sec)
        {
            Unheld::RstInStorm
        } else {
            Unheld::RstAlone
        };
    }
    let data_followup = match recent {
        Some(recent) => recent.followed_by_data(dir, pkt),
        None => false,
    };
    let bare_syn = pkt.has(tcp_flags::SYN) && !pkt.has(tcp_flags::ACK);
    let start = if !bare_syn {
        Start::Midstream
    } else if budgets.half_open.take(now, settings.half_open_per_sec) {
        Start::Opening
    } else {
        Start::Untracked
    };
    Unheld::Packet {
        data_followup,
        start,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{
        ipv4_mapped,
        tcp_flags::{ACK, PSH, RST, SYN},
        FAMILY_IPV4,
    };

    const SEC: u64 = 1_000_000_000;

    fn packet(flags: u8, payload_len: u16) -> PacketMeta {
        PacketMeta {
            src_addr: ipv4_mapped([198, 18, 1, 2]),
            dst_addr: ipv4_mapped([198, 18, 0, 1]),
            src_port: 443,
            dst_port: 40_000,
            tcp_flags: flags,
            payload_len,
            family: FAMILY_IPV4,
            ..PacketMeta::default()
        }
    }

    fn settings() -> Settings {
        Settings {
            grace_ns: SEC,
            followup_limit: 2,
            unknown_rsts_per_sec: 2,
            half_open_per_sec: 1,
            ..Settings::default()
        }
    }

    #[test]
    fn a_recent_rst_lasts_its_grace_period_and_a_slot_never_used_is_none() {
        let settings = settings();
        let recent = RecentRst::new(10 * SEC, 1);
        assert!(recent.within_grace(10 * SEC, &settings));
        assert!(recent.within_grace(11 * SEC, &settings), "the last instant");
        assert!(!recent.within_grace(11 * SEC + 1, &settings));
        assert!(
            recent.within_grace(9 * SEC, &settings),
            "a clock behind it: within"
        );
        assert!(!RecentRst::default().within_grace(1, &settings), "unused");
    }

    #[test]
    fn follow_ups_stop_at_the_limit_and_a_limit_above_255_means_255() {
        let mut settings = settings();
        let mut recent = RecentRst::new(SEC, 0);
        assert!(recent.take_followup(&settings));
        assert!(recent.take_followup(&settings));
        assert!(!recent.take_followup(&settings), "the limit is 2");
        assert_eq!(recent.followups, 2);
        settings.followup_limit = 1000;
        let mut recent = RecentRst::new(SEC, 0);
        let taken = (0..1000)
            .filter(|_| recent.take_followup(&settings))
            .count();
        assert_eq!((taken, recent.followups), (255, 255), "no wrap");
    }

    #[test]
    fn only_payload_from_the_rsts_sender_follows_it() {
        let recent = RecentRst::new(SEC, 1);
        assert!(recent.followed_by_data(1, &packet(PSH | ACK, 10)));
        assert!(
            !recent.followed_by_data(0, &packet(PSH | ACK, 10)),
            "other way"
        );
        assert!(!recent.followed_by_data(1, &packet(ACK, 0)), "no payload");
    }

    #[test]
    fn an_unheld_rst_follows_a_recent_one_else_is_reported_within_its_budget_else_stormed() {
        let settings = settings();
        let mut budgets = Budgets::default();
        let rst = packet(RST, 0);
        let recent = RecentRst::new(SEC, 0);
        let now = 5 * SEC;
        let fate =
            |recent, budgets: &mut Budgets, now| unheld(&rst, 0, recent, budgets, now, &settings);
        assert_eq!(fate(None, &mut budgets, now), Unheld::RstAlone);
        assert_eq!(
            fate(Some(&recent), &mut budgets, now),
            Unheld::RstFollowUp,
            "takes nothing from the budget"
        );
        assert_eq!(fate(None, &mut budgets, now), Unheld::RstAlone);
        assert_eq!(
            fate(None, &mut budgets, now),
            Unheld::RstInStorm,
            "2 a second"
        );
        assert_eq!(fate(Some(&recent), &mut budgets, now), Unheld::RstFollowUp);
        assert_eq!(fate(None, &mut budgets, now + SEC), Unheld::RstAlone);
        assert_eq!(budgets.half_open, RateWindow::default(), "untouched");
    }

    #[test]
    fn other_packets_follow_a_recent_rst_with_data_and_start_their_flow_unless_a_syn_is_over_budget(
    ) {
        let settings = settings();
        let mut budgets = Budgets::default();
        let recent = RecentRst::new(SEC, 0);
        let now = 5 * SEC;
        let mut fate =
            |pkt: PacketMeta, recent| unheld(&pkt, 0, recent, &mut budgets, now, &settings);
        let packet_of = |data_followup, start| Unheld::Packet {
            data_followup,
            start,
        };
        assert_eq!(
            fate(packet(PSH | ACK, 10), Some(&recent)),
            packet_of(true, Start::Midstream)
        );
        assert_eq!(
            fate(packet(PSH | ACK, 10), None),
            packet_of(false, Start::Midstream)
        );
        assert_eq!(
            fate(packet(ACK, 0), Some(&recent)),
            packet_of(false, Start::Midstream)
        );
        assert_eq!(fate(packet(SYN, 0), None), packet_of(false, Start::Opening));
        assert_eq!(
            fate(packet(SYN, 0), None),
            packet_of(false, Start::Untracked),
            "one SYN a second"
        );
        assert_eq!(
            fate(packet(SYN | ACK, 0), None),
            packet_of(false, Start::Midstream),
            "a SYN-ACK is no bare SYN"
        );
        assert_eq!(
            fate(packet(SYN, 4), Some(&recent)),
            packet_of(true, Start::Untracked),
            "a SYN with data follows the RST though untracked"
        );
        assert_eq!(budgets.unknown_rsts, RateWindow::default(), "untouched");
    }
}
