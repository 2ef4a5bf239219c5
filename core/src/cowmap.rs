//! A hash map for tables that are swapped whole but change one entry at a time.
//!
//! [`CowMap`] splits its entries into shards, each behind an `Arc`. Cloning the map copies one
//! pointer per shard; changing an entry copies only that entry's shard if a clone still shares
//! it. With 10,000 routes that is a few dozen entries copied per change, where a plain
//! `HashMap` clone would copy all of them.
//!
//! [`FxBuildHasher`] is the hasher it uses: a multiply-rotate hash (the one rustc uses) with a
//! 128-bit folded multiply at the end so that every output bit depends on every input bit. It is
//! several times faster than SipHash on short keys (paths, host names, `namespace/name`), and it
//! is not keyed: use it only for maps whose keys come from configuration, not from requests.
//! Looking up a request's key in such a map is fine: a lookup cannot degrade the map.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

/// A fast, unkeyed hasher for short keys (see the module documentation).
#[derive(Debug, Clone, Copy, Default)]
pub struct FxHasher {
    hash: u64,
}

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        let m = u128::from(self.hash) * u128::from(0x9e37_79b9_7f4a_7c15_u64);
        (m as u64) ^ ((m >> 64) as u64)
    }
}

/// Builds [`FxHasher`]s.
pub type FxBuildHasher = std::hash::BuildHasherDefault<FxHasher>;

/// A `HashMap` with [`FxHasher`].
pub type FxHashMap<K, V> = HashMap<K, V, FxBuildHasher>;

/// Entries per shard above which the shard count doubles.
const SHARD_TARGET: usize = 64;

/// A hash map that is cheap to clone and cheap to change after a clone (see the module
/// documentation). Iteration order is unspecified.
#[derive(Debug)]
pub struct CowMap<K, V> {
    shards: Vec<Arc<FxHashMap<K, V>>>,
    /// `log2(shards.len())`.
    bits: u32,
    len: usize,
}

impl<K, V> Clone for CowMap<K, V> {
    fn clone(&self) -> Self {
        CowMap {
            shards: self.shards.clone(),
            bits: self.bits,
            len: self.len,
        }
    }
}

impl<K, V> Default for CowMap<K, V> {
    fn default() -> Self {
        CowMap {
            shards: vec![Arc::new(FxHashMap::default())],
            bits: 0,
            len: 0,
        }
    }
}

fn shard_of<Q: Hash + ?Sized>(key: &Q, bits: u32) -> usize {
    if bits == 0 {
        return 0;
    }
    // The top bits of a second mix: the shard's own table uses the low bits of the hash and
    // its top 7, so the shard choice must not correlate with either.
    let h = FxBuildHasher::default().hash_one(key);
    (h.rotate_left(32).wrapping_mul(0xff51_afd7_ed55_8ccd) >> (64 - bits)) as usize
}

impl<K: Hash + Eq + Clone, V: Clone> CowMap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value of `key`.
    #[inline]
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards[shard_of(key, self.bits)].get(key)
    }

    /// Whether `key` has a value.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get(key).is_some()
    }

    /// Sets `key` to `value`; returns the value it replaces. Copies the key's shard if a clone
    /// of this map still shares it.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        if self.len >= SHARD_TARGET << self.bits {
            self.grow();
        }
        let shard = shard_of(&key, self.bits);
        let old = Arc::make_mut(&mut self.shards[shard]).insert(key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes `key`; returns its value. Copies the key's shard only if the key is there.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let shard = shard_of(key, self.bits);
        if !self.shards[shard].contains_key(key) {
            return None;
        }
        let old = Arc::make_mut(&mut self.shards[shard]).remove(key);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(|s| s.iter())
    }

    /// Every value, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }

    /// Doubles the shard count (amortized: it happens once per doubling of the size).
    fn grow(&mut self) {
        let bits = self.bits + 1;
        let mut shards: Vec<FxHashMap<K, V>> = (0..1usize << bits)
            .map(|_| FxHashMap::with_capacity_and_hasher(SHARD_TARGET, Default::default()))
            .collect();
        for (k, v) in self.iter() {
            shards[shard_of(k, bits)].insert(k.clone(), v.clone());
        }
        self.shards = shards.into_iter().map(Arc::new).collect();
        self.bits = bits;
    }
}

impl<K: Hash + Eq + Clone, V: Clone> FromIterator<(K, V)> for CowMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut map = CowMap::new();
        for (k, v) in iter {
            map.insert(k, v);
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clone_keeps_its_entries_while_the_original_changes() {
        let mut map: CowMap<String, usize> = (0..1000).map(|i| (format!("k{i}"), i)).collect();
        assert_eq!(map.len(), 1000);
        let before = map.clone();
        map.insert("k7".into(), 70);
        map.insert("new".into(), 1);
        assert_eq!(map.remove("k8"), Some(8));
        assert_eq!(map.remove("k8"), None);
        assert_eq!(map.len(), 1000);
        assert_eq!(map.get("k7"), Some(&70));
        assert_eq!(map.get("new"), Some(&1));
        assert_eq!(map.get("k8"), None);
        assert_eq!(before.len(), 1000);
        assert_eq!(before.get("k7"), Some(&7));
        assert_eq!(before.get("new"), None);
        assert_eq!(before.get("k8"), Some(&8));
        for i in 0..1000 {
            let k = format!("k{i}");
            if i != 7 && i != 8 {
                assert_eq!(map.get(k.as_str()), Some(&i), "{k}");
            }
            assert_eq!(before.get(k.as_str()), Some(&i), "{k}");
        }
        assert_eq!(map.iter().count(), 1000);
    }

    #[test]
    fn a_change_after_a_clone_copies_one_shard() {
        let mut map: CowMap<u64, u64> = (0..10_000).map(|i| (i, i)).collect();
        let before = map.clone();
        map.insert(5, 50);
        let shared = map
            .shards
            .iter()
            .zip(&before.shards)
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        assert_eq!(shared, map.shards.len() - 1);
    }

    #[test]
    fn shards_stay_balanced() {
        let map: CowMap<String, ()> = (0..10_000).map(|i| (format!("/fn-{i}"), ())).collect();
        let biggest = map.shards.iter().map(|s| s.len()).max().unwrap_or(0);
        assert!(biggest < 2 * SHARD_TARGET, "a shard of {biggest}");
    }
}
