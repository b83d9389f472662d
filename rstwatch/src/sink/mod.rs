//! Where rendered records go.
//!
//! - `spool`: the on-disk queue for records the receiver could not take;
//! - `aggregate`: folding of reset storms into counted reports.

pub mod aggregate;
pub mod spool;
