//! Explains a RST: class, attribution, Zeek state, identifiers.
//!
//! - `community_id`, `wireshark`: identifiers that find the flow in other tools.

mod address;
pub mod community_id;
pub mod wireshark;
