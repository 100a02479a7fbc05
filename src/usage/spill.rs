//! A month's group rows kept compact, and on disk once they outgrow a memory budget, so a
//! run's memory does not grow with the month.
//!
//! Collection ([`crate::usage::group`]) encodes each row as it is placed into its group's
//! buffer: the item as an index into the run's table of items (a product's few), the asset as
//! an index into the buffer's own table of the assets its rows name, the rest as bytes. When
//! the buffers together (rows and asset tables) pass the budget (`SPILL_BUDGET_BYTES`), every
//! buffer is appended to the run's scratch file as one segment of its group (its asset table
//! encoded first, then its rows) and emptied, table included. So nothing here holds one entry
//! per asset of the month: a month of a million subscriptions holds at most a budget's worth
//! of them. A group's rows are its segments in order, then what is still buffered:
//! [`GroupRows`], read back as an iterator ([`GroupRows::iter`]) by the workbook writer and
//! the late-records comparison, a buffer at a time (a segment's table is decoded once, when
//! the segment is opened). A group's distinct assets ([`GroupRows::assets`], the validator's
//! asset set) are read from the segments' tables alone. A month that fits the budget never
//! touches the disk, and its rows point at the very assets the run resolved.
//!
//! The scratch file lives in a directory of its own per run under
//! `<temp dir>/connect-payg-scratch/`, removed when the run's rows are dropped. A killed run
//! cannot remove its directory; the next run does ([`remove_stale`]): a live run holds an
//! exclusive lock on its directory's `lock` file, which the kernel releases when the process
//! dies, so a directory whose lock can be taken is stale.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, NaiveDateTime};
use foldhash::{HashMap, HashMapExt};

use crate::usage::group::ReportRow;
use crate::usage::period::TwoRecent;
use crate::usage::record::{Quantity, RecordId, VendorRecord};
use crate::usage::resolve::{ResolvedAsset, ResolvedItem};

/// Bytes of encoded rows a run holds before it spills them (`SPILL_BUDGET_BYTES`'s default):
/// about 130k rows at ~60 bytes each.
pub const DEFAULT_SPILL_BUDGET: usize = 8 << 20;

/// The folder under the temp dir holding each run's scratch directory.
const SCRATCH_ROOT: &str = "connect-payg-scratch";

/// A scratch directory without a lock file is another run's being made, unless it is this old.
const UNLOCKED_GRACE: Duration = Duration::from_secs(60);

/// Bytes a stored group reads from its file at a time.
const READ_BUFFER: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    #[error("cannot keep the month's rows in the scratch directory {path}: {source}")]
    Scratch { path: PathBuf, source: io::Error },
    #[error("cannot read the month's rows back from the scratch file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
}

/// Where runs keep scratch files: `<temp dir>/connect-payg-scratch`.
pub fn scratch_root() -> PathBuf {
    std::env::temp_dir().join(SCRATCH_ROOT)
}

/// Removes the scratch directories under `root` no live run holds (left by killed runs);
/// returns how many. A directory that cannot be removed is logged and left.
pub fn remove_stale(root: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let dir = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let stale = match File::options().write(true).open(dir.join("lock")) {
            // Released at once: the file goes with the directory.
            Ok(lock) => lock.try_lock().is_ok(),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                entry.metadata().and_then(|m| m.modified()).is_ok_and(|at| {
                    SystemTime::now()
                        .duration_since(at)
                        .is_ok_and(|age| age > UNLOCKED_GRACE)
                })
            }
            Err(_) => false,
        };
        if !stale {
            continue;
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => removed += 1,
            Err(error) => {
                tracing::warn!(dir = %dir.display(), %error, "cannot remove a stale scratch directory")
            }
        }
    }
    if removed > 0 {
        tracing::info!(removed, root = %root.display(), "removed scratch directories of runs that did not finish");
    }
    removed
}

/// One run's scratch directory, locked while it lives and removed when dropped.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
    /// Holds the directory's lock for the run's lifetime.
    _lock: File,
}

impl ScratchDir {
    /// A new directory under `root`, after removing the stale ones there.
    pub fn create(root: &Path) -> Result<ScratchDir, SpillError> {
        let failed = |source| SpillError::Scratch {
            path: root.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(root).map_err(failed)?;
        remove_stale(root);
        let path = tempfile::Builder::new()
            .prefix("run-")
            .tempdir_in(root)
            .map_err(failed)?
            .keep();
        let lock = File::create(path.join("lock"))
            .and_then(|lock| {
                lock.try_lock().map_err(io::Error::from)?;
                Ok(lock)
            })
            .map_err(|source| SpillError::Scratch {
                path: path.clone(),
                source,
            });
        match lock {
            Ok(lock) => Ok(ScratchDir { path, _lock: lock }),
            Err(error) => {
                let _ = std::fs::remove_dir_all(&path);
                Err(error)
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!(dir = %self.path.display(), %error, "cannot remove the run's scratch directory");
        }
    }
}

/// The run's scratch file of row segments (in its scratch directory).
#[derive(Debug)]
struct SpillFile {
    /// Removed (with the file) when the store is dropped.
    _dir: ScratchDir,
    path: PathBuf,
    file: File,
    len: u64,
}

/// What every stored row of a collection refers to: the scratch file, the table of items the
/// rows index and the names (contract, product, marketplace, search criteria) spilled asset
/// tables index. Dropped with the last group that uses it (removing the file).
#[derive(Debug, Default)]
pub struct RowStore {
    file: Option<SpillFile>,
    items: Vec<Arc<ResolvedItem>>,
    names: Vec<Arc<str>>,
}

/// A part of a group's rows in the scratch file: `assets` encoded assets in `table_len` bytes
/// (the table its rows index), then the rows.
#[derive(Debug, Clone, Copy)]
struct Segment {
    offset: u64,
    len: u64,
    assets: u32,
    table_len: u32,
}

/// A group's rows: held as rows (built by hand, or left after a rebuild's filter), or stored
/// encoded, in the scratch file and/or in memory.
#[derive(Debug, Clone)]
pub enum GroupRows {
    Held(Vec<ReportRow>),
    Stored(StoredRows),
}

#[derive(Debug, Clone)]
pub struct StoredRows {
    store: Arc<RowStore>,
    segments: Vec<Segment>,
    /// The rows never spilled, encoded.
    buffered: Arc<[u8]>,
    /// The assets the buffered rows index.
    table: AssetTable,
    count: usize,
}

impl From<Vec<ReportRow>> for GroupRows {
    fn from(rows: Vec<ReportRow>) -> Self {
        GroupRows::Held(rows)
    }
}

impl GroupRows {
    pub fn len(&self) -> usize {
        match self {
            GroupRows::Held(rows) => rows.len(),
            GroupRows::Stored(stored) => stored.count,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The distinct assets the rows name (by asset id), without reading stored rows back:
    /// spilled ones from the asset tables of the segments.
    pub fn assets(&self) -> Result<Vec<Arc<ResolvedAsset>>, SpillError> {
        let mut assets = match self {
            GroupRows::Held(rows) => rows.iter().map(|row| row.asset.clone()).collect(),
            GroupRows::Stored(stored) => stored.assets()?,
        };
        assets.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        assets.dedup_by(|a, b| a.id == b.id);
        Ok(assets)
    }

    /// Whether some of the rows are in the scratch file.
    pub fn spilled(&self) -> bool {
        matches!(self, GroupRows::Stored(stored) if !stored.segments.is_empty())
    }

    /// The rows in order; stored ones are read back a buffer at a time.
    pub fn iter(&self) -> RowIter<'_> {
        match self {
            GroupRows::Held(rows) => RowIter::Held(rows.iter()),
            GroupRows::Stored(stored) => RowIter::Stored(StoredIter {
                stored,
                next_segment: 0,
                reader: None,
                spare: Vec::new(),
                times: DecodedTimes::default(),
                left: stored.count,
            }),
        }
    }

    /// The rows at `positions`, in that order (one pass over the rows; positions past the end
    /// are left out).
    pub fn pick(&self, positions: &[usize]) -> Result<Vec<ReportRow>, SpillError> {
        let mut wanted: Vec<(usize, usize)> = positions
            .iter()
            .enumerate()
            .map(|(order, at)| (*at, order))
            .collect();
        wanted.sort_unstable();
        let mut wanted = wanted.into_iter().peekable();
        let mut picked: Vec<(usize, ReportRow)> = Vec::with_capacity(positions.len());
        for (at, row) in self.iter().enumerate() {
            if wanted.peek().is_none() {
                break;
            }
            let row = row?;
            while let Some((_, order)) = wanted.next_if(|(next, _)| *next == at) {
                picked.push((order, row.clone()));
            }
        }
        picked.sort_unstable_by_key(|(order, _)| *order);
        Ok(picked.into_iter().map(|(_, row)| row).collect())
    }

    /// Keeps only the rows `keep` accepts (they become held rows).
    pub fn retain(&mut self, mut keep: impl FnMut(&ReportRow) -> bool) -> Result<(), SpillError> {
        let kept = match self {
            GroupRows::Held(rows) => {
                rows.retain(keep);
                return Ok(());
            }
            GroupRows::Stored(_) => self
                .iter()
                .filter(|row| row.as_ref().map_or(true, &mut keep))
                .collect::<Result<Vec<_>, _>>()?,
        };
        *self = GroupRows::Held(kept);
        Ok(())
    }

    /// Every row, in memory.
    pub fn to_vec(&self) -> Result<Vec<ReportRow>, SpillError> {
        self.iter().collect()
    }
}

/// The rows of a [`GroupRows`], each one read back or cloned.
pub enum RowIter<'a> {
    Held(std::slice::Iter<'a, ReportRow>),
    Stored(StoredIter<'a>),
}

impl Iterator for RowIter<'_> {
    type Item = Result<ReportRow, SpillError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            RowIter::Held(rows) => rows.next().cloned().map(Ok),
            RowIter::Stored(stored) => stored.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            RowIter::Held(rows) => rows.size_hint(),
            RowIter::Stored(stored) => (stored.left, Some(stored.left)),
        }
    }
}

impl StoredRows {
    fn read_error(&self, source: io::Error) -> SpillError {
        let path = match &self.store.file {
            Some(file) => file.path.clone(),
            None => PathBuf::from("(memory)"),
        };
        SpillError::Read { path, source }
    }

    fn file(&self) -> Result<&SpillFile, SpillError> {
        self.store
            .file
            .as_ref()
            .ok_or_else(|| self.read_error(io::Error::other("no scratch file")))
    }

    /// The bytes of `segment` in the scratch file, read a block at a time into `block` (the
    /// last segment's, reused).
    fn open(&self, segment: &Segment, mut block: Vec<u8>) -> io::Result<RowBytes<'_>> {
        let file = self
            .store
            .file
            .as_ref()
            .ok_or_else(|| io::Error::other("no scratch file"))?;
        let part = FilePart {
            file: &file.file,
            at: segment.offset,
            end: segment.offset + segment.len,
        };
        // No larger than the segment: a group's share of one spill is often a few KiB. The
        // block passes from one segment to the next, so a group's rows take one allocation: a
        // zeroed block a segment (a group has one a spill) made the allocator hand pages back
        // and fault them in again, 2.6% of a 1M-record dry run's CPU samples under the spill's
        // reading.
        let capacity = usize::try_from(segment.len).map_or(READ_BUFFER, |len| len.min(READ_BUFFER));
        if block.len() < capacity {
            block.resize(capacity, 0);
        }
        Ok(RowBytes::File {
            part,
            block,
            start: 0,
            end: 0,
        })
    }

    /// Every segment's table and the buffered one, in order (an asset may be in several).
    fn assets(&self) -> Result<Vec<Arc<ResolvedAsset>>, SpillError> {
        let mut assets = Vec::new();
        let mut table = Vec::new();
        for segment in &self.segments {
            // The table alone, not a read buffer's worth of the rows after it.
            table.clear();
            FilePart {
                file: &self.file()?.file,
                at: segment.offset,
                end: segment.offset + u64::from(segment.table_len),
            }
            .read_to_end(&mut table)
            .map_err(|e| self.read_error(e))?;
            let mut input = &table[..];
            for _ in 0..segment.assets {
                let asset =
                    decode_asset(&mut input, &self.store.names).map_err(|e| self.read_error(e))?;
                assets.push(asset);
            }
        }
        assets.extend(self.table.iter().cloned());
        Ok(assets)
    }
}

/// The assets a segment's (or the buffered) rows index.
type AssetTable = Arc<[Arc<ResolvedAsset>]>;

pub struct StoredIter<'a> {
    stored: &'a StoredRows,
    next_segment: usize,
    /// The segment (or the buffered rows) being read, and the assets its rows index.
    reader: Option<(RowBytes<'a>, AssetTable)>,
    /// The block of the last segment read, for the next one.
    spare: Vec<u8>,
    times: DecodedTimes,
    left: usize,
}

impl StoredIter<'_> {
    fn read_error(&self, source: io::Error) -> SpillError {
        self.stored.read_error(source)
    }
}

impl Iterator for StoredIter<'_> {
    type Item = Result<ReportRow, SpillError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        loop {
            if let Some((bytes, table)) = &mut self.reader {
                let store = &self.stored.store;
                let times = &mut self.times;
                match bytes.next(|input| decode(input, store, table, times)) {
                    Ok(Some(row)) => {
                        self.left -= 1;
                        return Some(Ok(row));
                    }
                    Ok(None) => {
                        if let Some((RowBytes::File { block, .. }, _)) = self.reader.take() {
                            self.spare = block;
                        }
                    }
                    Err(error) => {
                        self.left = 0;
                        return Some(Err(self.read_error(error)));
                    }
                }
            }
            let stored = self.stored;
            if let Some(segment) = stored.segments.get(self.next_segment) {
                self.next_segment += 1;
                // The segment's asset table first, decoded once for all its rows.
                let block = std::mem::take(&mut self.spare);
                let opened = stored.open(segment, block).and_then(|mut bytes| {
                    let names = &stored.store.names;
                    let table = (0..segment.assets)
                        .map(|_| {
                            bytes
                                .next(|input| decode_asset(input, names))?
                                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
                        })
                        .collect::<io::Result<Arc<[_]>>>()?;
                    Ok((bytes, table))
                });
                match opened {
                    Ok(opened) => self.reader = Some(opened),
                    Err(error) => {
                        self.left = 0;
                        return Some(Err(self.read_error(error)));
                    }
                }
            } else if self.next_segment == stored.segments.len() {
                self.next_segment += 1;
                self.reader = Some((RowBytes::Memory(&stored.buffered), stored.table.clone()));
            } else {
                let missing = io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{} rows missing", self.left),
                );
                self.left = 0;
                return Some(Err(self.read_error(missing)));
            }
        }
    }
}

/// A range of a file, read by position (many groups read one file at once).
struct FilePart<'a> {
    file: &'a File,
    at: u64,
    end: u64,
}

impl Read for FilePart<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = usize::try_from(self.end - self.at).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        if want == 0 {
            return Ok(0);
        }
        let read = self.file.read_at(&mut buf[..want], self.at)?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.at += read as u64;
        Ok(read)
    }
}

/// The bytes of one segment, or of the rows still buffered, as rows are decoded from them:
/// each row from a slice of a block in memory. Decoded through `Read` a field at a time (ten
/// calls into a buffered reader a row, each row's texts copied through a buffer), reading
/// rows back was 5.3% of a 4M-record dry run's CPU samples.
enum RowBytes<'a> {
    Memory(&'a [u8]),
    /// `block[start..end]` read from the file and not decoded yet; `part` is what is left.
    File {
        part: FilePart<'a>,
        block: Vec<u8>,
        start: usize,
        end: usize,
    },
}

impl RowBytes<'_> {
    fn available(&self) -> &[u8] {
        match self {
            RowBytes::Memory(bytes) => bytes,
            RowBytes::File {
                block, start, end, ..
            } => &block[*start..*end],
        }
    }

    fn consume(&mut self, used: usize) {
        match self {
            RowBytes::Memory(bytes) => *bytes = &bytes[used..],
            RowBytes::File { start, .. } => *start += used,
        }
    }

    /// Reads more of the file after the bytes not yet decoded (the block grows when they fill
    /// it: a row larger than a block); false once there is no more.
    fn more(&mut self) -> io::Result<bool> {
        let RowBytes::File {
            part,
            block,
            start,
            end,
        } = self
        else {
            return Ok(false);
        };
        if part.at == part.end {
            return Ok(false);
        }
        block.copy_within(*start..*end, 0);
        *end -= *start;
        *start = 0;
        if *end == block.len() {
            block.resize(block.len().max(1) * 2, 0);
        }
        let read = part.read(&mut block[*end..])?;
        *end += read;
        Ok(read > 0)
    }

    /// What `decode` reads next, `None` at the clean end of the bytes. A value cut by the end
    /// of the block is decoded again once more was read (`decode` fails with `UnexpectedEof`
    /// when its slice runs out).
    fn next<T>(
        &mut self,
        mut decode: impl FnMut(&mut &[u8]) -> io::Result<T>,
    ) -> io::Result<Option<T>> {
        loop {
            let mut input = self.available();
            let length = input.len();
            if length > 0 {
                match decode(&mut input) {
                    Ok(value) => {
                        let used = length - input.len();
                        self.consume(used);
                        return Ok(Some(value));
                    }
                    Err(error) if error.kind() != io::ErrorKind::UnexpectedEof => {
                        return Err(error)
                    }
                    Err(cut) => {
                        if !self.more()? {
                            return Err(cut);
                        }
                    }
                }
            } else if !self.more()? {
                return Ok(None);
            }
        }
    }
}

/// Encodes rows into group buffers during collection and spills them past the budget.
pub struct Spiller {
    budget: usize,
    root: PathBuf,
    /// Bytes the buffers hold: rows, and an estimate of their asset tables.
    buffered: usize,
    groups: Vec<Buffer>,
    file: Option<SpillFile>,
    items: Vec<Arc<ResolvedItem>>,
    item_index: HashMap<usize, u32>,
    /// Names spilled assets refer to, by index (as many as contracts, products, marketplaces).
    names: Vec<Arc<str>>,
    name_index: HashMap<Arc<str>, u32>,
}

#[derive(Default)]
struct Buffer {
    bytes: Vec<u8>,
    segments: Vec<Segment>,
    count: usize,
    /// The assets the buffered rows index, and their indexes by the shared copy's address (the
    /// table holds the copy, so the address is not reused while it is listed).
    table: Vec<Arc<ResolvedAsset>>,
    table_index: HashMap<usize, u32>,
}

/// Memory an asset listed in a buffer's table stands for, besides its strings: the shared
/// copy, its table slot and index entry.
const LISTED_ASSET: usize = std::mem::size_of::<ResolvedAsset>() + 64;

fn listed_bytes(asset: &ResolvedAsset) -> usize {
    LISTED_ASSET
        + asset.id.len()
        + asset.search.1.len()
        + asset.recon_id.as_ref().map_or(0, |id| id.len())
}

/// A group's place in the [`Spiller`].
pub type Slot = usize;

impl Spiller {
    /// Spills past `budget` bytes into a scratch directory under `root`.
    pub fn new(budget: usize, root: PathBuf) -> Self {
        Spiller {
            budget,
            root,
            buffered: 0,
            groups: Vec::new(),
            file: None,
            items: Vec::new(),
            item_index: HashMap::new(),
            names: Vec::new(),
            name_index: HashMap::new(),
        }
    }

    /// A new group's slot.
    pub fn add_group(&mut self) -> Slot {
        self.groups.push(Buffer::default());
        self.groups.len() - 1
    }

    /// Appends the row of `record`, placed under `asset` and reporting `item`, to the group in
    /// `slot`; spills every buffer once they pass the budget. The row is taken as its parts:
    /// made whole for each record, its two shared copies were counted up and down again
    /// (4 atomic operations a record on the placing stage, the reading's busiest).
    pub fn push(
        &mut self,
        slot: Slot,
        asset: &Arc<ResolvedAsset>,
        item: &Arc<ResolvedItem>,
        record: &VendorRecord,
    ) -> Result<(), SpillError> {
        let item = index_of(&mut self.items, &mut self.item_index, item);
        let buffer = &mut self.groups[slot];
        let listed = buffer.table.len();
        let at = index_of(&mut buffer.table, &mut buffer.table_index, asset);
        if buffer.table.len() > listed {
            self.buffered += listed_bytes(asset);
        }
        let before = buffer.bytes.len();
        encode(&mut buffer.bytes, at, item, record);
        buffer.count += 1;
        self.buffered += buffer.bytes.len() - before;
        if self.buffered > self.budget {
            self.spill()?;
        }
        Ok(())
    }

    /// Appends every group's buffer to the scratch file, emptied.
    fn spill(&mut self) -> Result<(), SpillError> {
        if self.file.is_none() {
            let dir = ScratchDir::create(&self.root)?;
            let path = dir.path().join("rows");
            let file = File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|source| SpillError::Scratch {
                    path: path.clone(),
                    source,
                })?;
            tracing::info!(dir = %dir.path().display(), budget = self.budget, "the month's rows outgrow the memory budget; spilling them to scratch files");
            self.file = Some(SpillFile {
                _dir: dir,
                path,
                file,
                len: 0,
            });
        }
        let spill = self.file.as_mut().expect("created above");
        let mut table = Vec::new();
        for buffer in &mut self.groups {
            if buffer.bytes.is_empty() {
                continue;
            }
            table.clear();
            for asset in &buffer.table {
                encode_asset(&mut table, asset, &mut self.names, &mut self.name_index);
            }
            let failed = |source| SpillError::Scratch {
                path: spill.path.clone(),
                source,
            };
            spill.file.write_all(&table).map_err(failed)?;
            spill.file.write_all(&buffer.bytes).map_err(failed)?;
            let len = (table.len() + buffer.bytes.len()) as u64;
            buffer.segments.push(Segment {
                offset: spill.len,
                len,
                assets: u32::try_from(buffer.table.len()).expect("a segment's assets fit its rows"),
                table_len: u32::try_from(table.len()).expect("a table within the budget"),
            });
            spill.len += len;
            // Freed, not kept: most groups are small, and the next spill refills few of them.
            buffer.bytes = Vec::new();
            buffer.table = Vec::new();
            buffer.table_index = HashMap::new();
        }
        self.buffered = 0;
        Ok(())
    }

    /// Each group's rows, by slot.
    pub fn finish(self) -> Vec<GroupRows> {
        let store = Arc::new(RowStore {
            file: self.file,
            items: self.items,
            names: self.names,
        });
        self.groups
            .into_iter()
            .map(|buffer| {
                GroupRows::Stored(StoredRows {
                    store: store.clone(),
                    segments: buffer.segments,
                    buffered: buffer.bytes.into(),
                    table: buffer.table.into(),
                    count: buffer.count,
                })
            })
            .collect()
    }

    /// The scratch directory, once rows were spilled.
    #[cfg(test)]
    pub fn scratch_dir(&self) -> Option<&Path> {
        self.file.as_ref().map(|file| file._dir.path())
    }
}

/// The index of `value` in `table`, added on first sight (keyed by the shared copy's address).
fn index_of<T>(table: &mut Vec<Arc<T>>, index: &mut HashMap<usize, u32>, value: &Arc<T>) -> u32 {
    let address = Arc::as_ptr(value) as usize;
    *index.entry(address).or_insert_with(|| {
        table.push(value.clone());
        u32::try_from(table.len() - 1).expect("fewer than 4 billion assets and items")
    })
}

/// Appends `asset` to a segment's table: its names as indexes into the run's names, the rest
/// as text.
fn encode_asset(
    out: &mut Vec<u8>,
    asset: &ResolvedAsset,
    names: &mut Vec<Arc<str>>,
    index: &mut HashMap<Arc<str>, u32>,
) {
    for name in [
        &asset.contract_id,
        &asset.product_id,
        &asset.marketplace_id,
        &asset.search.0,
    ] {
        let at = *index.entry(name.clone()).or_insert_with(|| {
            names.push(name.clone());
            u32::try_from(names.len() - 1).expect("fewer than 4 billion names")
        });
        out.extend_from_slice(&at.to_le_bytes());
    }
    text(out, &asset.id);
    text(out, &asset.search.1);
    put_optional_text(out, asset.recon_id.as_deref());
}

/// The next asset of a segment's table.
fn decode_asset(input: &mut &[u8], names: &[Arc<str>]) -> io::Result<Arc<ResolvedAsset>> {
    let mut name = || -> io::Result<Arc<str>> {
        names
            .get(u32_of(input)? as usize)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "asset name index"))
    };
    let (contract_id, product_id, marketplace_id, criteria) = (name()?, name()?, name()?, name()?);
    let mut required = || -> io::Result<Box<str>> {
        read_text(input, |text| Box::from(text))?
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "asset text"))
    };
    let (id, value) = (required()?, required()?);
    Ok(Arc::new(ResolvedAsset {
        id,
        contract_id,
        product_id,
        marketplace_id,
        search: (criteria, value),
        recon_id: read_text(input, |text| Box::from(text))?,
    }))
}

const VENDOR_ID: u8 = 0;
const DERIVED_ID: u8 = 1;
const NO_NOTE: u32 = u32::MAX;

/// One row as bytes: asset (in its buffer's table) and item index, then the record's
/// quantity, interval, id and note.
fn encode(out: &mut Vec<u8>, asset: u32, item: u32, record: &VendorRecord) {
    out.extend_from_slice(&asset.to_le_bytes());
    out.extend_from_slice(&item.to_le_bytes());
    put_facts(out, record);
}

/// A record's quantity, interval, id and note as bytes (rows and partitioned records share
/// them).
pub(crate) fn put_facts(out: &mut Vec<u8>, record: &VendorRecord) {
    let (value, fraction_digits) = record.quantity.parts();
    out.extend_from_slice(&value.to_le_bytes());
    out.push(fraction_digits);
    for time in [record.start, record.end] {
        let time = time.and_utc();
        out.extend_from_slice(&time.timestamp().to_le_bytes());
        out.extend_from_slice(&time.timestamp_subsec_nanos().to_le_bytes());
    }
    match &record.record_id {
        RecordId::Vendor(id) => {
            out.push(VENDOR_ID);
            text(out, id);
        }
        RecordId::Derived { digest, occurrence } => {
            out.push(DERIVED_ID);
            out.extend_from_slice(digest);
            out.extend_from_slice(&occurrence.to_le_bytes());
        }
    }
    put_optional_text(out, record.note.as_deref());
}

/// What [`put_facts`] wrote.
pub(crate) struct Facts {
    pub quantity: Quantity,
    pub start: NaiveDateTime,
    pub end: NaiveDateTime,
    pub record_id: RecordId,
    pub note: Option<Arc<str>>,
}

/// Reads what [`put_facts`] wrote.
pub(crate) fn get_facts<I: Input>(input: &mut I, times: &mut DecodedTimes) -> io::Result<Facts> {
    let corrupt = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let value = f64::from_le_bytes(array(input)?);
    let [fraction_digits] = array(input)?;
    let mut time = || -> io::Result<NaiveDateTime> {
        let seconds = i64::from_le_bytes(array(input)?);
        let nanos = u32_of(input)?;
        times.get(seconds, nanos).ok_or_else(|| corrupt("time"))
    };
    let start = time()?;
    let end = time()?;
    let [tag] = array(input)?;
    let record_id = match tag {
        VENDOR_ID => RecordId::Vendor(
            read_text(input, |text| Box::from(text))?.ok_or_else(|| corrupt("id"))?,
        ),
        DERIVED_ID => RecordId::Derived {
            digest: array(input)?,
            occurrence: u32_of(input)?,
        },
        _ => return Err(corrupt("record id")),
    };
    Ok(Facts {
        quantity: Quantity::from_parts(value, fraction_digits),
        start,
        end,
        record_id,
        note: read_text(input, |text| Arc::from(text))?,
    })
}

/// The last two times read back, by their stored seconds and nanoseconds. A group's rows
/// repeat a few intervals, and turning seconds into a date is calendar arithmetic: ~0.8% of a
/// 3M-record dry run's CPU samples, decoding each time.
#[derive(Debug, Default)]
pub(crate) struct DecodedTimes {
    recent: TwoRecent<Option<((i64, u32), NaiveDateTime)>>,
}

impl DecodedTimes {
    /// The time `seconds` and `nanos` after the Unix epoch; `None` out of range.
    fn get(&mut self, seconds: i64, nanos: u32) -> Option<NaiveDateTime> {
        let key = (seconds, nanos);
        if let Some(Some((_, time))) = self
            .recent
            .find(|entry| matches!(entry, Some((known, _)) if *known == key))
        {
            return Some(*time);
        }
        let time = DateTime::from_timestamp(seconds, nanos)?.naive_utc();
        *self.recent.replace_oldest() = Some((key, time));
        Some(time)
    }
}

/// A text that may be absent (read back by [`read_text`]).
pub(crate) fn put_optional_text(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(value) => text(out, value),
        None => out.extend_from_slice(&NO_NOTE.to_le_bytes()),
    }
}

pub(crate) fn text(out: &mut Vec<u8>, text: &str) {
    // Cell texts are at most 32,767 characters (checked with the record).
    let len = u32::try_from(text.len()).expect("a cell's text");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// The next row of `input` (a row cut short fails with `UnexpectedEof`).
fn decode(
    input: &mut &[u8],
    store: &RowStore,
    table: &[Arc<ResolvedAsset>],
    times: &mut DecodedTimes,
) -> io::Result<ReportRow> {
    let asset = u32_of(input)? as usize;
    let item = u32_of(input)? as usize;
    let corrupt = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let asset = table.get(asset).ok_or_else(|| corrupt("asset index"))?;
    let item = store.items.get(item).ok_or_else(|| corrupt("item index"))?;
    let Facts {
        quantity,
        start,
        end,
        record_id,
        note,
    } = get_facts(input, times)?;
    Ok(ReportRow {
        asset: asset.clone(),
        item: item.clone(),
        record_id,
        note,
        quantity,
        start,
        end,
    })
}

pub(crate) fn array<const N: usize, R: Read + ?Sized>(input: &mut R) -> io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    input.read_exact(&mut bytes)?;
    Ok(bytes)
}

pub(crate) fn u32_of<R: Read + ?Sized>(input: &mut R) -> io::Result<u32> {
    Ok(u32::from_le_bytes(array(input)?))
}

/// A text written by [`text`] or [`put_optional_text`], handed to `take` (`None` for an
/// absent one).
pub(crate) fn read_text<I: Input, T>(
    input: &mut I,
    take: impl FnOnce(&str) -> T,
) -> io::Result<Option<T>> {
    let len = u32_of(input)?;
    if len == NO_NOTE {
        return Ok(None);
    }
    input.text_of(len as usize, take).map(Some)
}

/// What encoded rows and records are read from: a block in memory, or a buffered file.
pub(crate) trait Input: Read {
    /// The next `len` bytes as text, handed to `take`.
    fn text_of<T>(&mut self, len: usize, take: impl FnOnce(&str) -> T) -> io::Result<T>;
}

fn not_text(error: std::str::Utf8Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

/// Texts are borrowed from the block: a row's id and note are copied once, into the row. Read
/// into a zeroed buffer of their own first, then copied again, they took an allocation, a
/// fill and two copies each.
impl Input for &[u8] {
    fn text_of<T>(&mut self, len: usize, take: impl FnOnce(&str) -> T) -> io::Result<T> {
        let Some((text, rest)) = self.split_at_checked(len) else {
            return Err(io::ErrorKind::UnexpectedEof.into());
        };
        *self = rest;
        std::str::from_utf8(text).map(take).map_err(not_text)
    }
}

impl<R: Read> Input for io::BufReader<R> {
    fn text_of<T>(&mut self, len: usize, take: impl FnOnce(&str) -> T) -> io::Result<T> {
        let mut bytes = vec![0u8; len];
        self.read_exact(&mut bytes)?;
        std::str::from_utf8(&bytes).map(take).map_err(not_text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::workbook::Precision;

    fn rows(n: usize) -> Vec<ReportRow> {
        // Rows n % 5 == 0 on one asset, the others on another (the groups of the test).
        let assets = ["AS-1", "AS-2"].map(|id| {
            Arc::new(ResolvedAsset {
                id: id.into(),
                contract_id: "CRD-1".into(),
                product_id: "PRD-1".into(),
                marketplace_id: "MP-1".into(),
                search: ("asset.id".into(), id.into()),
                recon_id: None,
            })
        });
        let items = [Precision::Integer, Precision::Decimal(2)].map(|precision| {
            Arc::new(ResolvedItem {
                precision,
                search: ("item.mpn".into(), format!("{precision:?}")),
            })
        });
        let start = DateTime::from_timestamp(1_704_067_200, 0)
            .unwrap()
            .naive_utc();
        (0..n)
            .map(|n| ReportRow {
                asset: assets[usize::from(n % 5 != 0)].clone(),
                item: items[n % 2].clone(),
                record_id: match n % 3 {
                    0 => RecordId::Vendor(format!("R-{n}").into()),
                    _ => RecordId::Derived {
                        digest: [n as u8; 12],
                        occurrence: n as u32,
                    },
                },
                // Every 997th note is longer than a read block (90,000 bytes in 30,000
                // characters): its row is read in more than one block.
                note: match (n % 997, n % 4) {
                    (500, _) => Some(Arc::from(format!("{n} {}", "€".repeat(30_000)))),
                    (_, 0) => Some(Arc::from(format!("note, é {n}"))),
                    _ => None,
                },
                quantity: Quantity::parse(&format!("{n}.25")).unwrap(),
                start,
                end: start + chrono::Duration::seconds(n as i64),
            })
            .collect()
    }

    fn same(a: &ReportRow, b: &ReportRow) -> bool {
        a.asset == b.asset
            && a.item == b.item
            && a.record_id == b.record_id
            && a.note == b.note
            && a.quantity == b.quantity
            && (a.start, a.end) == (b.start, b.end)
    }

    #[test]
    fn decoded_times_are_the_timestamps_whichever_were_decoded_before() {
        // Two times in turn, a third in place of the least recent, the same second with
        // other nanoseconds, and seconds no date holds.
        let mut times = DecodedTimes::default();
        for (seconds, nanos) in [
            (1_704_067_200, 0),
            (1_706_745_599, 0),
            (1_704_067_200, 0),
            (1_706_745_599, 0),
            (1_705_000_000, 0),
            (1_704_067_200, 0),
            (1_705_000_000, 0),
            (1_705_000_000, 999_999_999),
            (1_705_000_000, 0),
            (i64::MAX, 0),
            (1_705_000_000, 0),
            (1_706_745_599, 0),
        ] {
            let expected = DateTime::from_timestamp(seconds, nanos).map(|t| t.naive_utc());
            assert_eq!(times.get(seconds, nanos), expected, "{seconds} {nanos}");
        }
    }

    #[test]
    fn rows_read_back_equal_whether_spilled_or_not_and_the_directory_goes_with_them() {
        let root = tempfile::tempdir().unwrap();
        // Rows of ~60 bytes, and three of ~90 KB: with the middle budgets a segment holds
        // more than a read block, rows cut by the block's end.
        let expected = rows(3_000);
        for budget in [usize::MAX, 300_000, 100_000, 1_000, 1] {
            let mut spiller = Spiller::new(budget, root.path().to_path_buf());
            let (a, b) = (spiller.add_group(), spiller.add_group());
            for (n, row) in expected.iter().enumerate() {
                let record = VendorRecord {
                    line: n as u64,
                    element: None,
                    object: None,
                    subscription_id: "S".into(),
                    item: "I".into(),
                    quantity: row.quantity,
                    start: row.start,
                    end: row.end,
                    record_id: row.record_id.clone(),
                    note: row.note.clone(),
                };
                let slot = if n % 5 == 0 { a } else { b };
                spiller.push(slot, &row.asset, &row.item, &record).unwrap();
            }
            let scratch = spiller.scratch_dir().map(Path::to_path_buf);
            assert_eq!(scratch.is_some(), budget != usize::MAX);
            let groups = spiller.finish();
            assert_eq!(groups[1].spilled(), budget != usize::MAX);
            let read: Vec<Vec<ReportRow>> = groups.iter().map(|g| g.to_vec().unwrap()).collect();
            assert_eq!(read[0].len() + read[1].len(), expected.len());
            assert_eq!(groups[0].len(), read[0].len());
            let (mut at_a, mut at_b) = (0, 0);
            for (n, row) in expected.iter().enumerate() {
                let got = match n % 5 {
                    0 => (&read[0][at_a], at_a += 1).0,
                    _ => (&read[1][at_b], at_b += 1).0,
                };
                assert!(same(got, row), "row {n} at budget {budget}");
            }
            for (group, id) in groups.iter().zip(["AS-1", "AS-2"]) {
                let assets = group.assets().unwrap();
                assert_eq!(assets.len(), 1, "one asset, listed once");
                assert_eq!(&*assets[0].id, id);
            }
            assert_eq!(
                GroupRows::from(read[1].clone()).assets().unwrap(),
                groups[1].assets().unwrap()
            );
            let picked = groups[1].pick(&[0, 7, 500]).unwrap();
            assert!(same(&picked[2], &read[1][500]));
            drop(read);
            drop(groups);
            if let Some(dir) = scratch {
                assert!(!dir.exists(), "removed with its rows");
            }
        }
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[test]
    fn only_directories_no_live_run_holds_are_stale() {
        let root = tempfile::tempdir().unwrap();
        let live = ScratchDir::create(root.path()).unwrap();
        let dead = root.path().join("run-dead");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join("lock"), b"").unwrap();
        std::fs::write(dead.join("rows"), b"x").unwrap();
        let making = root.path().join("run-being-made");
        std::fs::create_dir(&making).unwrap();
        assert_eq!(remove_stale(root.path()), 1);
        assert!(live.path().exists() && making.exists() && !dead.exists());
        let path = live.path().to_path_buf();
        drop(live);
        assert!(!path.exists());
    }

    #[test]
    fn held_rows_filter_and_pick() {
        let mut held = GroupRows::from(rows(10));
        assert_eq!(held.pick(&[1, 9]).unwrap().len(), 2);
        held.retain(|row| row.note.is_some()).unwrap();
        assert_eq!(held.len(), 3);
    }
}
