#![no_std]
// This file exists to enable the library target, so that `rstwatch` can build-depend on
// this crate and rebuild when it changes.
