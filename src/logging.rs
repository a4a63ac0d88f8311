//! Logging: the [`log`] facade, plus a rate limit for floods.
//!
//! The library logs through the `log` crate's macros (`log::error!`,
//! `log::warn!`, `log::info!`, `log::debug!`, `log::trace!`) and never writes
//! to stderr itself: the program that embeds it installs a backend. The
//! `broker` binary installs `env_logger`, which stamps each line with the time
//! and level; tests and the bench tool install none, so an in-process broker
//! stays silent there at no cost (a disabled `log` macro is one atomic load).
//!
//! The broker is one thread, and a hostile client must not turn the log into
//! a denial of service: lines about client misbehaviour go through
//! [`log_limited!`](crate::log_limited), which lets a burst through per window
//! and then only counts, logging the count once the next window opens.

use log::Level;
use std::time::{Duration, Instant};

/// The facade, re-exported for [`log_limited!`](crate::log_limited) so that
/// callers need no `log` dependency of their own to use it.
#[doc(hidden)]
pub use log as facade;

/// Lets at most `burst` lines through per `window`; the rest are counted and
/// reported as one line when the next window opens.
#[derive(Debug)]
pub struct RateLimit {
    burst: u32,
    window: Duration,
    window_start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl RateLimit {
    pub fn new(burst: u32, window: Duration) -> Self {
        RateLimit {
            burst,
            window,
            window_start: None,
            logged: 0,
            suppressed: 0,
        }
    }

    /// Whether one more line may be logged at `now`. When this opens a new
    /// window after lines were held back, first logs how many (at `level`,
    /// under `target`, so the count lands where the lines would have).
    /// Use through [`log_limited!`](crate::log_limited), which asks only
    /// when `level` is enabled, so disabled lines are not even counted.
    pub fn admit(&mut self, now: Instant, level: Level, target: &str) -> bool {
        let expired = self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= self.window);
        if expired {
            if self.suppressed > 0 {
                log::log!(
                    target: target,
                    level,
                    "{} similar lines suppressed in the last {:?}",
                    self.suppressed,
                    self.window
                );
            }
            self.window_start = Some(now);
            self.logged = 0;
            self.suppressed = 0;
        }
        if self.logged < self.burst {
            self.logged += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// Lines held back in the current window.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

/// `log_limited!(limit, now, level, "format", args...)`: logs like
/// `log::log!` unless the [`RateLimit`] `limit` has spent its burst.
#[macro_export]
macro_rules! log_limited {
    ($limit:expr, $now:expr, $level:expr, $($arg:tt)+) => {{
        let level: $crate::logging::facade::Level = $level;
        if $crate::logging::facade::log_enabled!(level)
            && $limit.admit($now, level, ::core::module_path!())
        {
            $crate::logging::facade::log!(level, $($arg)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::{LevelFilter, Log, Metadata, Record};
    use std::sync::Mutex;

    /// Keeps the lines logged under this module's target; other tests'
    /// lines (the test binary is one process) are ignored.
    struct Capture(Mutex<Vec<String>>);

    impl Log for Capture {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn log(&self, record: &Record<'_>) {
            if record.target() == module_path!()
                && let Ok(mut lines) = self.0.lock()
            {
                lines.push(format!("{} {}", record.level(), record.args()));
            }
        }
        fn flush(&self) {}
    }

    static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

    #[test]
    fn a_flood_is_cut_to_the_burst_and_reported_as_a_count() {
        log::set_logger(&CAPTURE).expect("the only logger in this test binary");
        log::set_max_level(LevelFilter::Trace);
        let start = Instant::now();
        let mut limit = RateLimit::new(3, Duration::from_secs(1));
        for i in 0..100 {
            log_limited!(limit, start, Level::Warn, "bad frame {i}");
        }
        assert_eq!(limit.suppressed(), 97);
        log_limited!(
            limit,
            start + Duration::from_secs(2),
            Level::Warn,
            "bad frame again"
        );
        assert_eq!(limit.suppressed(), 0);
        let lines = CAPTURE.0.lock().expect("capture").clone();
        assert_eq!(
            lines,
            [
                "WARN bad frame 0",
                "WARN bad frame 1",
                "WARN bad frame 2",
                "WARN 97 similar lines suppressed in the last 1s",
                "WARN bad frame again",
            ]
        );
    }
}
