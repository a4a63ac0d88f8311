//! Connections as the broker sees them: arrival and departure, the HELLO
//! handshake, and which role (publisher, subscriber) each has taken.
//!
//! The broker keeps one small [`ClientState`] per connection, in a `Vec`
//! indexed by the server's slab key: the server reuses keys densely, so the
//! vector stays as long as the most connections ever open at once, and a
//! lookup is an index. Everything else the broker holds about a connection
//! (its session, its waiting pull) hangs off the session, so that it can
//! outlive the connection.

use super::Broker;
use super::failure::{Failure, fail};
use super::keys::{ConnId, SessionKey};
use super::{BrokerTimer, Outbox};
use crate::auth::{User, Users};
use crate::protocol::{
    Credentials, ErrorCode, MAX_PULL_MESSAGES, MAX_TOPIC_NAME_BYTES, PROTOCOL_VERSION, Reply,
    Request, ServerInfo,
};
use crate::timers::TimerKey;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a refused HELLO waits for its AUTH_FAILED: long enough to make
/// guessing slow (one guess per connection per delay), short enough that a
/// typo is answered at once. Fixed, so the delay tells nothing.
pub const AUTH_FAILURE_DELAY: Duration = Duration::from_millis(300);

/// A refused authentication, for the server to log with the peer's address
/// (the broker knows no addresses). Never carries the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFailure {
    pub conn: ConnId,
    /// The user name the client gave (its own text: escape it), if any.
    pub user: Option<String>,
    pub reason: AuthFailureReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailureReason {
    NoCredentials,
    /// Unknown user or wrong token: one reason, so the log does not become
    /// a list of which names exist for whoever reads it.
    BadCredentials,
    /// A reload removed the user or replaced its token.
    Revoked,
}

impl std::fmt::Display for AuthFailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AuthFailureReason::NoCredentials => "no credentials",
            AuthFailureReason::BadCredentials => "unknown user or wrong token",
            AuthFailureReason::Revoked => "user removed or token replaced by a reload",
        })
    }
}

/// How much of a HELLO's client name is kept (for log lines): the protocol
/// allows any string up to the frame limit, and a connection should not pin
/// a megabyte for a label.
pub const MAX_CLIENT_NAME_BYTES: usize = 128;

/// What one connection has done so far.
#[derive(Debug, Default, Clone)]
pub(super) struct ClientState {
    /// The client name from HELLO (cut to [`MAX_CLIENT_NAME_BYTES`]);
    /// `Some` exactly when the handshake is done.
    name: Option<Box<str>>,
    pub publisher: Option<u64>,
    pub subscriber: Option<SessionKey>,
    /// Who authenticated on this connection (only with `--users`).
    pub user: Option<Arc<User>>,
    /// Its HELLO (with this request id) was refused: AUTH_FAILED goes out
    /// when this timer fires, and until then nothing it sends is executed.
    pub auth_failing: Option<(TimerKey, u64)>,
    /// The durable producer id REGISTER_PUBLISHER named, if any: what
    /// numbered publishes are deduplicated by (`super::producers`).
    pub producer: Option<Box<str>>,
}

impl ClientState {
    pub fn handshaken(&self) -> bool {
        self.name.is_some()
    }
}

impl Broker {
    /// A new connection, before its handshake.
    pub fn connect(&mut self, conn: ConnId) {
        if self.clients.len() <= conn {
            self.clients.resize(conn + 1, None);
        }
        if let Some(slot) = self.clients.get_mut(conn) {
            *slot = Some(ClientState::default());
        }
        self.counters.connections += 1;
        self.counters.connections_total += 1;
    }

    /// A connection is gone: its subscriber session (if any) is detached and
    /// will expire unless resumed.
    pub fn disconnect(&mut self, conn: ConnId, now: Instant) {
        let Some(client) = self.clients.get_mut(conn).and_then(Option::take) else {
            return;
        };
        self.drop_gated(conn);
        self.disk.fetching.remove(&conn);
        self.counters.connections -= 1;
        self.drop_pending(conn);
        if client.publisher.is_some() {
            self.counters.publishers -= 1;
        }
        if let Some(key) = client.subscriber {
            self.detach(key, now);
        }
    }

    /// The peer will send nothing more: its parked pulls, if any, are
    /// answered empty now, since no later request will come to follow them.
    pub fn end_of_input(&mut self, conn: ConnId, out: &mut dyn super::Outbox) {
        if let Some(key) = self.client(conn).and_then(|c| c.subscriber) {
            self.end_all_parked(key, super::pull::Answer::Empty, out);
        }
    }

    pub fn is_handshaken(&self, conn: ConnId) -> bool {
        self.client(conn).is_some_and(ClientState::handshaken)
    }

    /// The client name `conn` gave in HELLO (at most
    /// [`MAX_CLIENT_NAME_BYTES`] of it), once the handshake is done. It is
    /// the client's own text: escape it before printing.
    pub fn client_name(&self, conn: ConnId) -> Option<&str> {
        self.client(conn)?.name.as_deref()
    }

    pub(super) fn client(&self, conn: ConnId) -> Option<&ClientState> {
        self.clients.get(conn).and_then(Option::as_ref)
    }

    pub(super) fn client_mut(&mut self, conn: ConnId) -> Option<&mut ClientState> {
        self.clients.get_mut(conn).and_then(Option::as_mut)
    }

    /// The user `conn` authenticated as, if the broker requires users.
    pub fn user_name(&self, conn: ConnId) -> Option<&str> {
        Some(self.client(conn)?.user.as_deref()?.name.as_str())
    }

    /// Whether the broker requires users (`--users`).
    pub fn requires_users(&self) -> bool {
        self.users.is_some()
    }

    /// Refused authentications since the last call, for the server's log.
    pub fn take_auth_failures(&mut self) -> Vec<AuthFailure> {
        std::mem::take(&mut self.auth_failures)
    }

    /// Turns user checks on (`Some`) for connections that arrive from now
    /// on, or swaps the table on a reload: each connected user is looked up
    /// again, takes its new grants at once, and one that was removed or
    /// whose token was replaced gets AUTH_FAILED and is closed now.
    pub fn set_users(&mut self, users: Option<Users>, out: &mut dyn Outbox) {
        self.users = users;
        let mut revoked = Vec::new();
        for (conn, slot) in self.clients.iter_mut().enumerate() {
            let Some(client) = slot else { continue };
            let Some(current) = &client.user else {
                continue;
            };
            match self.users.as_ref().map(|users| users.still_valid(current)) {
                Some(Some(fresh)) => client.user = Some(fresh.clone()),
                // Users turned off: the connection keeps what it had.
                None => {}
                Some(None) => revoked.push((conn, current.name.clone())),
            }
        }
        self.end_unpermitted_subscriptions(out);
        for (conn, name) in revoked {
            self.auth_failures.push(AuthFailure {
                conn,
                user: Some(name),
                reason: AuthFailureReason::Revoked,
            });
            let message = "the user was removed or its token replaced";
            self.send_error(conn, 0, ErrorCode::AuthFailed, message, out);
        }
    }

    /// Checks HELLO's credentials when users are required. `Ok(None)`:
    /// refused, AUTH_FAILED follows after [`AUTH_FAILURE_DELAY`].
    fn authenticate(
        &mut self,
        conn: ConnId,
        id: u64,
        credentials: Option<Credentials<'_>>,
        now: Instant,
    ) -> Option<Option<Arc<User>>> {
        let users = self.users.as_ref()?;
        let user = credentials.and_then(|c| users.authenticate(c.user, c.token).cloned());
        if user.is_none() {
            let reason = match credentials {
                None => AuthFailureReason::NoCredentials,
                Some(_) => AuthFailureReason::BadCredentials,
            };
            self.auth_failures.push(AuthFailure {
                conn,
                user: credentials.map(|c| prefix(c.user, MAX_CLIENT_NAME_BYTES).to_owned()),
                reason,
            });
            let timer = self
                .timers
                .arm(now + AUTH_FAILURE_DELAY, BrokerTimer::AuthFailed(conn));
            if let Some(client) = self.client_mut(conn) {
                client.auth_failing = Some((timer, id));
            }
        }
        Some(user)
    }

    /// A refused HELLO's delay is over: AUTH_FAILED, and the connection
    /// closes. A timer left by an earlier connection on the same key does
    /// not match the current one's and is ignored.
    pub(super) fn auth_delay_over(&mut self, conn: ConnId, timer: TimerKey, out: &mut dyn Outbox) {
        let due = self
            .client(conn)
            .and_then(|c| c.auth_failing)
            .filter(|&(armed, _)| armed == timer);
        if let Some((_, id)) = due {
            let message = "authentication failed: unknown user or wrong token, or no credentials";
            self.send_error(conn, id, ErrorCode::AuthFailed, message, out);
        }
    }

    /// Whether `conn`'s HELLO was refused and it awaits its AUTH_FAILED.
    pub(super) fn auth_failing(&self, conn: ConnId) -> bool {
        self.client(conn).is_some_and(|c| c.auth_failing.is_some())
    }

    /// The only request a connection may send before the handshake.
    pub(super) fn handshake(
        &mut self,
        conn: ConnId,
        id: u64,
        request: Request<'_>,
        now: Instant,
    ) -> Result<Option<Reply>, Failure> {
        let Request::Hello {
            version,
            client_name,
            credentials,
        } = request
        else {
            return fail(
                ErrorCode::HandshakeRequired,
                "the first request must be HELLO [1, id, version, client_name]",
            );
        };
        if version != PROTOCOL_VERSION {
            return fail(
                ErrorCode::UnsupportedVersion,
                format!(
                    "protocol version {version} is not supported; this server speaks {PROTOCOL_VERSION}"
                ),
            );
        }
        let user = match self.authenticate(conn, id, credentials, now) {
            None => None,
            Some(Some(user)) => Some(user),
            Some(None) => return Ok(None),
        };
        if let Some(client) = self.client_mut(conn) {
            client.name = Some(prefix(client_name, MAX_CLIENT_NAME_BYTES).into());
            client.user = user;
        }
        Ok(Some(Reply::Hello(self.server_info())))
    }

    pub fn server_info(&self) -> ServerInfo {
        ServerInfo {
            version: PROTOCOL_VERSION,
            server: format!("courier {}", env!("CARGO_PKG_VERSION")),
            max_frame_bytes: self.limits.max_frame_bytes as u64,
            max_payload_bytes: self.limits.max_payload_bytes() as u64,
            max_topic_name_bytes: MAX_TOPIC_NAME_BYTES as u64,
            max_pull_messages: u64::from(MAX_PULL_MESSAGES),
            max_backlog_bytes: self.limits.max_backlog_bytes as u64,
            max_backlog_messages: self.limits.max_backlog_messages as u64,
            session_timeout_ms: self.limits.session_timeout.as_millis() as u64,
            max_output_bytes: self.limits.max_output_bytes as u64,
            publish_hold_ms: self.limits.publish_hold.as_millis() as u64,
            max_waiting_pulls: self.limits.max_waiting_pulls as u64,
            max_session_timeout_ms: self.limits.max_session_timeout.as_millis() as u64,
        }
    }

    /// Idempotent: registering again answers the id already given. A
    /// `producer_id` names the connection's producer from then on
    /// (registering again with another one renames it; without one keeps
    /// it).
    pub(super) fn register_publisher(
        &mut self,
        conn: ConnId,
        producer_id: Option<&str>,
    ) -> Result<Reply, Failure> {
        let next = self.next_publisher_id;
        let Some(client) = self.client_mut(conn) else {
            return fail(ErrorCode::NotRegistered, "connection is closing");
        };
        if let Some(producer) = producer_id {
            client.producer = Some(producer.into());
        }
        let publisher_id = *client.publisher.get_or_insert(next);
        // Ids only grow, so a connection that had one got it before `next`.
        if publisher_id == next {
            self.next_publisher_id += 1;
            self.counters.publishers += 1;
        }
        Ok(Reply::PublisherRegistered { publisher_id })
    }

    /// Which publisher `conn` registered, or the refusal to send.
    pub(super) fn publisher(&self, conn: ConnId) -> Result<u64, Failure> {
        self.client(conn)
            .and_then(|c| c.publisher)
            .ok_or_else(Failure::not_publisher)
    }

    /// Which session `conn` holds, or the refusal to send.
    pub(super) fn subscriber(&self, conn: ConnId) -> Result<SessionKey, Failure> {
        self.client(conn)
            .and_then(|c| c.subscriber)
            .ok_or_else(Failure::not_subscriber)
    }
}

/// The longest start of `text` that fits `max` bytes and ends on a character
/// boundary.
fn prefix(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::prefix;

    #[test]
    fn a_prefix_never_splits_a_character() {
        assert_eq!(prefix("abc", 8), "abc");
        assert_eq!(prefix("abc", 2), "ab");
        assert_eq!(prefix("aé", 2), "a");
        assert_eq!(prefix("é", 0), "");
    }
}
