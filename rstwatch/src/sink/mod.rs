//! Where rendered records go.
//!
//! - `aggregate`: folding of reset storms into counted reports.

pub mod aggregate;
