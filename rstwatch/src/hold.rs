//! Holds each RST briefly so that what follows it (data from its claimed sender, more RSTs from
//! it) is already part of the verdict when it is printed, and so that the connection's state is
//! read as of the end of the hold.
//!
//! Every RST gets a report of its own unless it folds into one still held: a RST from the same
//! claimed sender while that sender's report on the flow is held is a follow-up of it. A RST
//! from the other side, or one arriving after the hold, is reported on its own and linked to
//! the connection's first report (`Held::related_to`), so that one key groups them all.

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
}

impl Held {
    /// The flow's state at the end of the hold, from `flows`, if the entry there is still the
    /// connection this RST belongs to (its first RST is the same); `None` otherwise, and for a
    /// RST whose flow has no entry at all.
    pub fn state_at_hold_end(&self, flows: &impl FlowStateSource) -> Option<FlowState> {
        let first_rst_ns = if self.event.flow.has_rst() {
            self.event.flow.rst_ns()
        } else {
            self.event.ts_ns
        };
        // Compared as the flow keeps its times: a RST long after the flow's start is kept to
        // the µs, ms or s.
        flows
            .current(&self.event.key)
            .filter(|flow| flow.has_rst() && flow.rst_ns() == flow.as_kept(first_rst_ns))
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
    /// Payload from a RST's sender after that RST's report was released: it cannot change a
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
        if kind == EventKind::FollowUp {
            let held = entry.held[side]
                .and_then(|seq| self.queue.get_mut((seq - self.front_seq) as usize));
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
        });
        Offer::Held
    }

    /// Takes the RSTs whose hold ended by `now_ns` (kernel monotonic time).
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
            .filter(|front| front.event.ts_ns.saturating_add(self.hold_ns) <= now_ns)
    }

    /// The RST `ahead` places behind the oldest, if its hold ended by `now_ns` too: the
    /// release step looks ahead to what it reads next.
    pub fn due_ahead(&self, now_ns: u64, ahead: usize) -> Option<&Held> {
        self.queue
            .get(ahead)
            .filter(|held| held.event.ts_ns.saturating_add(self.hold_ns) <= now_ns)
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
        let mut table = HashMap::new();
        assert_eq!(held.state_at_hold_end(&table), None, "no entry");
        let same = flow_of(RST, &[10, 20, 30]);
        table.insert(held.event.key, same);
        assert_eq!(held.state_at_hold_end(&table), Some(same));
        table.insert(held.event.key, flow_of(SYN, &[40]));
        assert_eq!(held.state_at_hold_end(&table), None, "started over");
        table.insert(held.event.key, flow_of(RST, &[11]));
        assert_eq!(held.state_at_hold_end(&table), None, "another RST");
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
        assert_eq!(held.state_at_hold_end(&table), Some(after));
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
