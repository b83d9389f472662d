//! The pcap-ng sink for `--pcap FILE`: the frames the kernel copied of every reported RST and
//! of its follow-up RSTs, one interface block per watched interface, each RST carrying its
//! verdict as a packet comment. Data follow-ups carry no bytes from the kernel, so they are not
//! written. The file is rotated to `FILE.1` past its size cap and reopened on request (SIGHUP).

use std::{
    borrow::Cow,
    collections::HashMap,
    fs::File,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::UNIX_EPOCH,
};

use anyhow::Context;
use pcap_file::{
    pcapng::{
        blocks::{
            enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption},
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
        },
        PcapNgBlock, PcapNgWriter,
    },
    DataLink,
};
use rstwatch_common::event::FRAME_BYTES;

use super::Sink;
use crate::{
    error::UserError,
    report::{CapturedFrame, Direction, ResetReport},
};

/// `epb_flags` direction bits: seen by the XDP (ingress) or the TC egress hook.
const INBOUND: u32 = 0b01;
const OUTBOUND: u32 = 0b10;

/// `if_tsresol` 9: timestamps in nanoseconds, as the kernel takes them.
const NANOSECONDS: u8 = 9;

/// Asks the sink to reopen its file before its next write; clones share the request.
#[derive(Clone, Debug, Default)]
pub struct ReopenRequest(Arc<AtomicBool>);

impl ReopenRequest {
    pub fn request(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn take(&self) -> bool {
        self.0.swap(false, Ordering::Relaxed)
    }
}

/// A watched interface: its index and name.
pub struct Interface {
    pub index: u32,
    pub name: String,
}

pub struct PcapSink {
    path: PathBuf,
    /// Bytes after which the file is rotated; `None`: never.
    max_bytes: Option<u64>,
    interfaces: Vec<Interface>,
    /// Interface block of each index.
    block_of: HashMap<u32, u32>,
    /// `None` after a write error, until the next reopen.
    writer: Option<PcapNgWriter<BufWriter<File>>>,
    /// Bytes in the current file.
    written: u64,
    reopen: ReopenRequest,
}

impl PcapSink {
    /// Creates (truncates) `path` and writes its section and interface blocks.
    pub fn create(
        path: &Path,
        max_bytes: Option<u64>,
        interfaces: Vec<Interface>,
        reopen: ReopenRequest,
    ) -> anyhow::Result<Self> {
        let block_of = interfaces
            .iter()
            .enumerate()
            .map(|(block, iface)| (iface.index, block as u32))
            .collect();
        let mut sink = Self {
            path: path.to_owned(),
            max_bytes,
            interfaces,
            block_of,
            writer: None,
            written: 0,
            reopen,
        };
        sink.open().map_err(|err| {
            UserError(format!(
                "--pcap {}: cannot create it ({err:#}); choose a writable path",
                path.display()
            ))
        })?;
        Ok(sink)
    }

    fn open(&mut self) -> anyhow::Result<()> {
        self.writer = None;
        let file = File::create(&self.path)?;
        let mut writer = PcapNgWriter::new(BufWriter::new(file))?;
        let mut written = 0;
        for iface in &self.interfaces {
            let block = InterfaceDescriptionBlock {
                linktype: DataLink::ETHERNET,
                snaplen: FRAME_BYTES as u32,
                options: vec![
                    InterfaceDescriptionOption::IfName(Cow::Borrowed(&iface.name)),
                    InterfaceDescriptionOption::IfTsResol(NANOSECONDS),
                ],
            };
            written += writer.write_pcapng_block(block)?;
        }
        // The section header block is written by `PcapNgWriter::new`; its size is not
        // returned, and a cap is never that tight.
        self.written = written as u64;
        self.writer = Some(writer);
        Ok(())
    }

    /// Closes the current file, moves it to `FILE.1` (replacing an older one) and starts anew.
    fn rotate(&mut self) -> anyhow::Result<()> {
        if let Some(mut writer) = self.writer.take() {
            writer.get_mut().flush()?;
        }
        let mut rotated = self.path.clone().into_os_string();
        rotated.push(".1");
        std::fs::rename(&self.path, &rotated)
            .with_context(|| format!("renaming it to {}", Path::new(&rotated).display()))?;
        self.open()
    }

    fn write_frame(&mut self, report: &ResetReport, frame: &CapturedFrame) -> anyhow::Result<()> {
        let interface_id = self
            .block_of
            .get(&frame.ifindex)
            .copied()
            // A watched interface that came back under a new index: found by name.
            .or_else(|| {
                (self.interfaces.iter())
                    .position(|iface| *iface.name == *report.iface)
                    .map(|block| block as u32)
            })
            .unwrap_or(0);
        let comment = comment(report, frame);
        // The block's size as pcap-ng lays it out: 28 bytes of header and fields, the data
        // padded to 4, the comment option (4 + text padded to 4), the flags option (8), the end
        // of options (4) and the trailing length (4).
        let padded = |len: usize| len.div_ceil(4) as u64 * 4;
        let size = 28 + padded(frame.bytes.len()) + 4 + padded(comment.len()) + 8 + 4 + 4;
        let block = EnhancedPacketBlock {
            interface_id,
            timestamp: frame.ts.duration_since(UNIX_EPOCH).unwrap_or_default(),
            original_len: frame.wire_len,
            data: Cow::Borrowed(&frame.bytes),
            options: vec![
                EnhancedPacketOption::Comment(Cow::Owned(comment)),
                EnhancedPacketOption::Flags(match frame.direction {
                    Direction::Ingress => INBOUND,
                    Direction::Egress => OUTBOUND,
                }),
            ],
        }
        .into_block();
        if self.max_bytes.is_some_and(|max| self.written + size > max) {
            self.rotate()?;
        }
        if let Some(writer) = &mut self.writer {
            let written = writer.write_block(&block)? as u64;
            debug_assert_eq!(written, size, "the size the cap counts");
            self.written += written;
        }
        Ok(())
    }

    /// A write error is reported once and stops writing until the next reopen: the pcap is a
    /// drill-down aid, never a reason to stop watching.
    fn give_up(&mut self, err: anyhow::Error) {
        eprintln!(
            "rstwatch: --pcap {}: {err:#}; no more frames are written until SIGHUP reopens it",
            self.path.display()
        );
        self.writer = None;
    }

    fn reopen_if_asked(&mut self) {
        if self.reopen.take() {
            if let Some(mut writer) = self.writer.take() {
                let _ = writer.get_mut().flush();
            }
            if let Err(err) = self.open() {
                self.give_up(err);
            }
        }
    }
}

/// The verdict on a RST, as Wireshark shows it (`frame.comment`): only a middlebox verdict
/// contains the word "middlebox".
pub fn comment(report: &ResetReport, frame: &CapturedFrame) -> String {
    if frame.followup {
        return "rstwatch: a follow-up RST of the reset reported before".to_owned();
    }
    let origin = if report.middlebox {
        let evidence: Vec<&str> = report.evidence.iter().map(|e| e.as_str()).collect();
        format!("injected by a middlebox ({})", evidence.join(", "))
    } else {
        "from the endpoint".to_owned()
    };
    format!(
        "rstwatch: {} reset claimed by the {}, {origin}; community_id {}",
        report.class.as_str(),
        report.sender.as_str(),
        report.community_id
    )
}

impl Sink for PcapSink {
    fn write(&mut self, report: &ResetReport, _record: &[u8]) -> anyhow::Result<()> {
        self.reopen_if_asked();
        for frame in &report.frames {
            if self.writer.is_none() {
                break;
            }
            if let Err(err) = self.write_frame(report, frame) {
                self.give_up(err);
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.reopen_if_asked();
        if let Some(writer) = &mut self.writer {
            if let Err(err) = writer.get_mut().flush() {
                self.give_up(err.into());
            }
        }
        Ok(())
    }

    fn takes_frames(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use pcap_file::pcapng::{Block, PcapNgReader};

    use super::*;
    use crate::test_support::sample;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            let path = std::env::temp_dir().join(format!("rstwatch-pcap-{}", std::process::id()));
            std::fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn frame(followup: bool) -> CapturedFrame {
        CapturedFrame {
            ts: UNIX_EPOCH + Duration::from_nanos(1_714_564_800_250_000_001),
            ifindex: 7,
            direction: Direction::Ingress,
            followup,
            wire_len: 60,
            bytes: vec![0xab; 54],
        }
    }

    fn blocks(path: &Path) -> Vec<Block<'static>> {
        let mut reader = PcapNgReader::new(File::open(path).unwrap()).unwrap();
        let mut blocks = Vec::new();
        while let Some(block) = reader.next_block() {
            blocks.push(block.unwrap().into_owned());
        }
        blocks
    }

    #[test]
    fn frames_are_written_with_their_interface_and_verdict_and_rotated_past_the_cap() {
        let dir = TempDir::new();
        let path = dir.0.join("rst.pcapng");
        let interfaces = vec![
            Interface {
                index: 3,
                name: "eth1".into(),
            },
            Interface {
                index: 7,
                name: "eth0".into(),
            },
        ];
        let reopen = ReopenRequest::default();
        let mut sink = PcapSink::create(&path, Some(1500), interfaces, reopen.clone()).unwrap();
        let mut report = sample::middlebox_report();
        report.frames = vec![frame(false), frame(true)];
        sink.write(&report, b"").unwrap();
        sink.flush().unwrap();
        let written = blocks(&path);
        let packets: Vec<_> = written
            .iter()
            .filter_map(|block| match block {
                Block::EnhancedPacket(packet) => Some(packet),
                _ => None,
            })
            .collect();
        assert_eq!(packets.len(), 2);
        assert_eq!(packets[0].interface_id, 1, "eth0 is the second block");
        assert_eq!(packets[0].original_len, 60);
        assert_eq!(packets[0].data.len(), 54);
        assert_eq!(
            packets[0].timestamp,
            Duration::from_nanos(1_714_564_800_250_000_001)
        );
        let comments: Vec<_> = packets
            .iter()
            .map(|packet| match &packet.options[..] {
                [EnhancedPacketOption::Comment(text), EnhancedPacketOption::Flags(INBOUND)] => {
                    text.to_string()
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(comments[0].contains("middlebox"), "{}", comments[0]);
        assert!(!comments[1].contains("middlebox"), "{}", comments[1]);

        // Past 1500 bytes the file moves to `.1`, and the new one starts with its interfaces.
        for _ in 0..5 {
            sink.write(&report, b"").unwrap();
        }
        sink.flush().unwrap();
        let rotated = dir.0.join("rst.pcapng.1");
        assert!(rotated.exists());
        assert!(std::fs::metadata(&path).unwrap().len() <= 1500);
        assert!(std::fs::metadata(&rotated).unwrap().len() <= 1500);
        let fresh = blocks(&path);
        assert!(matches!(
            fresh[..2],
            [
                Block::InterfaceDescription(_),
                Block::InterfaceDescription(_)
            ]
        ));

        // A reopen starts the file afresh (after a rotation by logrotate, say).
        std::fs::remove_file(&path).unwrap();
        reopen.request();
        sink.flush().unwrap();
        let reopened = blocks(&path);
        assert_eq!(
            reopened.len(),
            2,
            "the two interface blocks (the reader keeps the section)"
        );
        assert!(reopened
            .iter()
            .all(|block| matches!(block, Block::InterfaceDescription(_))));
    }

    #[test]
    fn only_a_middlebox_verdict_mentions_a_middlebox() {
        let mut report = sample::teardown_report();
        report.middlebox = false;
        assert!(!comment(&report, &frame(false)).contains("middlebox"));
        assert!(comment(&report, &frame(false)).starts_with("rstwatch: teardown reset"));
    }
}
