//! Standard output or `--output FILE`: one record per line. Records are gathered in a buffer
//! and written with one `write(2)` per batch: a syscall per record costs more than explaining
//! the reset. The pipeline flushes after every hold release, so a consumer tailing the output
//! sees each reset as soon as its hold ends.

use std::io::Write;

use anyhow::Context as _;

use super::Sink;
use crate::report::ResetReport;

/// Above this many buffered bytes a batch is written out before the release ends.
const BATCH_BYTES: usize = 256 << 10;

pub struct LineSink {
    out: Box<dyn Write + Send>,
    batch: Vec<u8>,
}

impl LineSink {
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out,
            batch: Vec::with_capacity(BATCH_BYTES + 4096),
        }
    }

    fn write_batch(&mut self) -> anyhow::Result<()> {
        if !self.batch.is_empty() {
            self.out.write_all(&self.batch).context("writing records")?;
            self.batch.clear();
        }
        Ok(())
    }
}

impl Sink for LineSink {
    fn write(&mut self, _report: &ResetReport, record: &[u8]) -> anyhow::Result<()> {
        self.batch.extend_from_slice(record);
        self.batch.push(b'\n');
        if self.batch.len() >= BATCH_BYTES {
            self.write_batch()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.write_batch()?;
        self.out.flush().context("flushing records")
    }
}
