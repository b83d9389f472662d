//! The lab the kernel integration tests, benchmarks and `cargo xtask demo` share: three network
//! namespaces with real TCP stacks ([`lab`]), the resets provoked in them ([`scenarios`]),
//! tcpdump as independent ground truth ([`capture`]), frames for BPF_PROG_TEST_RUN
//! ([`frames`]) and the loaded kernel side they run through ([`probe`]), rstwatch run against them ([`watch`]), the empty-program floor benchmarks
//! compare with ([`baseline`]), the benchmarks themselves ([`bench`]), and
//! a real rsyslog receiver for the SIEM export ([`siem`]).

pub mod baseline;
pub mod bench;
pub mod capture;
pub mod daemon;
pub mod frame;
pub mod frames;
pub mod lab;
pub mod packet_socket;
pub mod probe;
pub mod process;
pub mod scenarios;
pub mod siem;
pub mod watch;
