//! Times and durations of a flow in 32 bits, for the flow table's compact state.

/// A duration in 32 bits: the top two bits name the unit of the low 30, the finest that holds
/// it: ns below 1.07 s, µs below 17.9 min, ms below 12.4 days, s beyond (saturating at 34
/// years). A value is kept rounded down to its unit, so a handshake's times, a few ns to a
/// second apart, stay exact, and decimal units keep exact anything shown in whole µs or ms (an
/// RTT in µs below 17.9 min, an idle time in ms below 12.4 days).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span(u32);

const VALUE_BITS: u32 = 30;
const VALUE_LIMIT: u64 = 1 << VALUE_BITS;
const VALUE_MASK: u32 = (1 << VALUE_BITS) - 1;

impl Span {
    pub const ZERO: Span = Span(0);

    /// `ns` in the finest unit that holds it. Comparisons against the unit's range rather
    /// than a loop or a leading-zero count: BPF has neither, and this is straight-line code
    /// for the verifier.
    #[inline(always)]
    pub const fn from_ns(ns: u64) -> Self {
        let (unit, value) = if ns < VALUE_LIMIT {
            (0, ns)
        } else if ns < VALUE_LIMIT * 1_000 {
            (1, ns / 1_000)
        } else if ns < VALUE_LIMIT * 1_000_000 {
            (2, ns / 1_000_000)
        } else if ns < VALUE_LIMIT * 1_000_000_000 {
            (3, ns / 1_000_000_000)
        } else {
            (3, VALUE_LIMIT - 1)
        };
        Span((unit << VALUE_BITS) | value as u32)
    }

    /// The duration in ns, as kept (rounded down to its unit).
    pub const fn ns(self) -> u64 {
        let value = (self.0 & VALUE_MASK) as u64;
        match self.0 >> VALUE_BITS {
            0 => value,
            1 => value * 1_000,
            2 => value * 1_000_000,
            _ => value * 1_000_000_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn each_range_keeps_its_unit() {
        for (ns, kept) in [
            (0, 0),
            (1, 1),
            (1_073_741_823, 1_073_741_823),
            (1_073_741_824, 1_073_741_000),
            (1_073_741_999, 1_073_741_000),
            (3 * 3600 * S + 123_456_789, 3 * 3600 * S + 123_000_000),
            (17 * 60 * S + 999_999, 17 * 60 * S + 999_000),
            (18 * 60 * S + 999_999, 18 * 60 * S),
            (12 * 86_400 * S + 1_234_567, 12 * 86_400 * S + 1_000_000),
            (13 * 86_400 * S + 1_234_567, 13 * 86_400 * S),
            (u64::MAX, ((1 << 30) - 1) * S),
        ] {
            assert_eq!(Span::from_ns(ns).ns(), kept, "{ns} ns");
        }
    }

    #[test]
    fn rounding_never_moves_a_value_up_nor_past_a_whole_unit() {
        let mut ns = 1u64;
        while ns < VALUE_LIMIT * S {
            let kept = Span::from_ns(ns).ns();
            assert!(
                kept <= ns && ns - kept <= ns >> 20,
                "{ns} ns kept as {kept}"
            );
            assert_eq!(
                Span::from_ns(kept).ns(),
                kept,
                "a kept value is kept as it is"
            );
            ns = ns * 3 + 7;
        }
    }

    #[test]
    fn order_is_kept() {
        let points = [
            0,
            5,
            1 << 30,
            (1 << 30) + 999,
            2 << 30,
            1 << 40,
            1 << 50,
            1 << 60,
        ];
        for pair in points.windows(2) {
            assert!(Span::from_ns(pair[0]).ns() <= Span::from_ns(pair[1]).ns());
        }
    }
}
