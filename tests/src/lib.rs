//! The lab the kernel integration tests and `cargo xtask demo` share: three network namespaces
//! with real TCP stacks ([`lab`]), the resets provoked in them ([`scenarios`]), tcpdump as
//! independent ground truth ([`capture`]) and rstwatch run against them ([`watch`]).

pub mod capture;
pub mod frame;
pub mod lab;
pub mod packet_socket;
mod process;
pub mod scenarios;
pub mod watch;
