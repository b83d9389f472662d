//! Test and benchmark support for rstwatch: everything here drives the real kernel.

pub mod baseline;
