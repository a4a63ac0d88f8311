//! The server: binds a listener and runs the mio poll loop over it. This
//! module and [`connection`](crate::connection) are the only ones that know
//! mio.
//!
//! What lives here is the public face — [`Config`], [`Server`] (bind, then
//! run), [`spawn`] and [`RunningServer`] for a broker on its own thread — and
//! the token plan shared by the parts of the loop:
//!
//! - `event_loop`: one iteration after another — poll, accept, read and
//!   execute frames (a bounded turn each, paused while output waits), flush,
//!   close;
//! - `table`: the slab of connections with the lists of those to flush and
//!   to close, the one owner of each connection's `dirty`/`closing` marks;
//! - `guards`: the loop's own timers — handshake, partial-frame and output
//!   timeouts, accept retries, memory housekeeping;
//! - `shutdown`: the handle that stops a loop from any thread, and the
//!   drain that answers everyone before `run` returns;
//! - `users`: the users file reread on SIGHUP, refused logins logged with
//!   the peer's address.
//!
//! Errors on one connection close that connection; nothing a client does
//! returns from the loop.
//!
//! Durability: with [`Storage::Dir`], `bind` opens the storage
//! [`Log`](crate::storage::Log) there — recovery replays it into the broker
//! before the listener serves anyone — and hands it to the broker as its
//! journal, with the loop's waker as the writer's notify callback. Each loop
//! round then ends with one flush of the round's records (group commit), and
//! a wake from the writer makes the loop apply its reports. Reader threads
//! (`storage::ReadService`) serve subscribers behind the memory cache and
//! wake the loop the same way.

mod event_loop;
mod guards;
mod shutdown;
mod table;
mod users;

pub use shutdown::ShutdownHandle;

use crate::broker::{Broker, ConnId, Limits, Recovered};
use crate::storage::{self, Log, RecoveryReport, StdFs};
use event_loop::EventLoop;
use mio::net::TcpListener;
use mio::{Interest, Poll, Token};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const SIGNALS: Token = Token(2);
const FIRST_CONNECTION: usize = 3;

fn token_of(key: ConnId) -> Token {
    Token(key + FIRST_CONNECTION)
}

fn key_of(token: Token) -> ConnId {
    token.0 - FIRST_CONNECTION
}

/// Everything the broker can be told at start.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    pub limits: Limits,
    /// Connections beyond this get `TOO_MANY_CONNECTIONS` and are closed.
    pub max_connections: usize,
    /// A client whose socket takes no byte of its waiting replies for this
    /// long is disconnected (its session stays resumable).
    pub output_timeout: Duration,
    /// Time allowed from accept to a completed HELLO.
    pub handshake_timeout: Duration,
    /// Time allowed for one frame to arrive once its first byte has.
    pub frame_timeout: Duration,
    /// How long shutdown waits for write buffers to drain.
    pub shutdown_grace: Duration,
    /// Stop on SIGINT and SIGTERM (the `broker` binary sets this).
    pub handle_signals: bool,
    /// Where durable state lives, if anywhere.
    pub storage: Storage,
    /// The users file (`--users`): when set, HELLO must carry a user's
    /// credentials and every request is checked against its grants. Read
    /// at bind (an unreadable or malformed file fails the bind) and again
    /// on SIGHUP when `handle_signals` is on.
    pub users: Option<PathBuf>,
    /// Serve TLS only (`--tls-cert`, `--tls-key`), with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Before its HELLO is accepted, a connection of a broker that requires
/// users may send no frame larger than this: the only frame it may send is
/// a HELLO, and a few KiB hold any real one, so an unauthenticated peer
/// cannot make the broker buffer a megabyte.
pub const PRE_AUTH_MAX_FRAME_BYTES: usize = 4096;

/// Where the broker keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// Nothing survives a restart (tests and benches not about durability).
    MemoryOnly,
    /// A durable log in this directory (created if missing, locked while
    /// the broker runs).
    Dir { path: PathBuf, log: storage::Config },
}

/// What `bind` found in the data directory.
#[derive(Debug, Clone)]
pub struct Recovery {
    pub dir: PathBuf,
    /// The directory did not exist and was created.
    pub created: bool,
    pub report: RecoveryReport,
    pub rebuilt: Recovered,
    /// Log replay and rebuilding together.
    pub elapsed: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 5555)),
            limits: Limits::default(),
            max_connections: 16_384,
            output_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            frame_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
            handle_signals: false,
            storage: Storage::MemoryOnly,
            users: None,
            tls: None,
        }
    }
}

/// Descriptors kept for other than connections: listener, epoll, waker,
/// signal pipe, the spare for EMFILE, log files, and slack.
const RESERVED_DESCRIPTORS: u64 = 32;

fn fit_connections_to_descriptors(config: &mut Config) {
    let Some(limit) = crate::os::raise_descriptor_limit() else {
        return;
    };
    let fits = limit.saturating_sub(RESERVED_DESCRIPTORS).max(1);
    if config.max_connections as u64 > fits {
        log::warn!(
            "--max-connections {} does not fit the descriptor limit of {limit} \
             (less {RESERVED_DESCRIPTORS} reserved); lowered to {fits}",
            config.max_connections
        );
        config.max_connections = usize::try_from(fits).unwrap_or(usize::MAX);
    }
}

/// A bound, not yet running, broker.
pub struct Server {
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    config: Config,
    shutdown: ShutdownHandle,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    broker: Broker,
    recovery: Option<Recovery>,
}

impl Server {
    /// Binds the listening socket; `run` then serves it. Raises the soft
    /// descriptor limit to the hard one, and lowers `max_connections` (with
    /// a log line) if it still does not fit.
    pub fn bind(mut config: Config) -> io::Result<Server> {
        fit_connections_to_descriptors(&mut config);
        if config.limits.max_backlog_bytes < config.limits.max_frame_bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "max backlog bytes must be at least the max frame bytes, or a full batch could never be published",
            ));
        }
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(config.addr)?;
        let local_addr = listener.local_addr()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let shutdown = ShutdownHandle::new(poll.registry(), WAKER)?;
        let signals = if config.handle_signals {
            let mut signals = signal_hook_mio::v1_0::Signals::new([
                signal_hook::consts::SIGINT,
                signal_hook::consts::SIGTERM,
                signal_hook::consts::SIGHUP,
            ])?;
            poll.registry()
                .register(&mut signals, SIGNALS, Interest::READABLE)?;
            Some(signals)
        } else {
            None
        };
        let mut broker = Broker::new(config.limits.clone(), Instant::now());
        if let Some(path) = &config.users {
            let users = crate::auth::load(path).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("users file {}: {e}", path.display()),
                )
            })?;
            broker.set_users(Some(users), &mut table::NoConnections);
        }
        let recovery = match &config.storage {
            Storage::MemoryOnly => None,
            Storage::Dir { path, log } => {
                Some(open_log(&mut broker, path, *log, shutdown.waker())?)
            }
        };
        Ok(Server {
            poll,
            listener: Some(listener),
            local_addr,
            config,
            shutdown,
            signals,
            broker,
            recovery,
        })
    }

    /// What was recovered at bind, if the broker keeps a log.
    pub fn recovery(&self) -> Option<&Recovery> {
        self.recovery.as_ref()
    }

    /// The address actually bound (with the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Serves until shut down. Returns after waiting pulls were answered and
    /// write buffers flushed (or the grace period ran out).
    pub fn run(self) -> io::Result<()> {
        EventLoop::new(self).run()
    }
}

/// Opens (recovers) the log in `dir` into `broker` and makes it the
/// broker's journal. A storage failure is an `io::Error` whose inner error
/// is the [`storage::OpenError`], for the caller to match.
fn open_log(
    broker: &mut Broker,
    dir: &std::path::Path,
    config: storage::Config,
    waker: Arc<mio::Waker>,
) -> io::Result<Recovery> {
    let started = Instant::now();
    let created = !dir.exists();
    let mut rebuilt = Recovered::default();
    let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
        // A failed wake only delays the reports to the next timer.
        let _ = waker.wake();
    });
    let notify = {
        let wake = wake.clone();
        Box::new(move || wake())
    };
    let fs: Arc<dyn storage::Fs> = Arc::new(StdFs);
    // Before recovery: a backlog larger than the cache is evicted as it is
    // replayed, to be read back by these threads.
    let reads = storage::ReadService::spawn(
        storage::Reader::new(fs.clone(), dir.to_path_buf()),
        crate::broker::READER_THREADS,
        wake,
    )?;
    broker.set_reads(reads);
    let (log, report) = Log::open(fs, dir, config, notify, |_, record| {
        broker.replay(record, &mut rebuilt)
    })
    .map_err(io::Error::other)?;
    broker.finish_recovery(Instant::now(), &mut rebuilt);
    broker.set_journal(Box::new(log));
    Ok(Recovery {
        dir: dir.to_path_buf(),
        created,
        report,
        rebuilt,
        elapsed: started.elapsed(),
    })
}

/// A server running on its own thread, for tests and the bench tool.
pub struct RunningServer {
    addr: SocketAddr,
    handle: ShutdownHandle,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl RunningServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.handle.clone()
    }

    /// Shuts down and waits for the loop to finish.
    pub fn stop(mut self) -> io::Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> io::Result<()> {
        self.handle.shutdown();
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| io::Error::other("broker thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

/// Binds and runs a broker on a new thread.
pub fn spawn(config: Config) -> io::Result<RunningServer> {
    let server = Server::bind(config)?;
    let addr = server.local_addr();
    let handle = server.shutdown_handle();
    let thread = std::thread::Builder::new()
        .name("courier-broker".into())
        .spawn(move || server.run())?;
    Ok(RunningServer {
        addr,
        handle,
        thread: Some(thread),
    })
}
