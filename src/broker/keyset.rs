//! A set of table keys that can be added to, removed from and walked, each
//! at a cost that does not depend on how big the set is or once was.
//!
//! The keys sit in a `Vec` (walked in O(len)) beside a map from key to its
//! place in it, so a removal finds its key in O(1) and fills the hole with
//! the last key (`swap_remove`). A `Vec::retain` instead costs the whole set
//! per removal: a topic whose ten thousand subscribers expire together did
//! fifty million steps. A `HashMap` alone would do, but walking or clearing
//! one costs its capacity, not its length, and a set that was once large
//! must not keep costing what it was. Order is not kept.

use std::collections::HashMap;
use std::hash::Hash;

/// Sets are shrunk when at most a quarter full, so that a set that held a
/// burst does not pin its peak; below this capacity it is not worth it.
const SHRINK_FROM: usize = 1024;

#[derive(Debug)]
pub struct KeySet<K> {
    keys: Vec<K>,
    places: HashMap<K, usize>,
}

impl<K> Default for KeySet<K> {
    fn default() -> Self {
        KeySet {
            keys: Vec::new(),
            places: HashMap::new(),
        }
    }
}

impl<K: Copy + Eq + Hash> KeySet<K> {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn contains(&self, key: K) -> bool {
        self.places.contains_key(&key)
    }

    /// Adds `key`; false if it was already there.
    pub fn insert(&mut self, key: K) -> bool {
        if self.places.contains_key(&key) {
            return false;
        }
        self.places.insert(key, self.keys.len());
        self.keys.push(key);
        true
    }

    /// Removes `key`; false if it was not there.
    pub fn remove(&mut self, key: K) -> bool {
        let Some(place) = self.places.remove(&key) else {
            self.shrink();
            return false;
        };
        self.keys.swap_remove(place);
        if let Some(&moved) = self.keys.get(place) {
            self.places.insert(moved, place);
        }
        self.shrink();
        true
    }

    /// Takes every key out, leaving the set empty; each key taken costs O(1),
    /// whatever the set's capacity.
    pub fn drain(&mut self) -> Drain<'_, K> {
        Drain {
            keys: self.keys.drain(..),
            places: &mut self.places,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = K> + '_ {
        self.keys.iter().copied()
    }

    /// Amortised O(1): a shrink costs the capacity it leaves, and halving only
    /// once a quarter full means at least that many keys were removed (or
    /// drained) since the set was last this size. Only removals shrink, even
    /// those of keys not there: a drained set that refills at once (a topic's
    /// caught-up subscribers, drained by each publish) keeps its room, and one
    /// that is not refilled gives it back as the keys that could refill it
    /// leave (each subscriber leaving a topic is removed from both its sets).
    fn shrink(&mut self) {
        let capacity = self.places.capacity();
        if capacity >= SHRINK_FROM && self.keys.len() * 4 <= capacity {
            self.places.shrink_to(capacity / 2);
            self.keys.shrink_to(self.places.capacity());
        }
    }
}

/// The keys of a [`KeySet`] being taken out; dropped early, it still takes
/// out the rest, so the set is never left half emptied.
pub struct Drain<'a, K: Copy + Eq + Hash> {
    keys: std::vec::Drain<'a, K>,
    places: &'a mut HashMap<K, usize>,
}

impl<K: Copy + Eq + Hash> Iterator for Drain<'_, K> {
    type Item = K;

    fn next(&mut self) -> Option<K> {
        let key = self.keys.next()?;
        self.places.remove(&key);
        Some(key)
    }
}

impl<K: Copy + Eq + Hash> Drop for Drain<'_, K> {
    fn drop(&mut self) {
        for key in self.keys.by_ref() {
            self.places.remove(&key);
        }
    }
}

impl<K> IntoIterator for KeySet<K> {
    type Item = K;
    type IntoIter = std::vec::IntoIter<K>;

    fn into_iter(self) -> Self::IntoIter {
        self.keys.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removals_keep_every_other_key_findable() {
        let mut set = KeySet::default();
        for key in 0..10usize {
            assert!(set.insert(key));
        }
        assert!(!set.insert(3));
        for key in [0, 9, 4, 4] {
            set.remove(key);
        }
        assert_eq!(set.len(), 7);
        for key in 0..10 {
            assert_eq!(set.contains(key), ![0, 4, 9].contains(&key), "{key}");
        }
        let mut left: Vec<usize> = set.iter().collect();
        left.sort_unstable();
        assert_eq!(left, vec![1, 2, 3, 5, 6, 7, 8]);
    }

    #[test]
    fn a_drained_set_is_empty_and_reusable() {
        let mut set = KeySet::default();
        for key in 0..5000usize {
            set.insert(key);
        }
        assert_eq!(set.drain().count(), 5000);
        assert!(set.is_empty());
        for key in 0..5000usize {
            set.insert(key);
        }
        assert_eq!(set.drain().take(10).count(), 10);
        assert!(set.is_empty());
        assert!(!set.contains(7));
        assert!(set.insert(7));
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![7]);
    }

    #[test]
    fn a_drained_set_gives_the_room_back_as_removals_come() {
        let mut set = KeySet::default();
        for key in 0..100_000usize {
            set.insert(key);
        }
        set.drain().for_each(drop);
        for key in 0..20 {
            set.remove(key);
        }
        assert!(set.places.capacity() < SHRINK_FROM * 2);
    }

    #[test]
    fn a_set_that_held_a_burst_gives_the_room_back() {
        let mut set = KeySet::default();
        for key in 0..100_000usize {
            set.insert(key);
        }
        for key in 1..100_000 {
            set.remove(key);
        }
        assert!(set.places.capacity() < SHRINK_FROM * 2);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![0]);
    }
}
