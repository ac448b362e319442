//! Caches of what nearly every request looks up before its own work: who a
//! token's key belongs to, and what a tenant's and a collection's name
//! resolve to (docs/decisions.md, "Caches and their invalidation").
//!
//! An entry is kept with the store's generation (`Store::generation`) read
//! *before* the store was asked, and served only while the generation has
//! not moved since. Every change to tenants, users, keys, collections or
//! aliases moves it — this process's own before the write returns, another
//! process's within 100 ms — so a revoked key, a changed role, a new schema
//! or a rename takes effect on the very next request here. A change that
//! commits while an entry is being read moves the generation past the one
//! the entry is kept with, so the entry is never served.
//!
//! Only what was found is cached: an unknown token or a missing name goes to
//! the store every time (guessing is limited elsewhere), so a cache cannot
//! hide something created meanwhile, and guesses cannot fill it.

use foldhash::{HashMap, HashMapExt};
use std::sync::{Arc, RwLock};

use canon_store::{Collection, KeyOwner, Lookup, Store, StoreResult, Tenant};

/// Entries per cache before stale ones are dropped (and, if all are
/// current, all of them).
const CAPACITY: usize = 16_384;

/// Entries read under one generation of the store.
struct Generational<V> {
    generation: u64,
    entries: HashMap<String, V>,
}

impl<V: Clone> Generational<V> {
    fn new() -> Self {
        Self {
            generation: 0,
            entries: HashMap::new(),
        }
    }

    fn get(&self, generation: u64, key: &str) -> Option<V> {
        (self.generation == generation)
            .then(|| self.entries.get(key).cloned())
            .flatten()
    }

    /// The entries a value read under `generation` may join: entries of an
    /// older generation go (they can never be served again); none when a
    /// newer generation is kept (the value may be stale). A full map starts
    /// again.
    fn current(&mut self, generation: u64) -> Option<&mut HashMap<String, V>> {
        if generation > self.generation {
            self.entries.clear();
            self.generation = generation;
        }
        if generation < self.generation {
            return None;
        }
        if self.entries.len() >= CAPACITY {
            self.entries.clear();
        }
        Some(&mut self.entries)
    }

    /// Keeps `value`, read under `generation` (see [`Generational::current`]).
    fn put(&mut self, generation: u64, key: &str, value: V) {
        if let Some(entries) = self.current(generation) {
            entries.insert(key.to_owned(), value);
        }
    }
}

/// One cache: a lock around entries of the latest generation. A
/// reader-writer lock: every request reads, so the workers must not queue
/// behind each other for a hit; a miss writes once.
struct Cache<V>(RwLock<Generational<V>>);

impl<V: Clone> Cache<V> {
    fn new() -> Self {
        Self(RwLock::new(Generational::new()))
    }

    fn get(&self, generation: u64, key: &str) -> Option<V> {
        self.0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(generation, key)
    }

    fn put(&self, generation: u64, key: &str, value: V) {
        self.0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .put(generation, key, value);
    }
}

/// The caches every request's authentication and resolution go through.
/// Entries are shared (`Arc`): a hit costs a reference count, not a copy
/// of a collection's schema.
pub struct Lookups {
    keys: Cache<Arc<KeyOwner>>,
    tenants: Cache<Arc<Tenant>>,
    /// By tenant id, then name: looked up without building a key.
    collections: RwLock<Generational<HashMap<String, Arc<Collection>>>>,
}

impl Default for Lookups {
    fn default() -> Self {
        Self {
            keys: Cache::new(),
            tenants: Cache::new(),
            collections: RwLock::new(Generational::new()),
        }
    }
}

fn counted(cache: &'static str, hit: bool) {
    crate::metrics::cache_lookup(cache, hit);
}

impl Lookups {
    /// `Store::key_owner` of the token digest `digest` if the cache holds
    /// it: answered without waiting, so authentication needs no boxed
    /// future for a known key. A miss is counted as one; the caller goes
    /// on to [`Lookups::read_key_owner`].
    pub fn cached_key_owner(&self, store: &dyn Store, digest: &str) -> Option<Arc<KeyOwner>> {
        let owner = self.keys.get(store.generation(), digest);
        counted("keys", owner.is_some());
        owner
    }

    /// `Store::key_owner` of `digest` read from the store, and cached when
    /// found: what follows a miss of [`Lookups::cached_key_owner`].
    pub async fn read_key_owner(&self, store: &dyn Store, digest: &str) -> StoreResult<Option<Arc<KeyOwner>>> {
        // Read before the store is: an invalidation meanwhile makes the
        // entry put below stale at once.
        let generation = store.generation();
        let owner = store.key_owner(digest).await?.map(Arc::new);
        if let Some(owner) = &owner {
            self.keys.put(generation, digest, Arc::clone(owner));
        }
        Ok(owner)
    }

    /// `Store::tenant` by `name`, cached when found.
    pub async fn tenant(&self, store: &dyn Store, name: &str) -> StoreResult<Lookup<Arc<Tenant>>> {
        let generation = store.generation();
        if let Some(tenant) = self.tenants.get(generation, name) {
            counted("tenants", true);
            return Ok(Lookup::Found(tenant));
        }
        counted("tenants", false);
        let lookup = store.tenant(name).await?.map(Arc::new);
        if let Lookup::Found(tenant) = &lookup {
            self.tenants.put(generation, name, Arc::clone(tenant));
        }
        Ok(lookup)
    }

    /// `Store::collection` of the tenant with id `tenant_id` by `name`,
    /// cached when found.
    pub async fn collection(
        &self,
        store: &dyn Store,
        tenant_id: &str,
        name: &str,
    ) -> StoreResult<Lookup<Arc<Collection>>> {
        let generation = store.generation();
        let hit = {
            let kept = self.collections.read().unwrap_or_else(|p| p.into_inner());
            (kept.generation == generation)
                .then(|| kept.entries.get(tenant_id).and_then(|c| c.get(name)).cloned())
                .flatten()
        };
        if let Some(collection) = hit {
            counted("collections", true);
            return Ok(Lookup::Found(collection));
        }
        counted("collections", false);
        let lookup = store.collection(tenant_id, name).await?.map(Arc::new);
        if let Lookup::Found(collection) = &lookup {
            let mut kept = self.collections.write().unwrap_or_else(|p| p.into_inner());
            if let Some(tenants) = kept.current(generation) {
                let of_tenant = tenants.entry(tenant_id.to_owned()).or_default();
                if of_tenant.len() >= CAPACITY {
                    of_tenant.clear();
                }
                of_tenant.insert(name.to_owned(), Arc::clone(collection));
            }
        }
        Ok(lookup)
    }
}

#[cfg(test)]
mod tests {
    use super::Generational;

    #[test]
    fn entries_are_served_only_under_the_generation_they_were_read_in() {
        let mut c = Generational::new();
        c.put(3, "k", 1);
        assert_eq!(c.get(3, "k"), Some(1));
        assert_eq!(c.get(4, "k"), None, "the store moved on");
        // A read that began before a change is not kept after it.
        c.put(5, "k", 2);
        c.put(4, "old", 9);
        assert_eq!(c.get(5, "old"), None);
        assert_eq!(c.get(5, "k"), Some(2));
        assert_eq!(c.get(4, "old"), None);
    }

    #[test]
    fn a_full_cache_starts_again() {
        let mut c = Generational::new();
        for i in 0..super::CAPACITY + 10 {
            c.put(1, &i.to_string(), i);
        }
        assert!(c.entries.len() <= super::CAPACITY);
        assert_eq!(c.get(1, &(super::CAPACITY + 9).to_string()), Some(super::CAPACITY + 9));
    }
}
