//! `rstwatch explain FILE` against tshark on one large synthetic capture: packets per second on
//! one core, both tools run alternately on the same file in the same run.

use std::{
    fs::File,
    io::BufWriter,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};

use crate::frame::{TcpSegment, ACK, FIN, RST, SYN};

/// Conversations in the capture, interleaved so thousands are open at once: more than 100 k,
/// as a busy host's capture holds, so the replay's flow table is as large as theirs.
const CONVERSATIONS: u32 = 120_000;
/// Data segments per conversation, each answered by an ACK.
const DATA_SEGMENTS: u32 = 3;
/// Conversations open at a time: their packets are interleaved round-robin.
const CONCURRENT: u32 = 10_000;
const PAYLOAD: u32 = 100;
const PACKET_GAP: Duration = Duration::from_micros(2);
const RUNS: usize = 3;
const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

/// The figures of one comparison.
#[derive(Clone, Copy, Debug)]
pub struct CaptureReplay {
    pub packets: u64,
    pub resets: u64,
    /// Best of the runs, seconds.
    pub rstwatch_secs: f64,
    pub tshark_secs: f64,
}

impl CaptureReplay {
    pub fn rstwatch_rate(&self) -> f64 {
        self.packets as f64 / self.rstwatch_secs
    }

    pub fn tshark_rate(&self) -> f64 {
        self.packets as f64 / self.tshark_secs
    }

    pub fn markdown(&self) -> String {
        format!(
            "### Capture files: `rstwatch explain` and tshark\n\n\
             One synthetic pcap, {} packets in {} conversations ({} open at a time, every \
             third ending in a RST: {} resets), best of {RUNS} alternating runs on one core.\n\n\
             | tool | seconds | packets/s |\n|---|---|---|\n\
             | `rstwatch explain F --format json --output /dev/null` | {:.2} | {:.2} M |\n\
             | `tshark -r F -Y tcp.flags.reset==1 -T fields -e tcp.stream ...` | {:.2} | {:.2} M |\n\n\
             rstwatch is {:.1}x faster than tshark (target: at least 2 M packets/s and faster).\n",
            self.packets,
            CONVERSATIONS,
            CONCURRENT,
            self.resets,
            self.rstwatch_secs,
            self.rstwatch_rate() / 1e6,
            self.tshark_secs,
            self.tshark_rate() / 1e6,
            self.tshark_secs / self.rstwatch_secs,
        )
    }
}

/// Writes the capture to `path`; returns its packet and reset counts.
pub fn write_capture(path: &Path) -> Result<(u64, u64)> {
    let file = BufWriter::new(File::create(path).context("creating the bench capture")?);
    let mut writer = PcapWriter::with_header(file, PcapHeader::default())?;
    let (mut packets, mut resets) = (0u64, 0u64);
    let mut ts = Duration::from_secs(1_700_000_000);
    let per_conversation = 3 + 2 * DATA_SEGMENTS + 1;
    for batch in (0..CONVERSATIONS).step_by(CONCURRENT as usize) {
        let batch_len = CONCURRENT.min(CONVERSATIONS - batch);
        for step in 0..per_conversation {
            for i in batch..batch + batch_len {
                let segment = conversation_segment(i, step);
                resets += segment.is_rst() as u64;
                let frame = segment.to_ethernet_frame(MAC_A, MAC_B);
                writer.write_packet(&PcapPacket::new(ts, frame.len() as u32, &frame))?;
                packets += 1;
                ts += PACKET_GAP;
            }
        }
    }
    Ok((packets, resets))
}

/// Step `step` of conversation `i`: handshake, data and ACKs, then a RST from the server for
/// every third conversation and a FIN from the client for the others.
fn conversation_segment(i: u32, step: u32) -> TcpSegment {
    let client = SocketAddr::new(
        Ipv4Addr::new(198, 18, (i >> 8) as u8 & 0x7f, i as u8).into(),
        10_000 + (i % 50_000) as u16,
    );
    let server = SocketAddr::new(Ipv4Addr::new(198, 19, 0, 1).into(), 443);
    let (client_isn, server_isn) = (i.wrapping_mul(7919), i.wrapping_mul(104_729));
    let segment = |from_client: bool, flags: u8, seq: u32, ack: u32, len: u32| TcpSegment {
        src: if from_client { client } else { server },
        dst: if from_client { server } else { client },
        ttl: 64,
        ip_id: Some(step as u16),
        seq,
        ack,
        flags,
        payload_len: len,
    };
    let sent = |n: u32| client_isn.wrapping_add(1 + n * PAYLOAD);
    match step {
        0 => segment(true, SYN, client_isn, 0, 0),
        1 => segment(false, SYN | ACK, server_isn, client_isn.wrapping_add(1), 0),
        2 => segment(true, ACK, sent(0), server_isn.wrapping_add(1), 0),
        s if s < 3 + 2 * DATA_SEGMENTS => {
            let n = (s - 3) / 2;
            if (s - 3).is_multiple_of(2) {
                segment(true, ACK, sent(n), server_isn.wrapping_add(1), PAYLOAD)
            } else {
                segment(false, ACK, server_isn.wrapping_add(1), sent(n + 1), 0)
            }
        }
        _ if i.is_multiple_of(3) => segment(
            false,
            RST | ACK,
            server_isn.wrapping_add(1),
            sent(DATA_SEGMENTS),
            0,
        ),
        _ => segment(
            true,
            FIN | ACK,
            sent(DATA_SEGMENTS),
            server_isn.wrapping_add(1),
            0,
        ),
    }
}

fn time(command: &mut Command) -> Result<f64> {
    let start = Instant::now();
    let status = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("running {command:?}"))?;
    ensure!(status.success(), "{command:?} failed: {status}");
    Ok(start.elapsed().as_secs_f64())
}

/// Writes the capture into `dir`, then times both tools on it alternately, each pinned to one
/// core.
pub fn measure(rstwatch: &Path, dir: &Path) -> Result<CaptureReplay> {
    let path = dir.join("rstwatch-bench-capture.pcap");
    let (packets, resets) = write_capture(&path)?;
    let file = path.to_str().context("capture path is not UTF-8")?;
    let mut best = (f64::MAX, f64::MAX);
    for _ in 0..RUNS {
        let ours = time(
            Command::new("taskset")
                .args(["-c", "0"])
                .arg(rstwatch)
                .args(["explain", file, "--format", "json", "--output", "/dev/null"]),
        )?;
        #[rustfmt::skip]
        let theirs = time(Command::new("taskset").args([
            "-c", "0", "tshark", "-r", file, "-Y", "tcp.flags.reset==1", "-T", "fields",
            "-e", "tcp.stream", "-e", "ip.src", "-e", "tcp.srcport", "-e", "ip.dst",
            "-e", "tcp.dstport", "-e", "tcp.seq_raw", "-e", "ip.ttl",
        ]))?;
        best = (best.0.min(ours), best.1.min(theirs));
    }
    let _ = std::fs::remove_file(&path);
    Ok(CaptureReplay {
        packets,
        resets,
        rstwatch_secs: best.0,
        tshark_secs: best.1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conversation_is_a_handshake_data_and_one_ending() {
        let steps: Vec<TcpSegment> = (0..3 + 2 * DATA_SEGMENTS + 1)
            .map(|s| conversation_segment(3, s))
            .collect();
        assert_eq!(steps[0].flags, SYN);
        assert_eq!(steps[1].ack, steps[0].seq.wrapping_add(1));
        assert_eq!(steps.iter().filter(|s| s.is_rst()).count(), 1);
        assert!(!conversation_segment(4, 3 + 2 * DATA_SEGMENTS).is_rst());
    }
}
