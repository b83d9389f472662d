//! Holds each RST briefly so that what follows it (data from its claimed sender, a second RST
//! with another sequence number) is already part of the verdict when it is printed.

use std::collections::{HashMap, VecDeque};

use rstwatch_common::{EventKind, FlowKey, RstEvent};

/// A RST waiting for its follow-ups.
#[derive(Clone, Debug)]
pub struct Held {
    pub event: RstEvent,
    pub followups: Vec<RstEvent>,
}

/// What happened to an event offered to the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    Held,
    AttachedToHeld,
    /// A follow-up whose RST was already released (or never arrived): it cannot change a
    /// verdict any more, and is counted.
    LateFollowUp,
    /// Not an event kind this version knows: counted, never guessed at.
    UnknownKind,
}

/// RSTs in arrival order; every entry waits the same time, so the oldest is always released
/// first and a FIFO is enough.
pub struct HoldQueue {
    hold_ns: u64,
    queue: VecDeque<Held>,
    /// Sequence number of `queue[0]`.
    front_seq: u64,
    /// Flow -> sequence number of its latest held RST.
    by_flow: HashMap<FlowKey, u64>,
}

impl HoldQueue {
    pub fn new(hold_ns: u64) -> Self {
        Self {
            hold_ns,
            queue: VecDeque::new(),
            front_seq: 0,
            by_flow: HashMap::new(),
        }
    }

    pub fn offer(&mut self, event: RstEvent) -> Offer {
        match EventKind::from_u8(event.kind) {
            Some(EventKind::Rst) => {
                let seq = self.front_seq + self.queue.len() as u64;
                self.by_flow.insert(event.key, seq);
                self.queue.push_back(Held {
                    event,
                    followups: Vec::new(),
                });
                Offer::Held
            }
            Some(EventKind::FollowUp) => {
                let held = self
                    .by_flow
                    .get(&event.key)
                    .and_then(|seq| self.queue.get_mut((seq - self.front_seq) as usize));
                match held {
                    Some(held) => {
                        held.followups.push(event);
                        Offer::AttachedToHeld
                    }
                    None => Offer::LateFollowUp,
                }
            }
            None => Offer::UnknownKind,
        }
    }

    /// Takes the RSTs whose hold ended by `now_ns` (kernel monotonic time).
    pub fn release(&mut self, now_ns: u64) -> Vec<Held> {
        let mut due = Vec::new();
        while let Some(front) = self.queue.front() {
            if front.event.ts_ns.saturating_add(self.hold_ns) > now_ns {
                break;
            }
            due.push(self.pop_front());
        }
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

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    fn pop_front(&mut self) -> Held {
        let held = self.queue.pop_front().expect("caller checked non-empty");
        if self.by_flow.get(&held.event.key) == Some(&self.front_seq) {
            self.by_flow.remove(&held.event.key);
        }
        self.front_seq += 1;
        held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, port: u16, ts_ns: u64) -> RstEvent {
        let mut event = RstEvent {
            kind: kind as u8,
            ts_ns,
            ..RstEvent::default()
        };
        event.key.port = [port, 80];
        event
    }

    #[test]
    fn a_rst_waits_for_its_hold_then_is_released_with_its_followups() {
        let mut queue = HoldQueue::new(100);
        assert_eq!(queue.offer(event(EventKind::Rst, 1000, 10)), Offer::Held);
        assert_eq!(
            queue.offer(event(EventKind::FollowUp, 1000, 50)),
            Offer::AttachedToHeld
        );
        assert!(queue.release(109).is_empty());
        let released = queue.release(110);
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].followups.len(), 1);
        assert!(queue.is_empty());
    }

    #[test]
    fn followups_go_to_their_own_flow_only() {
        let mut queue = HoldQueue::new(100);
        queue.offer(event(EventKind::Rst, 1000, 10));
        queue.offer(event(EventKind::Rst, 2000, 20));
        queue.offer(event(EventKind::FollowUp, 2000, 30));
        let released = queue.release_all();
        assert_eq!(released[0].followups.len(), 0);
        assert_eq!(released[1].followups.len(), 1);
    }

    #[test]
    fn a_followup_after_its_rst_was_released_is_late() {
        let mut queue = HoldQueue::new(100);
        queue.offer(event(EventKind::Rst, 1000, 10));
        assert_eq!(queue.release(200).len(), 1);
        assert_eq!(
            queue.offer(event(EventKind::FollowUp, 1000, 210)),
            Offer::LateFollowUp
        );
        assert_eq!(
            queue.offer(event(EventKind::FollowUp, 3000, 210)),
            Offer::LateFollowUp
        );
    }

    #[test]
    fn a_second_rst_on_a_flow_collects_the_later_followups() {
        let mut queue = HoldQueue::new(100);
        queue.offer(event(EventKind::Rst, 1000, 10));
        queue.offer(event(EventKind::Rst, 1000, 20));
        queue.offer(event(EventKind::FollowUp, 1000, 30));
        assert_eq!(queue.release(110).len(), 1);
        assert_eq!(queue.len(), 1);
        let second = queue.release(120);
        assert_eq!(second[0].followups.len(), 1);
    }

    #[test]
    fn unknown_kinds_are_reported_not_guessed() {
        let mut queue = HoldQueue::new(100);
        let mut odd = event(EventKind::Rst, 1000, 10);
        odd.kind = 99;
        assert_eq!(queue.offer(odd), Offer::UnknownKind);
        assert!(queue.is_empty());
    }
}
