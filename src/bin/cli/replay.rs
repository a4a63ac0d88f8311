//! The replay flags' values: start positions (`--from`), retention bounds
//! (`--retain`, `--retain-bytes`), parsed in one place for every command.
//!
//! Durations and RFC 3339 times go through `humantime` (a small, widely
//! used crate that is already the ecosystem's reference for both), so that
//! `24h`, `1h 30m` and `2026-12-01T08:00:00Z` mean what users expect; sizes
//! are simple enough to parse here.
#![allow(dead_code)] // Each command uses the parsers for its own flags.

use super::Failure;
use courier::client::{Client, FetchedMessage, Position};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `--from`: `earliest`, `new`, a bare offset, an RFC 3339 time
/// (`2026-12-01T08:00:00Z`), or a time relative to now (`-5m`, `-2h`).
pub fn position(flag: &str, text: &str, now: SystemTime) -> Result<Position, Failure> {
    let text = text.trim();
    match text {
        "earliest" => return Ok(Position::Earliest),
        "new" | "latest" => return Ok(Position::New),
        _ => {}
    }
    if let Ok(offset) = text.parse::<u64>() {
        return Ok(Position::Offset(offset));
    }
    let at = if let Some(ago) = text.strip_prefix('-') {
        let ago = humantime::parse_duration(ago).map_err(|_| bad_position(flag, text))?;
        now.checked_sub(ago).unwrap_or(UNIX_EPOCH)
    } else {
        humantime::parse_rfc3339_weak(text).map_err(|_| bad_position(flag, text))?
    };
    let ms = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Ok(Position::TimeMs(ms))
}

fn bad_position(flag: &str, text: &str) -> Failure {
    Failure::usage(format!(
        "{flag}: '{text}' is not earliest, new, an offset, an RFC 3339 time (2026-12-01T08:00:00Z) or a relative time (-5m)"
    ))
}

/// `--retain`: a duration such as `24h`, `7d`, `90s` or `1h 30m`, in ms
/// (at least 1 ms).
pub fn retain_ms(flag: &str, text: &str) -> Result<u64, Failure> {
    let bad = || {
        Failure::usage(format!(
            "{flag}: '{text}' is not a duration such as 24h, 7d or 30m"
        ))
    };
    let duration: Duration = humantime::parse_duration(text.trim()).map_err(|_| bad())?;
    match u64::try_from(duration.as_millis()) {
        Ok(0) | Err(_) => Err(bad()),
        Ok(ms) => Ok(ms),
    }
}

/// `--retain-bytes`: a size such as `1G`, `512M`, `64KiB` or `1000000`;
/// K, M, G, T are powers of 1024 (with or without `iB`/`B`).
pub fn size(flag: &str, text: &str) -> Result<u64, Failure> {
    let bad = || {
        Failure::usage(format!(
            "{flag}: '{text}' is not a size such as 1G, 512M or 4096"
        ))
    };
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(bad()),
    };
    match number.checked_mul(1 << shift) {
        Some(0) | None => Err(bad()),
        Some(bytes) => Ok(bytes),
    }
}

/// The most one FETCH asks for.
const FETCH_MESSAGES: u64 = 1000;

/// Reads `topic` with FETCH from `from` up to where the topic ended when the
/// read began, at most `count` messages, handing each to `each`; returns
/// how many. FETCH takes offsets, so a time position reads from the oldest
/// message and skips those appended before it.
pub fn fetch_each(
    client: &mut Client,
    topic: &str,
    from: Position,
    count: Option<u64>,
    mut each: impl FnMut(&FetchedMessage) -> Result<(), Failure>,
) -> Result<u64, Failure> {
    let (mut offset, after_ms) = match from {
        Position::Earliest => (0, 0),
        Position::Offset(offset) => (offset, 0),
        Position::New => (u64::MAX, 0),
        Position::TimeMs(ms) => (0, ms),
    };
    let (mut read, mut end) = (0, None);
    while count.is_none_or(|n| read < n) {
        let left = count
            .map_or(FETCH_MESSAGES, |n| n - read)
            .min(FETCH_MESSAGES);
        let fetched = client
            .fetch(topic, offset, left as u32, 1 << 20)
            .map_err(|e| super::topic_failure(&e, topic))?;
        let end = *end.get_or_insert(fetched.end_offset);
        for message in &fetched.messages {
            if message.offset >= end || count.is_some_and(|n| read >= n) {
                return Ok(read);
            }
            if message.time_ms >= after_ms {
                each(message)?;
                read += 1;
            }
        }
        if fetched.next_offset >= end || fetched.messages.is_empty() {
            break;
        }
        offset = fetched.next_offset;
    }
    Ok(read)
}

/// An append time in ms, as RFC 3339 (for listings).
pub fn time(ms: u64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_millis(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_parse_every_documented_form() {
        let now = UNIX_EPOCH + Duration::from_secs(1_796_112_000);
        let parse = |text| position("--from", text, now).ok();
        assert_eq!(parse("earliest"), Some(Position::Earliest));
        assert_eq!(parse("new"), Some(Position::New));
        assert_eq!(parse("42"), Some(Position::Offset(42)));
        assert_eq!(
            parse("2026-12-01T08:00:00Z"),
            Some(Position::TimeMs(1_796_112_000_000))
        );
        assert_eq!(parse("-5m"), Some(Position::TimeMs(1_796_111_700_000)));
        assert_eq!(parse("-2h"), Some(Position::TimeMs(1_796_104_800_000)));
        assert_eq!(parse("yesterday"), None);
        assert_eq!(parse("-5 parsecs"), None);
    }

    #[test]
    fn retention_values_parse() {
        assert_eq!(retain_ms("--retain", "24h").ok(), Some(86_400_000));
        assert_eq!(retain_ms("--retain", "1h 30m").ok(), Some(5_400_000));
        assert!(retain_ms("--retain", "0s").is_err());
        assert!(retain_ms("--retain", "soon").is_err());
        assert_eq!(size("--retain-bytes", "1G").ok(), Some(1 << 30));
        assert_eq!(size("--retain-bytes", "512MiB").ok(), Some(512 << 20));
        assert_eq!(size("--retain-bytes", "4096").ok(), Some(4096));
        assert!(size("--retain-bytes", "0").is_err());
        assert!(size("--retain-bytes", "1Q").is_err());
        assert!(size("--retain-bytes", "99999999999T").is_err());
    }
}
