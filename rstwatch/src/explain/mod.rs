//! Explains a RST: class, attribution, Zeek state, identifiers.
