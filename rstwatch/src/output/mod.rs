//! Output formats: each renders one `ResetReport` as one record. Where records go (a terminal,
//! a file, a syslog receiver) is the sink's business, not the format's.

pub mod cef;
pub mod ecs;
pub mod fields;
pub mod json;
pub mod json_writer;
pub mod node;
pub mod ocsf;
pub mod text;

use crate::report::ResetReport;

pub use json::Json;
pub use text::Text;

/// The record formats, as `--format` and `--syslog-format` name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatKind {
    Text,
    Json,
    Ecs,
    Ocsf,
    Cef,
}

/// The format `kind` names; `colour` only changes text.
pub fn format(kind: FormatKind, colour: bool) -> Box<dyn Format> {
    match kind {
        FormatKind::Text => Box::new(Text::new(colour)),
        FormatKind::Json => Box::new(Json),
        FormatKind::Ecs => Box::new(ecs::Ecs),
        FormatKind::Ocsf => Box::new(ocsf::Ocsf),
        FormatKind::Cef => Box::new(cef::Cef),
    }
}

/// Renders reports. A record is appended to `out` without a trailing newline: line-oriented
/// sinks add one, syslog frames it.
pub trait Format: Send {
    fn render(&self, report: &ResetReport, out: &mut Vec<u8>);
}
