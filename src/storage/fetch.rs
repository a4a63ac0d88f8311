//! The disk read service: range reads ([`ReadJob`]) done off the loop
//! thread, so that a subscriber catching up from the log does not stall
//! anyone else.
//!
//! The owner (the broker's loop) plans each read with the log's index
//! ([`super::Log::plan_read`]) — only it may touch the index — and submits
//! the plan; a reader thread executes it with a [`Reader`] (positioned
//! reads, checksums checked) and sends the payloads back, then calls the
//! notify callback (the broker passes the loop's `mio::Waker`, as the
//! writer does). The owner bounds how many jobs it has submitted, so the
//! channel holds little; the threads share one queue, so a slow read does
//! not hold up the next one while another thread is free.
//!
//! [`ReadService::inline`] runs each job inside `submit`, for tests that
//! want every step deterministic (as the writer's inline kind).

use super::index::Extent;
use super::read::{ReadChunk, ReadError, Reader};
use super::record::TopicId;
use std::collections::VecDeque;
use std::io;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// One range read: `topic`'s payloads from `from` on, through the planned
/// records, up to `max_messages` payloads or `max_bytes` payload bytes.
#[derive(Debug, Clone)]
pub struct ReadJob {
    /// The owner's name for it, given back with the result.
    pub id: u64,
    pub topic: TopicId,
    pub extents: Vec<Extent>,
    pub from: u64,
    pub max_messages: usize,
    pub max_bytes: usize,
}

/// A finished read.
#[derive(Debug)]
pub struct ReadDone {
    pub id: u64,
    pub result: Result<Vec<ReadChunk>, ReadError>,
}

enum Mode {
    Threads {
        jobs: Option<Sender<ReadJob>>,
        done: Receiver<ReadDone>,
        threads: Vec<JoinHandle<()>>,
        notify: Arc<dyn Fn() + Send + Sync>,
    },
    Inline {
        reader: Reader,
        done: VecDeque<ReadDone>,
    },
}

/// The reader threads (or the inline stand-in); see the module doc.
pub struct ReadService {
    mode: Mode,
}

fn execute(reader: &Reader, job: ReadJob) -> ReadDone {
    let result = reader.read_range(
        job.topic,
        &job.extents,
        job.from,
        job.max_messages,
        job.max_bytes,
    );
    ReadDone { id: job.id, result }
}

impl ReadService {
    /// `threads` reader threads (at least one) sharing one job queue.
    pub fn spawn(
        reader: Reader,
        threads: usize,
        notify: Arc<dyn Fn() + Send + Sync>,
    ) -> io::Result<Self> {
        let (jobs, job_rx) = mpsc::channel::<ReadJob>();
        let (done_tx, done) = mpsc::channel();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let mut handles = Vec::new();
        for n in 0..threads.max(1) {
            let (reader, job_rx, done_tx, notify) = (
                reader.clone(),
                job_rx.clone(),
                done_tx.clone(),
                notify.clone(),
            );
            let handle = std::thread::Builder::new()
                .name(format!("courier-reader-{n}"))
                .spawn(move || {
                    // A catch-up takes the CPU others leave (see `crate::os`).
                    crate::os::lower_thread_priority();
                    loop {
                        // A poisoned lock means another reader panicked:
                        // this one stops too, and the owner's reads stay
                        // unanswered, as a dead writer's records do.
                        let job = match job_rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        if done_tx.send(execute(&reader, job)).is_err() {
                            return;
                        }
                        notify();
                    }
                })?;
            handles.push(handle);
        }
        Ok(ReadService {
            mode: Mode::Threads {
                jobs: Some(jobs),
                done,
                threads: handles,
                notify,
            },
        })
    }

    /// Every job done inside [`ReadService::submit`].
    pub fn inline(reader: Reader) -> Self {
        ReadService {
            mode: Mode::Inline {
                reader,
                done: VecDeque::new(),
            },
        }
    }

    pub fn submit(&mut self, job: ReadJob) {
        match &mut self.mode {
            Mode::Threads { jobs, .. } => {
                // Gone only at drop; a dead thread's job is never answered.
                if let Some(jobs) = jobs {
                    let _ = jobs.send(job);
                }
            }
            Mode::Inline { reader, done } => done.push_back(execute(reader, job)),
        }
    }

    /// Wakes the owner as a finished read would, for work it put off to
    /// its next round (inline: nothing, the caller drives the rounds).
    pub fn wake(&self) {
        if let Mode::Threads { notify, .. } = &self.mode {
            notify();
        }
    }

    /// The reads finished since the last call.
    pub fn poll(&mut self) -> Vec<ReadDone> {
        match &mut self.mode {
            Mode::Threads { done, .. } => done.try_iter().collect(),
            Mode::Inline { done, .. } => done.drain(..).collect(),
        }
    }
}

impl Drop for ReadService {
    fn drop(&mut self) {
        if let Mode::Threads { jobs, threads, .. } = &mut self.mode {
            // Closing the queue ends each thread after its current job.
            jobs.take();
            for handle in threads.drain(..) {
                let _ = handle.join();
            }
        }
    }
}
