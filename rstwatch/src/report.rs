//! A reset, explained: what the classifier concludes about one RST, and what every output
//! format renders. Plain data, no behaviour beyond naming.

use std::{fmt, net::SocketAddr, ops::Deref, sync::Arc, time::SystemTime};

use crate::explain::wireshark::DisplayFilter;

/// Where the RST was seen on the watched interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// The one class every RST gets (docs/design.md, Classes), by the first rule that matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResetClass {
    Refused,
    DataAfterClose,
    Teardown,
    IdleTimeout,
    Abort,
    NoState,
}

impl ResetClass {
    pub const ALL: [ResetClass; 6] = [
        ResetClass::Refused,
        ResetClass::DataAfterClose,
        ResetClass::Teardown,
        ResetClass::IdleTimeout,
        ResetClass::Abort,
        ResetClass::NoState,
    ];

    /// The stable machine name used in JSON and every SIEM format.
    pub const fn as_str(self) -> &'static str {
        match self {
            ResetClass::Refused => "refused",
            ResetClass::DataAfterClose => "data_after_close",
            ResetClass::Teardown => "teardown",
            ResetClass::IdleTimeout => "idle_timeout",
            ResetClass::Abort => "abort",
            ResetClass::NoState => "no_state",
        }
    }

    /// What the class means, in the words an analyst would use.
    pub const fn describe(self) -> &'static str {
        match self {
            ResetClass::Refused => "connection refused: port closed or service down",
            ResetClass::DataAfterClose => "peer kept sending after the connection was closed",
            ResetClass::Teardown => "normal teardown after FIN",
            ResetClass::IdleTimeout => "reset after a long idle period (idle timeout)",
            ResetClass::Abort => "connection aborted mid-stream",
            ResetClass::NoState => {
                "reset for a connection never seen (late start, scan, backscatter)"
            }
        }
    }

    /// How worried a person should be, before attribution is taken into account.
    pub const fn severity(self) -> Severity {
        match self {
            ResetClass::Teardown => Severity::Benign,
            ResetClass::Refused | ResetClass::DataAfterClose | ResetClass::NoState => {
                Severity::Notice
            }
            ResetClass::IdleTimeout | ResetClass::Abort => Severity::Alert,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Benign,
    Notice,
    Alert,
}

impl Severity {
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Benign => "benign",
            Severity::Notice => "notice",
            Severity::Alert => "alert",
        }
    }
}

/// Which endpoint the RST claims to come from (by its source address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sender {
    Originator,
    Responder,
    Unknown,
}

impl Sender {
    pub const fn as_str(self) -> &'static str {
        match self {
            Sender::Originator => "originator",
            Sender::Responder => "responder",
            Sender::Unknown => "unknown",
        }
    }
}

/// A signal about who really sent the RST.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Evidence {
    TtlMismatch,
    IpIdAnomaly,
    SeqOutOfWindow,
    DataAfterRst,
    RstSeqChange,
    /// Several RSTs from one claimed sender with the same sequence number within
    /// milliseconds, unlike the endpoint's genuine packets: how injectors send them.
    RstBurst,
    FastRst,
    /// Context only: a TLS alert shortly before the teardown is normal.
    TlsAlertBefore,
}

impl Evidence {
    /// Every signal, in `Evidence` order.
    pub const ALL: [Evidence; 8] = [
        Evidence::TtlMismatch,
        Evidence::IpIdAnomaly,
        Evidence::SeqOutOfWindow,
        Evidence::DataAfterRst,
        Evidence::RstSeqChange,
        Evidence::RstBurst,
        Evidence::FastRst,
        Evidence::TlsAlertBefore,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Evidence::TtlMismatch => "ttl_mismatch",
            Evidence::IpIdAnomaly => "ip_id_anomaly",
            Evidence::SeqOutOfWindow => "seq_out_of_window",
            Evidence::DataAfterRst => "data_after_rst",
            Evidence::RstSeqChange => "rst_seq_change",
            Evidence::RstBurst => "rst_burst",
            Evidence::FastRst => "fast_rst",
            Evidence::TlsAlertBefore => "tls_alert_before",
        }
    }
}

/// Signals that fired, one bit each, iterated in `Evidence` order.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct EvidenceSet(u8);

impl EvidenceSet {
    pub const fn bit(evidence: Evidence) -> u8 {
        1 << evidence as u8
    }

    pub fn insert(&mut self, evidence: Evidence) {
        self.0 |= Self::bit(evidence);
    }

    pub fn contains(&self, evidence: &Evidence) -> bool {
        self.0 & Self::bit(*evidence) != 0
    }

    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    pub fn len(&self) -> usize {
        self.0.count_ones() as usize
    }

    /// The signals, in `Evidence` order.
    pub fn iter(&self) -> impl Iterator<Item = Evidence> + '_ {
        Evidence::ALL
            .into_iter()
            .filter(|evidence| self.contains(evidence))
    }
}

impl FromIterator<Evidence> for EvidenceSet {
    fn from_iter<I: IntoIterator<Item = Evidence>>(signals: I) -> Self {
        let mut set = Self::default();
        for evidence in signals {
            set.insert(evidence);
        }
        set
    }
}

impl<const N: usize> From<[Evidence; N]> for EvidenceSet {
    fn from(signals: [Evidence; N]) -> Self {
        signals.into_iter().collect()
    }
}

/// The set equals a list that names the same signals in `Evidence` order.
impl<const N: usize> PartialEq<[Evidence; N]> for EvidenceSet {
    fn eq(&self, list: &[Evidence; N]) -> bool {
        self.iter().eq(list.iter().copied())
    }
}

impl fmt::Debug for EvidenceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// A short string kept inline, `N` bytes at most: Zeek's history, the Community ID.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct InlineStr<const N: usize> {
    len: u8,
    bytes: [u8; N],
}

/// Zeek's history: at most 16 letters, with a leading `^` and a trailing `+`.
pub type History = InlineStr<24>;
/// A Community ID: `1:` and 28 base64 characters.
pub type CommunityId = InlineStr<32>;

impl<const N: usize> InlineStr<N> {
    pub const fn new() -> Self {
        Self {
            len: 0,
            bytes: [0; N],
        }
    }

    /// Appends `byte`, an ASCII character.
    ///
    /// # Panics
    /// When the string is full: callers know their bound.
    pub fn push_ascii(&mut self, byte: u8) {
        assert!(byte.is_ascii(), "only ASCII is pushed");
        self.bytes[usize::from(self.len)] = byte;
        self.len += 1;
    }

    pub fn as_str(&self) -> &str {
        // SAFETY: only whole strings (`try_from`) and ASCII bytes (`push_ascii`) are put in,
        // so the bytes up to `len` are UTF-8.
        unsafe { std::str::from_utf8_unchecked(&self.bytes[..usize::from(self.len)]) }
    }
}

impl<const N: usize> Default for InlineStr<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// Too long for the string's capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLong;

impl<const N: usize> TryFrom<&str> for InlineStr<N> {
    type Error = TooLong;

    fn try_from(text: &str) -> Result<Self, TooLong> {
        if text.len() > N || N > usize::from(u8::MAX) {
            return Err(TooLong);
        }
        let mut inline = Self::new();
        inline.bytes[..text.len()].copy_from_slice(text.as_bytes());
        inline.len = text.len() as u8;
        Ok(inline)
    }
}

impl<const N: usize> Deref for InlineStr<N> {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl<const N: usize> PartialEq<str> for InlineStr<N> {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl<const N: usize> PartialEq<&str> for InlineStr<N> {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl<const N: usize> fmt::Debug for InlineStr<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<const N: usize> fmt::Display for InlineStr<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Zeek conn.log `conn_state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnState {
    S0,
    S1,
    Sf,
    Rej,
    S2,
    S3,
    Rsto,
    Rstr,
    Rstos0,
    Rstrh,
    Sh,
    Shr,
    Oth,
}

impl ConnState {
    pub const fn as_str(self) -> &'static str {
        match self {
            ConnState::S0 => "S0",
            ConnState::S1 => "S1",
            ConnState::Sf => "SF",
            ConnState::Rej => "REJ",
            ConnState::S2 => "S2",
            ConnState::S3 => "S3",
            ConnState::Rsto => "RSTO",
            ConnState::Rstr => "RSTR",
            ConnState::Rstos0 => "RSTOS0",
            ConnState::Rstrh => "RSTRH",
            ConnState::Sh => "SH",
            ConnState::Shr => "SHR",
            ConnState::Oth => "OTH",
        }
    }
}

/// Identical resets folded together during a storm (see the SIEM spool's rate limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Aggregate {
    pub count: u64,
    pub first: SystemTime,
    pub last: SystemTime,
}

/// One RST, explained.
#[derive(Clone, Debug, PartialEq)]
pub struct ResetReport {
    pub ts: SystemTime,
    /// Shared by every report of the interface.
    pub iface: Arc<str>,
    pub direction: Direction,
    pub class: ResetClass,
    pub sender: Sender,
    pub middlebox: bool,
    /// Every signal that fired, in `Evidence` order; context-only ones included.
    pub evidence: EvidenceSet,
    /// Addresses and ports of the RST packet itself.
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// The connection's originator (SYN sender) and responder.
    pub orig: SocketAddr,
    pub resp: SocketAddr,
    /// No handshake was seen: the originator is a guess (first packet seen).
    pub originator_inferred: bool,
    /// VLAN id, 0 when untagged.
    pub vlan: u16,
    pub ttl: u8,
    /// TTL / hop limit of the claimed sender's genuine packets, if any were seen.
    pub expected_ttl: Option<u8>,
    /// IPv4 identification; `None` for IPv6.
    pub ip_id: Option<u16>,
    pub df: bool,
    pub seq: u32,
    pub ack: u32,
    /// TCP flag bits of the RST.
    pub flags: u8,
    pub window: u16,
    pub payload_len: u16,
    /// Silence on the flow right before the RST (or before the packet it answers).
    pub idle_ms: Option<u64>,
    /// Handshake round-trip time, if the handshake was seen.
    pub rtt_us: Option<u64>,
    pub conn_state: ConnState,
    pub history: History,
    pub community_id: CommunityId,
    /// Rendered where it is written.
    pub wireshark_filter: DisplayFilter,
    pub orig_pkts: u64,
    pub orig_bytes: u64,
    pub resp_pkts: u64,
    pub resp_bytes: u64,
    /// Follow-up packets seen after the RST (data from its claimed sender, further RSTs).
    pub followups: u32,
    /// The `ts` of the connection's first report, when this RST follows it: the other side's
    /// answer to it, or a RST that came after that report's hold.
    pub related_to: Option<SystemTime>,
    pub aggregate: Option<Aggregate>,
    /// What this host's own TCP stack said about the RST, where it was watched.
    pub local: Option<crate::local::LocalEvidence>,
    /// The frames of the RST and of its follow-up RSTs, as the kernel copied them; empty for
    /// a storm aggregate, where nothing was copied, and where no sink takes frames.
    pub frames: Vec<CapturedFrame>,
}

/// The start of a frame the kernel copied, for `--pcap`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedFrame {
    pub ts: SystemTime,
    /// The interface the hook saw it on.
    pub ifindex: u32,
    pub direction: Direction,
    /// A follow-up RST rather than the RST the report is about.
    pub followup: bool,
    /// The frame's whole length; `bytes` may hold only its start.
    pub wire_len: u32,
    pub bytes: Vec<u8>,
}

impl ResetReport {
    /// Severity with attribution: a suspected middlebox always raises an alert.
    pub fn severity(&self) -> Severity {
        if self.middlebox {
            Severity::Alert
        } else {
            self.class.severity()
        }
    }
}

impl ResetReport {
    /// How many resets this report stands for: 1, or the folded count of a storm aggregate.
    pub fn count(&self) -> u64 {
        self.aggregate.map_or(1, |aggregate| aggregate.count)
    }

    /// Whether this host opened the connection, judged from where the RST was seen and which
    /// endpoint it claims to come from: an egress RST was sent by this host, an ingress one by
    /// the peer. Meaningful only when the watched interface belongs to the host (on a mirror
    /// port every packet is ingress). `None` when the sender is unknown.
    pub fn originator_is_local(&self) -> Option<bool> {
        let sender_is_local = self.direction == Direction::Egress;
        match self.sender {
            Sender::Originator => Some(sender_is_local),
            Sender::Responder => Some(!sender_is_local),
            Sender::Unknown => None,
        }
    }

    /// One sentence for SIEM `reason`/`message` fields: the class in words, who the RST claims
    /// to come from, and, when a middlebox is suspected, the signals that say so.
    pub fn explanation(&self) -> String {
        let mut text = Vec::new();
        self.write_explanation(&mut text);
        String::from_utf8(text).expect("the explanation is built of strings")
    }

    /// `explanation()` appended to `out`. Nothing in it needs escaping in JSON: class words,
    /// sender and signal names are fixed ASCII text without quotes or backslashes.
    pub fn write_explanation(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.class.describe().as_bytes());
        out.extend_from_slice(b"; RST from the ");
        out.extend_from_slice(self.sender.as_str().as_bytes());
        if self.middlebox {
            out.extend_from_slice(b"; probably sent by a middlebox (");
            write_joined(out, self.evidence, b", ");
            out.push(b')');
        }
    }
}

/// The names of `evidence`, `separator` between them, appended to `out`.
pub fn write_joined(out: &mut Vec<u8>, evidence: EvidenceSet, separator: &[u8]) {
    for (i, signal) in evidence.iter().enumerate() {
        if i != 0 {
            out.extend_from_slice(separator);
        }
        out.extend_from_slice(signal.as_str().as_bytes());
    }
}

/// Milliseconds since the Unix epoch, the time unit of OCSF and CEF (0 for earlier times).
pub fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_is_iterated_in_evidence_order_whatever_order_it_fired_in() {
        let set: EvidenceSet = [Evidence::FastRst, Evidence::TtlMismatch, Evidence::FastRst]
            .into_iter()
            .collect();
        assert_eq!(set, [Evidence::TtlMismatch, Evidence::FastRst]);
        assert_eq!(set.len(), 2);
        assert!(set.contains(&Evidence::FastRst) && !set.contains(&Evidence::RstBurst));
        assert_eq!(format!("{set:?}"), "[TtlMismatch, FastRst]");
        assert!(EvidenceSet::default().is_empty());
        assert_eq!(EvidenceSet::from(Evidence::ALL).len(), Evidence::ALL.len());
    }

    #[test]
    fn inline_strings_hold_up_to_their_capacity() {
        let mut history = History::new();
        for letter in *b"ShADadFf" {
            history.push_ascii(letter);
        }
        assert_eq!(history, "ShADadFf");
        let full = "x".repeat(32);
        assert_eq!(CommunityId::try_from(full.as_str()).unwrap(), full.as_str());
        assert_eq!(CommunityId::try_from("y".repeat(33).as_str()), Err(TooLong));
        assert_eq!(History::try_from("日本").unwrap().to_string(), "日本");
    }
}
