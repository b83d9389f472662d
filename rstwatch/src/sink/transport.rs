//! Connections to a syslog receiver: UDP datagrams, or a TCP/TLS stream where every message is
//! framed as `LEN SP MSG` (octet counting, RFC 6587 section 3.4.1; RFC 5425 section 4.3).

use std::{
    future::Future,
    io,
    mem::MaybeUninit,
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{ring, CryptoProvider},
    pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime},
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use socket2::SockRef;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{lookup_host, TcpStream, UdpSocket},
};
use tokio_rustls::{client::TlsStream, TlsConnector};

use super::config::{SyslogUrl, TlsTrust, Transport};

/// Why TLS could not be set up; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read the syslog CA file {path}: {source}; give a readable PEM file with --syslog-ca")]
    CaFileUnreadable {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("the syslog CA file {path} holds no usable PEM certificate; give the CA that signed the receiver's certificate with --syslog-ca")]
    CaFileEmpty { path: PathBuf },
    #[error("no trusted CA certificates found on this system; give the receiver's CA with --syslog-ca FILE, or use --syslog-insecure to skip verification")]
    NoSystemRoots,
    #[error("`{host}` cannot be checked against a TLS certificate; use the name or address the receiver's certificate was issued for")]
    BadServerName { host: String },
}

/// Opens connections to one receiver.
pub(crate) struct Connector {
    url: SyslogUrl,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    timeout: Duration,
}

pub(crate) type Connecting = Pin<Box<dyn Future<Output = io::Result<Connection>> + Send>>;

impl Connector {
    pub fn new(
        url: &SyslogUrl,
        trust: &TlsTrust,
        timeout: Duration,
    ) -> Result<Self, TlsSetupError> {
        let tls = match url.transport {
            Transport::Tls => {
                let name = ServerName::try_from(url.host.clone()).map_err(|_| {
                    TlsSetupError::BadServerName {
                        host: url.host.clone(),
                    }
                })?;
                let config = client_config(trust)?;
                Some((TlsConnector::from(Arc::new(config)), name))
            }
            Transport::Udp | Transport::Tcp => None,
        };
        Ok(Connector {
            url: url.clone(),
            tls,
            timeout,
        })
    }

    /// Connects to the first address of the receiver that answers. `probation`: the receiver
    /// was down; over UDP the first record then checks whether it is back (see `Connection`).
    pub fn connect(&self, probation: bool) -> Connecting {
        let url = self.url.clone();
        let tls = self.tls.clone();
        let limit = self.timeout;
        Box::pin(async move {
            let mut last_error = io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} resolves to no address", url.host),
            );
            let addresses = tokio::time::timeout(limit, lookup_host((url.host.as_str(), url.port)))
                .await
                .map_err(|_| timed_out("resolving the receiver's name"))??;
            for address in addresses {
                let attempt = tokio::time::timeout(
                    limit,
                    open(address, url.transport, tls.clone(), probation),
                );
                match attempt.await {
                    Ok(Ok(connection)) => return Ok(connection),
                    Ok(Err(error)) => last_error = error,
                    Err(_) => last_error = timed_out("connecting"),
                }
            }
            Err(last_error)
        })
    }
}

async fn open(
    address: SocketAddr,
    transport: Transport,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    probation: bool,
) -> io::Result<Connection> {
    match (transport, tls) {
        (Transport::Udp, _) => {
            let local: SocketAddr = if address.is_ipv4() {
                (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let socket = UdpSocket::bind(local).await?;
            socket.connect(address).await?;
            Ok(Connection::Udp { socket, probation })
        }
        (Transport::Tcp, _) => {
            let stream = TcpStream::connect(address).await?;
            stream.set_nodelay(true)?;
            Ok(Connection::Tcp(stream))
        }
        (Transport::Tls, Some((connector, name))) => {
            let stream = TcpStream::connect(address).await?;
            stream.set_nodelay(true)?;
            let stream = connector.connect(name, stream).await?;
            Ok(Connection::Tls(Box::new(stream)))
        }
        (Transport::Tls, None) => unreachable!("a tls:// connector always has its TLS settings"),
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("timed out {what}"))
}

/// How long a UDP probe waits for the ICMP error that tells the receiver is still down.
const UDP_PROBE_WAIT: Duration = Duration::from_millis(200);
/// How long to let TLS digest what a receiver sent (session tickets, or its goodbye).
const TLS_DIGEST_WAIT: Duration = Duration::from_millis(100);

/// An open connection to the receiver.
pub(crate) enum Connection {
    /// `probation`: the receiver was down; the next send delivers a single record and waits for
    /// an ICMP error before reporting it delivered.
    Udp {
        socket: UdpSocket,
        probation: bool,
    },
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection {
    /// Sends `records` in order and returns how many were delivered (all of them, except for a
    /// UDP probe). Fails when the receiver has gone away.
    pub async fn send(&mut self, records: &[Bytes]) -> io::Result<usize> {
        match self {
            Connection::Udp { socket, probation } => {
                if let Some(error) = socket.take_error()? {
                    return Err(error);
                }
                if *probation {
                    socket.send(&records[0]).await?;
                    tokio::time::sleep(UDP_PROBE_WAIT).await;
                    if let Some(error) = socket.take_error()? {
                        return Err(error);
                    }
                    *probation = false;
                    return Ok(1);
                }
                for record in records {
                    socket.send(record).await?;
                }
            }
            Connection::Tcp(stream) => {
                ensure_tcp_open(stream)?;
                stream.write_all(&frame(records)).await?;
            }
            Connection::Tls(stream) => {
                ensure_tls_open(stream).await?;
                stream.write_all(&frame(records)).await?;
                stream.flush().await?;
            }
        }
        Ok(records.len())
    }
}

/// Octet-counting framing: `LEN SP MSG` for every record.
fn frame(records: &[Bytes]) -> Vec<u8> {
    let size = records.iter().map(|record| record.len() + 8).sum();
    let mut framed = Vec::with_capacity(size);
    for record in records {
        framed.extend_from_slice(record.len().to_string().as_bytes());
        framed.push(b' ');
        framed.extend_from_slice(record);
    }
    framed
}

/// What the receiver's side of a stream shows, asked of the socket itself: tokio's view of it
/// can lag behind by a moment, and a moment is enough to write records into a dead connection.
enum Peer {
    Quiet,
    SentData,
    Closed,
}

fn peer(socket: &TcpStream) -> io::Result<Peer> {
    let mut byte = [MaybeUninit::uninit()];
    match SockRef::from(socket).peek(&mut byte) {
        Ok(0) => Ok(Peer::Closed),
        Ok(_) => Ok(Peer::SentData),
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(Peer::Quiet),
        Err(error) => Err(error),
    }
}

fn closed_by_receiver() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the receiver closed the connection",
    )
}

/// A syslog receiver never talks back, so a stream with something to read has been closed or
/// broken by it. Writing into it would still succeed locally and the records would be lost, so
/// look first.
fn ensure_tcp_open(stream: &TcpStream) -> io::Result<()> {
    let mut scratch = [MaybeUninit::uninit(); 512];
    loop {
        match peer(stream)? {
            Peer::Quiet => return Ok(()),
            Peer::Closed => return Err(closed_by_receiver()),
            // Whatever a receiver says has no meaning in syslog: discard it, look again.
            Peer::SentData => {
                SockRef::from(stream).recv(&mut scratch)?;
            }
        }
    }
}

/// Like `ensure_tcp_open`, except that what the receiver sent belongs to TLS (a session ticket,
/// or the alert that closes the session) and must go through it.
async fn ensure_tls_open(stream: &mut TlsStream<TcpStream>) -> io::Result<()> {
    match peer(stream.get_ref().0)? {
        Peer::Quiet => Ok(()),
        Peer::Closed => Err(closed_by_receiver()),
        Peer::SentData => {
            let mut scratch = [0u8; 512];
            loop {
                match tokio::time::timeout(TLS_DIGEST_WAIT, stream.read(&mut scratch)).await {
                    // Nothing but TLS housekeeping: the session is alive.
                    Err(_) => return Ok(()),
                    Ok(Ok(0)) => return Err(closed_by_receiver()),
                    Ok(Ok(_)) => continue,
                    Ok(Err(error)) => return Err(error),
                }
            }
        }
    }
}

fn client_config(trust: &TlsTrust) -> Result<ClientConfig, TlsSetupError> {
    let provider = Arc::new(ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports TLS 1.2 and 1.3");
    let config = match trust {
        TlsTrust::SystemRoots => builder.with_root_certificates(system_roots()?),
        TlsTrust::CaFile(path) => builder.with_root_certificates(ca_file_roots(path)?),
        TlsTrust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider))),
    };
    Ok(config.with_no_client_auth())
}

fn ca_file_roots(path: &Path) -> Result<RootCertStore, TlsSetupError> {
    let unreadable = |source| TlsSetupError::CaFileUnreadable {
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(unreadable)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(unreadable)?;
    let mut roots = RootCertStore::empty();
    // Certificates the verifier cannot use are as good as absent: an empty store is reported.
    roots.add_parsable_certificates(certs);
    if roots.is_empty() {
        return Err(TlsSetupError::CaFileEmpty {
            path: path.to_owned(),
        });
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    // Unreadable entries in the system store are skipped, as every TLS client does.
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if roots.is_empty() {
        return Err(TlsSetupError::NoSystemRoots);
    }
    Ok(roots)
}

/// `--syslog-insecure`: accepts any certificate, but still checks that the handshake is signed
/// by the key of the certificate presented.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use tokio::{io::AsyncReadExt, net::TcpListener};

    use super::*;

    #[test]
    fn frames_count_octets_not_characters() {
        let framed = frame(&[Bytes::from_static(b"abc"), Bytes::from("é".as_bytes())]);
        assert_eq!(framed, b"3 abc2 \xc3\xa9");
    }

    #[test]
    fn missing_ca_file_says_which_option_to_fix() {
        let error = client_config(&TlsTrust::CaFile("/nonexistent/ca.pem".into())).unwrap_err();
        assert!(error.to_string().contains("--syslog-ca"), "{error}");
    }

    #[test]
    fn ca_file_without_certificates_is_rejected() {
        let dir = std::env::temp_dir().join(format!("rstwatch-ca-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let error = client_config(&TlsTrust::CaFile(path)).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            matches!(error, TlsSetupError::CaFileEmpty { .. }),
            "{error}"
        );
    }

    #[tokio::test]
    async fn tcp_sends_octet_counted_frames_and_notices_a_closed_receiver() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = SyslogUrl {
            transport: Transport::Tcp,
            host: "127.0.0.1".into(),
            port: listener.local_addr().unwrap().port(),
        };
        let connector =
            Connector::new(&url, &TlsTrust::SystemRoots, Duration::from_secs(5)).unwrap();
        let mut connection = connector.connect(false).await.unwrap();
        let (mut accepted, _) = listener.accept().await.unwrap();
        let records = [
            Bytes::from_static(b"<133>1 one"),
            Bytes::from_static(b"two"),
        ];
        assert_eq!(connection.send(&records).await.unwrap(), 2);
        let mut received = vec![0; 18];
        accepted.read_exact(&mut received).await.unwrap();
        assert_eq!(received, b"10 <133>1 one3 two");

        // Straight after the receiver closes, before tokio has seen it: the records are kept,
        // not written into the void.
        drop(accepted);
        let error = connection.send(&records).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionAborted);
    }
}
