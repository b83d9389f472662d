//! What the syslog sink is told: the receiver's URL, the facility, the spool and queue sizes.

use std::{fmt, path::PathBuf, str::FromStr, time::Duration};

/// How the receiver's TLS certificate is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsTrust {
    /// Against the system's trusted CAs (the default; `SSL_CERT_FILE`/`SSL_CERT_DIR` apply).
    SystemRoots,
    /// Against the CA certificates of this PEM file only (`--syslog-ca FILE`).
    CaFile(PathBuf),
    /// Not at all (`--syslog-insecure`): the stream is encrypted but anyone in the path can
    /// impersonate the receiver.
    Insecure,
}

/// How records reach the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    /// RFC 6587 octet counting.
    Tcp,
    /// RFC 5425.
    Tls,
}

impl Transport {
    pub const fn scheme(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }

    /// The IANA port for syslog over this transport.
    pub const fn standard_port(self) -> u16 {
        match self {
            Transport::Udp | Transport::Tcp => 514,
            Transport::Tls => 6514,
        }
    }
}

/// A syslog receiver: `udp://HOST:PORT`, `tcp://HOST:PORT` or `tls://HOST:PORT`, HOST being a
/// name, an IPv4 address or a bracketed IPv6 address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyslogUrl {
    pub transport: Transport,
    /// Without brackets for IPv6.
    pub host: String,
    pub port: u16,
}

/// Why a `--syslog` URL was rejected; each message says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("syslog URL `{url}` has no scheme: write udp://HOST:PORT, tcp://HOST:PORT or tls://HOST:PORT")]
    MissingScheme { url: String },
    #[error("syslog URL `{url}`: unknown scheme `{scheme}`: use udp://, tcp:// (octet-counted, RFC 6587) or tls:// (RFC 5425)")]
    UnknownScheme { url: String, scheme: String },
    #[error("syslog URL `{url}` names no host: write {scheme}://HOST:{port}")]
    MissingHost {
        url: String,
        scheme: &'static str,
        port: u16,
    },
    #[error("syslog URL `{url}` has no port: write {url}:{port} ({port} is the standard port for {scheme})")]
    MissingPort {
        url: String,
        scheme: &'static str,
        port: u16,
    },
    #[error("syslog URL `{url}`: `{port}` is not a port number; use 1-65535")]
    BadPort { url: String, port: String },
    #[error(
        "syslog URL `{url}`: put an IPv6 address in brackets, like {scheme}://[2001:db8::1]:{port}"
    )]
    UnbracketedIpv6 {
        url: String,
        scheme: &'static str,
        port: u16,
    },
    #[error("syslog URL `{url}`: `{host}` is not a host name or address")]
    BadHost { url: String, host: String },
    #[error("syslog URL `{url}` has a path, query or user part; write only {scheme}://HOST:PORT")]
    ExtraParts { url: String, scheme: &'static str },
}

impl FromStr for SyslogUrl {
    type Err = UrlError;

    fn from_str(url: &str) -> Result<Self, UrlError> {
        let owned = || url.to_owned();
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| UrlError::MissingScheme { url: owned() })?;
        let transport = match scheme.to_ascii_lowercase().as_str() {
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            "tls" => Transport::Tls,
            _ => {
                return Err(UrlError::UnknownScheme {
                    url: owned(),
                    scheme: scheme.to_owned(),
                })
            }
        };
        let (scheme, standard_port) = (transport.scheme(), transport.standard_port());
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#', '@']) {
            return Err(UrlError::ExtraParts {
                url: owned(),
                scheme,
            });
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']').ok_or(UrlError::UnbracketedIpv6 {
                url: owned(),
                scheme,
                port: standard_port,
            })?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(UrlError::BadHost {
                    url: owned(),
                    host: host.to_owned(),
                });
            }
            (host, after.strip_prefix(':'))
        } else {
            match authority.split_once(':') {
                Some((_, port)) if port.contains(':') => {
                    return Err(UrlError::UnbracketedIpv6 {
                        url: owned(),
                        scheme,
                        port: standard_port,
                    })
                }
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(UrlError::MissingHost {
                url: owned(),
                scheme,
                port: standard_port,
            });
        }
        let valid_name = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
        if !authority.starts_with('[') && !host.chars().all(valid_name) {
            return Err(UrlError::BadHost {
                url: owned(),
                host: host.to_owned(),
            });
        }
        let port = match port {
            None | Some("") => {
                return Err(UrlError::MissingPort {
                    url: url.trim_end_matches([':', '/']).to_owned(),
                    scheme,
                    port: standard_port,
                })
            }
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|&port| port != 0)
                .ok_or_else(|| UrlError::BadPort {
                    url: owned(),
                    port: port.to_owned(),
                })?,
        };
        Ok(SyslogUrl {
            transport,
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for SyslogUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = self.transport.scheme();
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// The syslog facilities of RFC 5424, by their usual names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Facility {
    Kern = 0,
    User = 1,
    Mail = 2,
    Daemon = 3,
    Auth = 4,
    Syslog = 5,
    Lpr = 6,
    News = 7,
    Uucp = 8,
    Cron = 9,
    Authpriv = 10,
    Ftp = 11,
    Local0 = 16,
    Local1 = 17,
    Local2 = 18,
    Local3 = 19,
    Local4 = 20,
    Local5 = 21,
    Local6 = 22,
    Local7 = 23,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown syslog facility `{0}`: use one of kern, user, mail, daemon, auth, syslog, lpr, news, uucp, cron, authpriv, ftp, local0 ... local7")]
pub struct FacilityError(String);

impl FromStr for Facility {
    type Err = FacilityError;

    fn from_str(name: &str) -> Result<Self, FacilityError> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "kern" => Facility::Kern,
            "user" => Facility::User,
            "mail" => Facility::Mail,
            "daemon" => Facility::Daemon,
            "auth" => Facility::Auth,
            "syslog" => Facility::Syslog,
            "lpr" => Facility::Lpr,
            "news" => Facility::News,
            "uucp" => Facility::Uucp,
            "cron" => Facility::Cron,
            "authpriv" => Facility::Authpriv,
            "ftp" => Facility::Ftp,
            "local0" => Facility::Local0,
            "local1" => Facility::Local1,
            "local2" => Facility::Local2,
            "local3" => Facility::Local3,
            "local4" => Facility::Local4,
            "local5" => Facility::Local5,
            "local6" => Facility::Local6,
            "local7" => Facility::Local7,
            _ => return Err(FacilityError(name.to_owned())),
        })
    }
}

/// Everything the syslog sink needs; `SyslogConfig::new` fills in the defaults.
#[derive(Clone, Debug)]
pub struct SyslogConfig {
    pub url: SyslogUrl,
    /// How the receiver's certificate is checked (tls:// only).
    pub tls_trust: TlsTrust,
    pub facility: Facility,
    /// HOSTNAME field; the system's host name when `None`.
    pub hostname: Option<String>,
    pub spool_dir: PathBuf,
    /// Disk space the spool may use; beyond it records are dropped and counted.
    pub spool_max_bytes: u64,
    /// Messages waiting between capture and the sender; when full, messages are dropped (and
    /// counted) rather than making capture wait.
    pub queue_len: usize,
    /// Records held in memory while the receiver is up but busy; beyond that they are spooled.
    pub memory_len: usize,
    /// Limit for connecting (including the TLS handshake) and for each write.
    pub io_timeout: Duration,
    /// Reconnection delay: doubles from `retry_min` up to `retry_max` while the receiver is down.
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl SyslogConfig {
    pub fn new(url: SyslogUrl, spool_dir: impl Into<PathBuf>) -> Self {
        SyslogConfig {
            url,
            tls_trust: TlsTrust::SystemRoots,
            facility: Facility::Local0,
            hostname: None,
            spool_dir: spool_dir.into(),
            spool_max_bytes: 256 << 20,
            queue_len: 8192,
            memory_len: 1024,
            io_timeout: Duration::from_secs(5),
            retry_min: Duration::from_millis(250),
            retry_max: Duration::from_secs(30),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Result<SyslogUrl, UrlError> {
        text.parse()
    }

    #[test]
    fn accepts_the_three_transports() {
        assert_eq!(
            url("udp://siem.example:514").unwrap(),
            SyslogUrl {
                transport: Transport::Udp,
                host: "siem.example".into(),
                port: 514
            }
        );
        assert_eq!(
            url("TCP://10.0.0.5:1514").unwrap().transport,
            Transport::Tcp
        );
        let tls = url("tls://[2001:db8::5]:6514/").unwrap();
        assert_eq!(tls.host, "2001:db8::5");
        assert_eq!(tls.to_string(), "tls://[2001:db8::5]:6514");
    }

    #[test]
    fn errors_tell_what_to_write() {
        let message = |text: &str| url(text).unwrap_err().to_string();
        assert_eq!(
            message("siem:514"),
            "syslog URL `siem:514` has no scheme: write udp://HOST:PORT, tcp://HOST:PORT or tls://HOST:PORT"
        );
        assert!(message("http://siem:514").contains("unknown scheme `http`"));
        assert_eq!(
            message("tls://siem.example"),
            "syslog URL `tls://siem.example` has no port: write tls://siem.example:6514 (6514 is the standard port for tls)"
        );
        assert!(message("udp://siem:").contains("write udp://siem:514"));
        assert!(message("tcp://:514").contains("names no host"));
        assert!(message("tcp://siem:99999").contains("`99999` is not a port number"));
        assert!(message("tcp://siem:0").contains("`0` is not a port number"));
        assert!(message("tcp://2001:db8::5:514").contains("[2001:db8::1]"));
        assert!(message("tcp://[2001:db8::5:514").contains("in brackets"));
        assert!(message("tcp://siem:514/path").contains("path, query or user part"));
        assert!(message("tcp://user@siem:514").contains("path, query or user part"));
        assert!(message("tcp://si em:514").contains("not a host name"));
    }

    #[test]
    fn facility_names() {
        assert_eq!("local0".parse::<Facility>(), Ok(Facility::Local0));
        assert_eq!("AUTHPRIV".parse::<Facility>(), Ok(Facility::Authpriv));
        assert!("local8"
            .parse::<Facility>()
            .unwrap_err()
            .to_string()
            .contains("local0 ... local7"));
    }
}
