//! The names the broker's tables give their entries: connections, topics
//! and subscriber sessions.
//!
//! They live apart from the tables so that a topic can list its sessions and
//! a session its topics without the two modules importing each other: both
//! depend on this file and on nothing else of the broker. Each is the key of
//! a slab (the server's for connections, the broker's for topics and
//! sessions), which is why they are plain `usize` aliases rather than
//! newtypes: the slab hands them out and takes them back as they are.

/// A connection, as the server numbers it (its slab key).
pub type ConnId = usize;

/// A topic's place in the broker's topic slab. Stable while the topic lives;
/// reused after it is deleted, so nothing may hold one past deletion.
pub type TopicKey = usize;

/// A subscriber session's place in the broker's session slab. Stable while
/// the session lives (across reconnects); reused after it expires.
pub type SessionKey = usize;
