//! Reading capture files: pcap and pcap-ng, from a file or a pipe, one frame at a time with
//! its timestamp, link type and interface. Decoding the frames is `link` (down to IP) and
//! `headers` (IP and TCP).
//!
//! The reader keeps its own buffer and hands slices of it to `pcap-file`'s parsers, so it
//! always knows the byte offset it has reached: a file that breaks off or holds garbage is
//! reported with where it breaks, after everything before that point was read.

pub mod headers;
pub mod link;

use std::{fmt, io::Read};

use pcap_file::{
    pcap::PcapParser,
    pcapng::{
        blocks::{
            enhanced_packet::EnhancedPacketOption,
            interface_description::InterfaceDescriptionOption,
        },
        Block, PcapNgParser,
    },
    PcapError, TsResolution,
};

/// What is read from the input at a time (and the most a single block may hold).
const READ_CHUNK: usize = 1 << 20;
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];
/// pcap-ng's default timestamp unit: microseconds.
const PCAPNG_DEFAULT_TSRESOL: u8 = 6;

/// One frame as a capture file recorded it.
#[derive(Clone, Copy, Debug)]
pub struct FileFrame<'a> {
    /// Nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    pub link_type: u32,
    /// Index into `CaptureReader::interfaces`.
    pub interface: usize,
    /// The bytes captured (perhaps fewer than `wire_len`).
    pub data: &'a [u8],
    /// The frame's length on the wire.
    pub wire_len: usize,
    /// pcap-ng's epb_flags direction, when recorded.
    pub way: link::Way,
}

/// Where a capture file stops being readable.
#[derive(Debug)]
pub struct CaptureError {
    /// Byte offset of the block or record that could not be read.
    pub offset: u64,
    /// Frames read before it.
    pub frames: u64,
    pub reason: String,
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at byte offset {} (after {} frames)",
            self.reason, self.offset, self.frames
        )
    }
}

impl std::error::Error for CaptureError {}

/// An interface as the capture describes it.
#[derive(Clone, Debug)]
pub struct Interface {
    pub name: Option<String>,
    pub link_type: u32,
    /// Nanoseconds per timestamp unit; 0 when the unit is a power of two (`tsresol_bits`).
    ns_per_tick: u64,
    /// pcap-ng's binary resolution: ticks per second is 2^this.
    tsresol_bits: u8,
}

enum Format {
    Pcap(PcapParser),
    PcapNg(PcapNgParser),
}

/// Reads frames from pcap or pcap-ng bytes.
pub struct CaptureReader {
    input: Input,
    format: Format,
    interfaces: Vec<Interface>,
}

/// The input, buffered: `buffer[start..end]` is read and not yet parsed.
struct Input {
    source: Box<dyn Read>,
    buffer: Vec<u8>,
    start: usize,
    end: usize,
    /// Byte offset in the input of `buffer[start]`.
    offset: u64,
    frames: u64,
    eof: bool,
}

impl CaptureReader {
    /// Reads the file header; fails if `source` is not a pcap or pcap-ng capture.
    pub fn new(source: Box<dyn Read>) -> Result<Self, CaptureError> {
        let mut input = Input {
            source,
            buffer: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            offset: 0,
            frames: 0,
            eof: false,
        };
        while input.end < PCAPNG_MAGIC.len() && input.fill()? {}
        let format = if input.buffer[..input.end].starts_with(&PCAPNG_MAGIC) {
            Format::PcapNg(input.parse_header(PcapNgParser::new)?)
        } else {
            Format::Pcap(input.parse_header(PcapParser::new)?)
        };
        let mut interfaces = Vec::new();
        if let Format::Pcap(parser) = &format {
            let header = parser.header();
            let ns_per_tick = match header.ts_resolution {
                TsResolution::MicroSecond => 1_000,
                TsResolution::NanoSecond => 1,
            };
            interfaces.push(Interface {
                name: None,
                link_type: u32::from(header.datalink),
                ns_per_tick,
                tsresol_bits: 0,
            });
        }
        Ok(Self {
            input,
            format,
            interfaces,
        })
    }

    pub fn interfaces(&self) -> &[Interface] {
        &self.interfaces
    }

    /// Bytes of the input consumed so far.
    pub fn offset(&self) -> u64 {
        self.input.offset
    }

    /// The next frame, `None` at the end of the input.
    pub fn next_frame(&mut self) -> Result<Option<FileFrame<'_>>, CaptureError> {
        // The frame's place in the buffer is found first and borrowed only once the loop is
        // done: a borrow returned from inside the loop would hold the buffer for every turn.
        let (found, data_start) = loop {
            let input = &mut self.input;
            let bytes = &input.buffer[input.start..input.end];
            let parsed = match &mut self.format {
                Format::Pcap(parser) => next_pcap(parser, bytes),
                Format::PcapNg(parser) => next_pcapng(parser, bytes, &mut self.interfaces),
            };
            match parsed {
                Ok((consumed, Some(found))) => {
                    let data_start = input.start + found.data_offset;
                    input.consume(consumed);
                    input.frames += 1;
                    break (found, data_start);
                }
                Ok((consumed, None)) => input.consume(consumed),
                Err(PcapError::IncompleteBuffer) => {
                    if !input.fill()? {
                        if input.start == input.end {
                            return Ok(None);
                        }
                        return Err(
                            input.error("the capture ends in the middle of a packet".into())
                        );
                    }
                }
                Err(err) => return Err(input.error(format!("the capture is corrupt: {err}"))),
            }
        };
        let interface = &self.interfaces[found.interface];
        Ok(Some(FileFrame {
            ts_ns: interface.ns_of(found.ticks),
            link_type: interface.link_type,
            interface: found.interface,
            data: &self.input.buffer[data_start..data_start + found.data_len],
            wire_len: found.wire_len,
            way: found.way,
        }))
    }
}

impl Input {
    fn parse_header<T>(
        &mut self,
        parse: impl Fn(&[u8]) -> Result<(&[u8], T), PcapError>,
    ) -> Result<T, CaptureError> {
        loop {
            let bytes = &self.buffer[self.start..self.end];
            match parse(bytes) {
                Ok((rest, value)) => {
                    let consumed = bytes.len() - rest.len();
                    self.consume(consumed);
                    return Ok(value);
                }
                Err(PcapError::IncompleteBuffer) if !self.eof => {
                    self.fill()?;
                }
                Err(err) => {
                    return Err(self.error(format!(
                        "not a pcap or pcap-ng capture ({err}); write one with tcpdump -w or \
                         save it from Wireshark"
                    )))
                }
            }
        }
    }

    fn consume(&mut self, bytes: usize) {
        self.start += bytes;
        self.offset += bytes as u64;
    }

    /// Reads more input; `false` at its end. Grows the buffer for a block larger than it.
    fn fill(&mut self) -> Result<bool, CaptureError> {
        if self.eof {
            return Ok(false);
        }
        self.buffer.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        if self.end == self.buffer.len() {
            self.buffer.resize(self.buffer.len() * 2, 0);
        }
        loop {
            match self.source.read(&mut self.buffer[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(true);
                }
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => return Err(self.error(format!("cannot read the capture: {err}"))),
            }
        }
    }

    fn error(&self, reason: String) -> CaptureError {
        CaptureError {
            offset: self.offset,
            frames: self.frames,
            reason,
        }
    }
}

impl Interface {
    fn ns_of(&self, ticks: u64) -> u64 {
        if self.ns_per_tick != 0 {
            ticks.saturating_mul(self.ns_per_tick)
        } else {
            let per_sec = 1u128 << self.tsresol_bits;
            (ticks as u128 * 1_000_000_000 / per_sec) as u64
        }
    }

    /// The unit of pcap-ng's if_tsresol: 10^-n seconds, or 2^-n with the high bit set.
    fn pcapng(name: Option<String>, link_type: u32, tsresol: u8) -> Self {
        let (ns_per_tick, tsresol_bits) = if tsresol & 0x80 != 0 {
            (0, (tsresol & 0x7f).min(63))
        } else if tsresol <= 9 {
            (10u64.pow(9 - tsresol as u32), 0)
        } else {
            // Finer than a nanosecond: kept as a binary unit approximation would lose more.
            (0, 30)
        };
        Self {
            name,
            link_type,
            ns_per_tick,
            tsresol_bits,
        }
    }
}

/// A frame found in the buffer: where its bytes are, relative to the slice parsed.
struct Found {
    data_offset: usize,
    data_len: usize,
    wire_len: usize,
    ticks: u64,
    interface: usize,
    way: link::Way,
}

fn offset_in(outer: &[u8], inner: &[u8]) -> usize {
    inner.as_ptr() as usize - outer.as_ptr() as usize
}

fn next_pcap(parser: &PcapParser, bytes: &[u8]) -> Result<(usize, Option<Found>), PcapError> {
    let (rest, raw) = parser.next_raw_packet(bytes)?;
    let header = parser.header();
    let units_per_sec: u64 = match header.ts_resolution {
        TsResolution::MicroSecond => 1_000_000,
        TsResolution::NanoSecond => 1_000_000_000,
    };
    let ticks = (raw.ts_sec as u64) * units_per_sec + raw.ts_frac as u64;
    Ok((
        bytes.len() - rest.len(),
        Some(Found {
            data_offset: offset_in(bytes, &raw.data),
            data_len: raw.data.len(),
            wire_len: raw.orig_len as usize,
            ticks,
            interface: 0,
            way: link::Way::Unknown,
        }),
    ))
}

fn next_pcapng(
    parser: &mut PcapNgParser,
    bytes: &[u8],
    interfaces: &mut Vec<Interface>,
) -> Result<(usize, Option<Found>), PcapError> {
    let (rest, block) = parser.next_block(bytes)?;
    let consumed = bytes.len() - rest.len();
    let found = match block {
        Block::SectionHeader(_) => {
            interfaces.clear();
            None
        }
        Block::InterfaceDescription(idb) => {
            let mut name = None;
            let mut tsresol = PCAPNG_DEFAULT_TSRESOL;
            for option in &idb.options {
                match option {
                    InterfaceDescriptionOption::IfName(n) => name = Some(n.to_string()),
                    InterfaceDescriptionOption::IfTsResol(r) => tsresol = *r,
                    _ => {}
                }
            }
            interfaces.push(Interface::pcapng(name, u32::from(idb.linktype), tsresol));
            None
        }
        Block::EnhancedPacket(epb) => {
            let interface = epb.interface_id as usize;
            if interface >= interfaces.len() {
                return Err(PcapError::InvalidField(
                    "a packet names an interface the capture never described",
                ));
            }
            let way = epb
                .options
                .iter()
                .find_map(|option| match option {
                    EnhancedPacketOption::Flags(flags) => Some(*flags),
                    _ => None,
                })
                // epb_flags: the two low bits are the direction, 1 inbound, 2 outbound.
                .map_or(link::Way::Unknown, |flags| match flags & 0b11 {
                    1 => link::Way::In,
                    2 => link::Way::Out,
                    _ => link::Way::Unknown,
                });
            let data: &[u8] = &epb.data;
            Some(Found {
                data_offset: offset_in(bytes, data),
                data_len: data.len(),
                wire_len: epb.original_len as usize,
                // The crate hands the raw timestamp over as nanoseconds; it is in the
                // interface's unit.
                ticks: epb.timestamp.as_nanos() as u64,
                interface,
                way,
            })
        }
        _ => None,
    };
    Ok((consumed, found))
}
