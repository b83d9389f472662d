//! The kernel programs under BPF_PROG_TEST_RUN: crafted frames go through the XDP (ingress)
//! and TC (egress) programs of a freshly loaded object, and each test reads back what the
//! kernel side made of them: counters, the flow table and the ring buffer's events. One
//! module per concern; the loaded object and the frame helpers are `rstwatch_tests::probe`.
//!
//! Run as root (`cargo test -p rstwatch-tests --test kernel`): a kernel that cannot load the
//! programs fails every test, nothing is skipped. One test binary, so that `cargo xtask
//! kmatrix` can run it inside each guest kernel.

mod bounds;
mod features;
mod filters;
mod flow;
mod frames;
mod parser;
mod replay;
mod storms;
