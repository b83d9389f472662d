//! The on-disk spool: records the receiver could not take, kept in order until it comes back,
//! and across restarts of rstwatch.
//!
//! Layout of the spool directory:
//! - `NNNNNNNNNNNNNNNNNNNN.seg`: append-only segment files, oldest (lowest number) first; each
//!   record is a 4-byte little-endian length followed by the record. New records go to the
//!   newest segment until it reaches its size, then a new one starts.
//! - `cursor`: `SEGMENT OFFSET` of the first record not yet delivered, rewritten (atomically,
//!   by rename) after each delivery from the spool; a segment is deleted once delivered.
//! - `lock`: held with `flock` so that two rstwatch instances never share a spool.
//!
//! The spool never grows past `max_bytes` of segment files: a record that does not fit is
//! refused and the caller counts it as dropped. A torn record at the end of a segment (a crash
//! mid-write) is cut off when the spool is opened. When in doubt the spool re-delivers (a
//! duplicate) rather than skipping (a loss).

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::{self, BufReader, Read, Seek, SeekFrom, Write},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use bytes::Bytes;

const SEGMENT_SUFFIX: &str = ".seg";
const CURSOR: &str = "cursor";
const LOCK: &str = "lock";
const LENGTH_BYTES: u64 = 4;
/// No syslog message comes near this; a larger length means a damaged segment.
const MAX_RECORD: usize = 1 << 20;

/// Why the spool directory cannot be used; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error(
        "cannot use spool directory {dir}: {source}; choose a writable directory with --spool-dir"
    )]
    Io {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("spool directory {dir} is in use by another rstwatch; give each instance its own --spool-dir")]
    Locked { dir: PathBuf },
}

/// Why a record was not spooled.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("the spool is full")]
    Full,
    #[error("cannot write to the spool: {0}")]
    Io(#[from] io::Error),
}

struct Segment {
    id: u64,
    /// Length of the file.
    bytes: u64,
    /// Records in it not yet delivered.
    records: u64,
}

/// Records read from the head of the spool, to be committed once delivered.
pub struct SpoolBatch {
    segment: u64,
    pub records: Vec<Bytes>,
    /// Offset just past each record.
    ends: Vec<u64>,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_max: u64,
    /// Oldest first; new records go to the last one.
    segments: VecDeque<Segment>,
    /// Open on the last segment for appending.
    writer: Option<File>,
    /// Where the first undelivered record of the first segment starts.
    head_offset: u64,
    records: u64,
    disk_bytes: u64,
    next_id: u64,
    _lock: File,
}

impl Spool {
    /// Opens (creating it if needed) the spool in `dir`, ready to re-deliver what an earlier
    /// run left there.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        let io_error = |source| SpoolError::Io {
            dir: dir.to_owned(),
            source,
        };
        fs::create_dir_all(dir).map_err(io_error)?;
        let lock = File::create(dir.join(LOCK)).map_err(io_error)?;
        // SAFETY: flock only reads the descriptor, which `lock` keeps open for the call.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let error = io::Error::last_os_error();
            return Err(if error.kind() == io::ErrorKind::WouldBlock {
                SpoolError::Locked {
                    dir: dir.to_owned(),
                }
            } else {
                io_error(error)
            });
        }

        let mut ids = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_error)? {
            let name = entry.map_err(io_error)?.file_name();
            let id = name
                .to_str()
                .and_then(|name| name.strip_suffix(SEGMENT_SUFFIX))
                .and_then(|stem| stem.parse::<u64>().ok());
            ids.extend(id);
        }
        ids.sort_unstable();
        let cursor = read_cursor(dir);

        let mut spool = Spool {
            dir: dir.to_owned(),
            max_bytes,
            segment_max: (max_bytes / 8).clamp(64 << 10, 8 << 20),
            segments: VecDeque::new(),
            writer: None,
            head_offset: 0,
            records: 0,
            disk_bytes: 0,
            next_id: ids.last().map_or(1, |last| last + 1),
            _lock: lock,
        };
        for id in ids {
            let start = match cursor {
                Some((segment, offset)) if segment == id && spool.segments.is_empty() => offset,
                _ => 0,
            };
            let path = spool.segment_path(id);
            let scan = scan_segment(&path, start).map_err(io_error)?;
            if scan.records == 0 {
                fs::remove_file(&path).map_err(io_error)?;
                continue;
            }
            if spool.segments.is_empty() {
                spool.head_offset = scan.start;
            }
            spool.records += scan.records;
            spool.disk_bytes += scan.bytes;
            spool.segments.push_back(Segment {
                id,
                bytes: scan.bytes,
                records: scan.records,
            });
        }
        spool.write_cursor().map_err(io_error)?;
        Ok(spool)
    }

    /// Records waiting for delivery.
    pub fn len(&self) -> u64 {
        self.records
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Size of the segment files.
    pub fn disk_bytes(&self) -> u64 {
        self.disk_bytes
    }

    /// Adds a record after all the others.
    pub fn append(&mut self, record: &[u8]) -> Result<(), AppendError> {
        let need = LENGTH_BYTES + record.len() as u64;
        if record.len() > MAX_RECORD || self.disk_bytes + need > self.max_bytes {
            return Err(AppendError::Full);
        }
        let start_new = self
            .segments
            .back()
            .is_none_or(|tail| tail.bytes > 0 && tail.bytes + need > self.segment_max);
        if start_new {
            self.writer = None;
            let id = self.next_id;
            File::create_new(self.segment_path(id))?;
            self.next_id += 1;
            self.segments.push_back(Segment {
                id,
                bytes: 0,
                records: 0,
            });
        }
        let tail_id = self.segments.back().expect("a tail segment exists").id;
        if self.writer.is_none() {
            let path = self.segment_path(tail_id);
            self.writer = Some(OpenOptions::new().append(true).open(path)?);
        }
        let mut encoded = Vec::with_capacity(need as usize);
        encoded.extend_from_slice(&(record.len() as u32).to_le_bytes());
        encoded.extend_from_slice(record);
        let writer = self.writer.as_mut().expect("writer opened above");
        if let Err(error) = writer.write_all(&encoded) {
            // Cut a partial record off so that the segment stays readable.
            self.writer = None;
            let tail = self.segments.back().expect("a tail segment exists");
            OpenOptions::new()
                .write(true)
                .open(self.segment_path(tail.id))?
                .set_len(tail.bytes)?;
            return Err(error.into());
        }
        let tail = self.segments.back_mut().expect("a tail segment exists");
        tail.bytes += need;
        tail.records += 1;
        self.records += 1;
        self.disk_bytes += need;
        Ok(())
    }

    /// Puts records before all the others (records taken from memory, which are older than
    /// anything spooled). Returns how many did not fit.
    pub fn prepend(&mut self, records: &[Bytes]) -> Result<u64, AppendError> {
        if records.is_empty() {
            return Ok(0);
        }
        let Some(head) = self.segments.front() else {
            let mut dropped = 0;
            for record in records {
                match self.append(record) {
                    Ok(()) => {}
                    Err(AppendError::Full) => dropped += 1,
                    Err(error) => return Err(error),
                }
            }
            return Ok(dropped);
        };
        // The head segment is rewritten as the new records followed by its undelivered rest;
        // its delivered part is freed in the process.
        // Saturating: a spool left by a run with a larger cap may be over this run's cap.
        let mut budget = self
            .max_bytes
            .saturating_sub(self.disk_bytes - self.head_offset);
        let mut rewritten = Vec::new();
        let mut added = 0;
        for record in records {
            let need = LENGTH_BYTES + record.len() as u64;
            if record.len() <= MAX_RECORD && need <= budget {
                rewritten.extend_from_slice(&(record.len() as u32).to_le_bytes());
                rewritten.extend_from_slice(record);
                budget -= need;
                added += 1;
            }
        }
        let (id, old_bytes) = (head.id, head.bytes);
        let path = self.segment_path(id);
        let mut old = File::open(&path)?;
        old.seek(SeekFrom::Start(self.head_offset))?;
        old.take(old_bytes - self.head_offset)
            .read_to_end(&mut rewritten)?;
        let temporary = self.dir.join("prepend.tmp");
        fs::write(&temporary, &rewritten)?;
        if self.segments.len() == 1 {
            self.writer = None;
        }
        // The cursor moves to the start first: a crash in between re-delivers, never skips.
        self.head_offset = 0;
        self.write_cursor()?;
        fs::rename(&temporary, &path)?;
        let head = self.segments.front_mut().expect("checked above");
        head.bytes = rewritten.len() as u64;
        head.records += added;
        self.records += added;
        self.disk_bytes = self.disk_bytes - old_bytes + head.bytes;
        Ok(records.len() as u64 - added)
    }

    /// Reads up to `max` of the oldest records (from one segment) without removing them.
    pub fn peek(&self, max: usize) -> io::Result<SpoolBatch> {
        let Some(head) = self.segments.front() else {
            return Ok(SpoolBatch {
                segment: 0,
                records: Vec::new(),
                ends: Vec::new(),
            });
        };
        let mut file = File::open(self.segment_path(head.id))?;
        file.seek(SeekFrom::Start(self.head_offset))?;
        let mut reader = BufReader::new(file.take(head.bytes - self.head_offset));
        let mut batch = SpoolBatch {
            segment: head.id,
            records: Vec::new(),
            ends: Vec::new(),
        };
        let mut offset = self.head_offset;
        while batch.records.len() < max && offset < head.bytes {
            let record = read_record(&mut reader)?;
            offset += LENGTH_BYTES + record.len() as u64;
            batch.records.push(record.into());
            batch.ends.push(offset);
        }
        Ok(batch)
    }

    /// Removes the first `delivered` records of `batch`, which must be the latest peek.
    pub fn commit(&mut self, batch: &SpoolBatch, delivered: usize) -> io::Result<()> {
        if delivered == 0 {
            return Ok(());
        }
        let head = self
            .segments
            .front_mut()
            .filter(|head| head.id == batch.segment)
            .expect("commit follows a peek of the same head segment");
        self.head_offset = batch.ends[delivered - 1];
        head.records -= delivered as u64;
        self.records -= delivered as u64;
        if head.records == 0 {
            let (id, bytes) = (head.id, head.bytes);
            self.segments.pop_front();
            if self.segments.is_empty() {
                self.writer = None;
            }
            self.head_offset = 0;
            self.disk_bytes -= bytes;
            fs::remove_file(self.segment_path(id))?;
        }
        self.write_cursor()
    }

    /// Forces the newest segment to stable storage (at shutdown).
    pub fn sync(&self) -> io::Result<()> {
        match &self.writer {
            Some(writer) => writer.sync_all(),
            None => Ok(()),
        }
    }

    fn segment_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:020}{SEGMENT_SUFFIX}"))
    }

    fn write_cursor(&self) -> io::Result<()> {
        let path = self.dir.join(CURSOR);
        let Some(head) = self.segments.front() else {
            return match fs::remove_file(&path) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
                _ => Ok(()),
            };
        };
        let temporary = self.dir.join("cursor.tmp");
        fs::write(&temporary, format!("{} {}\n", head.id, self.head_offset))?;
        fs::rename(temporary, path)
    }
}

fn read_cursor(dir: &Path) -> Option<(u64, u64)> {
    let text = fs::read_to_string(dir.join(CURSOR)).ok()?;
    let (segment, offset) = text.trim().split_once(' ')?;
    Some((segment.parse().ok()?, offset.parse().ok()?))
}

fn read_record(reader: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut length = [0u8; LENGTH_BYTES as usize];
    reader.read_exact(&mut length)?;
    let length = u32::from_le_bytes(length) as usize;
    if length > MAX_RECORD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "damaged spool segment",
        ));
    }
    let mut record = vec![0; length];
    reader.read_exact(&mut record)?;
    Ok(record)
}

struct Scan {
    /// Where delivery resumes: the cursor's offset when it is a record boundary, else 0.
    start: u64,
    /// Valid length of the segment.
    bytes: u64,
    /// Records from `start` on.
    records: u64,
}

/// Walks a segment's records, cutting off a torn or damaged tail.
fn scan_segment(path: &Path, cursor: u64) -> io::Result<Scan> {
    let data = fs::read(path)?;
    let mut boundaries = vec![0u64];
    let mut rest = data.as_slice();
    while let Ok(record) = read_record(&mut rest) {
        let end = boundaries.last().expect("starts with 0") + LENGTH_BYTES + record.len() as u64;
        boundaries.push(end);
    }
    let bytes = *boundaries.last().expect("starts with 0");
    if bytes < data.len() as u64 {
        log::warn!(
            "spool segment {} ends with a damaged record; cutting it off",
            path.display()
        );
        OpenOptions::new().write(true).open(path)?.set_len(bytes)?;
    }
    let start_index = boundaries
        .iter()
        .position(|&boundary| boundary == cursor)
        .unwrap_or(0);
    Ok(Scan {
        start: boundaries[start_index],
        bytes,
        records: (boundaries.len() - 1 - start_index) as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let path =
                std::env::temp_dir().join(format!("rstwatch-spool-{name}-{}", std::process::id()));
            let _absent = fs::remove_dir_all(&path);
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _gone = fs::remove_dir_all(&self.0);
        }
    }

    fn record(n: u32) -> Bytes {
        Bytes::from(format!("<134>1 record {n:05}"))
    }

    fn drain(spool: &mut Spool) -> Vec<Bytes> {
        let mut out = Vec::new();
        loop {
            let batch = spool.peek(7).unwrap();
            if batch.records.is_empty() {
                return out;
            }
            out.extend(batch.records.iter().cloned());
            spool.commit(&batch, batch.records.len()).unwrap();
        }
    }

    #[test]
    fn records_come_back_in_order_across_segments() {
        let dir = TempDir::new("order");
        let mut spool = Spool::open(&dir.0, 1 << 20).unwrap();
        for n in 0..10_000 {
            spool.append(&record(n)).unwrap();
        }
        assert!(spool.segments.len() > 1, "small segments roll over");
        assert_eq!(spool.len(), 10_000);
        let out = drain(&mut spool);
        assert_eq!(out, (0..10_000).map(record).collect::<Vec<_>>());
        assert!(spool.is_empty());
        assert_eq!(spool.disk_bytes(), 0);
        let leftovers: Vec<_> = fs::read_dir(&dir.0)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(SEGMENT_SUFFIX))
            .collect();
        assert!(
            leftovers.is_empty(),
            "delivered segments are deleted: {leftovers:?}"
        );
    }

    #[test]
    fn a_full_spool_refuses_records_until_delivery_frees_space() {
        let dir = TempDir::new("full");
        let mut spool = Spool::open(&dir.0, 64 << 10).unwrap();
        let mut stored = 0;
        while spool.append(&record(stored)).is_ok() {
            stored += 1;
        }
        assert!(matches!(spool.append(&record(0)), Err(AppendError::Full)));
        assert!(spool.disk_bytes() <= 64 << 10);
        let batch = spool.peek(usize::MAX).unwrap();
        spool.commit(&batch, batch.records.len()).unwrap();
        spool.append(&record(stored)).unwrap();
    }

    #[test]
    fn a_restart_resumes_after_the_last_delivered_record() {
        let dir = TempDir::new("restart");
        {
            let mut spool = Spool::open(&dir.0, 1 << 20).unwrap();
            for n in 0..20 {
                spool.append(&record(n)).unwrap();
            }
            let batch = spool.peek(5).unwrap();
            spool.commit(&batch, 3).unwrap();
        }
        let mut spool = Spool::open(&dir.0, 1 << 20).unwrap();
        assert_eq!(spool.len(), 17);
        assert_eq!(drain(&mut spool), (3..20).map(record).collect::<Vec<_>>());
    }

    #[test]
    fn a_torn_last_record_is_cut_off() {
        let dir = TempDir::new("torn");
        {
            let mut spool = Spool::open(&dir.0, 1 << 20).unwrap();
            for n in 0..3 {
                spool.append(&record(n)).unwrap();
            }
        }
        let segment = fs::read_dir(&dir.0)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .find(|path| path.to_string_lossy().ends_with(SEGMENT_SUFFIX))
            .unwrap();
        let mut file = OpenOptions::new().append(true).open(&segment).unwrap();
        file.write_all(&[200, 0, 0, 0, b'x']).unwrap();
        let mut spool = Spool::open(&dir.0, 1 << 20).unwrap();
        assert_eq!(spool.len(), 3);
        spool.append(&record(3)).unwrap();
        assert_eq!(drain(&mut spool), (0..4).map(record).collect::<Vec<_>>());
    }

    #[test]
    fn prepended_records_come_first() {
        let dir = TempDir::new("prepend");
        let mut spool = Spool::open(&dir.0, 1 << 20).unwrap();
        for n in 10..20 {
            spool.append(&record(n)).unwrap();
        }
        let batch = spool.peek(2).unwrap();
        spool.commit(&batch, 2).unwrap();
        let older: Vec<Bytes> = (0..5).map(record).collect();
        assert_eq!(spool.prepend(&older).unwrap(), 0);
        spool.append(&record(20)).unwrap();
        let expected: Vec<Bytes> = (0..5).chain(12..21).map(record).collect();
        assert_eq!(spool.len(), expected.len() as u64);
        drop(spool);
        let mut spool = Spool::open(&dir.0, 1 << 20).unwrap();
        assert_eq!(drain(&mut spool), expected);
    }

    #[test]
    fn a_spool_over_a_lowered_cap_refuses_more_without_failing() {
        let dir = TempDir::new("lowered-cap");
        {
            let mut spool = Spool::open(&dir.0, 1 << 20).unwrap();
            for n in 0..5_000 {
                spool.append(&record(n)).unwrap();
            }
        }
        let mut spool = Spool::open(&dir.0, 64 << 10).unwrap();
        assert_eq!(spool.len(), 5_000, "nothing already spooled is thrown away");
        assert!(matches!(spool.append(&record(0)), Err(AppendError::Full)));
        assert_eq!(spool.prepend(&[record(0), record(1)]).unwrap(), 2);
        assert_eq!(
            drain(&mut spool),
            (0..5_000).map(record).collect::<Vec<_>>()
        );
    }

    #[test]
    fn prepend_to_an_empty_spool_appends() {
        let dir = TempDir::new("prepend-empty");
        let mut spool = Spool::open(&dir.0, 1 << 20).unwrap();
        let records: Vec<Bytes> = (0..3).map(record).collect();
        assert_eq!(spool.prepend(&records).unwrap(), 0);
        assert_eq!(drain(&mut spool), records);
    }

    #[test]
    fn two_instances_cannot_share_a_spool() {
        let dir = TempDir::new("lock");
        let _first = Spool::open(&dir.0, 1 << 20).unwrap();
        let error = Spool::open(&dir.0, 1 << 20)
            .err()
            .expect("second open fails");
        assert!(error.to_string().contains("--spool-dir"), "{error}");
    }
}
