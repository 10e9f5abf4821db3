//! Async locks by key (a sandbox, a named session), made on first use and forgotten once
//! nobody holds or waits for them.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// A lock held across an operation's awaits.
pub type KeyLock = Arc<tokio::sync::Mutex<()>>;

pub struct LockMap<K> {
    locks: Mutex<HashMap<K, KeyLock>>,
}

impl<K> Default for LockMap<K> {
    fn default() -> Self {
        LockMap {
            locks: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq> LockMap<K> {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<K, KeyLock>> {
        self.locks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lock of `key` (the same one for every caller while anybody holds it).
    pub fn get(&self, key: K) -> KeyLock {
        self.map().entry(key).or_default().clone()
    }

    /// Forgets the locks nobody holds or waits for.
    pub fn prune(&self) {
        self.map().retain(|_, lock| Arc::strong_count(lock) > 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lock_per_key_while_in_use_and_none_kept_after() {
        let map = LockMap::default();
        let a = map.get("a");
        assert!(Arc::ptr_eq(&a, &map.get("a")));
        map.prune();
        assert_eq!(map.map().len(), 1, "a held lock is kept");
        drop(a);
        map.prune();
        assert!(map.map().is_empty());
    }
}
