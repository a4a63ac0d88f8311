//! The broker's address as people type it: `HOST:PORT`, or just `HOST` for
//! the default port, as `redis-cli -h` and `nats -s` allow.
//!
//! Shared by the commands, the bench tool and the broker's `--addr`, so that
//! `localhost` means the same address everywhere. Only text is rewritten;
//! resolving stays with [`std::net::ToSocketAddrs`].

/// The port a broker listens on when none is given.
pub const DEFAULT_PORT: u16 = 5555;

/// `addr` with [`DEFAULT_PORT`] added when it names no port. IPv6 literals
/// work bare (`::1`) or bracketed (`[::1]`, `[::1]:6000`).
pub fn with_default_port(addr: &str) -> String {
    let addr = addr.trim();
    let bracketed = addr.starts_with('[') && addr.ends_with(']');
    if bracketed {
        return format!("{addr}:{DEFAULT_PORT}");
    }
    if addr.parse::<std::net::Ipv6Addr>().is_ok() {
        return format!("[{addr}]:{DEFAULT_PORT}");
    }
    if addr.contains(':') {
        addr.to_owned()
    } else {
        format!("{addr}:{DEFAULT_PORT}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_port_is_the_default_one() {
        assert_eq!(with_default_port("localhost"), "localhost:5555");
        assert_eq!(with_default_port("127.0.0.1"), "127.0.0.1:5555");
        assert_eq!(with_default_port(" example.org "), "example.org:5555");
        assert_eq!(with_default_port("::1"), "[::1]:5555");
        assert_eq!(with_default_port("[::1]"), "[::1]:5555");
    }

    #[test]
    fn a_given_port_is_kept() {
        assert_eq!(with_default_port("localhost:6000"), "localhost:6000");
        assert_eq!(with_default_port("127.0.0.1:0"), "127.0.0.1:0");
        assert_eq!(with_default_port("[::1]:6000"), "[::1]:6000");
    }
}
