//! How many times each 16-byte key (a record id's two hashes, or a digest of a record's
//! content) has been counted in a month, exactly, in memory bounded whatever the month's size:
//! the record checks' memory of the ids seen (to refuse repeats) and of identical records (to
//! number them).
//!
//! The most recent keys are counted in a hash map. Past [`DEFAULT_RECENT`] keys it is sorted and
//! written to a run file in the run's scratch directory (key and count, 20 bytes each), with
//! every 256th key kept in memory to find a block, and every key set in one blocked Bloom
//! filter (one cache line a key, ~12 bits a key) so that a key never counted before (almost
//! every key) is known new without touching the disk. A key the filter may have seen is looked
//! up in the runs, newest first: a map entry and a run entry always hold the key's whole count
//! so far. Runs are merged by size, [`FANOUT`] runs of one size into one of the next (as a
//! log-structured merge does), so a key is rewritten a few times, not once per merge of
//! everything, and a look-up reads a block of each of the few runs (a handful at 10M keys).
//! Runs are merged on a thread of their own while counting goes on.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::usage::spill::{scratch_root, ScratchDir};

/// Keys counted in memory before they go to a run: exactly what a map of 128k slots holds
/// (~21 bytes a slot, 2.6 MiB), so the map never doubles past it. A spill holds the map and
/// its keys sorted (20 bytes each) at once: 4.9 MB, against 9.8 MB at twice the keys, which
/// the 10M-record month's peak (at 64 MiB) could not spare. Twice the runs cost one more
/// merge of every key, on the merging thread.
pub const DEFAULT_RECENT: usize = 112 * 1024;

/// Runs of one size merged into one of the next. Merging every run whenever there were six
/// rewrote the whole month's keys each time: 50M entries written for a 10M-record month, 4% of
/// its CPU; by size, each key is rewritten about log4(keys / DEFAULT_RECENT) times.
const FANOUT: usize = 4;

/// Keys per indexed block of a run.
const BLOCK: usize = 256;

/// Bytes of a run entry: the key, then its count (little endian).
const ENTRY: usize = 20;

/// Bloom filter bits a key (~1% false positives, each one a block read per run).
const BITS_PER_KEY: usize = 10;

/// Bits set a key, all in one 512-bit block.
const HASHES: u32 = 8;

pub type Key = [u8; 16];

/// A key as the counter holds it: its bytes read big-endian, so that the numbers order as the
/// bytes do (the runs on disk are sorted byte-wise) and compare in one instruction. Comparing
/// byte arrays went through `memcmp`, 2.4% of a 10M-record run.
type Packed = u128;

fn pack(key: &Key) -> Packed {
    Packed::from_be_bytes(*key)
}

/// Hashes a key by its own bytes. Keys are digests or hashes, already uniform: hashing them
/// again only cost time.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(29) ^ u64::from_le_bytes(word);
        }
    }

    /// The length an array hashes first: always 16 here.
    fn write_usize(&mut self, _: usize) {}
}

/// Kept as bytes, not [`Packed`]: a `u128`'s alignment would make a slot 32 bytes, not 20.
type RecentMap = HashMap<Key, u32, BuildHasherDefault<DigestHasher>>;

/// A multiset of keys, counted exactly; memory holds the recent keys, a block index and the
/// filter. I/O failures are kept (the count then says 0) and reported by [`Counter::failure`].
///
/// A spill sorts the recent keys and writes them as a run in line; merging runs, most of a
/// spill's work, happens on a thread of their own while counting goes on. In line, a
/// 10M-record month's merges stopped the whole reading pipeline behind them (the other
/// stages' queues full) for a tenth of a second at a time, a core idle. A run being
/// merged stays in place, and is looked up, until the merged run replaces it; one merge at a
/// time, so memory holds what it did with the merges in line.
pub struct Counter {
    recent: RecentMap,
    limit: usize,
    /// The runs on disk, oldest first; each level's runs follow the higher levels'.
    runs: Vec<Arc<Run>>,
    merging: Option<Merging>,
    filter: Bloom,
    root: PathBuf,
    dir: Option<ScratchDir>,
    made: usize,
    failure: Option<io::Error>,
}

struct Run {
    /// How many merges made it: FANOUT runs of one level merge into one of the next.
    level: u32,
    path: PathBuf,
    file: File,
    entries: usize,
    /// The first key of every block.
    index: Vec<Packed>,
}

/// A merge in progress: [`FANOUT`] runs from `first` on (runs are only appended meanwhile).
struct Merging {
    first: usize,
    merge: JoinHandle<io::Result<Run>>,
}

impl Counter {
    /// Counts in memory up to `limit` keys, then in runs under `root`'s scratch directory.
    pub fn new(limit: usize, root: PathBuf) -> Self {
        Counter {
            recent: RecentMap::default(),
            limit: limit.max(1),
            runs: Vec::new(),
            merging: None,
            filter: Bloom::with_keys(0),
            root,
            dir: None,
            made: 0,
            failure: None,
        }
    }

    /// A counter spilling to the usual scratch root.
    pub fn in_scratch() -> Self {
        Counter::new(DEFAULT_RECENT, scratch_root())
    }

    /// How many times `key` was counted.
    pub fn count(&mut self, key: &Key) -> u32 {
        match self.recent.get(key) {
            Some(count) => *count,
            None => in_runs(&self.runs, &self.filter, pack(key)).unwrap_or_else(|error| {
                self.failure.get_or_insert(error);
                0
            }),
        }
    }

    /// Counts `key` once more; returns how many times it was counted before.
    pub fn bump(&mut self, key: &Key) -> u32 {
        let before = match self.recent.entry(*key) {
            Entry::Occupied(mut slot) => {
                *slot.get_mut() += 1;
                return *slot.get() - 1;
            }
            Entry::Vacant(slot) => {
                let before = in_runs(&self.runs, &self.filter, pack(key)).unwrap_or_else(|error| {
                    self.failure.get_or_insert(error);
                    0
                });
                slot.insert(before + 1);
                before
            }
        };
        if self.recent.len() >= self.limit {
            if let Err(error) = self.spill() {
                self.failure.get_or_insert(error);
            }
        }
        before
    }

    /// Reads the filter's blocks for `keys` ahead of counting them. Counted one by one, each
    /// key waits for its block (one cache miss a key, in a filter of ~1.5 bytes a key) behind
    /// the previous key's work; read here in a row, the loads are independent and the
    /// processor has many in flight at once.
    pub fn warm<'k>(&self, keys: impl Iterator<Item = &'k Key>) {
        if self.runs.is_empty() {
            return;
        }
        for key in keys {
            let (block, _) = self.filter.bits(pack(key));
            std::hint::black_box(self.filter.blocks[block][0]);
        }
    }

    /// The first I/O failure, if any: counts after it may be short. A merge that ended since
    /// is taken in (and the next one started); one still going is not waited for.
    pub fn failure(&mut self) -> Option<io::Error> {
        if let Err(error) = self.take_merged(false).and_then(|()| self.start_merge()) {
            self.failure.get_or_insert(error);
        }
        self.failure.take()
    }

    /// Writes the recent keys as a run, then starts merging runs if [`FANOUT`] share a level.
    fn spill(&mut self) -> io::Result<()> {
        self.take_merged(self.merge_due_besides())?;
        // Bytes, 20 an entry (a `Packed` pair would take 32), ordered as their packed numbers.
        let mut entries: Vec<(Key, u32)> = self.recent.drain().collect();
        entries.sort_unstable_by_key(|entry| pack(&entry.0));
        let path = self.next_path()?;
        let run = write_run(path, &mut entries.iter().map(|(k, n)| Ok((pack(k), *n))), 0)?;
        self.runs.push(Arc::new(run));
        // The filter is rebuilt, half as large again, whenever the runs outgrow it.
        let in_runs: usize = self.runs.iter().map(|run| run.entries).sum();
        if in_runs > self.filter.keys {
            drop(entries);
            // The old filter goes first: both at once were ~30 MB at 10M keys.
            self.filter = Bloom::with_keys(0);
            self.filter = Bloom::with_keys(in_runs * 3 / 2);
            for run in &self.runs {
                let mut entries = Entries::open(run)?;
                while let Some((key, _)) = entries.next()? {
                    self.filter.insert(key);
                }
            }
        } else {
            for (key, _) in &entries {
                self.filter.insert(pack(key));
            }
        }
        self.start_merge()
    }

    /// Whether another merge is due besides the one in progress: then a spill waits for it,
    /// so that runs (each one more place a key the filter lets through is looked up) do not
    /// pile up while merges fall behind.
    fn merge_due_besides(&self) -> bool {
        let Some(merging) = &self.merging else {
            return false;
        };
        let merged = merging.first..merging.first + FANOUT;
        let levels: Vec<u32> = (0..self.runs.len())
            .filter(|at| !merged.contains(at))
            .map(|at| self.runs[at].level)
            .collect();
        merge_start(&levels).is_some()
    }

    /// A new run file's path in the scratch directory (made on the first spill).
    fn next_path(&mut self) -> io::Result<PathBuf> {
        if self.dir.is_none() {
            let dir = ScratchDir::create(&self.root).map_err(io::Error::other)?;
            self.dir = Some(dir);
        }
        self.made += 1;
        let dir = self.dir.as_ref().expect("created above");
        Ok(dir.path().join(format!("seen-{}", self.made)))
    }

    /// Starts merging the oldest [`FANOUT`] runs of the lowest level that has as many, unless
    /// a merge is in progress.
    fn start_merge(&mut self) -> io::Result<()> {
        if self.merging.is_some() {
            return Ok(());
        }
        let levels: Vec<u32> = self.runs.iter().map(|run| run.level).collect();
        let Some(first) = merge_start(&levels) else {
            return Ok(());
        };
        let path = self.next_path()?;
        let runs = self.runs[first..first + FANOUT].to_vec();
        let merge = std::thread::Builder::new()
            .name("id-merge".into())
            .spawn(move || {
                let level = runs[0].level + 1;
                write_run(path, &mut Merge::of(&runs)?, level)
            })?;
        self.merging = Some(Merging { first, merge });
        Ok(())
    }

    /// Puts the merged run in place of the runs it merged, once the merge in progress ended
    /// (waiting for it when `wait`). A failed merge leaves its runs in place.
    fn take_merged(&mut self, wait: bool) -> io::Result<()> {
        if !self
            .merging
            .as_ref()
            .is_some_and(|merging| wait || merging.merge.is_finished())
        {
            return Ok(());
        }
        let Merging { first, merge } = self.merging.take().expect("checked above");
        let run = merge
            .join()
            .map_err(|_| io::Error::other("merging the record ids seen panicked"))??;
        let merged: Vec<_> = self
            .runs
            .splice(first..first + FANOUT, [Arc::new(run)])
            .collect();
        for old in merged {
            let _ = std::fs::remove_file(&old.path);
        }
        Ok(())
    }
}

impl Drop for Counter {
    /// A merge in progress ends before the scratch directory goes.
    fn drop(&mut self) {
        if let Some(merging) = self.merging.take() {
            let _ = merging.merge.join();
        }
    }
}

/// Where the runs to merge next start: the oldest [`FANOUT`] of the lowest level that has as
/// many (a level's runs are consecutive, levels falling from the oldest run to the newest).
fn merge_start(levels: &[u32]) -> Option<usize> {
    let mut end = levels.len();
    while end > 0 {
        let level = levels[end - 1];
        let start = levels[..end]
            .iter()
            .rposition(|other| *other != level)
            .map_or(0, |at| at + 1);
        if end - start >= FANOUT {
            return Some(start);
        }
        end = start;
    }
    None
}

/// Writes `entries` (in key order) as a run file at `path`.
fn write_run(
    path: PathBuf,
    entries: &mut dyn Iterator<Item = io::Result<(Packed, u32)>>,
    level: u32,
) -> io::Result<Run> {
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    let mut out = BufWriter::with_capacity(64 << 10, &file);
    let mut index = Vec::new();
    let mut count = 0;
    for entry in entries {
        let (key, n) = entry?;
        if count % BLOCK == 0 {
            index.push(key);
        }
        let mut bytes = [0u8; ENTRY];
        bytes[..16].copy_from_slice(&key.to_be_bytes());
        bytes[16..].copy_from_slice(&n.to_le_bytes());
        out.write_all(&bytes)?;
        count += 1;
    }
    out.flush()?;
    drop(out);
    Ok(Run {
        level,
        path,
        file,
        entries: count,
        index,
    })
}

/// The entries of several runs (oldest first) in key order, each key once with its newest
/// count (a newer run's entry holds the key's whole count).
struct Merge {
    heads: Vec<Entries>,
}

impl Merge {
    fn of(runs: &[Arc<Run>]) -> io::Result<Merge> {
        let heads = runs
            .iter()
            .map(|run| Entries::open(run))
            .collect::<io::Result<_>>()?;
        Ok(Merge { heads })
    }

    fn step(&mut self) -> io::Result<Option<(Packed, u32)>> {
        let smallest = self
            .heads
            .iter()
            .filter_map(|head| head.head)
            .map(|e| e.0)
            .min();
        let Some(key) = smallest else {
            return Ok(None);
        };
        let mut newest = 0;
        for head in &mut self.heads {
            if let Some((at, count)) = head.head {
                if at == key {
                    newest = count;
                    head.advance()?;
                }
            }
        }
        Ok(Some((key, newest)))
    }
}

impl Iterator for Merge {
    type Item = io::Result<(Packed, u32)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.step().transpose()
    }
}

/// A run's entries read in order, one at hand.
struct Entries {
    input: BufReader<File>,
    left: usize,
    head: Option<(Packed, u32)>,
}

impl Entries {
    fn open(run: &Run) -> io::Result<Entries> {
        let mut entries = Entries {
            input: BufReader::with_capacity(64 << 10, File::open(&run.path)?),
            left: run.entries,
            head: None,
        };
        entries.advance()?;
        Ok(entries)
    }

    fn advance(&mut self) -> io::Result<()> {
        if self.left == 0 {
            self.head = None;
            return Ok(());
        }
        self.left -= 1;
        let mut entry = [0u8; ENTRY];
        self.input.read_exact(&mut entry)?;
        self.head = Some((
            pack(entry[..16].try_into().expect("16 bytes")),
            u32::from_le_bytes(entry[16..].try_into().expect("4 bytes")),
        ));
        Ok(())
    }

    /// The entry at hand, moving on to the next.
    fn next(&mut self) -> io::Result<Option<(Packed, u32)>> {
        let head = self.head;
        if head.is_some() {
            self.advance()?;
        }
        Ok(head)
    }
}

/// The count of `key` in the runs, newest first: a run entry holds the key's whole count so
/// far. A key the filter never saw is in none of them (almost every key of a month).
fn in_runs(runs: &[Arc<Run>], filter: &Bloom, key: Packed) -> io::Result<u32> {
    if runs.is_empty() || !filter.may_hold(key) {
        return Ok(0);
    }
    for run in runs.iter().rev() {
        if let Some(count) = run.find(key)? {
            return Ok(count);
        }
    }
    Ok(0)
}

impl Run {
    /// The count of `key` in this run.
    fn find(&self, key: Packed) -> io::Result<Option<u32>> {
        let block = match self.index.partition_point(|first| *first <= key) {
            0 => return Ok(None),
            after => after - 1,
        };
        let first = block * BLOCK;
        let len = BLOCK.min(self.entries - first);
        let mut bytes = [0u8; BLOCK * ENTRY];
        let bytes = &mut bytes[..len * ENTRY];
        self.file.read_exact_at(bytes, (first * ENTRY) as u64)?;
        let key_at = |at: usize| -> Packed {
            pack(
                bytes[at * ENTRY..at * ENTRY + 16]
                    .try_into()
                    .expect("16 bytes"),
            )
        };
        let (mut low, mut high) = (0, len);
        while low < high {
            let middle = (low + high) / 2;
            match key_at(middle).cmp(&key) {
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
                std::cmp::Ordering::Equal => {
                    let count = &bytes[middle * ENTRY + 16..(middle + 1) * ENTRY];
                    return Ok(Some(u32::from_le_bytes(count.try_into().expect("4 bytes"))));
                }
            }
        }
        Ok(None)
    }
}

/// A blocked Bloom filter over 16-byte digests (already uniformly random: their bits are the
/// hashes).
struct Bloom {
    blocks: Vec<[u64; 8]>,
    /// Keys it is sized for.
    keys: usize,
}

impl Bloom {
    fn with_keys(keys: usize) -> Bloom {
        let blocks = (keys * BITS_PER_KEY).div_ceil(512).max(1);
        Bloom {
            blocks: vec![[0; 8]; blocks],
            keys,
        }
    }

    /// The block of `key` and the bits it sets there. The block comes from the key's high half
    /// by multiply-shift, which keeps order: the sorted keys of a run (a spill, a rebuild) walk
    /// the filter front to back instead of missing the cache on every key.
    fn bits(&self, key: Packed) -> (usize, impl Iterator<Item = (usize, u64)>) {
        let high = (key >> 64) as u64;
        let low = key as u64;
        let block = ((u128::from(high) * self.blocks.len() as u128) >> 64) as usize;
        let bits = (0..HASHES).map(move |i| {
            let bit = (low >> (i * 8)) as usize & 511;
            (bit / 64, 1u64 << (bit % 64))
        });
        (block, bits)
    }

    fn insert(&mut self, key: Packed) {
        let (block, bits) = self.bits(key);
        for (word, mask) in bits {
            self.blocks[block][word] |= mask;
        }
    }

    fn may_hold(&self, key: Packed) -> bool {
        let (block, mut bits) = self.bits(key);
        let block = &self.blocks[block];
        bits.all(|(word, mask)| block[word] & mask != 0)
    }
}

/// Whether `dir` holds any of this module's run files (for tests).
#[cfg(test)]
fn runs_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().count())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u64) -> Key {
        use sha2::Digest;
        sha2::Sha256::digest(n.to_le_bytes())[..16]
            .try_into()
            .unwrap()
    }

    #[test]
    fn counts_are_exact_across_runs_and_merges() {
        let root = tempfile::tempdir().unwrap();
        // 10 keys in memory: thousands of runs' worth, merged every few.
        let mut counter = Counter::new(10, root.path().to_path_buf());
        let mut exact: std::collections::HashMap<u64, u32> = Default::default();
        for n in 0..5_000u64 {
            // Every key recurs: some soon, some after many spills.
            let k = match n % 7 {
                0 => n / 7,
                3 => n % 50,
                _ => n,
            };
            let before = exact.entry(k).or_default();
            // Reading ahead touches the filter only: counts are the same with or without it.
            if n % 3 == 0 {
                counter.warm([key(k), key(n + 1), key(n + 2)].iter());
            }
            assert_eq!(counter.count(&key(k)), *before, "count of {k} at {n}");
            assert_eq!(counter.bump(&key(k)), *before, "bump of {k} at {n}");
            *before += 1;
        }
        assert!(counter.failure().is_none());
        // 500 spills of 10 keys: a few runs of each level, never many.
        let levels = counter.runs.iter().map(|run| run.level).max().unwrap();
        assert!(levels >= 3, "{levels}");
        assert!(counter.runs.len() < FANOUT * (levels as usize + 1));
        for (k, n) in &exact {
            assert_eq!(counter.count(&key(*k)), *n, "{k}");
        }
        assert_eq!(counter.count(&key(1_000_000)), 0);
        let dir = counter.dir.as_ref().unwrap().path().to_path_buf();
        assert!(runs_in(&dir) > 0);
        drop(counter);
        assert!(!dir.exists(), "the runs go with the counter");
    }

    #[test]
    fn the_lowest_level_with_enough_runs_merges_first_its_oldest() {
        for (levels, start) in [
            (&[][..], None),
            (&[0, 0, 0], None),
            (&[0, 0, 0, 0], Some(0)),
            (&[0, 0, 0, 0, 0], Some(0)),
            (&[1, 0, 0, 0, 0], Some(1)),
            (&[1, 1, 1, 1, 0, 0], Some(0)),
            (&[1, 1, 1, 1, 0, 0, 0, 0], Some(4)),
            (&[2, 1, 1, 1, 0, 0, 0], None),
            (&[3, 2, 2, 2, 2, 1, 0, 0, 0], Some(1)),
        ] {
            assert_eq!(merge_start(levels), start, "{levels:?}");
        }
    }

    #[test]
    fn a_small_month_never_touches_the_disk() {
        let root = tempfile::tempdir().unwrap();
        let mut counter = Counter::new(1_000, root.path().to_path_buf());
        for n in 0..999 {
            assert_eq!(counter.bump(&key(n)), 0);
        }
        assert!(counter.dir.is_none());
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[test]
    fn the_filter_never_forgets_a_key() {
        let mut bloom = Bloom::with_keys(1_000);
        for n in 0..1_000 {
            bloom.insert(pack(&key(n)));
        }
        assert!((0..1_000).all(|n| bloom.may_hold(pack(&key(n)))));
        let false_positives = (1_000..101_000)
            .filter(|n| bloom.may_hold(pack(&key(*n))))
            .count();
        assert!(false_positives < 2_000, "{false_positives} of 100000");
    }
}
