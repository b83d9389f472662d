//! What a command writes, and where: the records' format (`--format`, else text on a terminal
//! and JSON otherwise), their destination (standard output or `--output FILE`) and the syslog
//! export (`--syslog`), set up and shut down the same way for `watch` and `explain`.

use std::{
    io::{IsTerminal as _, Write},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use tokio::task::JoinHandle;

use crate::{
    cli::SyslogArgs,
    error::UserError,
    output::{format, Format, FormatKind},
    sink::{
        file::{open_output, Destination, LineSink, WriterSink},
        syslog::{self, SyslogHandle, SyslogSink},
        SyslogConfig, TlsTrust,
    },
};

/// How long the syslog sink may keep delivering after the command ends (SIGINT or SIGTERM for
/// `watch`, the file's end for `explain`); the rest is spooled.
const SYSLOG_SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Peers listed in a command's closing summary.
pub const SUMMARY_PEERS: usize = 5;

/// The format records are written in, with its colour decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordsFormat {
    pub kind: FormatKind,
    colour: bool,
}

impl RecordsFormat {
    /// `--format`, or text on a terminal and JSON otherwise; colour on a terminal unless
    /// `NO_COLOR` is set.
    fn decide(kind: Option<FormatKind>, to_terminal: bool) -> Self {
        let kind = kind.unwrap_or(if to_terminal {
            FormatKind::Text
        } else {
            FormatKind::Json
        });
        let colour = to_terminal && std::env::var_os("NO_COLOR").is_none();
        RecordsFormat { kind, colour }
    }

    pub fn format(self) -> Box<dyn Format> {
        format(self.kind, self.colour)
    }

    /// Whether records of `kind`, rendered without colour, are these records: then one
    /// rendering serves both destinations.
    pub fn renders_as(self, kind: FormatKind) -> bool {
        self.kind == kind && !self.colour
    }
}

/// Standard output or `--output FILE` (appended), in `kind`, through a writer thread so that a
/// slow destination never holds up capture.
pub fn open_records(
    output: Option<&PathBuf>,
    kind: Option<FormatKind>,
) -> anyhow::Result<(LineSink, RecordsFormat)> {
    let (destination, to_terminal) = match output {
        Some(path) => (Destination::File(path.clone()), false),
        None => (Destination::Stdout, std::io::stdout().is_terminal()),
    };
    Ok((
        LineSink::start(destination)?,
        RecordsFormat::decide(kind, to_terminal),
    ))
}

/// Standard output or `output` (appended), in `kind`, written synchronously: a capture file's
/// replay waits for its output instead of outrunning a queue.
pub fn open_records_synchronous(
    output: Option<&Path>,
    kind: Option<FormatKind>,
) -> anyhow::Result<(WriterSink, RecordsFormat)> {
    let (out, to_terminal): (Box<dyn Write + Send>, bool) = match output {
        Some(path) => (Box::new(open_output(path)?), false),
        None => (Box::new(std::io::stdout()), std::io::stdout().is_terminal()),
    };
    Ok((
        WriterSink::new(out),
        RecordsFormat::decide(kind, to_terminal),
    ))
}

/// The running syslog export.
pub struct Syslog {
    pub handle: SyslogHandle,
    config: SyslogConfig,
    /// The format its records are sent in.
    pub body: FormatKind,
    task: JoinHandle<()>,
}

impl Syslog {
    /// Starts the export `args` ask for, if any. Its records are in `--syslog-format`, else in
    /// `--format` (`records`), except that text is sent as JSON.
    pub fn start(args: &SyslogArgs, records: Option<FormatKind>) -> anyhow::Result<Option<Self>> {
        let Some(url) = args.syslog.clone() else {
            return Ok(None);
        };
        let body = match args.syslog_format.or(records) {
            None | Some(FormatKind::Text) => FormatKind::Json,
            Some(other) => other,
        };
        let mut config = SyslogConfig::new(url, &args.spool_dir);
        config.tls_trust = match (&args.syslog_ca, args.syslog_insecure) {
            (Some(ca), _) => TlsTrust::CaFile(ca.clone()),
            (None, true) => TlsTrust::Insecure,
            (None, false) => TlsTrust::SystemRoots,
        };
        config.facility = args.syslog_facility;
        config.spool_max_bytes = args.spool_max_mib << 20;
        let (handle, task) = syslog::spawn(config.clone())
            .map_err(|err| UserError(format!("cannot start the syslog export: {err}")))?;
        Ok(Some(Syslog {
            handle,
            config,
            body,
            task,
        }))
    }

    /// A sink that hands records to the export.
    pub fn sink(&self) -> SyslogSink {
        SyslogSink::new(self.handle.clone(), &self.config)
    }

    /// Delivers what it can within the grace period, spools the rest, and says on stderr what
    /// became of the records; `folded` is how many identical resets the pipeline folded.
    pub async fn shut_down(self, folded: u64) -> anyhow::Result<()> {
        let stats = self.handle.shutdown(SYSLOG_SHUTDOWN_GRACE).await;
        self.task.await.context("the syslog sender task failed")?;
        eprintln!(
            "rstwatch: syslog sent={} resent={} maybe_duplicated={} folded={folded} \
             spooled_pending={} dropped={}",
            stats.sent,
            stats.resent,
            stats.maybe_duplicated,
            stats.pending,
            stats.dropped()
        );
        Ok(())
    }
}
