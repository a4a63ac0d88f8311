//! What each piece of broker state costs in the memory budget
//! ([`crate::budget`]), as constants and small functions, so that the
//! places that add state and the places that drop it charge the same number
//! and a test can recount the whole from the tables.
//!
//! The figures are the real sizes (`size_of`) plus an estimate of what the
//! allocator and the containers add around them, so that the budget follows
//! resident memory rather than the bytes a client sent:
//!
//! - **Allocations** ([`allocation`]): glibc's malloc gives a request of `n`
//!   bytes a chunk of `n + 8` rounded up to 16, and never less than 32. An
//!   empty payload allocates nothing (`Bytes::new()`).
//! - **Payloads**: one PUBLISH is one allocation of its length. A
//!   PUBLISH_BATCH is copied as one block (its encoded list) and each message
//!   is a slice of it; slicing moves the block under a shared header (24
//!   bytes, one more allocation). The whole block is charged to the batch's
//!   *last* message and given back when that message is released: release is
//!   in offset order, so that is exactly when the block is freed.
//! - **Messages**: a topic's queue slots, counted at the queue's capacity
//!   (not its length), since a `VecDeque` grows by doubling; the publish
//!   path grows it itself so that the growth it admits is the growth it gets.
//! - **Topics** ([`topic`]): the name twice (the topic's own and the name
//!   table's key), the topic struct in its slab slot, and the name table's
//!   entry.
//! - **Sessions** ([`SESSION`]): the session struct in its slab slot, the id
//!   table's entry and one timer (its expiry, or its pull's deadline).
//! - **Subscriptions** ([`SUBSCRIPTION`]): both sides — the session's entry
//!   and its index entry, its ready and in-flight entries, the topic's
//!   subscriber and waiting entries and one cursor entry in the topic's
//!   acknowledgement map (an upper bound: a subscription is in `ready` or in
//!   `waiting`, not both).
//!
//! Hash-table entries count at [`HASH_SLACK`]× their size plus the control
//! byte: hashbrown keeps at most 7/8 of its buckets full and doubles, so an
//! entry costs between 8/7 and 16/7 of itself. `Vec` entries that grow by
//! doubling likewise count twice ([`VEC_SLACK`]). Ordered-map entries count a
//! share of a B-tree node ([`BTREE_ENTRY`]). What these estimates miss (the
//! slack of tables shrinking, allocator fragmentation) is the margin between
//! the budget and RSS that README "Limits and failure behaviour" states.

use super::session::{Session, Subscription};
use super::topic::{Footprint, Stored, Topic};
use crate::budget::{Budget, Class};
use std::mem::size_of;

/// glibc's smallest chunk.
const MIN_CHUNK: usize = 32;
/// glibc's per-chunk header.
const CHUNK_HEADER: usize = 8;
/// glibc's chunk alignment.
const CHUNK_ALIGN: usize = 16;

/// Bytes the allocator really uses for a request of `bytes` (0 for none).
pub const fn allocation(bytes: usize) -> usize {
    if bytes == 0 {
        return 0;
    }
    let chunk = (bytes + CHUNK_HEADER).div_ceil(CHUNK_ALIGN) * CHUNK_ALIGN;
    if chunk < MIN_CHUNK { MIN_CHUNK } else { chunk }
}

/// The shared header `Bytes` allocates when a block is sliced (a pointer, a
/// capacity and a reference count).
pub const SHARED_BLOCK_HEADER: usize = allocation(3 * size_of::<usize>());

/// A stored PUBLISH payload of `len` bytes.
pub const fn single_payload(len: usize) -> usize {
    allocation(len)
}

/// A PUBLISH_BATCH's block of `encoded` bytes, its slices sharing it.
pub const fn batch_block(encoded: usize) -> usize {
    allocation(encoded) + SHARED_BLOCK_HEADER
}

/// One slot of a topic's message queue.
pub const MESSAGE_SLOT: usize = size_of::<Stored>();

/// Hash tables hold between 8/7 and 16/7 of their entries.
const HASH_SLACK: usize = 2;
/// A `Vec` grown by doubling holds between 1 and 2 times its entries.
const VEC_SLACK: usize = 2;

/// One entry of a hash table whose (key, value) pair is `pair` bytes.
const fn hash_entry(pair: usize) -> usize {
    (pair + 1) * HASH_SLACK
}

/// A slab slot holding a `T` (the slab's tag beside it).
const fn slab_slot<T>() -> usize {
    (size_of::<T>() + size_of::<usize>()) * VEC_SLACK
}

/// A share of a B-tree node: a leaf of 11 entries is about 12 bytes each
/// plus 16 of header in a ~150-byte allocation, about half full on average.
const BTREE_ENTRY: usize = 32;

/// A topic called `name`, without its messages.
pub const fn topic(name: usize) -> usize {
    2 * allocation(name) + slab_slot::<Topic>() + hash_entry(size_of::<(Box<str>, usize)>())
}

/// A subscriber session, without its subscriptions.
pub const SESSION: usize =
    slab_slot::<Session>() + hash_entry(size_of::<(u64, usize)>()) + BTREE_ENTRY * 2;

/// A subscription, both sides, at its largest: the session's entry and
/// index, its ready-map entry and in-flight set entry, the topic's subscriber
/// and waiting set entries (see `super::waiting`), and its cursor in the
/// acknowledgement map.
pub const SUBSCRIPTION: usize = size_of::<Subscription>() * VEC_SLACK
    + hash_entry(size_of::<(usize, usize)>())
    + BTREE_ENTRY
    + 3 * key_set_entry()
    + BTREE_ENTRY;

/// One key in a [`super::keyset::KeySet`]: its slot in the vector and its
/// place in the index.
const fn key_set_entry() -> usize {
    size_of::<usize>() * VEC_SLACK + hash_entry(size_of::<(usize, usize)>())
}

/// Moves the budget from what a topic's messages held (`before`) to what
/// they hold now (`after`).
pub(super) fn settle(budget: &mut Budget, before: Footprint, after: Footprint) {
    for (class, was, is) in [
        (Class::Payloads, before.payloads, after.payloads),
        (Class::Messages, before.slots, after.slots),
    ] {
        if is > was {
            budget.add(class, is - was);
        } else {
            budget.sub(class, was - is);
        }
    }
}

/// Every broker class recounted from the tables, for tests to compare with
/// what the budget was told along the way.
#[cfg(test)]
impl super::Broker {
    pub(super) fn recount_memory(&self) -> Vec<(crate::budget::Class, usize)> {
        use crate::budget::Class;
        let (mut payloads, mut slots, mut topics) = (0, 0, 0);
        for (_, t) in &self.topics {
            let footprint = t.footprint();
            payloads += footprint.payloads;
            slots += footprint.slots;
            topics += topic(t.name.len());
        }
        topics += self.producers_footprint();
        let subscriptions: usize = self
            .sessions
            .iter()
            .map(|(_, s)| s.subscriptions().len() * SUBSCRIPTION)
            .sum();
        vec![
            (Class::Payloads, payloads),
            (Class::Messages, slots),
            (Class::Topics, topics),
            (Class::Sessions, self.sessions.len() * SESSION),
            (Class::Subscriptions, subscriptions),
        ]
    }

    /// Whether the budget matches a recount of every broker class.
    pub(super) fn budget_matches_recount(&self) -> bool {
        self.recount_memory()
            .into_iter()
            .all(|(class, bytes)| self.budget.used(class) == bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn allocations_follow_glibc_chunks() {
        assert_eq!(allocation(0), 0);
        assert_eq!(allocation(1), 32);
        assert_eq!(allocation(24), 32);
        assert_eq!(allocation(25), 48);
        assert_eq!(allocation(1000), 1008);
    }

    #[test]
    fn a_message_slot_holds_its_handle_and_charge() {
        assert!(MESSAGE_SLOT >= size_of::<Bytes>() + size_of::<usize>());
        assert!(SUBSCRIPTION > 0 && SESSION > 0 && topic(1) > 0);
    }
}
