//! Coming back after the broker went away: a new connection, found with
//! exponential back-off, and the subscriber session resumed on it.
//!
//! A subscriber session is carried over: the broker keeps it while no
//! connection holds it (and a durable broker keeps it across its own
//! restart), and a resume redelivers everything not yet acknowledged, so a
//! reader that reconnects loses nothing and may see a message twice
//! (at-least-once, PROTOCOL.md section 7). A producer comes back under its
//! producer id ([`Client::reconnect_producer`]); resending what was not
//! answered is the caller's, and the broker stores each seq once
//! (PROTOCOL.md 4.21).
//!
//! The back-off doubles from [`Reconnect::first_delay`] to
//! [`Reconnect::max_delay`] so that a broker restarting at once is found in
//! about 100 ms, while one that stays down is asked at most every few
//! seconds rather than hammered by every reader at once.

use super::{Client, ClientOptions, Error, Result, Session};
use crate::protocol::ErrorCode;
use std::time::{Duration, Instant};

/// How hard to try before giving up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconnect {
    /// The wait after the first failed attempt (the first is at once).
    pub first_delay: Duration,
    /// The longest wait between attempts.
    pub max_delay: Duration,
    /// Give up once this long has passed since the connection was lost.
    pub limit: Duration,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            limit: Duration::from_secs(60),
        }
    }
}

impl Error {
    /// True when the connection is gone and a new one may fare better: the
    /// socket failed or closed, the broker could not be reached, did not
    /// answer in time, or said it is shutting down. An error reply that
    /// leaves the connection open, or a protocol violation, is not.
    pub fn is_connection_lost(&self) -> bool {
        match self {
            Error::Connect { .. } | Error::Io(_) | Error::Timeout | Error::ConnectionClosed => true,
            Error::Server { code, .. } => *code == ErrorCode::ShuttingDown,
            Error::Protocol(_) | Error::FrameTooLarge { .. } => false,
        }
    }
}

impl Client {
    /// Connects to `addr` again and resumes subscriber session `id` there,
    /// retrying while [`Error::is_connection_lost`] holds, with back-off,
    /// for up to `policy.limit`. Any other error is returned at once — in
    /// particular `UNKNOWN_SUBSCRIBER` when the session expired or the
    /// broker kept nothing (a memory-only broker that restarted). After the
    /// limit, the last error is returned.
    pub fn reconnect_subscriber(
        addr: &str,
        options: &ClientOptions,
        id: u64,
        policy: &Reconnect,
    ) -> Result<(Client, Session)> {
        retry(addr, options, policy, |client| client.resume_subscriber(id))
    }

    /// Connects to `addr` again and registers as producer `producer_id`
    /// there, retrying as [`Client::reconnect_subscriber`] does.
    pub fn reconnect_producer(
        addr: &str,
        options: &ClientOptions,
        producer_id: &str,
        policy: &Reconnect,
    ) -> Result<Client> {
        retry(addr, options, policy, |client| {
            client.register_producer(producer_id)
        })
        .map(|(client, _)| client)
    }
}

/// Connects and runs `then` on the new connection until both succeed, with
/// back-off while the connection is what failed, for up to `policy.limit`.
fn retry<T>(
    addr: &str,
    options: &ClientOptions,
    policy: &Reconnect,
    then: impl Fn(&mut Client) -> Result<T>,
) -> Result<(Client, T)> {
    let deadline = Instant::now() + policy.limit;
    let mut delay = policy.first_delay;
    loop {
        let attempt = Client::connect_with(addr, options.clone()).and_then(|mut client| {
            let value = then(&mut client)?;
            Ok((client, value))
        });
        match attempt {
            Err(e) if e.is_connection_lost() => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(e);
                }
                std::thread::sleep(delay.min(left));
                delay = delay.saturating_mul(2).min(policy.max_delay);
            }
            done => return done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_lost_connection_is_worth_reconnecting_for() {
        let server = |code| Error::Server {
            code,
            message: String::new(),
        };
        assert!(Error::ConnectionClosed.is_connection_lost());
        assert!(Error::Timeout.is_connection_lost());
        assert!(server(ErrorCode::ShuttingDown).is_connection_lost());
        assert!(!server(ErrorCode::UnknownSubscriber).is_connection_lost());
        assert!(!Error::Protocol(String::new()).is_connection_lost());
    }

    #[test]
    fn gives_up_after_the_limit_with_the_last_error() {
        // A port nobody listens on: bind one, then let it go.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let policy = Reconnect {
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            limit: Duration::from_millis(20),
        };
        let got =
            Client::reconnect_subscriber(&addr.to_string(), &ClientOptions::default(), 1, &policy);
        assert!(matches!(got, Err(Error::Connect { .. })), "{got:?}");
    }
}
