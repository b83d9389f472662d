//! The metrics sink: counts every reset it is handed by class, sender, middlebox, direction and
//! interface, for `--metrics`. Labels are bounded: no address or port is ever one.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};

use super::Sink;
use crate::report::ResetReport;

/// What a reset is counted under.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResetLabels {
    pub class: &'static str,
    pub sender: &'static str,
    /// `true` when the evidence says a middlebox injected the RST.
    pub middlebox: &'static str,
    /// The hook that saw the RST: `ingress` (XDP) or `egress` (TC).
    pub direction: &'static str,
    /// A watched interface's name.
    pub interface: String,
}

/// Resets counted by their labels; clones share the counts.
pub type ResetCounts = Family<ResetLabels, Counter>;

/// Counts the reports it is handed into `ResetCounts`; writes nothing anywhere.
pub struct MetricsSink {
    resets: ResetCounts,
}

impl MetricsSink {
    pub fn new(resets: ResetCounts) -> Self {
        Self { resets }
    }
}

impl Sink for MetricsSink {
    fn write(&mut self, report: &ResetReport, _record: &[u8]) -> anyhow::Result<()> {
        let labels = ResetLabels {
            class: report.class.as_str(),
            sender: report.sender.as_str(),
            middlebox: if report.middlebox { "true" } else { "false" },
            direction: report.direction.as_str(),
            interface: report.iface.to_string(),
        };
        // A storm aggregate stands for `count` resets.
        self.resets.get_or_create(&labels).inc_by(report.count());
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}
