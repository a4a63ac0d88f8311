//! Levelled logging to stderr, with a rate limit for floods.
//!
//! The broker is one thread, so logging must be cheap when off and must not
//! let a hostile client turn the log into a denial of service: lines about
//! client misbehaviour go through [`RateLimited`], which lets a burst through
//! and then counts what it suppressed, printing the count once the window
//! ends. The level is process-wide (set once by the binary from `--log-level`
//! or `RUST_LOG`); tests leave it at `warn`, so they stay quiet.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    Off = 0,
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
}

impl Level {
    pub fn parse(text: &str) -> Option<Level> {
        Some(match text.trim().to_ascii_lowercase().as_str() {
            "off" => Level::Off,
            "error" => Level::Error,
            "warn" | "warning" => Level::Warn,
            "info" => Level::Info,
            "debug" | "trace" => Level::Debug,
            _ => return None,
        })
    }

    fn label(self) -> &'static str {
        match self {
            Level::Off => "off",
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Warn as u8);

pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

pub fn enabled(level: Level) -> bool {
    level != Level::Off && level as u8 <= LEVEL.load(Ordering::Relaxed)
}

/// Writes one line if `level` is enabled. Use through the `log_*` macros.
pub fn write(level: Level, args: fmt::Arguments<'_>) {
    if enabled(level) {
        eprintln!("broker: {}: {}", level.label(), args);
    }
}

#[macro_export]
macro_rules! log_error { ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Error, format_args!($($arg)*)) } }
#[macro_export]
macro_rules! log_warn { ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Warn, format_args!($($arg)*)) } }
#[macro_export]
macro_rules! log_info { ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Info, format_args!($($arg)*)) } }
#[macro_export]
macro_rules! log_debug { ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Debug, format_args!($($arg)*)) } }

/// Lets at most `burst` lines through per `window`; reports the rest as a
/// count when the next window opens.
#[derive(Debug)]
pub struct RateLimited {
    burst: u32,
    window: Duration,
    window_start: Option<Instant>,
    printed: u32,
    suppressed: u64,
}

impl RateLimited {
    pub fn new(burst: u32, window: Duration) -> Self {
        RateLimited {
            burst,
            window,
            window_start: None,
            printed: 0,
            suppressed: 0,
        }
    }

    /// Logs `args` at `level` unless this window's burst is spent.
    pub fn write(&mut self, now: Instant, level: Level, args: fmt::Arguments<'_>) {
        if !enabled(level) {
            return;
        }
        let expired = self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= self.window);
        if expired {
            if self.suppressed > 0 {
                write(
                    level,
                    format_args!(
                        "{} similar lines suppressed in the last {:?}",
                        self.suppressed, self.window
                    ),
                );
            }
            self.window_start = Some(now);
            self.printed = 0;
            self.suppressed = 0;
        }
        if self.printed < self.burst {
            self.printed += 1;
            write(level, args);
        } else {
            self.suppressed += 1;
        }
    }

    /// Lines held back in the current window.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_from_the_usual_names() {
        assert_eq!(Level::parse("INFO"), Some(Level::Info));
        assert_eq!(Level::parse("warning"), Some(Level::Warn));
        assert_eq!(Level::parse("loud"), None);
    }

    #[test]
    fn a_flood_is_cut_to_the_burst_and_counted() {
        set_level(Level::Warn);
        let start = Instant::now();
        let mut limiter = RateLimited::new(3, Duration::from_secs(1));
        for _ in 0..100 {
            limiter.write(start, Level::Warn, format_args!("bad frame"));
        }
        assert_eq!(limiter.suppressed(), 97);
        limiter.write(
            start + Duration::from_secs(2),
            Level::Warn,
            format_args!("bad frame"),
        );
        assert_eq!(limiter.suppressed(), 0);
    }
}
