//! Field renderings shared by the formats, so every format spells a value the same way.

use std::{
    io::Write as _,
    time::{SystemTime, UNIX_EPOCH},
};

use rstwatch_common::packet::tcp_flags;

/// RFC 3339 in UTC with microseconds, e.g. `2024-05-01T12:00:00.123456Z`. A time before the
/// Unix epoch (a clock set wrong) is shown as the epoch rather than failing the record.
pub fn rfc3339(ts: SystemTime) -> String {
    humantime::format_rfc3339_micros(ts.max(UNIX_EPOCH)).to_string()
}

/// `rfc3339(ts)` appended to `out`, without a `String` of its own.
pub fn write_rfc3339(out: &mut Vec<u8>, ts: SystemTime) {
    write!(
        out,
        "{}",
        humantime::format_rfc3339_micros(ts.max(UNIX_EPOCH))
    )
    .expect("writing into memory");
}

/// Letters of the TCP flags set, in header bit order from FIN: `F S R P A U E C` (FIN, SYN,
/// RST, PSH, ACK, URG, ECE, CWR). A RST with ACK is `RA`.
pub fn tcp_flag_letters(flags: u8) -> String {
    const LETTERS: [(u8, char); 8] = [
        (tcp_flags::FIN, 'F'),
        (tcp_flags::SYN, 'S'),
        (tcp_flags::RST, 'R'),
        (tcp_flags::PSH, 'P'),
        (tcp_flags::ACK, 'A'),
        (tcp_flags::URG, 'U'),
        (tcp_flags::ECE, 'E'),
        (tcp_flags::CWR, 'C'),
    ];
    LETTERS
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|&(_, letter)| letter)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn timestamps_are_utc_with_microseconds() {
        let ts = UNIX_EPOCH + Duration::new(1_714_564_800, 123_456_789);
        assert_eq!(rfc3339(ts), "2024-05-01T12:00:00.123456Z");
    }

    #[test]
    fn times_before_the_epoch_do_not_fail() {
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00.000000Z"
        );
    }

    #[test]
    fn flag_letters() {
        assert_eq!(tcp_flag_letters(tcp_flags::RST | tcp_flags::ACK), "RA");
        assert_eq!(tcp_flag_letters(tcp_flags::RST), "R");
        assert_eq!(tcp_flag_letters(0xff), "FSRPAUEC");
        assert_eq!(tcp_flag_letters(0), "");
    }
}
