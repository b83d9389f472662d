//! Where rendered records go.
