//! Holds each RST briefly so that what follows it (data from its claimed sender, more RSTs from
//! it) is already part of the verdict when it is printed, and so that the connection's state is
//! read as of the end of the hold.
//!
//! Every RST gets a report of its own unless it folds into one still held: a RST from the same
//! claimed sender within that sender's held report's hold is a follow-up of it. A RST from the
//! other side, or one from the hold's end on, is reported on its own and linked to the
//! connection's first report (`Held::related_to`), so that one key groups them all.
//!
//! The hold's end is one instant for both `watch` and `explain`: a RST seen at `ts` is held
//! for the packets seen before `ts + hold`, and a packet seen at `ts + hold` or later is no part
//! of its report, neither as a follow-up nor in the connection's state. `explain` releases a
//! report before it steps the first packet past the hold's end, so its table is that state.
//! `watch` reads the kernel's table when it releases the report, a little after the hold's
//! end, when later packets may already be in the entry; each direction's last packet time
//! says whether one is (`Held::state_at_hold_end`). The entry cannot be wound back, and a
//! packet that sent no event left no trace of the state before it; but a RST sends its event
//! with the state just before it, so the connection's first RST past the hold's end gives the
//! state at the end when no packet came between (`Held::pinned`). Failing both, the report
//! carries the state right after the connection's latest RST within the hold, which is the
//! state at the hold's end unless packets without an event came after that RST: `watch`
//! counts the reports it gives that state with an entry past the end
//! (`states_past_hold_end`); `explain`'s table never holds a packet past the end.

use std::collections::{hash_map::Entry, HashMap, VecDeque};

use foldhash::HashMap as FastMap;

use rstwatch_common::{EventKind, FlowKey, FlowState, RstEvent};

use crate::event::FlowSide;

/// A RST waiting for its follow-ups.
#[derive(Clone, Debug)]
pub struct Held {
    pub event: RstEvent,
    pub followups: Vec<RstEvent>,
    /// Kernel time (`RstEvent::ts_ns`) of the RST of the connection's first report, when this
    /// one follows it.
    pub related_to: Option<u64>,
    /// Kernel time the hold ends: packets from then on are no part of the report.
    pub hold_end_ns: u64,
    /// The connection's latest RST seen before the hold's end when it is not this one: a
    /// follow-up, or the other side's. Boxed, as `pinned`: most reports never have one, and
    /// a held report stays small.
    latest_rst: Option<Box<RstEvent>>,
    /// The connection's state at the hold's end, from the event of its first RST past the end
    /// when no packet came between (the event carries the state just before its RST).
    pinned: Option<Box<FlowState>>,
}

/// The connection's state a report carries, as the release step found it.
#[derive(Clone, Copy, Debug)]
pub enum AtHoldEnd<'a> {
    /// The state at the hold's end: the table's entry, holding no packet past it, or the
    /// state a later RST's event pinned.
    Exact(FlowState),
    /// The state right after this RST, the connection's latest before the hold's end. The
    /// table held no entry of the connection, or (`entry_past_end`) one that had already taken
    /// packets past the hold's end and no event pinned the state before them.
    AfterRst {
        rst: &'a RstEvent,
        entry_past_end: bool,
    },
}

impl Held {
    /// The connection's state at the hold's end (the module's rule): `flows`' entry if it is
    /// still this connection and holds no packet past the end, else the state a later RST
    /// pinned, else the state right after the connection's latest RST within the hold.
    pub fn state_at_hold_end(&self, flows: &impl FlowStateSource) -> AtHoldEnd<'_> {
        let entry = flows
            .current(&self.event.key)
            .filter(|flow| self.same_connection(flow));
        match (entry, &self.pinned) {
            (Some(flow), _) if flow.last_ns() < self.hold_end_ns => AtHoldEnd::Exact(flow),
            (_, Some(pinned)) => AtHoldEnd::Exact(**pinned),
            (entry, None) => AtHoldEnd::AfterRst {
                rst: self.latest_rst.as_deref().unwrap_or(&self.event),
                entry_past_end: entry.is_some(),
            },
        }
    }

    /// `flow` is this RST's connection: its first RST is the same. Compared as the flow keeps
    /// its times: a RST long after the flow's start is kept to the µs, ms or s.
    fn same_connection(&self, flow: &FlowState) -> bool {
        let first_rst_ns = if self.event.flow.has_rst() {
            self.event.flow.rst_ns()
        } else {
            self.event.ts_ns
        };
        flow.has_rst() && flow.rst_ns() == flow.as_kept(first_rst_ns)
    }

    /// Takes what `rst`, a RST of this report's flow that carries the flow's state, tells of
    /// the connection's state at the hold's end.
    fn note_rst(&mut self, rst: &RstEvent) {
        if !self.same_connection(&rst.flow) {
            return;
        }
        if rst.ts_ns < self.hold_end_ns {
            let latest = self.latest_rst.as_deref().unwrap_or(&self.event);
            if rst.ts_ns >= latest.ts_ns {
                self.latest_rst = Some(Box::new(*rst));
            }
        } else if self.pinned.is_none() && rst.flow.last_ns() < self.hold_end_ns {
            self.pinned = Some(Box::new(rst.flow));
        }
    }
}

/// Where the release step reads a flow's current state: the kernel's flow table when
/// watching, the replay's own table when reading a capture.
pub trait FlowStateSource {
    fn current(&self, key: &FlowKey) -> Option<FlowState>;

    /// `key`'s state is read soon: a source in memory that others write may start bringing
    /// it in.
    fn prefetch(&self, _key: &FlowKey) {}
}

impl<F: Fn(&FlowKey) -> Option<FlowState>> FlowStateSource for F {
    fn current(&self, key: &FlowKey) -> Option<FlowState> {
        self(key)
    }
}

impl FlowStateSource for HashMap<FlowKey, FlowState> {
    fn current(&self, key: &FlowKey) -> Option<FlowState> {
        self.get(key).copied()
    }
}

/// What happened to an event offered to the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// A RST to be reported on its own.
    Held,
    /// A follow-up folded into a held report of the same claimed sender.
    AttachedToHeld,
    /// Payload from a RST's sender past the end of that RST's hold: it cannot change a
    /// verdict any more, and is counted. (A RST is never only counted.)
    LateDataFollowUp,
    /// Not an event kind this version knows: counted, never guessed at.
    UnknownKind,
}

/// The reports on a flow's connection, for linking the RSTs that follow them.
#[derive(Clone, Copy, Debug)]
struct Reported {
    /// The RST of the connection's first report: what later reports are linked to.
    first_rst_ns: u64,
    /// The RST of its latest report: links last `link_ns` from here.
    last_rst_ns: u64,
    /// `FlowState::syn_ns` of the report's snapshot: which connection it was.
    syn_ns: u64,
}

/// What the queue knows of one flow: its senders' held RSTs and its connection's reports.
/// Gone once both are.
#[derive(Clone, Copy, Debug, Default)]
struct FlowEntry {
    /// By the claimed sender's side (`FlowSide::index`): sequence number of its latest held
    /// RST.
    held: [Option<u64>; 2],
    /// The connection's reports, held or released, the latest within `link_ns`.
    reported: Option<Reported>,
}

impl FlowEntry {
    fn is_empty(&self) -> bool {
        self.held == [None, None] && self.reported.is_none()
    }
}

/// RSTs in arrival order; every entry waits the same time, so the oldest is always released
/// first and a FIFO is enough.
pub struct HoldQueue {
    hold_ns: u64,
    /// How long a report stays linkable: RSTs this much later are not linked to it.
    link_ns: u64,
    queue: VecDeque<Held>,
    /// Sequence number of `queue[0]`.
    front_seq: u64,
    /// Flow -> its held RSTs and reports: one entry, found with one hash of its key.
    flows: FastMap<FlowKey, FlowEntry>,
    /// Reports by age, to forget them in order.
    reported_order: VecDeque<(u64, FlowKey)>,
}

impl HoldQueue {
    /// `link_ns` should be at least the kernel's grace period: RSTs within it are sent as
    /// follow-ups of the same connection.
    pub fn new(hold_ns: u64, link_ns: u64) -> Self {
        Self {
            hold_ns,
            link_ns,
            queue: VecDeque::new(),
            front_seq: 0,
            flows: FastMap::default(),
            reported_order: VecDeque::new(),
        }
    }

    pub fn offer(&mut self, event: RstEvent) -> Offer {
        let kind = match EventKind::from_u8(event.kind) {
            Some(kind) => kind,
            None => return Offer::UnknownKind,
        };
        let side = FlowSide::of(event.dir).index();
        let entry = self.flows.entry(event.key).or_default();
        if event.pkt.is_rst() && event.flow.packets() != 0 {
            for seq in entry.held.into_iter().flatten() {
                if let Some(held) = self.queue.get_mut((seq - self.front_seq) as usize) {
                    held.note_rst(&event);
                }
            }
        }
        if kind == EventKind::FollowUp {
            let held = entry.held[side]
                .and_then(|seq| self.queue.get_mut((seq - self.front_seq) as usize))
                .filter(|held| event.ts_ns < held.hold_end_ns);
            match held {
                Some(held) => {
                    held.followups.push(event);
                    return Offer::AttachedToHeld;
                }
                None if !event.pkt.is_rst() => {
                    if entry.is_empty() {
                        self.flows.remove(&event.key);
                    }
                    return Offer::LateDataFollowUp;
                }
                None => {}
            }
        }
        let related_to = entry
            .reported
            .and_then(|earlier| earlier_report(kind, &event, &earlier, self.link_ns));
        let seq = self.front_seq + self.queue.len() as u64;
        entry.held[side] = Some(seq);
        entry.reported = Some(Reported {
            first_rst_ns: related_to.unwrap_or(event.ts_ns),
            last_rst_ns: event.ts_ns,
            syn_ns: event.flow.syn_ns(),
        });
        self.reported_order.push_back((event.ts_ns, event.key));
        self.queue.push_back(Held {
            event,
            followups: Vec::new(),
            related_to,
            hold_end_ns: event.ts_ns.saturating_add(self.hold_ns),
            latest_rst: None,
            pinned: None,
        });
        Offer::Held
    }

    /// Takes the RSTs whose hold ended by `now_ns` (kernel monotonic time): those whose
    /// report can take no packet seen from `now_ns` on.
    pub fn release(&mut self, now_ns: u64) -> Vec<Held> {
        let mut due = Vec::new();
        while self.next_due(now_ns).is_some() {
            due.push(self.pop_front());
        }
        self.forget_released(now_ns);
        due
    }

    /// Takes everything, e.g. on shutdown.
    pub fn release_all(&mut self) -> Vec<Held> {
        let mut all = Vec::with_capacity(self.queue.len());
        while !self.queue.is_empty() {
            all.push(self.pop_front());
        }
        all
    }

    /// The oldest RST, in place, if its hold ended by `now_ns` (kernel monotonic time): the
    /// release step reads it where it is held, then `drop_front` lets it go. `u64::MAX` takes
    /// every RST, as at the end of a run.
    pub fn next_due(&self, now_ns: u64) -> Option<&Held> {
        self.queue
            .front()
            .filter(|front| front.hold_end_ns <= now_ns)
    }

    /// The RST `ahead` places behind the oldest, if its hold ended by `now_ns` too: the
    /// release step looks ahead to what it reads next.
    pub fn due_ahead(&self, now_ns: u64, ahead: usize) -> Option<&Held> {
        self.queue
            .get(ahead)
            .filter(|held| held.hold_end_ns <= now_ns)
    }

    /// Lets the oldest RST go, once released.
    pub fn drop_front(&mut self) {
        self.pop_front();
    }

    /// After a release at `now_ns`: forgets the reports no later RST can be linked to.
    pub fn forget_released(&mut self, now_ns: u64) {
        self.forget_reports_before(now_ns.saturating_sub(self.link_ns));
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    fn pop_front(&mut self) -> Held {
        let held = self.queue.pop_front().expect("caller checked non-empty");
        let side = FlowSide::of(held.event.dir).index();
        if let Entry::Occupied(mut entry) = self.flows.entry(held.event.key) {
            if entry.get().held[side] == Some(self.front_seq) {
                entry.get_mut().held[side] = None;
                if entry.get().is_empty() {
                    entry.remove();
                }
            }
        }
        self.front_seq += 1;
        held
    }

    fn forget_reports_before(&mut self, cutoff_ns: u64) {
        while let Some(&(ts_ns, key)) = self.reported_order.front() {
            if ts_ns >= cutoff_ns {
                break;
            }
            self.reported_order.pop_front();
            if let Entry::Occupied(mut entry) = self.flows.entry(key) {
                if entry.get().reported.is_some_and(|r| r.last_rst_ns == ts_ns) {
                    entry.get_mut().reported = None;
                    if entry.get().is_empty() {
                        entry.remove();
                    }
                }
            }
        }
    }
}

/// The first report of the connection a RST reported on its own belongs to, given the
/// flow's `earlier` reports: for a follow-up, the kernel kept the connection; a `Rst` belongs
/// to the same connection unless a new SYN opened another (a retried refused connection is a
/// new attempt).
fn earlier_report(
    kind: EventKind,
    event: &RstEvent,
    earlier: &Reported,
    link_ns: u64,
) -> Option<u64> {
    let same_connection = kind == EventKind::FollowUp
        || event.flow.syn_ns() == 0
        || event.flow.syn_ns() == earlier.syn_ns;
    let recent = event.ts_ns.saturating_sub(earlier.last_rst_ns) <= link_ns;
    (same_connection && recent).then_some(earlier.first_rst_ns)
}

#[cfg(test)]
mod tests {
    use rstwatch_common::{
        packet::tcp_flags::{ACK, PSH, RST, SYN},
        PacketMeta, Settings,
    };

    use super::*;

    fn event(kind: EventKind, port: u16, dir: u8, flags: u8, ts_ns: u64) -> RstEvent {
        let mut event = RstEvent {
            kind: kind as u8,
            ts_ns,
            dir,
            ..RstEvent::default()
        };
        event.key.port = [port, 80];
        event.pkt.tcp_flags = flags;
        event.pkt.payload_len = if flags & RST == 0 { 10 } else { 0 };
        event
    }

    /// A flow whose packets, all from direction 0, had `flags` and came at `times`.
    fn flow_of(flags: u8, times: &[u64]) -> FlowState {
        let pkt = PacketMeta {
            tcp_flags: flags,
            ..PacketMeta::default()
        };
        let mut flow = FlowState::new(&pkt, 0, &|_| false);
        let settings = Settings {
            grace_ns: u64::MAX,
            ..Settings::default()
        };
        for &now in times {
            flow.step(&pkt, 0, now, &settings, &|_| false, |_, _| {});
        }
        flow
    }

    /// What a test compares of `AtHoldEnd`: the exact state, or the RST (by time) the state
    /// is taken right after and whether the entry had moved past the end.
    #[derive(Debug, PartialEq)]
    enum Found {
        Exact(FlowState),
        AfterRst { ts_ns: u64, entry_past_end: bool },
    }

    fn found(at: AtHoldEnd<'_>) -> Found {
        match at {
            AtHoldEnd::Exact(flow) => Found::Exact(flow),
            AtHoldEnd::AfterRst {
                rst,
                entry_past_end,
            } => Found::AfterRst {
                ts_ns: rst.ts_ns,
                entry_past_end,
            },
        }
    }

    fn rst(port: u16, dir: u8, ts_ns: u64) -> RstEvent {
        event(EventKind::Rst, port, dir, RST, ts_ns)
    }

    fn followup_rst(port: u16, dir: u8, ts_ns: u64) -> RstEvent {
        event(EventKind::FollowUp, port, dir, RST, ts_ns)
    }

    fn followup_data(port: u16, dir: u8, ts_ns: u64) -> RstEvent {
        event(EventKind::FollowUp, port, dir, PSH | ACK, ts_ns)
    }

    #[test]
    fn a_rst_waits_for_its_hold_then_is_released_with_its_followups() {
        let mut queue = HoldQueue::new(100, 1000);
        assert_eq!(queue.offer(rst(1000, 1, 10)), Offer::Held);
        assert_eq!(
            queue.offer(followup_data(1000, 1, 50)),
            Offer::AttachedToHeld
        );
        assert_eq!(
            queue.offer(followup_rst(1000, 1, 60)),
            Offer::AttachedToHeld
        );
        assert!(queue.release(109).is_empty());
        let released = queue.release(110);
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].followups.len(), 2);
        assert_eq!(released[0].related_to, None);
        assert!(queue.is_empty());
    }

    #[test]
    fn followups_go_to_their_own_flow_only() {
        let mut queue = HoldQueue::new(100, 1000);
        queue.offer(rst(1000, 1, 10));
        queue.offer(rst(2000, 1, 20));
        queue.offer(followup_data(2000, 1, 30));
        let released = queue.release_all();
        assert_eq!(released[0].followups.len(), 0);
        assert_eq!(released[1].followups.len(), 1);
    }

    #[test]
    fn the_other_sides_rst_is_reported_on_its_own_linked_to_the_first() {
        let mut queue = HoldQueue::new(100, 1000);
        queue.offer(rst(1000, 1, 10));
        assert_eq!(queue.offer(followup_rst(1000, 0, 20)), Offer::Held);
        assert_eq!(
            queue.offer(followup_rst(1000, 1, 30)),
            Offer::AttachedToHeld,
            "the first sender's next RST still folds into its own held report"
        );
        let released = queue.release(200);
        assert_eq!(released.len(), 2);
        assert_eq!(released[0].followups.len(), 1);
        assert_eq!(released[1].event.dir, 0);
        assert_eq!(released[1].related_to, Some(10));
        assert!(released[1].followups.is_empty());
    }

    #[test]
    fn a_rst_after_the_hold_is_reported_on_its_own_late_data_is_counted() {
        let mut queue = HoldQueue::new(100, 1000);
        queue.offer(rst(1000, 1, 10));
        assert_eq!(queue.release(200).len(), 1);
        assert_eq!(
            queue.offer(followup_data(1000, 1, 210)),
            Offer::LateDataFollowUp
        );
        assert_eq!(queue.offer(followup_rst(1000, 1, 220)), Offer::Held);
        let released = queue.release(400);
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].related_to, Some(10));
        assert_eq!(
            queue.offer(followup_rst(1000, 1, 1200)),
            Offer::Held,
            "a report is linkable for link_ns after the RST"
        );
        assert_eq!(
            queue.release(1500)[0].related_to,
            Some(10),
            "linked to the connection's first report, for one key to group them"
        );
        assert_eq!(queue.offer(followup_rst(1000, 1, 3000)), Offer::Held);
        assert_eq!(queue.release(3200)[0].related_to, None);
    }

    #[test]
    fn a_new_connection_on_the_same_four_tuple_is_not_related() {
        let mut queue = HoldQueue::new(100, 1000);
        let mut first = rst(1000, 1, 10);
        first.flow = flow_of(SYN, &[5]);
        queue.offer(first);
        let mut retry = rst(1000, 1, 500);
        retry.flow = flow_of(SYN, &[490]);
        queue.offer(retry);
        let mut lost_state = rst(1000, 1, 600);
        lost_state.flow = flow_of(ACK, &[590]);
        assert_eq!(lost_state.flow.syn_ns(), 0);
        queue.offer(lost_state);
        let released = queue.release_all();
        let related: Vec<_> = released.iter().map(|h| h.related_to).collect();
        assert_eq!(related, [None, None, Some(500)]);
    }

    #[test]
    fn the_state_at_the_hold_end_is_the_same_connections_only() {
        let mut queue = HoldQueue::new(100, 1000);
        queue.offer(rst(1000, 1, 10));
        let held = queue.release_all().remove(0);
        let after_own_rst = Found::AfterRst {
            ts_ns: 10,
            entry_past_end: false,
        };
        let mut table = HashMap::new();
        assert_eq!(
            found(held.state_at_hold_end(&table)),
            after_own_rst,
            "no entry"
        );
        let same = flow_of(RST, &[10, 20, 30]);
        table.insert(held.event.key, same);
        assert_eq!(found(held.state_at_hold_end(&table)), Found::Exact(same));
        table.insert(held.event.key, flow_of(SYN, &[40]));
        assert_eq!(
            found(held.state_at_hold_end(&table)),
            after_own_rst,
            "started over"
        );
        table.insert(held.event.key, flow_of(RST, &[11]));
        assert_eq!(
            found(held.state_at_hold_end(&table)),
            after_own_rst,
            "another RST"
        );
    }

    #[test]
    fn an_entry_with_a_packet_from_the_hold_end_on_is_not_the_state_at_it() {
        let mut queue = HoldQueue::new(100, 1000);
        queue.offer(rst(1000, 1, 10));
        let held = queue.release_all().remove(0);
        assert_eq!(held.hold_end_ns, 110);
        let before_end = flow_of(RST, &[10, 109]);
        let table = HashMap::from([(held.event.key, before_end)]);
        assert_eq!(
            found(held.state_at_hold_end(&table)),
            Found::Exact(before_end)
        );
        let table = HashMap::from([(held.event.key, flow_of(RST, &[10, 109, 110]))]);
        assert_eq!(
            found(held.state_at_hold_end(&table)),
            Found::AfterRst {
                ts_ns: 10,
                entry_past_end: true
            }
        );
    }

    #[test]
    fn the_first_rst_past_the_hold_end_pins_the_state_at_it() {
        let mut queue = HoldQueue::new(100, 1000);
        queue.offer(rst(1000, 1, 10));
        let mut followup = followup_rst(1000, 1, 50);
        followup.flow = flow_of(RST, &[10, 40]);
        assert_eq!(queue.offer(followup), Offer::AttachedToHeld);
        let mut answer = followup_rst(1000, 0, 130);
        answer.flow = flow_of(RST, &[10, 40, 50]);
        assert_eq!(queue.offer(answer), Offer::Held);
        let released = queue.release_all();
        let table = HashMap::from([(released[0].event.key, flow_of(RST, &[10, 40, 50, 130]))]);
        assert_eq!(
            found(released[0].state_at_hold_end(&table)),
            Found::Exact(answer.flow),
            "the state just before the first RST past the end, no packet between"
        );
        assert_eq!(
            found(released[1].state_at_hold_end(&table)),
            Found::Exact(table[&released[1].event.key]),
            "the answer's own hold ends at 230"
        );
    }

    #[test]
    fn without_a_pin_the_state_is_that_after_the_connections_latest_rst_of_the_hold() {
        let mut queue = HoldQueue::new(100, 1000);
        queue.offer(rst(1000, 1, 10));
        let mut other_side = followup_rst(1000, 0, 60);
        other_side.flow = flow_of(RST, &[10, 40]);
        assert_eq!(queue.offer(other_side), Offer::Held);
        let mut past = followup_rst(1000, 0, 130);
        past.flow = flow_of(RST, &[10, 40, 60, 115]);
        queue.offer(past);
        let first = queue.release_all().remove(0);
        let table = HashMap::from([(first.event.key, flow_of(RST, &[10, 40, 60, 115, 130]))]);
        assert_eq!(
            found(first.state_at_hold_end(&table)),
            Found::AfterRst {
                ts_ns: 60,
                entry_past_end: true
            },
            "a packet at 115 sent no event: the latest state known is after the RST at 60"
        );
    }

    #[test]
    fn nothing_from_the_hold_end_on_folds_into_the_report() {
        let mut queue = HoldQueue::new(100, 1000);
        queue.offer(rst(1000, 1, 10));
        assert_eq!(
            queue.offer(followup_data(1000, 1, 109)),
            Offer::AttachedToHeld
        );
        assert_eq!(
            queue.offer(followup_data(1000, 1, 110)),
            Offer::LateDataFollowUp,
            "still held, but past its hold's end"
        );
        assert_eq!(queue.offer(followup_rst(1000, 1, 110)), Offer::Held);
        let released = queue.release_all();
        assert_eq!(released[0].followups.len(), 1);
        assert_eq!(released[1].related_to, Some(10));
    }

    #[test]
    fn the_state_at_the_hold_end_is_found_for_a_rst_long_after_the_flow_began() {
        let start = 1_000;
        let rst_ns = start + 3 * 3_600 * 1_000_000_000 + 123_456_789;
        let mut queue = HoldQueue::new(100, 1000);
        let mut late = rst(1000, 0, rst_ns);
        late.flow = flow_of(SYN, &[start]);
        queue.offer(late);
        let held = queue.release_all().remove(0);
        let mut after = flow_of(SYN, &[start]);
        let pkt = PacketMeta {
            tcp_flags: RST,
            ..PacketMeta::default()
        };
        after.step(&pkt, 0, rst_ns, &Settings::default(), &|_| false, |_, _| {});
        assert_ne!(after.rst_ns(), rst_ns, "kept to the ms three hours in");
        let table = HashMap::from([(held.event.key, after)]);
        assert_eq!(found(held.state_at_hold_end(&table)), Found::Exact(after));
    }

    #[test]
    fn unknown_kinds_are_reported_not_guessed() {
        let mut queue = HoldQueue::new(100, 1000);
        let mut odd = rst(1000, 1, 10);
        odd.kind = 99;
        assert_eq!(queue.offer(odd), Offer::UnknownKind);
        assert!(queue.is_empty());
    }
}
