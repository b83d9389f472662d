//! `cargo xtask bench` (the `rstwatch-bench` binary): what rstwatch costs per packet in the
//! kernel ([`kernel_cost`]), how many events one core explains ([`userspace`]), how it holds up
//! next to tcpdump under a RST flood ([`flood`]), and what its flow table occupies
//! ([`memory`]). Every kernel figure is compared with the empty XDP program measured in the
//! same run ([`crate::baseline`]).

pub mod capture_replay;
pub mod flood;
pub mod kernel_cost;
pub mod memory;
pub mod packets;
pub mod userspace;

use std::collections::HashMap;

/// `key:\tvalue` lines of a /proc/PID/fdinfo file.
pub fn fdinfo_fields(info: &str) -> HashMap<String, String> {
    info.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_is_split_into_fields() {
        let fields = fdinfo_fields("pos:\t0\nprog_type:\t6\nrun_time_ns:\t42\n");
        assert_eq!(fields["prog_type"], "6");
        assert_eq!(fields["run_time_ns"], "42");
    }
}
