//! Field renderings shared by the formats, so every format spells a value the same way.

use std::{
    io::Write as _,
    net::{IpAddr, SocketAddr},
    time::{SystemTime, UNIX_EPOCH},
};

use rstwatch_common::packet::tcp_flags;

/// RFC 3339 in UTC with microseconds, e.g. `2024-05-01T12:00:00.123456Z`. A time before the
/// Unix epoch (a clock set wrong) is shown as the epoch rather than failing the record.
pub fn rfc3339(ts: SystemTime) -> String {
    humantime::format_rfc3339_micros(ts.max(UNIX_EPOCH)).to_string()
}

/// The first second of the year 10000: `humantime` spells later times its own way.
const YEAR_10000: u64 = 253_402_300_800;

/// `rfc3339(ts)` appended to `out`, without a `String` of its own: the date from the day
/// count by the civil calendar, every digit written in place.
pub fn write_rfc3339(out: &mut Vec<u8>, ts: SystemTime) {
    let since = ts.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    if secs >= YEAR_10000 {
        write!(out, "{}", humantime::format_rfc3339_micros(ts)).expect("writing into memory");
        return;
    }
    let (year, month, day) = civil_date(secs / 86_400);
    let in_day = secs % 86_400;
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    put_digits(&mut text[0..4], u64::from(year));
    put_digits(&mut text[5..7], u64::from(month));
    put_digits(&mut text[8..10], u64::from(day));
    put_digits(&mut text[11..13], in_day / 3_600);
    put_digits(&mut text[14..16], in_day / 60 % 60);
    put_digits(&mut text[17..19], in_day % 60);
    put_digits(&mut text[20..26], u64::from(since.subsec_micros()));
    out.extend_from_slice(&text);
}

/// `value`'s last `digits.len()` decimal digits, zero-padded, into `digits`.
fn put_digits(digits: &mut [u8], mut value: u64) {
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Year, month and day of the `days`th day after 1970-01-01 in the proleptic Gregorian
/// calendar (the days-to-civil algorithm on 400-year eras).
fn civil_date(days: u64) -> (u32, u32, u32) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year as u32, month as u32, day as u32)
}

/// Each octet's decimal digits followed by a `.`, in 4 bytes, and how many of them to keep.
const OCTETS: [([u8; 4], u8); 256] = {
    let mut table = [([0u8; 4], 0u8); 256];
    let mut octet = 0;
    while octet < 256 {
        let (hundreds, tens, ones) = (octet / 100, octet / 10 % 10, octet % 10);
        table[octet] = if octet >= 100 {
            (
                [
                    b'0' + hundreds as u8,
                    b'0' + tens as u8,
                    b'0' + ones as u8,
                    b'.',
                ],
                4,
            )
        } else if octet >= 10 {
            ([b'0' + tens as u8, b'0' + ones as u8, b'.', 0], 3)
        } else {
            ([b'0' + ones as u8, b'.', 0, 0], 2)
        };
        octet += 1;
    }
    table
};

/// An address in its standard text form (IPv6 as RFC 5952) appended to `out`; an IPv4
/// address digit by digit, without the formatting machinery.
pub fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            // At most 15 bytes, put together on the stack and appended at once.
            let mut text = [0u8; 16];
            let mut len = 0;
            for octet in v4.octets() {
                let (digits, count) = OCTETS[usize::from(octet)];
                text[len..len + 4].copy_from_slice(&digits);
                len += usize::from(count);
            }
            out.extend_from_slice(&text[..len - 1]);
        }
        IpAddr::V6(v6) => write!(out, "{v6}").expect("writing into memory"),
    }
}

/// An address and port as `SocketAddr` displays them (`ip:port`, `[ipv6]:port`).
pub fn write_socket(out: &mut Vec<u8>, address: SocketAddr) {
    match address {
        SocketAddr::V4(v4) => {
            write_ip(out, (*v4.ip()).into());
            out.push(b':');
            write_uint(out, v4.port().into());
        }
        SocketAddr::V6(v6) => write!(out, "{v6}").expect("writing into memory"),
    }
}

/// `value` in decimal appended to `out`.
pub fn write_uint(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Letters of the TCP flags set, in header bit order from FIN: `F S R P A U E C` (FIN, SYN,
/// RST, PSH, ACK, URG, ECE, CWR). A RST with ACK is `RA`.
pub fn tcp_flag_letters(flags: u8) -> FlagLetters {
    const LETTERS: [(u8, u8); 8] = [
        (tcp_flags::FIN, b'F'),
        (tcp_flags::SYN, b'S'),
        (tcp_flags::RST, b'R'),
        (tcp_flags::PSH, b'P'),
        (tcp_flags::ACK, b'A'),
        (tcp_flags::URG, b'U'),
        (tcp_flags::ECE, b'E'),
        (tcp_flags::CWR, b'C'),
    ];
    let mut letters = FlagLetters {
        bytes: [0; 8],
        len: 0,
    };
    for (bit, letter) in LETTERS {
        if flags & bit != 0 {
            letters.bytes[letters.len] = letter;
            letters.len += 1;
        }
    }
    letters
}

/// The letters of `tcp_flag_letters`, on the stack.
#[derive(Clone, Copy, Debug)]
pub struct FlagLetters {
    bytes: [u8; 8],
    len: usize,
}

impl FlagLetters {
    pub fn as_str(&self) -> &str {
        // SAFETY: only the ASCII letters of `tcp_flag_letters` are put in.
        unsafe { std::str::from_utf8_unchecked(&self.bytes[..self.len]) }
    }
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
    fn timestamps_are_spelled_as_humantime_spells_them() {
        let mut seconds = 0u64;
        while seconds < YEAR_10000 + 1_000_000_000 {
            for nanos in [0, 999, 1_000, 123_456_789, 999_999_999] {
                let ts = UNIX_EPOCH + Duration::new(seconds, nanos);
                let mut out = Vec::new();
                write_rfc3339(&mut out, ts);
                assert_eq!(
                    String::from_utf8(out).unwrap(),
                    humantime::format_rfc3339_micros(ts).to_string(),
                    "{seconds}.{nanos:09}"
                );
            }
            seconds = seconds * 3 / 2 + 86_399;
        }
    }

    #[test]
    fn every_day_of_four_centuries_has_the_right_date() {
        for day in 0..146_097 * 2 {
            let ts = UNIX_EPOCH + Duration::from_secs(day * 86_400 + 86_399);
            let mut out = Vec::new();
            write_rfc3339(&mut out, ts);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                humantime::format_rfc3339_micros(ts).to_string()
            );
        }
    }

    #[test]
    fn addresses_are_written_in_their_standard_form() {
        for ip in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.100.9",
            "9.99.100.250",
            "198.18.1.2",
            "2001:db8::1",
            "::ffff:1.2.3.4",
        ] {
            let mut out = Vec::new();
            write_ip(&mut out, ip.parse().unwrap());
            assert_eq!(String::from_utf8(out).unwrap(), ip);
        }
        for socket in ["198.18.1.2:80", "[2001:db8::2]:443"] {
            let mut out = Vec::new();
            write_socket(&mut out, socket.parse().unwrap());
            assert_eq!(String::from_utf8(out).unwrap(), socket);
        }
    }

    #[test]
    fn flag_letters() {
        let letters = |flags| tcp_flag_letters(flags).as_str().to_owned();
        assert_eq!(letters(tcp_flags::RST | tcp_flags::ACK), "RA");
        assert_eq!(letters(tcp_flags::RST), "R");
        assert_eq!(letters(0xff), "FSRPAUEC");
        assert_eq!(letters(0), "");
    }
}
