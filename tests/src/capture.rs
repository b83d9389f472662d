//! Ground truth independent of rstwatch and of the lab's own packet code: tcpdump captures on
//! an interface inside a namespace, tshark decodes the file.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::Receiver;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::frame::TcpSegment;
use crate::process::{
    command_with_default_signals, kill_and_reap, read_lines, run, signal_and_wait,
};

/// RSTs over IPv4 or IPv6; libpcap's `tcp[tcpflags]` only reaches into IPv4, so IPv6 TCP
/// (next header 6, no extension header) is matched on the flags byte at offset 40 + 13.
pub const RSTS_ONLY: &str = "(tcp[tcpflags] & tcp-rst != 0) or (ip6[6] == 6 and ip6[53] & 4 != 0)";
pub const ALL_TCP: &str = "tcp";

const STARTUP_TIMEOUT: Duration = Duration::from_secs(5);
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// A running tcpdump; dropping it kills tcpdump and deletes the capture file.
pub struct Capture {
    tcpdump: Child,
    file: PathBuf,
    stderr: Receiver<String>,
    /// Packets the filter takes per packet tcpdump writes: on a loopback device the kernel
    /// hands each packet over twice, as sent and as received, and libpcap keeps only the
    /// received copy.
    copies: u64,
}

impl Capture {
    /// Starts tcpdump on `iface` in namespace `ns` with a libpcap `filter`, and returns once
    /// it is capturing.
    pub fn start(ns: &str, iface: &str, filter: &str) -> Result<Capture> {
        Self::start_with(ns, iface, &[], filter)
    }

    /// Like `start`, with tcpdump `options` before the filter (`-y LINUX_SLL2`, `-s 60`).
    pub fn start_with(ns: &str, iface: &str, options: &[&str], filter: &str) -> Result<Capture> {
        static NEXT_CAPTURE: AtomicU32 = AtomicU32::new(0);
        let file = std::env::temp_dir().join(format!(
            "rstwatch-lab-{}-{}.pcap",
            std::process::id(),
            NEXT_CAPTURE.fetch_add(1, Ordering::Relaxed)
        ));
        let mut tcpdump = command_with_default_signals("ip")
            .args(["netns", "exec", ns, "tcpdump", "-Z", "root", "-i", iface])
            .args(["-U", "--immediate-mode"])
            .args(options)
            .arg("-w")
            .arg(&file)
            .arg(filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting tcpdump (is it installed?)")?;
        let stderr = read_lines(tcpdump.stderr.take().context("tcpdump stderr")?);
        // `any` is no device: the lab's traffic it sees crosses veths, one copy each.
        let loopback = iface != "any"
            && run("ip", &["-n", ns, "-o", "link", "show", "dev", iface])?
                .contains("link/loopback");
        let capture = Capture {
            tcpdump,
            file,
            stderr,
            copies: if loopback { 2 } else { 1 },
        };
        capture.wait_until_listening()?;
        Ok(capture)
    }

    /// Stops tcpdump and returns the captured TCP segments in capture order.
    pub fn stop(mut self) -> Result<Vec<TcpSegment>> {
        self.stop_tcpdump()?;
        let file = self
            .file
            .to_str()
            .context("capture file name is not UTF-8")?;
        #[rustfmt::skip]
        let fields = run("tshark", &[
            "-r", file, "-T", "fields", "-E", "separator=/t", "-E", "occurrence=f",
            "-e", "ip.src", "-e", "ipv6.src", "-e", "tcp.srcport",
            "-e", "ip.dst", "-e", "ipv6.dst", "-e", "tcp.dstport",
            "-e", "ip.ttl", "-e", "ipv6.hlim", "-e", "ip.id",
            "-e", "tcp.seq_raw", "-e", "tcp.ack_raw", "-e", "tcp.flags", "-e", "tcp.len",
        ])?;
        fields.lines().map(parse_tshark_fields).collect()
    }

    /// The file tcpdump is writing (`-U`: a packet at a time).
    pub fn path(&self) -> &std::path::Path {
        &self.file
    }

    /// Stops tcpdump and hands over the capture file, deleted when the `CaptureFile` drops.
    pub fn finish(mut self) -> Result<CaptureFile> {
        self.stop_tcpdump()?;
        Ok(CaptureFile {
            path: std::mem::take(&mut self.file),
        })
    }

    fn stop_tcpdump(&mut self) -> Result<()> {
        self.wait_until_caught_up()?;
        let status = signal_and_wait(&mut self.tcpdump, libc::SIGINT, EXIT_TIMEOUT)?;
        ensure!(
            status.success(),
            "tcpdump exited with {status}: {}",
            self.stderr_text()
        );
        Ok(())
    }

    fn wait_until_listening(&self) -> Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut said = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains("listening on") => return Ok(()),
                Ok(line) => said.push(line),
                Err(_) => break,
            }
        }
        bail!("tcpdump did not start capturing: {}", said.join(" / "))
    }

    /// Waits until tcpdump has written every packet its filter let into its socket (each
    /// loopback packet counted twice there): it is interrupted only then, so that none the
    /// kernel handed it is left unread.
    fn wait_until_caught_up(&mut self) -> Result<()> {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        let mut said = Vec::new();
        loop {
            // SIGUSR1: tcpdump prints its counts on one line and goes on capturing.
            // SAFETY: a signal to the child this struct owns and has not reaped.
            let sent = unsafe { libc::kill(self.tcpdump.id() as libc::pid_t, libc::SIGUSR1) };
            ensure!(
                sent == 0,
                "signalling tcpdump: {}",
                std::io::Error::last_os_error()
            );
            let counts = loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let Ok(line) = self.stderr.recv_timeout(left) else {
                    bail!("tcpdump printed no packet counts: {}", said.join(" / "));
                };
                match packet_counts(&line) {
                    Some(counts) => break counts,
                    None => said.push(line),
                }
            };
            if counts.captured * self.copies >= counts.received {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "tcpdump still behind its filter after {EXIT_TIMEOUT:?}: {counts:?}"
            );
            thread::yield_now();
        }
    }

    fn stderr_text(&self) -> String {
        self.stderr.try_iter().collect::<Vec<_>>().join(" / ")
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        kill_and_reap(&mut self.tcpdump);
        // The file may never have been created; nothing else to clean up then.
        let _ = std::fs::remove_file(&self.file);
    }
}

/// tcpdump's counts: packets written, and packets its filter let into its socket.
#[derive(Debug, PartialEq, Eq)]
struct PacketCounts {
    captured: u64,
    received: u64,
}

/// The counts in the line tcpdump prints on SIGUSR1: `tcpdump: 3 packets captured, 3 packets
/// received by filter, 0 packets dropped by kernel`.
fn packet_counts(line: &str) -> Option<PacketCounts> {
    let count = |what: &str| -> Option<u64> {
        let part = line.split(", ").find(|part| part.contains(what))?;
        let number = part.trim_start_matches("tcpdump: ").split(' ').next()?;
        number.parse().ok()
    };
    Some(PacketCounts {
        captured: count("captured")?,
        received: count("received by filter")?,
    })
}

/// A capture file a test keeps after tcpdump stopped; deleted on drop.
pub struct CaptureFile {
    pub path: PathBuf,
}

impl Drop for CaptureFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One line of `tshark -T fields` output, in the order `Capture::stop` asks for the fields.
fn parse_tshark_fields(line: &str) -> Result<TcpSegment> {
    let fields: Vec<&str> = line.split('\t').collect();
    let [ip4_src, ip6_src, src_port, ip4_dst, ip6_dst, dst_port, ttl, hop_limit, ip_id, seq, ack, flags, len] =
        fields[..]
    else {
        bail!(
            "tshark printed {} fields, expected 13: {line:?}",
            fields.len()
        );
    };
    let address = |ip4: &str, ip6: &str, port: &str| -> Result<SocketAddr> {
        let ip: IpAddr = if ip4.is_empty() {
            ip6.parse()?
        } else {
            ip4.parse()?
        };
        Ok(SocketAddr::new(ip, port.parse()?))
    };
    let parsed = || -> Result<TcpSegment> {
        Ok(TcpSegment {
            src: address(ip4_src, ip6_src, src_port)?,
            dst: address(ip4_dst, ip6_dst, dst_port)?,
            ttl: if ttl.is_empty() {
                hop_limit.parse()?
            } else {
                ttl.parse()?
            },
            ip_id: match ip_id {
                "" => None,
                hex => Some(u16::from_str_radix(hex.trim_start_matches("0x"), 16)?),
            },
            seq: seq.parse()?,
            ack: ack.parse()?,
            // tshark shows the 12 flag bits; the ones the lab cares about are the low 8.
            flags: u16::from_str_radix(flags.trim_start_matches("0x"), 16)? as u8,
            payload_len: len.parse()?,
        })
    };
    parsed().with_context(|| format!("parsing tshark output {line:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{ACK, RST};

    #[test]
    fn tshark_fields_of_an_ipv4_rst_parse() {
        let line = "198.18.1.2\t\t4000\t198.18.0.2\t\t41234\t63\t\t0x0000\t0\t3155434\t0x0014\t0";
        let segment = parse_tshark_fields(line).unwrap();
        assert_eq!(segment.src, "198.18.1.2:4000".parse().unwrap());
        assert_eq!(segment.dst, "198.18.0.2:41234".parse().unwrap());
        assert_eq!((segment.ttl, segment.ip_id), (63, Some(0)));
        assert_eq!(
            (segment.seq, segment.ack, segment.flags),
            (0, 3155434, RST | ACK)
        );
    }

    #[test]
    fn tshark_fields_of_an_ipv6_segment_parse() {
        let line = "\t2001:db8:0:1::2\t41234\t\t2001:db8:0:2::2\t4001\t\t64\t\t7\t9\t0x0018\t12";
        let segment = parse_tshark_fields(line).unwrap();
        assert_eq!(segment.src, "[2001:db8:0:1::2]:41234".parse().unwrap());
        assert_eq!(
            (segment.ttl, segment.ip_id, segment.payload_len),
            (64, None, 12)
        );
    }

    #[test]
    fn short_tshark_lines_are_errors() {
        assert!(parse_tshark_fields("198.18.1.2\t4000").is_err());
    }

    #[test]
    fn tcpdumps_count_line_is_read() {
        assert_eq!(
            packet_counts(
                "tcpdump: 12 packets captured, 13 packets received by filter, 0 packets \
                 dropped by kernel"
            ),
            Some(PacketCounts {
                captured: 12,
                received: 13
            })
        );
        assert_eq!(
            packet_counts("tcpdump: 1 packet captured, 1 packet received by filter, 0 packets dropped by kernel"),
            Some(PacketCounts {
                captured: 1,
                received: 1
            })
        );
        assert_eq!(packet_counts("tcpdump: listening on lo"), None);
    }
}
