//! The memory cache of a durable broker: messages beyond `--cache-bytes`
//! leave memory, to be read back from the log (see `super::disk`).
//!
//! What the cache holds is the budget's `payloads` class: the allocations
//! of every message kept in memory. Once per loop round, after the round's
//! pulls were answered from memory ([`Broker::evict_over_cache`], called by
//! the flush), and during recovery, the topic holding the most cached
//! bytes evicts its oldest visible messages until the cache fits (see
//! `super::topic` for why that order).
//!
//! Finding that topic costs O(log topics): topics are listed by their
//! cached bytes as last seen. A topic's listing is refreshed when its
//! messages become visible (the only way its evictable bytes grow); a
//! release only shrinks it, so a listing may be stale on the high side,
//! and is corrected when it comes to the top.

use super::Broker;
use super::cost;
use super::keys::TopicKey;
use crate::budget::Class;
use crate::storage::TopicId;
use std::collections::{BTreeSet, HashMap};

/// Topics by cached bytes; see the module doc.
#[derive(Debug, Default)]
pub(super) struct Cache {
    by_size: BTreeSet<(usize, TopicKey, TopicId)>,
    listed: HashMap<TopicKey, (usize, TopicId)>,
    /// Messages evicted since start, for STATS.
    pub(super) evicted: u64,
}

impl Broker {
    /// Lists topic `key` at the cached bytes it holds now.
    pub(super) fn cache_listing(&mut self, key: TopicKey) {
        if !self.reads_disk() {
            return;
        }
        if let Some((size, id)) = self.cache.listed.remove(&key) {
            self.cache.by_size.remove(&(size, key, id));
        }
        if let Some(topic) = self.topics.get(key) {
            let size = topic.footprint().payloads;
            if size > 0 {
                self.cache.by_size.insert((size, key, topic.id));
                self.cache.listed.insert(key, (size, topic.id));
            }
        }
    }

    /// Evicts until the cached payloads fit `--cache-bytes`: the topic with
    /// the most cached bytes first. A broker that cannot read messages back
    /// keeps them all.
    pub(super) fn evict_over_cache(&mut self) {
        if !self.reads_disk() {
            return;
        }
        // Never more than half the budget: the rest is for everything else.
        let limit = self.limits.cache_bytes.min(self.limits.max_memory / 2);
        // Topics with nothing evictable (all staged), listed again after.
        let mut held = Vec::new();
        loop {
            let used = self.budget.used(Class::Payloads);
            if used <= limit {
                break;
            }
            let Some(&(claimed, key, id)) = self.cache.by_size.last() else {
                break;
            };
            self.cache.by_size.remove(&(claimed, key, id));
            self.cache.listed.remove(&key);
            let Some(topic) = self.topics.get_mut(key).filter(|t| t.id == id) else {
                continue;
            };
            let before = topic.footprint();
            if before.payloads < claimed {
                // Stale: some was released since. Listed as it is now.
                self.cache_listing(key);
                continue;
            }
            let messages = topic.cached_messages();
            let freed = topic.evict(used - limit);
            self.cache.evicted += (messages - topic.cached_messages()) as u64;
            let after = topic.footprint();
            cost::settle(&mut self.budget, before, after);
            if freed == 0 {
                held.push(key);
            } else {
                self.cache_listing(key);
            }
        }
        for key in held {
            self.cache_listing(key);
        }
    }
}
