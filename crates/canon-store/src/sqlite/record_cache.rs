//! Records read by key, kept in memory while the SQLite file is this
//! process's alone (docs/decisions.md, "The record cache").
//!
//! A record GET's read was the largest cost left after HTTP (a read
//! transaction, a statement, copying the row out). When no other process can
//! write the file ([`super::FileLocking::Exclusive`]), every change to a
//! record passes through this process's writer thread, which therefore knows
//! each record it touched and drops it from the cache **after its commit is
//! durable and before any caller of the batch is answered**: the request
//! after a write never sees the record as it was.
//!
//! The race left is a read that began before a commit and offers what it
//! read after the writer has dropped the key. Reads therefore take a
//! [`Ticket`] (the writer's batch count) *before* their read transaction
//! begins, and an offer is taken only while no batch has finished since: a
//! read whose snapshot predates a commit took its ticket before that commit's
//! batch finished, so the batch's end either refuses the offer (it came
//! after) or removes the entry it made (it came before).
//!
//! One cache per database file and process: stores opened on the same file
//! in one process (tests do that) share it, so a write through one drops
//! what another cached.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use crate::RawRecord;

/// Records kept at most; past it the cache starts again empty (a bounded
/// working set never reaches it; a scan of everything cannot grow it).
const MAX_ENTRIES: usize = 16_384;
/// Bytes of record data kept at most, past which the cache starts again.
const MAX_BYTES: usize = 32 << 20;
/// Records larger than this are read from the file every time: one of them
/// would displace hundreds of ordinary ones.
const MAX_RECORD_BYTES: usize = 16 << 10;

/// The bytes of a record the cache counts against [`MAX_BYTES`].
fn footprint(record: &RawRecord) -> usize {
    record.data.len() + record.id.len() + record.etag.len()
}

/// What a read knew of the writer before it began: see the module's docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

/// The cache of one database file.
#[derive(Debug, Default)]
pub struct RecordCache {
    /// Batches the writer finished; moved only with `entries` locked.
    batches: AtomicU64,
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    /// By collection id, then record id: looked up with borrowed keys.
    /// Records are shared with the readers they are handed to, so a hit
    /// copies nothing. foldhash with a per-map random seed rather than
    /// SipHash: two lookups per GET, and record ids (which a client may
    /// choose) meet a seed it cannot know.
    by_collection: foldhash::HashMap<String, foldhash::HashMap<String, Arc<RawRecord>>>,
    count: usize,
    bytes: usize,
}

/// A file's device and inode numbers.
type FileKey = (u64, u64);

/// The caches of the files open in this process, by device and inode.
static OPEN_FILES: LazyLock<Mutex<HashMap<FileKey, Weak<RecordCache>>>> = LazyLock::new(Default::default);

impl RecordCache {
    /// The cache of the file with this device and inode number, shared with
    /// every other store of this process on the same file.
    pub fn of_file(device: u64, inode: u64) -> Arc<RecordCache> {
        let mut open = OPEN_FILES.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|_, cache| cache.strong_count() > 0);
        if let Some(cache) = open.get(&(device, inode)).and_then(Weak::upgrade) {
            return cache;
        }
        let cache = Arc::new(RecordCache::default());
        open.insert((device, inode), Arc::downgrade(&cache));
        cache
    }

    /// To be taken before a read transaction begins, and handed to
    /// [`RecordCache::offer`] with what it read.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.batches.load(Ordering::Acquire))
    }

    /// The record, if cached.
    pub fn get(&self, collection_id: &str, id: &str) -> Option<Arc<RawRecord>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.by_collection.get(collection_id)?.get(id).cloned()
    }

    /// Keeps `record` of `collection_id`, read under `ticket`, unless a
    /// batch of writes finished since the ticket was taken (the read may
    /// have seen the record before that batch changed it).
    pub fn offer(&self, ticket: Ticket, collection_id: &str, record: &Arc<RawRecord>) {
        let size = footprint(record);
        if size > MAX_RECORD_BYTES {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if self.batches.load(Ordering::Acquire) != ticket.0 {
            return;
        }
        if entries.count >= MAX_ENTRIES || entries.bytes + size > MAX_BYTES {
            *entries = Entries::default();
        }
        let records = entries.by_collection.entry(collection_id.to_owned()).or_default();
        if let Some(old) = records.insert(record.id.clone(), Arc::clone(record)) {
            entries.bytes -= footprint(&old);
            entries.count -= 1;
        }
        entries.bytes += size;
        entries.count += 1;
    }

    /// A batch of writes finished (committed or not), having touched the
    /// records `written` (collection id, record id): drops them, and
    /// refuses every offer of a read that began before.
    pub fn batch_finished(&self, written: &mut Vec<(String, String)>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        self.batches.fetch_add(1, Ordering::AcqRel);
        for (collection_id, id) in written.drain(..) {
            let Some(records) = entries.by_collection.get_mut(&collection_id) else {
                continue;
            };
            if let Some(old) = records.remove(&id) {
                if records.is_empty() {
                    entries.by_collection.remove(&collection_id);
                }
                entries.bytes -= footprint(&old);
                entries.count -= 1;
            }
        }
    }

    /// Records cached now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, data: &str) -> Arc<RawRecord> {
        Arc::new(RawRecord {
            id: id.into(),
            data: data.into(),
            version: 1,
            etag: "t".into(),
            created_at: 1,
            updated_at: 1,
        })
    }

    #[test]
    fn an_offer_is_kept_and_found() {
        let cache = RecordCache::default();
        let ticket = cache.ticket();
        cache.offer(ticket, "c", &record("r", "{}"));
        assert_eq!(cache.get("c", "r"), Some(record("r", "{}")));
        assert_eq!(cache.get("c", "other"), None);
        assert_eq!(cache.get("other", "r"), None);
    }

    #[test]
    fn an_offer_read_before_a_batch_finished_is_refused() {
        let cache = RecordCache::default();
        let ticket = cache.ticket();
        // The writer committed a change to the record while it was read.
        cache.batch_finished(&mut vec![("c".into(), "r".into())]);
        cache.offer(ticket, "c", &record("r", "old"));
        assert_eq!(cache.get("c", "r"), None);
        // A read that begins now is kept.
        cache.offer(cache.ticket(), "c", &record("r", "new"));
        assert_eq!(cache.get("c", "r").map(|r| r.data.clone()), Some("new".into()));
    }

    #[test]
    fn a_finished_batch_drops_what_it_wrote_and_nothing_else() {
        let cache = RecordCache::default();
        let ticket = cache.ticket();
        cache.offer(ticket, "c", &record("a", "{}"));
        cache.offer(ticket, "c", &record("b", "{}"));
        let mut written = vec![("c".into(), "a".into()), ("c".into(), "never-cached".into())];
        cache.batch_finished(&mut written);
        assert!(written.is_empty(), "the list is handed back empty for the next batch");
        assert_eq!(cache.get("c", "a"), None);
        assert!(cache.get("c", "b").is_some());
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = RecordCache::default();
        for n in 0..MAX_ENTRIES + 10 {
            cache.offer(cache.ticket(), "c", &record(&n.to_string(), "{}"));
        }
        assert!(cache.len() <= MAX_ENTRIES, "{}", cache.len());
        let big = "x".repeat(MAX_RECORD_BYTES + 1);
        cache.offer(cache.ticket(), "c", &record("big", &big));
        assert_eq!(cache.get("c", "big"), None, "a large record is not kept");
    }

    #[test]
    fn stores_on_one_file_share_its_cache() {
        let a = RecordCache::of_file(7, 42);
        let b = RecordCache::of_file(7, 42);
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &RecordCache::of_file(7, 43)));
    }
}
