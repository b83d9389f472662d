//! When the stack's reset programs step aside. A flood the stack answers with resets (SYNs to
//! closed ports) runs `tcp_send_reset` once per packet, and an attached program costs every one
//! of them its call even when its per-CPU budget is spent: measured on a veth under a SYN
//! flood, about 4 % of the rate the host sustains. So the first records the kernel loses (over
//! its budget, or a full ring) detach the reset programs for a pause; they are attached again
//! when it ends, and the pause doubles while floods keep coming back. Meanwhile, and for a
//! match window after, the join makes no "not from the stack" claim, as for lost records.

/// The first pause after a loss.
pub const FIRST_PAUSE_NS: u64 = 1_000_000_000;
/// The longest pause: how stale the witness may be after a flood that keeps coming back.
pub const MAX_PAUSE_NS: u64 = 16_000_000_000;
/// Attached this long without a loss, the next pause starts from `FIRST_PAUSE_NS` again.
pub const CALM_NS: u64 = 60_000_000_000;

/// What the daemon does with the reset programs after an observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateAction {
    Keep,
    /// Records were lost: detach them until `FloodGate::aside_until_ns`.
    StepAside,
    /// The pause is over: attach them again.
    Return,
}

/// The reset programs' state, fed the kernel's count of lost records on every drain.
#[derive(Clone, Debug)]
pub struct FloodGate {
    lost_seen: u64,
    aside: bool,
    aside_until_ns: u64,
    /// The next pause's length.
    pause_ns: u64,
    /// When the programs were last attached (or the gate made).
    attached_since_ns: u64,
    /// Times the programs stepped aside, and their time detached in all.
    pub steps_aside: u64,
    pub aside_ns: u64,
    aside_since_ns: u64,
}

impl FloodGate {
    /// A gate whose programs are attached at `now_ns`, `lost_total` records lost so far.
    pub fn new(lost_total: u64, now_ns: u64) -> Self {
        Self {
            lost_seen: lost_total,
            aside: false,
            aside_until_ns: 0,
            pause_ns: FIRST_PAUSE_NS,
            attached_since_ns: now_ns,
            steps_aside: 0,
            aside_ns: 0,
            aside_since_ns: 0,
        }
    }

    pub const fn is_aside(&self) -> bool {
        self.aside
    }

    /// When the current pause ends (meaningful while aside).
    pub const fn aside_until_ns(&self) -> u64 {
        self.aside_until_ns
    }

    /// Time detached so far, the current pause included up to `now_ns`.
    pub fn aside_total_ns(&self, now_ns: u64) -> u64 {
        let current = if self.aside {
            now_ns.saturating_sub(self.aside_since_ns)
        } else {
            0
        };
        self.aside_ns + current
    }

    /// Takes the kernel's count of lost records at `now_ns`.
    pub fn observe(&mut self, lost_total: u64, now_ns: u64) -> GateAction {
        let lost = lost_total > self.lost_seen;
        self.lost_seen = self.lost_seen.max(lost_total);
        if self.aside {
            if now_ns < self.aside_until_ns {
                return GateAction::Keep;
            }
            self.aside = false;
            self.aside_ns += now_ns.saturating_sub(self.aside_since_ns);
            self.attached_since_ns = now_ns;
            return GateAction::Return;
        }
        if !lost {
            return GateAction::Keep;
        }
        if now_ns.saturating_sub(self.attached_since_ns) >= CALM_NS {
            self.pause_ns = FIRST_PAUSE_NS;
        }
        self.aside = true;
        self.aside_since_ns = now_ns;
        self.aside_until_ns = now_ns.saturating_add(self.pause_ns);
        self.pause_ns = (self.pause_ns * 2).min(MAX_PAUSE_NS);
        self.steps_aside += 1;
        GateAction::StepAside
    }

    /// The programs could not be attached again: they stay aside for good.
    pub fn stay_aside(&mut self, now_ns: u64) {
        if !self.aside {
            self.aside = true;
            self.aside_since_ns = now_ns;
        }
        self.aside_until_ns = u64::MAX;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn no_loss_keeps_the_programs_attached() {
        let mut gate = FloodGate::new(5, 0);
        for tick in 1..100 {
            assert_eq!(gate.observe(5, tick * S / 50), GateAction::Keep);
        }
        assert!(!gate.is_aside());
        assert_eq!(gate.steps_aside, 0);
    }

    #[test]
    fn a_loss_steps_aside_for_the_first_pause_then_returns() {
        let mut gate = FloodGate::new(0, 0);
        assert_eq!(gate.observe(1, 10 * S), GateAction::StepAside);
        assert!(gate.is_aside());
        assert_eq!(gate.aside_until_ns(), 10 * S + FIRST_PAUSE_NS);
        // Losses counted while aside (records already in flight) change nothing.
        assert_eq!(
            gate.observe(7, 10 * S + FIRST_PAUSE_NS - 1),
            GateAction::Keep
        );
        assert_eq!(gate.observe(7, 10 * S + FIRST_PAUSE_NS), GateAction::Return);
        assert!(!gate.is_aside());
        assert_eq!(gate.aside_total_ns(20 * S), FIRST_PAUSE_NS);
        // The count seen while aside is not a new loss.
        assert_eq!(gate.observe(7, 12 * S), GateAction::Keep);
    }

    #[test]
    fn floods_that_come_back_double_the_pause_up_to_the_longest() {
        let mut gate = FloodGate::new(0, 0);
        let mut now = 0;
        let mut lost = 0;
        let mut pauses = Vec::new();
        for _ in 0..8 {
            lost += 1;
            assert_eq!(gate.observe(lost, now), GateAction::StepAside);
            pauses.push(gate.aside_until_ns() - now);
            now = gate.aside_until_ns();
            assert_eq!(gate.observe(lost, now), GateAction::Return);
            now += S / 50;
        }
        assert_eq!(
            pauses,
            [1, 2, 4, 8, 16, 16, 16, 16].map(|s| s * S),
            "pauses in ns"
        );
        assert_eq!(gate.steps_aside, 8);
    }

    #[test]
    fn a_calm_minute_attached_starts_the_pauses_over() {
        let mut gate = FloodGate::new(0, 0);
        gate.observe(1, 0);
        gate.observe(1, FIRST_PAUSE_NS);
        gate.observe(2, FIRST_PAUSE_NS + 1);
        let returned = gate.aside_until_ns();
        assert_eq!(returned - FIRST_PAUSE_NS - 1, 2 * FIRST_PAUSE_NS);
        assert_eq!(gate.observe(2, returned), GateAction::Return);
        let later = returned + CALM_NS;
        assert_eq!(gate.observe(3, later), GateAction::StepAside);
        assert_eq!(gate.aside_until_ns(), later + FIRST_PAUSE_NS);
    }

    #[test]
    fn programs_that_cannot_return_stay_aside() {
        let mut gate = FloodGate::new(0, 0);
        gate.observe(1, 0);
        gate.stay_aside(S);
        assert!(gate.is_aside());
        assert_eq!(gate.observe(1, 1_000 * S), GateAction::Keep);
        assert_eq!(gate.aside_total_ns(1_000 * S), 1_000 * S);
    }
}
