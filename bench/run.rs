//! What the threads of one run share: the clock, the abort flag, the
//! progress meters, the start gate and the timeline.
//!
//! Every client gets its own thread and its own blocking connection. They
//! all connect and register first, then wait at the [`Gate`]; the main
//! thread opens it when all are ready — so connection setup is never
//! measured — and hands them the [`Timeline`]: when the warmup ends and when
//! to stop. A thread that fails sets the abort flag and the others wind down
//! at their next check; a thread that fails before the gate opens makes the
//! gate refuse to open, so nobody waits forever.

use crate::args::Options;
use crate::payload::Clock;
use courier::client::{self, Client, ClientOptions};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long a reply may take before a client gives up on its connection.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long all clients together may take to connect and register.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a worker thread stopped without a result.
#[derive(Debug)]
pub enum Fault {
    Failed(String),
    /// Another thread failed first; its error is the one to report.
    Aborted,
}

impl From<String> for Fault {
    fn from(message: String) -> Fault {
        Fault::Failed(message)
    }
}

/// A counter the progress line reads while workers add to it.
#[derive(Debug, Default)]
pub struct Meter(AtomicU64);

impl Meter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Shared by every thread of a run.
#[derive(Debug)]
pub struct Shared {
    pub clock: Clock,
    pub addr: String,
    /// How the clients reach the broker beyond its address (`--tls`,
    /// `--user`).
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    pub credentials: Option<courier::client::UserToken>,
    abort: AtomicBool,
    /// What the progress line shows, by name.
    pub meters: Vec<(&'static str, Meter)>,
}

impl Shared {
    pub fn new(broker: &crate::broker::Broker, meters: &[&'static str]) -> Arc<Shared> {
        Arc::new(Shared {
            clock: Clock::new(),
            addr: broker.addr().to_owned(),
            tls: broker.client_tls(),
            credentials: broker.credentials(),
            abort: AtomicBool::new(false),
            meters: meters
                .iter()
                .map(|&name| (name, Meter::default()))
                .collect(),
        })
    }

    pub fn abort(&self) {
        self.abort.store(true, Ordering::Relaxed);
    }

    pub fn aborted(&self) -> bool {
        self.abort.load(Ordering::Relaxed)
    }

    /// The meter at `index` (in the order given to [`Shared::new`]).
    pub fn meter(&self, index: usize) -> Option<&Meter> {
        self.meters.get(index).map(|(_, meter)| meter)
    }

    pub fn connect(&self, name: String) -> Result<Client, String> {
        let options = ClientOptions {
            name,
            timeout: Some(CLIENT_TIMEOUT),
            connect_timeout: Some(Duration::from_secs(10)),
            credentials: self.credentials.clone(),
            tls: self.tls.clone(),
        };
        Client::connect_with(self.addr.as_str(), options).map_err(|e| {
            let hint = match &e {
                // EMFILE and ENFILE: the usual wall when opening many
                // connections.
                client::Error::Connect { source, .. }
                    if matches!(source.raw_os_error(), Some(23 | 24)) =>
                {
                    " (out of file descriptors: raise `ulimit -n`)".to_owned()
                }
                client::Error::Connect { addr, source }
                    if source.kind() == std::io::ErrorKind::ConnectionRefused =>
                {
                    format!("; is the broker running at {addr}?")
                }
                _ => String::new(),
            };
            format!("{e}{hint}")
        })
    }
}

/// When a run measures, in nanoseconds of the run's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeline {
    pub start_ns: u64,
    /// The end of the warmup: events from here on are measured.
    pub measure_ns: u64,
    /// No new work starts at or after this.
    pub stop_ns: u64,
}

impl Timeline {
    pub fn starting_now(clock: &Clock, warmup: Duration, duration: Duration) -> Timeline {
        let start_ns = clock.now_ns();
        let measure_ns = start_ns.saturating_add(nanos(warmup));
        Timeline {
            start_ns,
            measure_ns,
            stop_ns: measure_ns.saturating_add(nanos(duration)),
        }
    }

    pub fn measured(&self, ns: u64) -> bool {
        ns >= self.measure_ns
    }

    /// From the end of the warmup to `last_ns`.
    pub fn window(&self, last_ns: u64) -> Duration {
        Duration::from_nanos(last_ns.saturating_sub(self.measure_ns))
    }
}

pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[derive(Debug, Default)]
struct GateState {
    ready: usize,
    failed: bool,
    open: Option<Timeline>,
}

/// Holds workers until every one of them is connected.
#[derive(Debug, Default)]
pub struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

impl Gate {
    /// A worker is ready; waits for the gate to open. `None` if the run was
    /// called off (another worker failed, or setup took too long).
    pub fn ready(&self) -> Option<Timeline> {
        let mut state = self.lock();
        state.ready += 1;
        self.changed.notify_all();
        let deadline = Instant::now() + SETUP_TIMEOUT * 2;
        loop {
            if let Some(timeline) = state.open {
                return Some(timeline);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            if state.failed {
                return None;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// A worker could not get ready: the gate will not open.
    pub fn fail(&self) {
        self.lock().failed = true;
        self.changed.notify_all();
    }

    /// Waits for `workers` to be ready, then opens the gate with the
    /// timeline `start` makes. `None` if one failed or setup timed out.
    pub fn open(&self, workers: usize, start: impl FnOnce() -> Timeline) -> Option<Timeline> {
        let mut state = self.lock();
        let deadline = Instant::now() + SETUP_TIMEOUT;
        while state.ready < workers && !state.failed {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        if state.ready < workers || state.failed {
            state.failed = true;
            self.changed.notify_all();
            return None;
        }
        let timeline = start();
        state.open = Some(timeline);
        self.changed.notify_all();
        Some(timeline)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Opens the gate once `workers` are ready, starting the run's timeline
/// (`o.warmup`, then `o.duration`). If they cannot all get ready — spawning
/// them failed (`spawned`), one of them failed, or setup timed out — calls
/// the run off and fails with the error that says the most: a worker's own,
/// from `join` (which joins them all), rather than the gate's.
pub fn start(
    o: &Options,
    shared: &Shared,
    gate: &Gate,
    workers: usize,
    spawned: Result<(), String>,
    join: impl FnOnce() -> Result<(), String>,
) -> Result<Timeline, Failure> {
    let opened = spawned.and_then(|()| {
        gate.open(workers, || {
            Timeline::starting_now(&shared.clock, o.warmup, o.duration)
        })
        .ok_or_else(|| "the clients could not all connect in time".to_owned())
    });
    opened.map_err(|e| {
        shared.abort();
        gate.fail();
        Failure::Runtime(join().err().unwrap_or(e))
    })
}

/// Starts a named worker thread. A worker that fails aborts the run, so
/// the others stop at their next check.
pub fn spawn<T: Send + 'static>(
    name: String,
    shared: &Arc<Shared>,
    gate: &Arc<Gate>,
    body: impl FnOnce() -> Result<T, Fault> + Send + 'static,
) -> Result<JoinHandle<Result<T, Fault>>, String> {
    let shared = Arc::clone(shared);
    let gate = Arc::clone(gate);
    thread::Builder::new()
        .name(name)
        .spawn(move || {
            let result = body();
            if result.is_err() {
                shared.abort();
                gate.fail();
            }
            result
        })
        .map_err(|e| format!("cannot start a thread: {e}"))
}

/// Joins workers; the first real error (not an abort) wins.
pub fn join<T>(handles: Vec<JoinHandle<Result<T, Fault>>>) -> Result<Vec<T>, String> {
    let mut results = Vec::with_capacity(handles.len());
    let mut first_error: Option<String> = None;
    let mut aborted = false;
    for handle in handles {
        match handle.join() {
            Ok(Ok(value)) => results.push(value),
            Ok(Err(Fault::Failed(e))) => {
                first_error.get_or_insert(e);
            }
            Ok(Err(Fault::Aborted)) => aborted = true,
            Err(_) => {
                first_error.get_or_insert_with(|| "a client thread panicked".to_owned());
            }
        }
    }
    match (first_error, aborted) {
        (Some(e), _) => Err(e),
        (None, true) => Err("the run was called off".to_owned()),
        (None, false) => Ok(results),
    }
}

/// Why a scenario produced no report.
#[derive(Debug)]
pub enum Failure {
    /// The arguments do not fit (this broker): exit status 2.
    Usage(String),
    /// Something failed while running: exit status 1.
    Runtime(String),
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure::Runtime(message)
    }
}
