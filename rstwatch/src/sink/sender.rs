//! The syslog sender task: takes complete messages from the capture side and keeps the
//! receiver fed, never making capture wait.
//!
//! Records flow through one ordered queue: in memory while the receiver keeps up, on disk (the
//! spool) once it is down or too slow. Memory always holds the older part: as soon as anything
//! is spooled, new records are spooled behind it, and when the link fails the records in memory
//! are moved to the front of the spool. Delivery takes from memory first, then from the spool,
//! so the receiver sees records in the order they were produced.
//!
//! The connection attempt or the write in progress is kept as a future inside the task's state
//! and polled alongside the command queue, so messages keep being accepted (and spooled if need
//! be) while a slow receiver holds a write.

use std::{
    collections::VecDeque,
    future::Future,
    io,
    pin::Pin,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use bytes::Bytes;
use tokio::{
    sync::{mpsc, oneshot},
    time::MissedTickBehavior,
};

use super::{
    config::{SyslogConfig, Transport},
    spool::{AppendError, Spool, SpoolBatch},
    stats::Counters,
    transport::{Connecting, Connection, Connector},
};

/// What the handle sends to the task.
pub(crate) enum Command {
    /// One complete RFC 5424 message.
    Message(Bytes),
    Shutdown {
        deadline: Instant,
        done: oneshot::Sender<()>,
    },
}

/// Records written to the receiver in one go.
const BATCH: usize = 64;
/// How often the counters are refreshed.
const TICK: Duration = Duration::from_millis(100);
/// The largest UDP payload over IPv4.
const MAX_DATAGRAM: usize = 65_507;

type Writing = Pin<Box<dyn Future<Output = (Connection, io::Result<usize>)> + Send>>;

enum Link {
    Down { retry_at: Instant },
    Connecting(Connecting),
    Idle(Connection),
    Writing { write: Writing, batch: Batch },
}

/// Where the records being written come from, to remove them once delivered.
enum Batch {
    Memory(usize),
    Spool(SpoolBatch),
}

enum Event {
    Command(Option<Command>),
    Connected(io::Result<Connection>),
    Written(Connection, io::Result<usize>),
    Tick,
    Deadline,
}

struct Closing {
    deadline: Instant,
    done: Option<oneshot::Sender<()>>,
}

pub(crate) struct Sender {
    commands: mpsc::Receiver<Command>,
    /// False once every handle is gone or the queue was closed and emptied.
    commands_open: bool,
    memory: VecDeque<Bytes>,
    memory_len: usize,
    spool: Spool,
    link: Link,
    connector: Connector,
    transport: Transport,
    receiver: String,
    retry_min: Duration,
    retry_max: Duration,
    retry_delay: Duration,
    io_timeout: Duration,
    /// The receiver has failed since the last delivery (for logging once per outage, and for
    /// the UDP probe).
    outage: bool,
    closing: Option<Closing>,
    counters: Arc<Counters>,
}

impl Sender {
    pub fn new(
        config: &SyslogConfig,
        commands: mpsc::Receiver<Command>,
        spool: Spool,
        connector: Connector,
        counters: Arc<Counters>,
    ) -> Self {
        if !spool.is_empty() {
            log::info!(
                "syslog: {} records left in the spool {} by an earlier run will be re-sent",
                spool.len(),
                config.spool_dir.display()
            );
        }
        Sender {
            commands,
            commands_open: true,
            memory: VecDeque::new(),
            memory_len: config.memory_len.max(1),
            spool,
            link: Link::Down {
                retry_at: Instant::now(),
            },
            connector,
            transport: config.url.transport,
            receiver: config.url.to_string(),
            retry_min: config.retry_min,
            retry_max: config.retry_max.max(config.retry_min),
            retry_delay: config.retry_min,
            io_timeout: config.io_timeout,
            outage: false,
            closing: None,
            counters,
        }
    }

    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            self.start_io();
            if self.drained() {
                break;
            }
            let deadline = self.closing.as_ref().map(|closing| closing.deadline);
            let event = tokio::select! {
                command = self.commands.recv(), if self.commands_open => Event::Command(command),
                event = progress(&mut self.link) => event,
                _ = tick.tick() => Event::Tick,
                _ = sleep_until(deadline) => Event::Deadline,
            };
            match event {
                Event::Command(Some(Command::Message(message))) => self.enqueue(message),
                Event::Command(Some(Command::Shutdown { deadline, done })) => {
                    self.close(deadline, Some(done))
                }
                Event::Command(None) => self.commands_exhausted(),
                Event::Connected(result) => self.connected(result),
                Event::Written(connection, result) => self.written(connection, result),
                Event::Tick => self.tick(),
                Event::Deadline => break,
            }
        }
        self.finish();
    }

    /// Queues one message: in memory while the receiver keeps up, in the spool otherwise.
    fn enqueue(&mut self, message: Bytes) {
        if self.transport == Transport::Udp && message.len() > MAX_DATAGRAM {
            Counters::add(&self.counters.dropped_too_large, 1);
            log::warn!(
                "syslog: dropped a {}-byte record, too large for a UDP datagram; use tcp:// or tls://",
                message.len()
            );
            return;
        }
        let link_up = !matches!(self.link, Link::Down { .. });
        if link_up && self.spool.is_empty() && self.memory.len() < self.memory_len {
            self.memory.push_back(message);
            return;
        }
        self.spool_record(&message);
    }

    fn spool_record(&mut self, record: &[u8]) {
        match self.spool.append(record) {
            Ok(()) => Counters::add(&self.counters.spooled, 1),
            Err(error) => self.count_spool_drops(1, &error),
        }
    }

    fn count_spool_drops(&self, dropped: u64, error: &AppendError) {
        if self
            .counters
            .dropped_spool
            .fetch_add(dropped, Ordering::Relaxed)
            == 0
        {
            log::warn!(
                "syslog: dropping records: {error} (further drops are only counted; raise --spool-max-bytes or fix the spool directory)"
            );
        }
    }

    /// Starts a connection attempt or a write when there is one to start.
    fn start_io(&mut self) {
        match &self.link {
            Link::Down { retry_at } if Instant::now() >= *retry_at => {
                self.link = Link::Connecting(self.connector.connect(self.outage));
            }
            Link::Idle(_) if !self.memory.is_empty() || !self.spool.is_empty() => {
                let Some(batch) = self.take_batch() else {
                    return;
                };
                let records = match &batch {
                    Batch::Memory(count) => self.memory.iter().take(*count).cloned().collect(),
                    Batch::Spool(spooled) => spooled.records.clone(),
                };
                let Link::Idle(mut connection) = std::mem::replace(
                    &mut self.link,
                    Link::Down {
                        retry_at: Instant::now(),
                    },
                ) else {
                    unreachable!("matched Idle above");
                };
                let limit = self.io_timeout;
                let write = Box::pin(async move {
                    let result = tokio::time::timeout(limit, connection.send(&records))
                        .await
                        .unwrap_or_else(|_| {
                            Err(io::Error::new(
                                io::ErrorKind::TimedOut,
                                "the receiver did not take the records in time",
                            ))
                        });
                    (connection, result)
                });
                self.link = Link::Writing { write, batch };
            }
            _ => {}
        }
    }

    fn take_batch(&mut self) -> Option<Batch> {
        if !self.memory.is_empty() {
            return Some(Batch::Memory(self.memory.len().min(BATCH)));
        }
        match self.spool.peek(BATCH) {
            Ok(batch) if batch.records.is_empty() => None,
            Ok(batch) => Some(Batch::Spool(batch)),
            Err(error) => {
                log::error!("syslog: cannot read the spool: {error}; retrying");
                self.fail_link(error);
                None
            }
        }
    }

    fn connected(&mut self, result: io::Result<Connection>) {
        match result {
            Ok(connection) => {
                self.counters.connected.store(true, Ordering::Relaxed);
                self.link = Link::Idle(connection);
            }
            Err(error) => self.fail_link(error),
        }
    }

    fn written(&mut self, connection: Connection, result: io::Result<usize>) {
        let Link::Writing { batch, .. } = std::mem::replace(
            &mut self.link,
            Link::Down {
                retry_at: Instant::now(),
            },
        ) else {
            unreachable!("a write outcome comes from the Writing state");
        };
        let delivered = match result {
            Ok(delivered) => delivered,
            Err(error) => return self.fail_link(error),
        };
        match batch {
            Batch::Memory(_) => {
                self.memory.drain(..delivered);
                Counters::add(&self.counters.sent, delivered as u64);
            }
            Batch::Spool(spooled) => {
                if let Err(error) = self.spool.commit(&spooled, delivered) {
                    log::warn!("syslog: cannot update the spool after delivery: {error}");
                }
                Counters::add(&self.counters.resent, delivered as u64);
            }
        }
        if self.outage {
            log::info!(
                "syslog: receiver {} is back; {} records still to re-send",
                self.receiver,
                self.spool.len()
            );
            self.outage = false;
        }
        self.retry_delay = self.retry_min;
        self.link = Link::Idle(connection);
    }

    /// The receiver is unreachable: keep what memory holds safe on disk, ahead of the spool,
    /// and try again later.
    fn fail_link(&mut self, error: io::Error) {
        self.counters.connected.store(false, Ordering::Relaxed);
        if !self.outage {
            log::warn!(
                "syslog: receiver {} unavailable ({error}); spooling records until it is back",
                self.receiver
            );
            self.outage = true;
        }
        let retry_at = Instant::now() + self.retry_delay;
        self.retry_delay = (self.retry_delay * 2).min(self.retry_max);
        self.link = Link::Down { retry_at };
        self.spill_memory();
    }

    fn spill_memory(&mut self) {
        if self.memory.is_empty() {
            return;
        }
        let records: Vec<Bytes> = self.memory.drain(..).collect();
        match self.spool.prepend(&records) {
            Ok(dropped) => {
                Counters::add(&self.counters.spooled, records.len() as u64 - dropped);
                if dropped > 0 {
                    self.count_spool_drops(dropped, &AppendError::Full);
                }
            }
            Err(error) => self.count_spool_drops(records.len() as u64, &error),
        }
    }

    fn tick(&mut self) {
        self.publish_gauges();
    }

    /// Starts the shutdown: no new messages are taken (those already queued are), and the
    /// receiver is tried at once even if a retry was scheduled later.
    fn close(&mut self, deadline: Instant, done: Option<oneshot::Sender<()>>) {
        self.closing = Some(Closing { deadline, done });
        self.commands.close();
        if let Link::Down { retry_at } = &mut self.link {
            *retry_at = Instant::now();
        }
    }

    /// No message can come any more. When every handle was dropped without a shutdown, this
    /// is the shutdown.
    fn commands_exhausted(&mut self) {
        self.commands_open = false;
        if self.closing.is_none() {
            self.close(Instant::now() + self.io_timeout, None);
        }
    }

    /// Closing, with every message taken in and every record delivered.
    fn drained(&self) -> bool {
        self.closing.is_some()
            && !self.commands_open
            && self.memory.is_empty()
            && self.spool.is_empty()
            && !matches!(self.link, Link::Writing { .. })
    }

    /// Whatever could not be delivered goes to the spool for the next run.
    fn finish(mut self) {
        self.link = Link::Down {
            retry_at: Instant::now(),
        };
        self.commands.close();
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Message(message) => self.enqueue(message),
                Command::Shutdown { done, .. } => drop(done),
            }
        }
        self.spill_memory();
        if let Err(error) = self.spool.sync() {
            log::warn!("syslog: cannot flush the spool to disk: {error}");
        }
        if !self.spool.is_empty() {
            log::info!(
                "syslog: {} records stay in the spool for the next run",
                self.spool.len()
            );
        }
        self.publish_gauges();
        self.counters.connected.store(false, Ordering::Relaxed);
        if let Some(done) = self.closing.and_then(|closing| closing.done) {
            let _receiver_gone = done.send(());
        }
    }

    fn publish_gauges(&self) {
        let pending = self.memory.len() as u64 + self.spool.len();
        self.counters.pending.store(pending, Ordering::Relaxed);
        self.counters
            .spool_bytes
            .store(self.spool.disk_bytes(), Ordering::Relaxed);
    }
}

/// Completes when the connection attempt or write in progress does; never when there is none.
async fn progress(link: &mut Link) -> Event {
    match link {
        Link::Connecting(connecting) => Event::Connected(connecting.await),
        Link::Writing { write, .. } => {
            let (connection, result) = write.await;
            Event::Written(connection, result)
        }
        Link::Down { .. } | Link::Idle(_) => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
