//! A private rsyslogd listening on 127.0.0.1, writing every message it receives, raw, one per
//! line, to a file. Killed when dropped.

use std::{
    fs,
    net::{TcpListener, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::certs::Certs;
use crate::process::command_with_default_signals;

/// The listener to start: imudp, imptcp (plain TCP, octet counting) or imtcp with the GnuTLS
/// driver (RFC 5425).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    Udp,
    Tcp,
    Tls,
}

pub struct Rsyslog {
    pub port: u16,
    input: Input,
    dir: PathBuf,
    child: Option<Child>,
}

const STARTUP: Duration = Duration::from_secs(10);

impl Rsyslog {
    /// Starts rsyslogd with its configuration, work directory and output under `dir`. Panics,
    /// naming the package to install, when rsyslogd (or its TLS driver) is missing.
    pub async fn start(dir: &Path, input: Input, certs: Option<&Certs>) -> Rsyslog {
        require_rsyslogd(input);
        let port = free_port(input);
        let work = dir.join("rsyslog-work");
        fs::create_dir_all(&work).expect("create rsyslog work directory");
        fs::write(
            dir.join("rsyslog.conf"),
            config(dir, &work, input, port, certs),
        )
        .expect("write rsyslog.conf");
        let mut rsyslog = Rsyslog {
            port,
            input,
            dir: dir.to_owned(),
            child: None,
        };
        rsyslog.launch().await;
        rsyslog
    }

    /// Kills rsyslogd at once (SIGKILL: no clean-up, like a crash) and waits for it to go.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // It may have died already; either way it is gone after wait().
            let _already_dead = child.kill();
            let _status = child.wait();
        }
    }

    /// Stops rsyslogd (SIGSTOP) without closing anything: a receiver that stalls, its
    /// connections open and its socket buffers filling.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a paused rsyslogd run again (SIGCONT).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("rsyslogd is running");
        // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    }

    /// Starts rsyslogd again with the same configuration, on the same port.
    pub async fn restart(&mut self) {
        self.kill();
        self.launch().await;
    }

    /// The messages received so far, one per line, as they came.
    pub fn received(&self) -> Vec<String> {
        fs::read_to_string(self.dir.join("received.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Waits until at least `count` messages have arrived, then a little longer to catch any
    /// extra (duplicate) one, and returns them all.
    pub async fn wait_for(&self, count: usize, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        loop {
            let received = self.received();
            if received.len() >= count {
                tokio::time::sleep(Duration::from_millis(300)).await;
                return self.received();
            }
            assert!(
                Instant::now() < deadline,
                "rsyslogd received {} of {count} messages within {limit:?}{}",
                received.len(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// rsyslogd's own output, for failure messages.
    pub fn log(&self) -> String {
        let log = fs::read_to_string(self.dir.join("rsyslogd.log")).unwrap_or_default();
        format!("\n--- rsyslogd output ---\n{log}")
    }

    async fn launch(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("rsyslogd.log"))
            .expect("open rsyslogd log");
        let child = command_with_default_signals(rsyslogd())
            .arg("-n")
            .arg("-f")
            .arg(self.dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("duplicate log handle"))
            .stderr(log)
            .spawn()
            .expect("start rsyslogd");
        self.child = Some(child);
        let deadline = Instant::now() + STARTUP;
        while !listening(self.input, self.port) {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("rsyslogd exited at start-up ({status}){}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "rsyslogd is not listening on port {} after {STARTUP:?}{}",
                self.port,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.kill();
    }
}

fn rsyslogd() -> &'static str {
    ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
        .into_iter()
        .find(|path| Path::new(path).exists())
        .unwrap_or("rsyslogd")
}

fn require_rsyslogd(input: Input) {
    let found = Command::new(rsyslogd())
        .arg("-v")
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        found,
        "rsyslogd not found: these tests need a real syslog receiver; install the Debian packages \
         `rsyslog` and `rsyslog-gnutls` (apt-get install rsyslog rsyslog-gnutls)"
    );
    if input == Input::Tls {
        let driver = ["/usr/lib/x86_64-linux-gnu/rsyslog", "/usr/lib/rsyslog"]
            .iter()
            .any(|dir| Path::new(dir).join("lmnsd_gtls.so").exists());
        assert!(
            driver,
            "rsyslog's GnuTLS driver (lmnsd_gtls.so) not found: install the Debian package \
             `rsyslog-gnutls` (apt-get install rsyslog-gnutls)"
        );
    }
}

/// A port nobody listens on right now (the kernel picks it; rsyslogd takes it right after).
fn free_port(input: Input) -> u16 {
    match input {
        Input::Udp => UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()),
        Input::Tcp | Input::Tls => TcpListener::bind("127.0.0.1:0").and_then(|s| s.local_addr()),
    }
    .expect("bind an ephemeral port on 127.0.0.1")
    .port()
}

/// Whether a socket is bound to 127.0.0.1:port (listening, for TCP), from /proc/net.
fn listening(input: Input, port: u16) -> bool {
    let (table, state) = match input {
        Input::Udp => ("/proc/net/udp", "07"),
        Input::Tcp | Input::Tls => ("/proc/net/tcp", "0A"),
    };
    let local = format!("0100007F:{port:04X}");
    fs::read_to_string(table).is_ok_and(|text| {
        text.lines().skip(1).any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&state)
        })
    })
}

fn config(dir: &Path, work: &Path, input: Input, port: u16, certs: Option<&Certs>) -> String {
    let tls_files = match (input, certs) {
        (Input::Tls, Some(certs)) => format!(
            "defaultNetstreamDriverCAFile=\"{}\" defaultNetstreamDriverCertFile=\"{}\" \
             defaultNetstreamDriverKeyFile=\"{}\"",
            certs.ca.display(),
            certs.server_cert.display(),
            certs.server_key.display()
        ),
        (Input::Tls, None) => panic!("a TLS receiver needs certificates"),
        _ => String::new(),
    };
    let listener = match input {
        // A test's burst of records outruns a slow receiver's default socket buffer on a
        // loaded machine, and UDP drops what does not fit: the test is about the sender.
        Input::Udp => format!(
            "module(load=\"imudp\")\n\
             input(type=\"imudp\" address=\"127.0.0.1\" port=\"{port}\" \
             rcvbufSize=\"4m\" ruleset=\"received\")"
        ),
        Input::Tcp => format!(
            "module(load=\"imptcp\")\n\
             input(type=\"imptcp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"received\")"
        ),
        Input::Tls => format!(
            "module(load=\"imtcp\" streamDriver.name=\"gtls\" streamDriver.mode=\"1\" \
             streamDriver.authMode=\"anon\")\n\
             input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"received\")"
        ),
    };
    // `%rawmsg%` is the message exactly as received (framing removed). Direct queues and
    // synchronous writes put every message in the file before rsyslogd takes the next one,
    // so a killed rsyslogd loses nothing it had acknowledged by reading it.
    format!(
        "global(workDirectory=\"{work}\" maxMessageSize=\"64k\" {tls_files})\n\
         main_queue(queue.type=\"Direct\")\n\
         template(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\n\
         ruleset(name=\"received\" queue.type=\"Direct\") {{\n\
           action(type=\"omfile\" file=\"{received}\" template=\"raw\" asyncWriting=\"off\" \
                  flushOnTXEnd=\"on\")\n\
         }}\n\
         {listener}\n",
        work = work.display(),
        received = dir.join("received.log").display(),
    )
}
