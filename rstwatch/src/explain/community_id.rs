//! Community ID v1 (Corelight's community-id-spec): one flow hash that Zeek, Suricata,
//! Wireshark and SIEMs agree on, so a reset found here can be joined with their records.
//! SHA-1 runs on the CPU's SHA instructions where it has them: the ID is computed for every
//! reset.

use std::net::{IpAddr, SocketAddr};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use sha1::{Digest as _, Sha1};

use crate::report::CommunityId;

/// IANA protocol number of TCP.
const PROTO_TCP: u8 = 6;

/// The Community ID of a TCP flow with the default seed 0. Either direction gives the same ID.
pub fn tcp(a: SocketAddr, b: SocketAddr) -> CommunityId {
    v1(0, PROTO_TCP, a, b)
}

/// `1:` and the base64 of SHA-1 over seed (2 bytes), the smaller endpoint's address, the
/// other's address, protocol (1 byte), a zero pad byte, then the two ports in the same order;
/// all in network byte order, IPv4 as 4 bytes and IPv6 as 16. The smaller endpoint is the one
/// with the smaller address, or the smaller port when the addresses are equal.
pub fn v1(seed: u16, proto: u8, a: SocketAddr, b: SocketAddr) -> CommunityId {
    let (a_addr, b_addr) = (Octets::of(a.ip()), Octets::of(b.ip()));
    let (first, second) = if (a_addr.bytes(), a.port()) <= (b_addr.bytes(), b.port()) {
        ((a_addr, a.port()), (b_addr, b.port()))
    } else {
        ((b_addr, b.port()), (a_addr, a.port()))
    };
    // The hashed bytes, put together on the stack and hashed at once: 16 for IPv4, 40 for
    // IPv6.
    let mut input = [0u8; 40];
    let mut len = 0;
    for part in [
        &seed.to_be_bytes()[..],
        first.0.bytes(),
        second.0.bytes(),
        &[proto, 0],
        &first.1.to_be_bytes(),
        &second.1.to_be_bytes(),
    ] {
        input[len..len + part.len()].copy_from_slice(part);
        len += part.len();
    }
    let mut text = [0u8; 30];
    text[..2].copy_from_slice(b"1:");
    let written = STANDARD
        .encode_slice(Sha1::digest(&input[..len]), &mut text[2..])
        .expect("20 bytes are 28 base64 characters");
    let text = std::str::from_utf8(&text[..2 + written]).expect("base64 is ASCII");
    CommunityId::try_from(text).expect("a Community ID fits its string")
}

/// An address in network byte order, IPv4 as 4 bytes and IPv6 as 16, kept on the stack: the
/// ID is computed for every reset.
#[derive(Clone, Copy)]
struct Octets {
    bytes: [u8; 16],
    len: usize,
}

impl Octets {
    fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => {
                let mut bytes = [0; 16];
                bytes[..4].copy_from_slice(&v4.octets());
                Self { bytes, len: 4 }
            }
            IpAddr::V6(v6) => Self {
                bytes: v6.octets(),
                len: 16,
            },
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Flows whose IDs were computed with the reference implementation (PyPI `communityid`).
    const KNOWN: [(&str, &str, &str); 4] = [
        (
            "128.232.110.120:34855",
            "66.35.250.204:80",
            "1:LQU9qZlK+B5F3KDmev6m5PMibrg=",
        ),
        (
            "[fe80::200:86ff:fe05:80da]:1024",
            "[fe80::260:97ff:fe07:69ea]:23",
            "1:VJroi5Xao2N6OEUvIq8ko8CSuCg=",
        ),
        (
            "198.18.0.1:40000",
            "198.18.1.2:80",
            "1:m4Ien//KTz7fgaSi9qyji8Mv2JM=",
        ),
        (
            "10.0.0.1:80",
            "10.0.0.1:1234",
            "1:WaobEo3Uyp/JjlL9QX3lvrl1Oag=",
        ),
    ];

    #[test]
    fn known_flows_hash_to_the_reference_ids() {
        for (a, b, id) in KNOWN {
            assert_eq!(tcp(sa(a), sa(b)), id, "{a} -> {b}");
        }
    }

    #[test]
    fn both_directions_of_a_flow_share_one_id() {
        for (a, b, _) in KNOWN {
            assert_eq!(tcp(sa(a), sa(b)), tcp(sa(b), sa(a)), "{a} <-> {b}");
        }
    }

    #[test]
    fn a_seed_changes_the_id() {
        let (a, b) = (sa("198.18.0.1:40000"), sa("198.18.1.2:80"));
        assert_ne!(v1(1, PROTO_TCP, a, b), tcp(a, b));
    }

    /// Python program printing one ID per `saddr daddr sport dport` argument quadruple.
    const REFERENCE: &str = r#"
import sys
try:
    import communityid
except ImportError:
    sys.exit("the Python module 'communityid' is missing: cargo xtask setup installs it")
cid = communityid.CommunityID(seed=0)
args = sys.argv[1:]
for i in range(0, len(args), 4):
    s, d, sp, dp = args[i:i + 4]
    print(cid.calc(communityid.FlowTuple.make_tcp(s, d, int(sp), int(dp))))
"#;

    /// Cross-checks against the reference implementation, live. Needs `python3` with the
    /// `communityid` module (installed by `cargo xtask setup`);
    /// without them this test fails and says so, it never passes vacuously.
    #[test]
    fn ids_match_the_python_reference_implementation() {
        let flows = [
            ("192.0.2.10:51514", "203.0.113.7:443"),
            ("203.0.113.7:443", "192.0.2.10:51514"),
            ("10.0.0.1:1234", "10.0.0.1:80"),
            ("[2001:db8::1]:40000", "[2001:db8::2]:80"),
            ("[2001:db8::2]:80", "[2001:db8::1]:40000"),
            ("[::1]:5000", "[::1]:4999"),
        ];
        let mut args = Vec::new();
        for (a, b) in flows {
            let (a, b) = (sa(a), sa(b));
            args.extend([a.ip(), b.ip()].map(|ip| ip.to_string()));
            args.extend([a.port(), b.port()].map(|port| port.to_string()));
        }
        let output = Command::new("python3")
            .arg("-c")
            .arg(REFERENCE)
            .args(&args)
            .output()
            .expect("python3 must be installed to cross-check Community IDs");
        assert!(
            output.status.success(),
            "the Community ID reference implementation failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let reference = String::from_utf8(output.stdout).unwrap();
        let reference: Vec<&str> = reference.lines().collect();
        assert_eq!(reference.len(), flows.len());
        for ((a, b), expected) in flows.into_iter().zip(reference) {
            assert_eq!(tcp(sa(a), sa(b)), expected, "{a} -> {b}");
        }
    }
}
