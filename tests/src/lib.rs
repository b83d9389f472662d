//! The lab the kernel integration tests and `cargo xtask demo` share: three network namespaces
//! with real TCP stacks ([`lab`]).

pub mod lab;
mod process;
