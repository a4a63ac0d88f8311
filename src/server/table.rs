//! The connection table: the slab of connections, and the lists of work the
//! loop does for them at the end of each iteration.
//!
//! A connection is flushed once per iteration however many replies it got,
//! and closed only after the batch (a reused slab key must not receive a
//! stale event), so the loop keeps lists: connections with output to flush,
//! connections to close after flushing, connections to close at once.
//! Each connection carries a mark saying it is listed, so it is listed once.
//! Mark and list change together here and nowhere else, which is why the
//! table owns the slab: the broker's [`Outbox`] and the loop go through
//! [`Table::output`], [`Table::mark_dirty`] and [`Table::close`].
//!
//! [`Label`] names a connection in log lines — slab key, peer address and the
//! client name from HELLO — so every connection event reads the same.

use crate::broker::{self, Broker, ConnId};
use crate::connection::{BufferPool, Connection};
use slab::Slab;
use std::fmt;
use std::net::SocketAddr;

/// How a connection marked for closing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Close {
    /// Flush what is buffered (the error that caused the close, or the
    /// last replies after a half-close) until it is sent or stalls, then
    /// close with a linger (see `event_loop`).
    AfterFlush,
    /// Close without writing: the socket failed or the peer is gone.
    Now,
}

#[derive(Default)]
pub(super) struct Table {
    slab: Slab<Connection>,
    /// Connections with output to flush at the end of the iteration.
    dirty: Vec<ConnId>,
    /// Connections to close at the end of the iteration, after a last flush.
    closing: Vec<ConnId>,
    /// Connections to close at the end of the iteration, without flushing.
    dropping: Vec<ConnId>,
}

impl Table {
    pub(super) fn len(&self) -> usize {
        self.slab.len()
    }

    pub(super) fn get(&self, key: ConnId) -> Option<&Connection> {
        self.slab.get(key)
    }

    pub(super) fn get_mut(&mut self, key: ConnId) -> Option<&mut Connection> {
        self.slab.get_mut(key)
    }

    /// The key the next [`insert`](Self::insert) will use, so the socket can
    /// be registered under it first.
    pub(super) fn next_key(&self) -> ConnId {
        self.slab.vacant_key()
    }

    pub(super) fn insert(&mut self, connection: Connection) -> ConnId {
        self.slab.insert(connection)
    }

    pub(super) fn remove(&mut self, key: ConnId) -> Option<Connection> {
        self.slab.try_remove(key)
    }

    /// Keys of the connections not closing.
    pub(super) fn open_keys(&self) -> Vec<ConnId> {
        self.slab
            .iter()
            .filter(|(_, c)| !c.is_closing())
            .map(|(key, _)| key)
            .collect()
    }

    /// Keys of every connection, closing or not.
    pub(super) fn keys(&self) -> Vec<ConnId> {
        self.slab.iter().map(|(key, _)| key).collect()
    }

    /// Lists the connection for flushing at the end of the iteration.
    pub(super) fn mark_dirty(&mut self, key: ConnId) {
        if let Some(connection) = self.slab.get_mut(key)
            && connection.mark_dirty()
        {
            self.dirty.push(key);
        }
    }

    /// The connection's output buffer, listing it for flushing.
    pub(super) fn output<'a>(
        &'a mut self,
        key: ConnId,
        pool: &mut BufferPool,
    ) -> Option<&'a mut Vec<u8>> {
        self.mark_dirty(key);
        Some(self.slab.get_mut(key)?.output(pool))
    }

    /// Marks the connection as closing: it reads nothing more, and goes at
    /// the end of the iteration. A second call changes nothing.
    pub(super) fn close(&mut self, key: ConnId, how: Close) {
        if let Some(connection) = self.slab.get_mut(key)
            && connection.begin_close()
        {
            match how {
                Close::AfterFlush => self.closing.push(key),
                Close::Now => self.dropping.push(key),
            }
        }
    }

    /// Lists a connection already closing for removal at the end of the
    /// iteration (a lingering close that is over).
    pub(super) fn drop_closing(&mut self, key: ConnId) {
        if self.slab.get(key).is_some_and(Connection::is_closing) {
            self.dropping.push(key);
        }
    }

    /// The connections to flush, unmarked as they are handed out.
    pub(super) fn take_dirty(&mut self) -> Vec<ConnId> {
        let keys = std::mem::take(&mut self.dirty);
        for &key in &keys {
            if let Some(connection) = self.slab.get_mut(key) {
                connection.take_dirty();
            }
        }
        keys
    }

    /// The connections marked [`Close::AfterFlush`] since the last call.
    /// They stay marked closing: the caller removes them.
    pub(super) fn take_closing(&mut self) -> Vec<ConnId> {
        std::mem::take(&mut self.closing)
    }

    /// The connections marked [`Close::Now`] since the last call.
    pub(super) fn take_dropping(&mut self) -> Vec<ConnId> {
        std::mem::take(&mut self.dropping)
    }
}

/// The broker's view of the connections' write buffers.
pub(super) struct Outbox<'a> {
    pub(super) table: &'a mut Table,
    pub(super) pool: &'a mut BufferPool,
}

impl broker::Outbox for Outbox<'_> {
    fn buffer(&mut self, conn: ConnId) -> Option<&mut Vec<u8>> {
        self.table.output(conn, self.pool)
    }

    fn close(&mut self, conn: ConnId) {
        self.table.close(conn, Close::AfterFlush);
    }
}

/// An outbox with no connection yet (the broker before the loop runs).
pub(super) struct NoConnections;

impl broker::Outbox for NoConnections {
    fn buffer(&mut self, _: ConnId) -> Option<&mut Vec<u8>> {
        None
    }

    fn close(&mut self, _: ConnId) {}
}

/// A connection as log lines name it:
/// `connection 7 (127.0.0.1:40312, "publisher-1")`. The name appears once
/// HELLO gave one, quoted and escaped, so no client can forge a log line.
pub(super) struct Label<'a> {
    key: ConnId,
    peer: Option<SocketAddr>,
    name: Option<&'a str>,
}

impl<'a> Label<'a> {
    pub(super) fn new(key: ConnId, table: &Table, broker: &'a Broker) -> Self {
        Label {
            key,
            peer: table.get(key).map(|c| c.peer),
            name: broker.client_name(key).filter(|name| !name.is_empty()),
        }
    }
}

impl fmt::Display for Label<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connection {}", self.key)?;
        match (self.peer, self.name) {
            (Some(peer), Some(name)) => write!(f, " ({peer}, {name:?})"),
            (Some(peer), None) => write!(f, " ({peer})"),
            (None, Some(name)) => write!(f, " ({name:?})"),
            (None, None) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::net::TcpStream;

    /// A table of two live connections over loopback.
    fn table_of_two() -> (Table, Vec<std::net::TcpStream>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let mut table = Table::default();
        let mut peers = Vec::new();
        for serial in 0..2 {
            let client = std::net::TcpStream::connect(addr).expect("connect");
            let (server_side, peer) = listener.accept().expect("accept");
            let socket = TcpStream::from_std(server_side);
            table.insert(Connection::new(socket, peer, serial));
            peers.push(client);
        }
        (table, peers)
    }

    #[test]
    fn a_connection_is_listed_for_flushing_once_per_round() {
        let (mut table, _peers) = table_of_two();
        let mut pool = BufferPool::default();
        table.mark_dirty(1);
        assert!(table.output(1, &mut pool).is_some());
        table.mark_dirty(0);
        table.mark_dirty(1);
        table.mark_dirty(7);
        assert_eq!(table.take_dirty(), [1, 0]);
        assert_eq!(table.take_dirty(), [] as [ConnId; 0]);
        // Handed out means unmarked: the next round lists it again.
        table.mark_dirty(1);
        assert_eq!(table.take_dirty(), [1]);
    }

    #[test]
    fn a_connection_is_closed_once_the_first_way_asked() {
        let (mut table, _peers) = table_of_two();
        table.close(0, Close::AfterFlush);
        table.close(0, Close::Now);
        table.close(1, Close::Now);
        table.close(1, Close::AfterFlush);
        assert_eq!(table.open_keys(), [] as [ConnId; 0]);
        assert_eq!(table.take_closing(), [0]);
        assert_eq!(table.take_dropping(), [1]);
        // Still marked closing until removed, so nothing lists them again.
        table.close(0, Close::AfterFlush);
        assert_eq!(table.take_closing(), [] as [ConnId; 0]);
        assert!(table.get(0).is_some_and(Connection::is_closing));
    }
}
