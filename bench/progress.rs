//! The progress line on stderr, for runs longer than a few seconds.
//!
//! The main thread waits for the workers here, waking ten times a second;
//! once a second it prints the rate of each meter over the last second. On
//! a terminal the line rewrites itself and is erased at the end; otherwise
//! each update is a line of its own, so a log keeps the history.

use crate::run::Shared;
use std::io::{IsTerminal, Write};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Nothing is shown before this much of the run has passed.
const QUIET_START: Duration = Duration::from_secs(2);
const EVERY: Duration = Duration::from_secs(1);

pub struct Progress {
    label: &'static str,
    enabled: bool,
    terminal: bool,
    start: Instant,
    last: Instant,
    last_values: Vec<u64>,
    shown: bool,
}

impl Progress {
    pub fn new(label: &'static str, quiet: bool) -> Progress {
        let now = Instant::now();
        Progress {
            label,
            enabled: !quiet,
            terminal: std::io::stderr().is_terminal(),
            start: now,
            last: now,
            last_values: Vec::new(),
            shown: false,
        }
    }

    /// Waits until every handle has finished, updating the line meanwhile.
    /// (Joining is left to the caller.)
    pub fn wait<T>(&mut self, shared: &Shared, handles: &[JoinHandle<T>]) {
        while !handles.iter().all(JoinHandle::is_finished) {
            thread::sleep(Duration::from_millis(100));
            self.tick(shared);
        }
    }

    fn tick(&mut self, shared: &Shared) {
        let now = Instant::now();
        let since = now.duration_since(self.last);
        if since < EVERY {
            return;
        }
        let values: Vec<u64> = shared.meters.iter().map(|(_, m)| m.get()).collect();
        let show = self.enabled && now.duration_since(self.start) >= QUIET_START;
        if show {
            let mut line = format!(
                "bench {}: {:6.1} s",
                self.label,
                now.duration_since(self.start).as_secs_f64()
            );
            for (i, (name, _)) in shared.meters.iter().enumerate() {
                let delta = values[i].saturating_sub(self.last_values.get(i).copied().unwrap_or(0));
                let per_second = delta as f64 / since.as_secs_f64();
                line.push_str(&format!("  {name} {}/s", human(per_second)));
            }
            let mut err = std::io::stderr().lock();
            let _ = if self.terminal {
                write!(err, "\r\x1b[K{line}")
            } else {
                writeln!(err, "{line}")
            };
            let _ = err.flush();
            self.shown = true;
        }
        self.last = now;
        self.last_values = values;
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if self.shown && self.terminal {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
        }
    }
}

/// 1234567 → "1.23M".
fn human(n: f64) -> String {
    if n >= 1e9 {
        format!("{:.2}G", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.2}M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1}k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}
