//! Helpers for rstwatch's integration tests.

pub mod frames;
