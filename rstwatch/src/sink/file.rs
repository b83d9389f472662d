//! Records to standard output or `--output FILE`, written by a thread of their own so that a
//! slow or failed destination never makes capture wait.
//!
//! Capture gathers the rendered lines of a batch (one ring drain, one hold release) and, when
//! the batch ends, hands them to a bounded queue as one block and moves on; lines beyond the
//! queue's room are dropped and counted. The writer writes each block with one `write(2)`,
//! whole or not at all: a write into a regular file that fails half-way is cut back to where
//! the block started. A full disk
//! (ENOSPC, EDQUOT) keeps the line and retries until space returns, while the queue absorbs
//! what comes meanwhile; a reader that went away (EPIPE) is final, and every later line is
//! dropped and counted. A FIFO is opened by the writer, so attaching never waits for its
//! reader.
//!
//! `WriterSink` is the same line format written synchronously into any `Write`, in batches of
//! one `write(2)`: for the golden records and the benchmark, which read what was written.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc, Mutex, PoisonError,
    },
    thread,
    time::Duration,
};

use anyhow::Context as _;

use super::Sink;
use crate::{error::UserError, report::ResetReport};

/// A message on stderr from the writer thread. A stderr that fails (the terminal closed) must
/// not take the writer down with it, as a panicking `eprintln!` would.
macro_rules! note {
    ($($arg:tt)*) => {{
        let _ = writeln!(io::stderr(), $($arg)*);
    }};
}

/// Lines waiting for the writer; beyond this they are dropped and counted.
pub const QUEUE_LINES: usize = 4096;
/// A batch this large is handed to the writer before the batch ends, so that one block
/// stays a reasonable write.
const BLOCK_BYTES: usize = 256 << 10;
/// How often a write that failed on a full disk is tried again.
const FULL_DISK_RETRY: Duration = Duration::from_millis(500);

/// Where the lines go.
#[derive(Clone, Debug)]
pub enum Destination {
    Stdout,
    File(PathBuf),
}

impl Destination {
    /// How messages name it.
    pub fn describe(&self) -> String {
        match self {
            Destination::Stdout => "standard output".into(),
            Destination::File(path) => format!("--output {}", path.display()),
        }
    }
}

/// What happened to the lines handed to the sink so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LineStats {
    pub written: u64,
    /// In the queue or being written.
    pub queued: u64,
    /// Dropped because the queue was full: the destination could not keep up.
    pub dropped_queue_full: u64,
    /// Dropped because writing failed for good (reader gone, I/O error, full disk at exit).
    pub dropped_write_failed: u64,
}

impl LineStats {
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full + self.dropped_write_failed
    }
}

#[derive(Default)]
struct Counters {
    written: AtomicU64,
    queued: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_write_failed: AtomicU64,
}

/// Tells the writer what to do between lines; set by the capture side.
#[derive(Default)]
struct Requests {
    reopen: AtomicBool,
    closing: AtomicBool,
}

enum Message {
    /// Whole lines, each with its newline.
    Lines { bytes: Vec<u8>, lines: u64 },
    /// Wakes an idle writer to look at its requests.
    Wake,
}

/// A line-oriented output with its writer thread. Clones share the writer (each gathers its
/// own batch): the pipeline writes through one, the daemon reopens, reads the counts and
/// closes through another.
pub struct LineSink {
    shared: Arc<Shared>,
    /// The lines of the batch under way, each with its newline.
    batch: Vec<u8>,
    /// Where each line of `batch` ends.
    line_ends: Vec<usize>,
}

impl Clone for LineSink {
    fn clone(&self) -> Self {
        Self::sharing(Arc::clone(&self.shared))
    }
}

struct Shared {
    destination: Destination,
    /// `None` once closed; dropping the sender is what ends the writer.
    queue: Mutex<Option<mpsc::SyncSender<Message>>>,
    counters: Arc<Counters>,
    requests: Arc<Requests>,
    finished: Mutex<mpsc::Receiver<()>>,
}

/// Opens `path` to append records to, created if it is missing.
fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Opens `--output FILE` to append records to, before anything runs: a path that cannot be
/// opened is the user's to fix.
pub fn open_output(path: &Path) -> Result<File, UserError> {
    open_append(path).map_err(|err| {
        UserError(format!(
            "cannot open --output {}: {err}: check the directory exists and is writable",
            path.display()
        ))
    })
}

impl LineSink {
    /// Opens the destination and starts its writer. A regular file is opened here, so that a
    /// wrong path fails before anything is attached; a FIFO is opened by the writer.
    pub fn start(destination: Destination) -> Result<Self, UserError> {
        let out = match &destination {
            Destination::Stdout => Some(
                Out::stdout()
                    .map_err(|err| UserError(format!("cannot write to standard output: {err}")))?,
            ),
            Destination::File(path) if is_fifo(path) => None,
            Destination::File(path) => Some(Out::from_file(open_output(path)?)),
        };
        let (queue, lines) = mpsc::sync_channel(QUEUE_LINES);
        let (finish, finished) = mpsc::channel();
        let counters = Arc::new(Counters::default());
        let requests = Arc::new(Requests::default());
        let mut writer = Writer {
            destination: destination.clone(),
            out,
            counters: counters.clone(),
            requests: requests.clone(),
            disk_full: false,
            reader_gone: false,
            failures_reported: 0,
        };
        thread::Builder::new()
            .name("rstwatch-output".into())
            .spawn(move || {
                writer.run(&lines);
                // The capture side may have stopped waiting; nothing to do then.
                let _ = finish.send(());
            })
            .map_err(|err| UserError(format!("cannot start the output writer: {err}")))?;
        Ok(Self::sharing(Arc::new(Shared {
            destination,
            queue: Mutex::new(Some(queue)),
            counters,
            requests,
            finished: Mutex::new(finished),
        })))
    }

    fn sharing(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            batch: Vec::new(),
            line_ends: Vec::new(),
        }
    }

    pub fn destination(&self) -> &Destination {
        &self.shared.destination
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Option<mpsc::SyncSender<Message>>> {
        // The lock only guards taking the sender out: a panic while holding it leaves the
        // sender valid.
        self.shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds one line (without its newline) to the batch under way.
    pub fn add_line(&mut self, line: &[u8]) {
        self.batch.extend_from_slice(line);
        self.batch.push(b'\n');
        self.line_ends.push(self.batch.len());
        if self.batch.len() >= BLOCK_BYTES {
            self.end_batch();
        }
    }

    /// Queues the batch's lines for the writer as one block; never blocks. What the queue has
    /// no room for is dropped, counted.
    pub fn end_batch(&mut self) {
        if self.line_ends.is_empty() {
            return;
        }
        let lines = self.line_ends.len() as u64;
        let counters = &self.shared.counters;
        let queued = counters.queued.fetch_add(lines, Ordering::Relaxed);
        let room = (QUEUE_LINES as u64).saturating_sub(queued).min(lines);
        let mut sent = 0;
        if room > 0 {
            let end = self.line_ends[room as usize - 1];
            let block = if room == lines {
                // The next batch starts with room for a whole block rather than growing to it.
                std::mem::replace(&mut self.batch, Vec::with_capacity(BLOCK_BYTES + 4096))
            } else {
                self.batch[..end].to_vec()
            };
            let queue = self.queue();
            let message = Message::Lines {
                bytes: block,
                lines: room,
            };
            if queue
                .as_ref()
                .is_some_and(|queue| queue.try_send(message).is_ok())
            {
                sent = room;
            }
        }
        counters.queued.fetch_sub(lines - sent, Ordering::Relaxed);
        counters
            .dropped_queue_full
            .fetch_add(lines - sent, Ordering::Relaxed);
        self.batch.clear();
        self.line_ends.clear();
    }

    /// Asks the writer to reopen the file (after log rotation); the lines queued before go
    /// to whichever file the writer holds when it reaches them.
    pub fn reopen(&self) {
        self.shared.requests.reopen.store(true, Ordering::Relaxed);
        if let Some(queue) = self.queue().as_ref() {
            // A full queue means the writer is busy and will see the request anyway.
            let _ = queue.try_send(Message::Wake);
        }
    }

    pub fn stats(&self) -> LineStats {
        let counters = &self.shared.counters;
        LineStats {
            written: counters.written.load(Ordering::Relaxed),
            queued: counters.queued.load(Ordering::Relaxed),
            dropped_queue_full: counters.dropped_queue_full.load(Ordering::Relaxed),
            dropped_write_failed: counters.dropped_write_failed.load(Ordering::Relaxed),
        }
    }

    /// Lets the writer finish what is queued for at most `grace`, and returns the final
    /// counts: what is still `queued` then is lost (a reader that stopped reading).
    pub fn close(&self, grace: Duration) -> LineStats {
        self.shared.requests.closing.store(true, Ordering::Relaxed);
        if self.queue().take().is_some() {
            // Dropping the sender ends the writer's loop once the queue is empty.
            let finished = self
                .shared
                .finished
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let _ = finished.recv_timeout(grace);
        }
        self.stats()
    }
}

impl Sink for LineSink {
    fn write(&mut self, _report: &ResetReport, record: &[u8]) -> anyhow::Result<()> {
        self.add_line(record);
        Ok(())
    }

    /// Hands the batch to the writer: the pipeline flushes after every ring drain and hold
    /// release, so a consumer tailing the output sees every reset as soon as its hold ends.
    fn flush(&mut self) -> anyhow::Result<()> {
        self.end_batch();
        Ok(())
    }
}

/// Above this many buffered bytes a `WriterSink` batch is written out before the batch ends.
const BATCH_BYTES: usize = 256 << 10;

/// Records into any `Write`, gathered in a buffer and written with one `write(2)` per batch,
/// synchronously.
pub struct WriterSink {
    out: Box<dyn Write + Send>,
    batch: Vec<u8>,
}

impl WriterSink {
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

impl Sink for WriterSink {
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

/// An open destination.
struct Out {
    file: File,
    /// A regular file, where a cut-off line can be cut back.
    regular: bool,
}

impl Out {
    fn stdout() -> io::Result<Self> {
        use std::os::fd::AsFd as _;
        let file = File::from(io::stdout().as_fd().try_clone_to_owned()?);
        Ok(Self::from_file(file))
    }

    fn file(path: &Path) -> io::Result<Self> {
        Ok(Self::from_file(open_append(path)?))
    }

    fn from_file(file: File) -> Self {
        let regular = file.metadata().is_ok_and(|meta| meta.is_file());
        Self { file, regular }
    }

    /// Writes all of `block` or, in a regular file, nothing of it.
    fn write_whole(&mut self, block: &[u8]) -> io::Result<()> {
        let mut written = 0;
        while written < block.len() {
            match self.file.write(&block[written..]) {
                Ok(0) => return Err(self.cut_back(written, io::ErrorKind::WriteZero.into())),
                Ok(n) => written += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(self.cut_back(written, err)),
            }
        }
        Ok(())
    }

    /// Removes the `written` bytes of a block that could not be finished.
    fn cut_back(&mut self, written: usize, err: io::Error) -> io::Error {
        if written > 0 && self.regular {
            if let Ok(meta) = self.file.metadata() {
                // Shrinking frees blocks: it works on a full disk.
                let _ = self.file.set_len(meta.len().saturating_sub(written as u64));
            }
        }
        err
    }
}

fn is_fifo(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|meta| meta.file_type().is_fifo())
}

/// The writer thread's state.
struct Writer {
    destination: Destination,
    out: Option<Out>,
    counters: Arc<Counters>,
    requests: Arc<Requests>,
    disk_full: bool,
    reader_gone: bool,
    failures_reported: u64,
}

/// Other write failures reported on stderr before the rest are only counted.
const FAILURES_REPORTED: u64 = 3;

impl Writer {
    fn run(&mut self, lines: &mpsc::Receiver<Message>) {
        if self.out.is_none() {
            self.out = self.open();
        }
        for message in lines {
            if self.requests.reopen.swap(false, Ordering::Relaxed) {
                self.reopen();
            }
            if let Message::Lines { bytes, lines } = message {
                self.write(&bytes, lines);
                self.counters.queued.fetch_sub(lines, Ordering::Relaxed);
            }
        }
    }

    /// Opens the `--output` file, waiting for a FIFO's reader if it has none yet.
    fn open(&self) -> Option<Out> {
        let Destination::File(path) = &self.destination else {
            return Out::stdout().ok();
        };
        if is_fifo(path) {
            let no_reader = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path);
            match no_reader {
                Ok(file) => {
                    set_blocking(&file);
                    return Some(Out::from_file(file));
                }
                Err(err) if err.raw_os_error() == Some(libc::ENXIO) => note!(
                    "rstwatch: --output {} is a FIFO with no reader: records wait until one \
                     opens it (beyond {QUEUE_LINES} they are dropped and counted)",
                    path.display()
                ),
                Err(_) => {}
            }
        }
        match Out::file(path) {
            Ok(out) => Some(out),
            Err(err) => {
                note!(
                    "rstwatch: cannot open --output {}: {err}; records are dropped and counted",
                    path.display()
                );
                None
            }
        }
    }

    fn reopen(&mut self) {
        if let Destination::File(path) = &self.destination {
            note!("rstwatch: reopening --output {}", path.display());
            if let Some(out) = self.open() {
                self.out = Some(out);
                self.reader_gone = false;
            }
        }
    }

    /// Writes a block of `lines` whole lines.
    fn write(&mut self, block: &[u8], lines: u64) {
        loop {
            let Some(out) = self.out.as_mut().filter(|_| !self.reader_gone) else {
                self.counters
                    .dropped_write_failed
                    .fetch_add(lines, Ordering::Relaxed);
                return;
            };
            let err = match out.write_whole(block) {
                Ok(()) => {
                    self.counters.written.fetch_add(lines, Ordering::Relaxed);
                    if std::mem::take(&mut self.disk_full) {
                        note!(
                            "rstwatch: {}: space is back, writing again",
                            self.destination.describe()
                        );
                    }
                    return;
                }
                Err(err) => err,
            };
            match err.raw_os_error() {
                Some(libc::ENOSPC | libc::EDQUOT)
                    if !self.requests.closing.load(Ordering::Relaxed) =>
                {
                    if !std::mem::replace(&mut self.disk_full, true) {
                        note!(
                            "rstwatch: {}: {err}; retrying until space returns (records wait \
                             in a queue of {QUEUE_LINES}, beyond it they are dropped and counted)",
                            self.destination.describe()
                        );
                    }
                    thread::sleep(FULL_DISK_RETRY);
                    if self.requests.reopen.swap(false, Ordering::Relaxed) {
                        self.reopen();
                    }
                    continue;
                }
                Some(libc::EPIPE) => {
                    note!(
                        "rstwatch: {}: the reader went away; records are dropped and counted \
                         from now on",
                        self.destination.describe()
                    );
                    self.reader_gone = true;
                }
                _ => {
                    self.failures_reported += 1;
                    if self.failures_reported <= FAILURES_REPORTED {
                        note!(
                            "rstwatch: {}: {lines} record(s) dropped: {err}",
                            self.destination.describe()
                        );
                    }
                }
            }
            self.counters
                .dropped_write_failed
                .fetch_add(lines, Ordering::Relaxed);
            return;
        }
    }
}

/// Clears O_NONBLOCK: the FIFO was opened non-blocking only to learn whether it had a reader;
/// from now on a slow reader makes the writer wait, never capture.
fn set_blocking(file: &File) {
    use std::os::fd::AsRawFd as _;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor this function's caller owns; no pointers involved.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("rstwatch-file-{}-{name}", std::process::id()))
    }

    /// A new FIFO named after `name`.
    fn fifo(name: &str) -> PathBuf {
        let path = temp_path(name);
        let _ = std::fs::remove_file(&path);
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        path
    }

    #[test]
    fn lines_reach_the_file_in_order_and_are_counted() {
        let path = temp_path("order");
        let _ = std::fs::remove_file(&path);
        let mut sink = LineSink::start(Destination::File(path.clone())).unwrap();
        for n in 0..100 {
            sink.add_line(format!("{n}").as_bytes());
            if n % 7 == 0 {
                sink.end_batch();
            }
        }
        sink.end_batch();
        let stats = sink.close(Duration::from_secs(5));
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let expected: String = (0..100).map(|n| format!("{n}\n")).collect();
        assert_eq!(text, expected);
        assert_eq!(
            stats,
            LineStats {
                written: 100,
                ..LineStats::default()
            }
        );
    }

    #[test]
    fn reopen_follows_a_renamed_file() {
        let path = temp_path("rotate");
        let rotated = temp_path("rotate.1");
        let _ = std::fs::remove_file(&path);
        let mut sink = LineSink::start(Destination::File(path.clone())).unwrap();
        sink.add_line(b"before");
        sink.end_batch();
        // The writer holds the file: wait until the line is in it, then rotate.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sink.stats().written < 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the line was not written"
            );
            thread::yield_now();
        }
        std::fs::rename(&path, &rotated).unwrap();
        sink.reopen();
        sink.add_line(b"after");
        sink.end_batch();
        sink.close(Duration::from_secs(5));
        let old = std::fs::read_to_string(&rotated).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::remove_file(&rotated).unwrap();
        assert_eq!((old.as_str(), new.as_str()), ("before\n", "after\n"));
    }

    #[test]
    fn a_fifo_without_reader_waits_in_the_writer_not_in_start() {
        let path = fifo("fifo");
        let mut sink = LineSink::start(Destination::File(path.clone())).unwrap();
        sink.add_line(b"queued");
        sink.end_batch();
        let mut reader = File::open(&path).unwrap();
        let mut text = String::new();
        let stats = sink.close(Duration::from_secs(5));
        reader.read_to_string(&mut text).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(text, "queued\n");
        assert_eq!(stats.written, 1);
    }

    #[test]
    fn a_batch_beyond_the_queues_room_is_cut_at_a_line_and_the_rest_counted() {
        let path = fifo("full-queue");
        // Without a reader the writer waits to open the FIFO: nothing leaves the queue.
        let mut sink = LineSink::start(Destination::File(path.clone())).unwrap();
        let extra = 100;
        for n in 0..QUEUE_LINES + extra {
            sink.add_line(format!("{n}").as_bytes());
        }
        sink.end_batch();
        let stats = sink.stats();
        assert_eq!(stats.queued, QUEUE_LINES as u64);
        assert_eq!(stats.dropped_queue_full, extra as u64);
        let mut reader = File::open(&path).unwrap();
        let mut text = String::new();
        let stats = sink.close(Duration::from_secs(5));
        reader.read_to_string(&mut text).unwrap();
        std::fs::remove_file(&path).unwrap();
        let expected: String = (0..QUEUE_LINES).map(|n| format!("{n}\n")).collect();
        assert_eq!(text, expected);
        assert_eq!(stats.written, QUEUE_LINES as u64);
    }
}
