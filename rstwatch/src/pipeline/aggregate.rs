//! Storm aggregation: during a reset storm, identical resets are folded into one report so a
//! SIEM receives a count instead of a flood.
//!
//! Two resets are identical when they share a `StormKey`: class, claimed sender, middlebox
//! verdict, VLAN, the originator's address and the responder's address and port. The
//! originator's port is left out on purpose: a client retrying against a closed or failing
//! service, or a load balancer cutting every connection of one client, uses a new ephemeral
//! port each time, and those are exactly the storms to fold.
//!
//! Per key and per window, the first `max_per_window` resets go out one by one; the rest are
//! folded into a single report (the first folded one, with `aggregate` set to the count and the
//! first/last times) that goes out when the window ends. Nothing is lost: every reset is either
//! sent or counted in an aggregate.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use foldhash::HashMap;

use crate::report::{Aggregate, ResetClass, ResetReport, Sender};

/// When to start folding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AggregateConfig {
    /// Resets per key per window that go out one by one.
    pub max_per_window: u32,
    pub window: Duration,
    /// Keys tracked at once; beyond that, resets with new keys go out unfolded (never lost).
    pub max_keys: usize,
}

impl AggregateConfig {
    /// `rate` identical resets per second go out individually, the rest are folded.
    pub fn per_second(rate: u32) -> Self {
        AggregateConfig {
            max_per_window: rate,
            window: Duration::from_secs(1),
            max_keys: 65_536,
        }
    }
}

/// What makes two resets "identical" for storm folding (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct StormKey {
    class: ResetClass,
    sender: Sender,
    middlebox: bool,
    vlan: u16,
    originator: IpAddr,
    responder: SocketAddr,
}

impl StormKey {
    fn of(report: &ResetReport) -> Self {
        StormKey {
            class: report.class,
            sender: report.sender,
            middlebox: report.middlebox,
            vlan: report.vlan,
            originator: report.orig.ip(),
            responder: report.resp,
        }
    }
}

struct Window {
    started: Instant,
    passed: u32,
    folded: Option<ResetReport>,
}

/// Folds identical resets beyond a rate. Time is passed in so the caller owns the clock.
pub struct Aggregator {
    config: AggregateConfig,
    windows: HashMap<StormKey, Window>,
}

impl Aggregator {
    pub fn new(config: AggregateConfig) -> Self {
        Aggregator {
            config,
            windows: HashMap::default(),
        }
    }

    /// Takes one report; appends to `out` whatever must go out now, in order: the aggregate of
    /// an ended window for the same key (if not yet flushed), then the report itself unless it
    /// was folded. Returns how many resets were folded (0 or the report's count).
    pub fn offer(&mut self, report: ResetReport, now: Instant, out: &mut Vec<ResetReport>) -> u64 {
        let key = StormKey::of(&report);
        let window_len = self.config.window;
        if let Some(window) = self.windows.get_mut(&key) {
            if now.duration_since(window.started) >= window_len {
                out.extend(window.folded.take());
                *window = Window {
                    started: now,
                    passed: 0,
                    folded: None,
                };
            }
            if window.passed < self.config.max_per_window {
                window.passed += 1;
                out.push(report);
                return 0;
            }
            let count = report.count();
            fold(&mut window.folded, report);
            return count;
        }
        if self.windows.len() < self.config.max_keys {
            let mut window = Window {
                started: now,
                passed: 0,
                folded: None,
            };
            if self.config.max_per_window == 0 {
                let count = report.count();
                fold(&mut window.folded, report);
                self.windows.insert(key, window);
                return count;
            }
            window.passed = 1;
            self.windows.insert(key, window);
        }
        out.push(report);
        0
    }

    /// Appends the aggregates of every window that has ended, oldest first, and forgets those
    /// windows.
    pub fn flush_due(&mut self, now: Instant, out: &mut Vec<ResetReport>) {
        let window_len = self.config.window;
        let start = out.len();
        self.windows.retain(|_, window| {
            if now.duration_since(window.started) < window_len {
                return true;
            }
            out.extend(window.folded.take());
            false
        });
        out[start..].sort_by_key(|report| report.ts);
    }

    /// Appends every pending aggregate, oldest first (at shutdown).
    pub fn flush_all(&mut self, out: &mut Vec<ResetReport>) {
        let start = out.len();
        out.extend(self.windows.drain().filter_map(|(_, window)| window.folded));
        out[start..].sort_by_key(|report| report.ts);
    }
}

/// Adds `report` to the aggregate in `slot`, or starts one with it.
fn fold(slot: &mut Option<ResetReport>, report: ResetReport) {
    let (count, first, last) = match report.aggregate {
        Some(aggregate) => (aggregate.count, aggregate.first, aggregate.last),
        None => (1, report.ts, report.ts),
    };
    match slot {
        Some(folded) => {
            let aggregate = folded
                .aggregate
                .as_mut()
                .expect("a folded report always carries its aggregate");
            aggregate.count += count;
            aggregate.first = aggregate.first.min(first);
            aggregate.last = aggregate.last.max(last);
        }
        None => {
            let mut folded = report;
            folded.aggregate = Some(Aggregate { count, first, last });
            *slot = Some(folded);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    const RATE: u32 = 3;

    fn aggregator() -> Aggregator {
        Aggregator::new(AggregateConfig {
            max_per_window: RATE,
            window: Duration::from_secs(1),
            max_keys: 4,
        })
    }

    /// The refused sample, from a new ephemeral client port, `ms` after the sample time.
    fn retry(client_port: u16, ms: u64) -> ResetReport {
        let mut report = crate::test_support::sample::refused_report();
        report.ts += Duration::from_millis(ms);
        report.dst.set_port(client_port);
        report.orig.set_port(client_port);
        report
    }

    #[test]
    fn client_retry_loop_to_a_closed_port_is_folded_beyond_the_rate() {
        let mut agg = aggregator();
        let t0 = Instant::now();
        let mut out = Vec::new();
        let mut folded = 0;
        for i in 0..10u16 {
            folded += agg.offer(
                retry(40_000 + i, u64::from(i)),
                t0 + Duration::from_millis(u64::from(i)),
                &mut out,
            );
        }
        assert_eq!(out.len(), RATE as usize, "the first ones go out one by one");
        assert!(out.iter().all(|r| r.aggregate.is_none()));
        assert_eq!(folded, 7);

        agg.flush_due(t0 + Duration::from_millis(500), &mut out);
        assert_eq!(out.len(), RATE as usize, "window still open");

        agg.flush_due(t0 + Duration::from_secs(1), &mut out);
        let aggregate = out[RATE as usize].aggregate.expect("one aggregate");
        assert_eq!(aggregate.count, 7);
        assert_eq!(aggregate.first, out[RATE as usize].ts);
        assert_eq!(
            aggregate.last.duration_since(aggregate.first).unwrap(),
            Duration::from_millis(6)
        );
        assert_eq!(out.len(), RATE as usize + 1);
        agg.flush_all(&mut out);
        assert_eq!(out.len(), RATE as usize + 1, "nothing left folded");
    }

    #[test]
    fn different_services_are_not_folded_together() {
        let mut agg = aggregator();
        let t0 = Instant::now();
        let mut out = Vec::new();
        for port in [80, 443, 8080, 8443] {
            for _ in 0..RATE {
                let mut report = crate::test_support::sample::refused_report();
                report.resp.set_port(port);
                report.src.set_port(port);
                agg.offer(report, t0, &mut out);
            }
        }
        assert_eq!(out.len(), 4 * RATE as usize);
        agg.flush_all(&mut out);
        assert_eq!(out.len(), 4 * RATE as usize, "nothing was folded");
    }

    #[test]
    fn a_different_class_or_sender_is_a_different_storm() {
        let mut agg = aggregator();
        let t0 = Instant::now();
        let mut out = Vec::new();
        for _ in 0..RATE {
            agg.offer(crate::test_support::sample::refused_report(), t0, &mut out);
        }
        let mut abort = crate::test_support::sample::refused_report();
        abort.class = ResetClass::Abort;
        assert_eq!(agg.offer(abort, t0, &mut out), 0);
        let mut injected = crate::test_support::sample::refused_report();
        injected.middlebox = true;
        assert_eq!(agg.offer(injected, t0, &mut out), 0);
        assert_eq!(out.len(), RATE as usize + 2);
    }

    #[test]
    fn a_new_window_first_flushes_the_previous_aggregate() {
        let mut agg = aggregator();
        let t0 = Instant::now();
        let mut out = Vec::new();
        for i in 0..5 {
            agg.offer(retry(40_000 + i, 0), t0, &mut out);
        }
        out.clear();
        let late = retry(41_000, 1500);
        agg.offer(late.clone(), t0 + Duration::from_millis(1500), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].aggregate.map(|a| a.count), Some(2));
        assert_eq!(out[1], late, "then the new window's first reset, unfolded");
    }

    #[test]
    fn too_many_keys_pass_through_unfolded() {
        let mut agg = aggregator();
        let t0 = Instant::now();
        let mut out = Vec::new();
        for server in 1..=6u8 {
            for _ in 0..RATE + 2 {
                let mut report = crate::test_support::sample::refused_report();
                report.resp = SocketAddr::from(([192, 0, 2, server], 4333));
                agg.offer(report, t0, &mut out);
            }
        }
        // Four keys are tracked and fold 2 each; the two untracked keys pass everything.
        assert_eq!(out.len(), 4 * RATE as usize + 2 * (RATE as usize + 2));
        agg.flush_all(&mut out);
        let folded: u64 = out
            .iter()
            .filter_map(|r| r.aggregate)
            .map(|a| a.count)
            .sum();
        assert_eq!(folded, 8);
    }

    #[test]
    fn zero_rate_folds_everything_and_flush_all_empties() {
        let mut agg = Aggregator::new(AggregateConfig::per_second(0));
        let t0 = Instant::now();
        let mut out = Vec::new();
        for i in 0..3 {
            assert_eq!(agg.offer(retry(40_000 + i, 0), t0, &mut out), 1);
        }
        assert!(out.is_empty());
        agg.flush_all(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].aggregate.map(|a| a.count), Some(3));
        agg.flush_all(&mut out);
        assert_eq!(out.len(), 1, "flush_all empties");
    }

    #[test]
    fn folding_an_aggregate_adds_its_count() {
        let mut slot = None;
        let mut report = crate::test_support::sample::refused_report();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        report.aggregate = Some(Aggregate {
            count: 5,
            first: t,
            last: t + Duration::from_secs(1),
        });
        fold(&mut slot, report.clone());
        fold(&mut slot, crate::test_support::sample::refused_report());
        let aggregate = slot.unwrap().aggregate.unwrap();
        assert_eq!(aggregate.count, 6);
        assert_eq!(aggregate.first, t);
        assert_eq!(
            aggregate.last,
            crate::test_support::sample::refused_report().ts
        );
    }
}
