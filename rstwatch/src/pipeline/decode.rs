//! The kernel's ring-buffer records, decoded once at the boundary: the record's header says
//! what follows (`rstwatch_common::event::decode`); the raw `u8`s inside become types where
//! the rules read them (`crate::event`).

pub use rstwatch_common::event::{decode as event, DecodeError};
