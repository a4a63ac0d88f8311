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
use crate::protocol::{
    ErrorCode, MAX_PULL_MESSAGES, MAX_TOPIC_NAME_BYTES, PROTOCOL_VERSION, Reply, Request,
    ServerInfo,
};
use std::time::Instant;

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

    /// The only request a connection may send before the handshake.
    pub(super) fn handshake(
        &mut self,
        conn: ConnId,
        request: Request<'_>,
    ) -> Result<Option<Reply>, Failure> {
        let Request::Hello {
            version,
            client_name,
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
        if let Some(client) = self.client_mut(conn) {
            client.name = Some(prefix(client_name, MAX_CLIENT_NAME_BYTES).into());
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
