//! Fixtures shared by rstwatch's unit tests and the integration tests in `rstwatch-tests`
//! (which turn on the `test-support` feature): reports written out by hand, and a strict CEF
//! reader.

pub mod cef;
pub mod sample;
