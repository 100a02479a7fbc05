//! From a stream of vendor records to groups ready for workbooks: local checks, resolution
//! against Connect, scope, item precision, and grouping by (contract, product).
//!
//! Every record ends in exactly one place: a group's rows, the bad list (with line and reason),
//! or an out-of-scope count. Nothing is aggregated and nothing is dropped silently. Bad records
//! are filed chunk by chunk in source order into [`BadRecords`], which holds only the first
//! ones in memory, so a source of endless bad rows cannot exhaust memory. A group's rows are
//! encoded as they are placed and spilled to a scratch file once the month's rows pass the
//! memory budget ([`crate::usage::spill`]): memory holds the budget, the record ids seen (for
//! duplicates) and the resolution cache, not the month's rows.
//!
//! The cache holds at most `RESOLVE_CACHE_SUBSCRIPTIONS` subscriptions' assets. A month that
//! fits it is resolved and placed chunk by chunk as it is read. Past it, a chunk's records
//! whose subscriptions are cached are placed as before, and the others are set aside in
//! partition files by subscription ([`crate::usage::partition`]); when the source has ended,
//! each partition is resolved (with a cache of its own, dropped afterwards) and placed. Then a
//! group's rows are no longer in source order (its digests do not depend on the order); the
//! bad list still is (the partitions keep the bad records found meanwhile and merge them).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use foldhash::{HashMap, HashMapExt, HashSet};
use futures::StreamExt;
use tokio_util::task::AbortOnDropHandle;

use crate::connect::ConnectError;
use crate::usage::period::Period;
use crate::usage::phases::{self, Phase};
use chrono::NaiveDateTime;

use crate::usage::partition::Partitions;
use crate::usage::record::{
    BadReason, BadRecord, BadRecords, CheckedBatch, FieldChecks, IdChecks, OutOfScope, Quantity,
    RecordChecker, RecordId, VendorRecord,
};
use crate::usage::resolve::{AssetMatch, ResolvedAsset, ResolvedItem, ResolvedProduct, Resolver};
use crate::usage::source::{Item, RecordStream, SourceError};
use crate::usage::spill::{GroupRows, Slot, SpillError, Spiller};

/// One usage file's worth of records: a contract and a product in the reported period.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKey {
    pub contract_id: String,
    pub product_id: String,
}

impl GroupKey {
    /// The file's dedupe key on the platform: `<contract>:<product>:<period>`, the period
    /// `YYYY-MM` or (daily cadence) `YYYY-MM-DD`.
    pub fn external_id(&self, period: Period) -> String {
        format!("{}:{}:{}", self.contract_id, self.product_id, period)
    }

    /// Parses an external id this extension wrote; `None` for anything else.
    pub fn parse_external_id(external_id: &str) -> Option<(GroupKey, Period)> {
        let mut parts = external_id.split(':');
        let (contract, product, period) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || !contract.starts_with("CRD-") || !product.starts_with("PRD-") {
            return None;
        }
        let period = Period::parse(period).ok()?;
        Some((
            GroupKey {
                contract_id: contract.to_string(),
                product_id: product.to_string(),
            },
            period,
        ))
    }
}

impl std::fmt::Display for GroupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} × {}", self.contract_id, self.product_id)
    }
}

/// A record filed under its group: what the workbook row needs and nothing else (the source
/// line and the subscription id as the vendor wrote it are dropped here).
#[derive(Debug, Clone)]
pub struct ReportRow {
    pub asset: Arc<ResolvedAsset>,
    pub item: Arc<ResolvedItem>,
    pub record_id: RecordId,
    pub note: Option<Arc<str>>,
    pub quantity: Quantity,
    pub start: NaiveDateTime,
    pub end: NaiveDateTime,
}

#[derive(Debug, Clone)]
pub struct Group {
    pub key: GroupKey,
    pub product: Arc<ResolvedProduct>,
    /// The currency of the assets' marketplace; an error when they disagree.
    pub currency: Result<String, String>,
    /// Held, or stored compact and spilled to the run's scratch file ([`GroupRows`]).
    pub rows: GroupRows,
}

/// What one read of the source came to.
#[derive(Debug, Default)]
pub struct Collection {
    pub groups: BTreeMap<GroupKey, Group>,
    pub bad: BadRecords,
    pub out_of_scope: BTreeMap<OutOfScope, u64>,
    pub records_read: u64,
}

impl Collection {
    pub fn bad_by_reason(&self) -> BTreeMap<BadReason, u64> {
        self.bad.by_reason()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("looking up usage objects in Connect failed: {0}")]
    Connect(#[from] ConnectError),
    #[error("reading the usage records stopped unexpectedly: {0}")]
    Reader(String),
    #[error(transparent)]
    Spill(#[from] SpillError),
}

/// Good records waiting for their subscriptions to be looked up. Records are resolved and
/// sorted into rows a few thousand at a time, so a month is never held twice (as records and
/// as rows) and each lookup asks for many objects at once.
const CHUNK: usize = 2_000;

/// Subscriptions whose assets a run keeps resolved (`RESOLVE_CACHE_SUBSCRIPTIONS`'s default).
/// An entry costs ~400 bytes (measured: 373 a subscription over 200,000 of them, RSS before
/// and after: the id as records name it and its map slot, the match with its resolved asset
/// and their strings, its slot by address): ~8 MiB at the cap, next to the 8 MiB of rows, the
/// record-id counter (2.6 MiB, and ~1.25–1.9 bytes an id for its filter) and the program
/// (~10 MiB).
pub const DEFAULT_RESOLVE_CACHE: usize = 20_000;

/// Parsed (or checked) batches a stage may run ahead of the next. The stages hand work over a
/// batch (~0.1 ms of work) at a time, on fewer cores than stages: with 4, a stage often found
/// its queue empty or full and waited, and the reading used 1.58–1.61 of 2 cores (3M-record
/// dry run, scheduler trace). With 8, 1.66–1.68; with 16, 1.72–1.76, but the runner's
/// 1M-subscription month then peaked at 60.5 MiB (56.5 with 8, 55.2 with 4) against its
/// 64 MiB target.
const BATCH_SLACK: usize = 8;

/// Chunks the id checks may run ahead of the sorting (~300 KB each). 8 or 16 (1.73–1.80 cores
/// busy, with 16 batches) were within the noise of 4, for 1.2–1.5 MiB more at the 10M-record
/// run's peak.
const CHUNK_SLACK: usize = 4;

/// Placed batches' buffers kept for the field checks to fill again: four chunks' worth (a chunk
/// is ~4 CSV batches of 512 rows).
const SPARE_BATCHES: usize = 16;

/// Chunks whose subscriptions are asked for before the first of them is placed. One at a time,
/// the month's lookups were a chain of small rounds (a chunk names ~500 new subscriptions, 5
/// pages) with the reader idle behind a full queue; asked for four chunks ahead, the pages of
/// several chunks are in flight at once. Measured on 2 cores, the 10k-subscription month
/// (bench, median of 4 alternating runs): 0.67 s one chunk at a time, 0.60 s four ahead; 8
/// and 16 ahead measured the same as 4.
const LOOKUPS_AHEAD: usize = 4;

/// A chunk's subscriptions being looked up on a task of their own.
type Lookup =
    AbortOnDropHandle<Result<std::collections::HashMap<String, AssetMatch>, ConnectError>>;

/// Where a chunk's subscriptions stand once it was read: each chunk's records are scanned for
/// them once, here (a second scan, record by record, would be on the 10M-record path).
enum Ahead {
    /// All cached, or asked for by an earlier chunk (answered before this one is placed).
    Known,
    /// The ones not known yet, being looked up.
    Asked(Lookup),
    /// Not asked for: the cache could not take them; [`Sorter::sort`] sets records aside.
    Later,
}

/// Subscriptions asked for ahead and not yet answered; once the cache could not take all of a
/// chunk's, nothing more is asked ahead (the sorter lets subscriptions into the cache in the
/// order records name them, and sets the rest aside).
#[derive(Default)]
struct Asked {
    pending: HashSet<String>,
    stopped: bool,
}

impl Asked {
    fn answered<'a>(&mut self, ids: impl Iterator<Item = &'a String>) {
        for id in ids {
            self.pending.remove(id);
        }
    }
}

/// Records read and checked, handed from the reader to the sorter: whole batches, until they
/// hold [`CHUNK`] good records or [`CHUNK`] bad ones (so at most a batch more). The good
/// records stay in the batches the field checks wrote them into: moved into one list by the
/// id checks, the move was 8% of the reading's CPU samples in a 1M-record call-graph profile.
#[derive(Default)]
struct Chunk {
    batches: Vec<Vec<VendorRecord>>,
    /// The good records in `batches`.
    good: usize,
    /// The records among them that failed their checks.
    bad: Vec<BadRecord>,
    read: u64,
}

impl Chunk {
    fn records(&self) -> impl Iterator<Item = &VendorRecord> {
        self.batches.iter().flatten()
    }

    fn full(&self) -> bool {
        self.good >= CHUNK || self.bad.len() >= CHUNK
    }
}

/// Reads the whole source for `period` and sorts every record into groups, bad or out of scope.
///
/// Four stages run at once, records flowing through them in source order: parsing (a task),
/// each record's own checks (a task), the id checks (a thread), and the lookups and placement
/// (here).
pub async fn collect(
    records: RecordStream,
    period: Period,
    resolver: &Resolver,
    lookups: &mut Lookups,
    spill_budget: usize,
    resolve_cache: usize,
    spill_root: PathBuf,
) -> Result<Collection, CollectError> {
    let started = Instant::now();
    // Chunks of slack between the stages (~300 KB each): a stage that pauses (the id counter
    // writing a run, a spill) does not stall the others at once.
    let (chunks, mut incoming) = tokio::sync::mpsc::channel(CHUNK_SLACK);
    // Placed batches' buffers go back to the field checks to be filled again, as chunks'
    // buffers went back to the id checks when those copied records into them: a fresh 300 KB
    // chunk buffer had its pages faulted in anew each time (2.6% of the 10M-record month's
    // CPU). For batches (~70 KB of records) this was not measured again.
    let (spare, spares) = std::sync::mpsc::sync_channel(SPARE_BATCHES);
    let reader = AbortOnDropHandle::new(tokio::spawn(read_chunks(
        records,
        RecordChecker::new(period).into_stages(),
        chunks,
        spares,
    )));
    let mut sorter = Sorter::new(
        resolver,
        lookups,
        Spiller::new(spill_budget, spill_root.clone()),
        resolve_cache,
        Partitions::new(spill_root),
    );
    // Chunks wait here, their subscriptions being looked up, until placed in source order.
    let mut ahead: VecDeque<(Chunk, Ahead)> = VecDeque::new();
    let mut asked = Asked::default();
    let mut read_all = false;
    loop {
        // Take in the chunks the reader has ready (waiting for one only when none is here)
        // and ask for their subscriptions at once; while no chunk here waits on a lookup (all
        // its subscriptions known), one at a time, so the month is held no more than before.
        let looking_up = |ahead: &VecDeque<(Chunk, Ahead)>| {
            ahead
                .iter()
                .any(|(_, state)| matches!(state, Ahead::Asked(_)))
        };
        while !read_all && (ahead.is_empty() || (ahead.len() < LOOKUPS_AHEAD && looking_up(&ahead)))
        {
            let next = match ahead.is_empty() {
                true => incoming.recv().await,
                false => match incoming.try_recv() {
                    Ok(chunk) => Some(chunk),
                    Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                    Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => None,
                },
            };
            let Some(chunk) = next else {
                read_all = true;
                break;
            };
            let chunk = chunk?;
            let state = sorter.look_up_ahead(chunk.records(), &mut asked, sorter.cap);
            ahead.push_back((chunk, state));
        }
        let Some((mut chunk, state)) = ahead.pop_front() else {
            break;
        };
        sorter.collection.records_read += chunk.read;
        match state {
            Ahead::Known => sorter.place_known(&mut chunk.batches).await?,
            Ahead::Asked(lookup) => {
                sorter.take_answer(lookup, &mut asked).await?;
                sorter.place_known(&mut chunk.batches).await?;
            }
            Ahead::Later => {
                let records = chunk.batches.iter_mut().flat_map(|batch| batch.drain(..));
                sorter.sort(records.collect()).await?
            }
        }
        for batch in chunk.batches {
            // Full or gone: the buffer is freed instead.
            let _ = spare.try_send(batch);
        }
        sorter.file_bad(chunk.bad)?;
    }
    // The channel also closes when the reader dies: only a reader that finished read it all.
    reader
        .await
        .map_err(|error| CollectError::Reader(error.to_string()))?;
    sorter.sort_partitions().await?;
    let collection = sorter.finish().await?;
    phases::collected(started);
    Ok(collection)
}

/// The item a record placed under `product` reports, when the product has it and its precision
/// holds the record's quantity; else the record is bad (pushed to `bad`, `None` returned).
fn place_item<'p>(
    record: &VendorRecord,
    product: &'p ResolvedProduct,
    bad: &mut Vec<BadRecord>,
) -> Option<&'p Arc<ResolvedItem>> {
    let in_record = |found: BadRecord| {
        found
            .in_element(record.element)
            .in_object(record.object.clone())
    };
    let Some(item) = product.items.get(&*record.item) else {
        bad.push(in_record(BadRecord::new(
            record.line,
            BadReason::UnknownItem,
            format!(
                "item {:?} is not a PAYG item of product {}",
                record.item, product.id
            ),
        )));
        return None;
    };
    if let Err(reason) = record.quantity.fits(item.precision) {
        bad.push(in_record(BadRecord::new(
            record.line,
            reason,
            format!(
                "quantity {} does not fit the item's precision {:?}",
                record.quantity, item.precision
            ),
        )));
        return None;
    }
    Some(item)
}

/// `records` less each one naming the same subscription as the one before it (by its shared
/// copy): records often come a subscription at a time. In the bench's 4M-record month (its
/// records listed a subscription at a time, as the simulator's export lists them), the
/// look-ups this skips were ~2% of the reading's CPU samples.
fn different_subscriptions<'r>(
    records: impl IntoIterator<Item = &'r VendorRecord>,
) -> impl Iterator<Item = &'r VendorRecord> {
    let mut previous: Option<&Arc<str>> = None;
    records.into_iter().filter(move |record| {
        let repeated = previous.is_some_and(|p| Arc::ptr_eq(p, &record.subscription_id));
        previous = Some(&record.subscription_id);
        !repeated
    })
}

/// Reads and checks `records`, sending them on in chunks; stops at a broken source (sent on as
/// the error) or when the sorter is gone. `spares` are placed batches' buffers to fill again.
async fn read_chunks(
    records: RecordStream,
    (fields, ids): (FieldChecks, IdChecks),
    chunks: tokio::sync::mpsc::Sender<Result<Chunk, CollectError>>,
    spares: std::sync::mpsc::Receiver<Vec<VendorRecord>>,
) {
    // Parsing, each record's own checks, the id checks and sorting are four stages, each a
    // batch or chunk ahead of the next, on as many cores as there are. Parsing and the own
    // checks shared one task at first: that task was busy ~9 of the 11 s the 10M-record
    // month's reading took on 2 cores, the other stages waiting on it (1.64 cores used).
    let (batches, parsed) = tokio::sync::mpsc::channel(BATCH_SLACK);
    let (checked_batches, checked) = tokio::sync::mpsc::channel(BATCH_SLACK);
    let _parser = AbortOnDropHandle::new(tokio::spawn(parse_batches(records, batches)));
    let _fields = AbortOnDropHandle::new(tokio::spawn(check_fields(
        parsed,
        fields,
        checked_batches,
        spares,
    )));
    // The id checks get a thread of their own: they are CPU and file work (their memory of
    // the ids spills to scratch files). As a task, tokio ran them on the worker that had just
    // parsed their batch, one after the other, while the other worker idled: the month's
    // reading used 1.5 of 2 cores.
    let checking = tokio::task::spawn_blocking(move || check_ids(checked, ids, chunks));
    let _ = checking.await;
}

/// The id checks of every checked batch, the batches sent on in chunks (a blocking loop, on
/// its own thread).
fn check_ids(
    mut checked: tokio::sync::mpsc::Receiver<Result<CheckedBatch, SourceError>>,
    mut checker: IdChecks,
    chunks: tokio::sync::mpsc::Sender<Result<Chunk, CollectError>>,
) {
    let mut chunk = Chunk::default();
    while let Some(batch) = checked.blocking_recv() {
        let mut batch = match batch {
            Ok(batch) => batch,
            Err(error) => {
                let _ = chunks.blocking_send(Err(error.into()));
                return;
            }
        };
        let started = Instant::now();
        checker.check(&mut batch);
        phases::add(Phase::Check, started);
        chunk.read += batch.read();
        chunk.good += batch.records.len();
        chunk.bad.append(&mut batch.bad);
        chunk.batches.push(batch.records);
        // Bad records count too: a source of nothing but bad rows must not pile them up.
        if !chunk.full() {
            continue;
        }
        // Ids checked against a memory of them that failed cannot be trusted.
        if let Some(error) = checker.failure() {
            let _ = chunks.blocking_send(Err(ids_lost(error)));
            return;
        }
        if chunks
            .blocking_send(Ok(std::mem::take(&mut chunk)))
            .is_err()
        {
            return;
        }
    }
    let last = match checker.failure() {
        Some(error) => Err(ids_lost(error)),
        None => Ok(chunk),
    };
    let _ = chunks.blocking_send(last);
}

/// Reads the source a batch at a time, handing each on; a broken source is sent on as the last.
async fn parse_batches(
    mut records: RecordStream,
    batches: tokio::sync::mpsc::Sender<Result<Vec<Item>, SourceError>>,
) {
    loop {
        let started = Instant::now();
        let next = records.next().await;
        phases::add(Phase::Parse, started);
        let Some(batch) = next else {
            return;
        };
        let broken = batch.is_err();
        if batches.send(batch).await.is_err() || broken {
            return;
        }
    }
}

/// Puts each parsed batch through each record's own checks, in order, into a buffer from
/// `spares` when one is there; a broken source's error is passed on as it came.
async fn check_fields(
    mut parsed: tokio::sync::mpsc::Receiver<Result<Vec<Item>, SourceError>>,
    mut fields: FieldChecks,
    batches: tokio::sync::mpsc::Sender<Result<CheckedBatch, SourceError>>,
    spares: std::sync::mpsc::Receiver<Vec<VendorRecord>>,
) {
    while let Some(batch) = parsed.recv().await {
        let batch = batch.map(|raws| {
            let started = Instant::now();
            let room = spares.try_recv().unwrap_or_default();
            let mut checked = CheckedBatch::with_room(raws.len(), room);
            for item in raws {
                match item {
                    Ok(raw) => fields.check(raw, &mut checked),
                    Err(bad) => checked.push_unreadable(bad),
                }
            }
            phases::add(Phase::Check, started);
            checked
        });
        if batches.send(batch).await.is_err() {
            return;
        }
    }
}

fn ids_lost(source: std::io::Error) -> CollectError {
    CollectError::Spill(SpillError::Scratch {
        path: crate::usage::spill::scratch_root(),
        source,
    })
}

/// What a subscription whose records go to a reported group resolved to. That depends on
/// nothing but the subscription (asset, contract scope, product, group), so the next records
/// naming it skip the look-ups by its text: the asset, the contract's scope, the product and
/// the group. A subscription is told by its shared copy of the name (the record checks share
/// one copy of each name): an address, no text compared. The copy is held here, so its
/// address cannot be reused for another name meanwhile. Each record's item and quantity are
/// still checked.
///
/// Only the last subscription was remembered at first: records often come a subscription at a
/// time. Records interleaving their subscriptions (the bench's month cycles through them)
/// then took those look-ups each. In a 1M-record profile of the sorting stage, the reading's
/// busiest, the subscription look-ups were 8.4% of its samples, the slot look-ups 3.8%,
/// listing each chunk's assets as counted copies 10.1% and dropping rows' copies 6.3%.
struct Placed {
    /// Held: the key is its address.
    _subscription: Arc<str>,
    asset: Arc<ResolvedAsset>,
    product: Arc<ResolvedProduct>,
    /// Its group's, once a record has been placed in it.
    slot: Option<Slot>,
}

/// Subscriptions remembered as placed before they are all forgotten: as many as the record
/// checks keep shared copies of names (a copy made since then is another address). The build
/// that brought the map peaked at 55.2 MiB in the 1M-subscription month, the one before at
/// 53.4 MiB.
const MAX_PLACED: usize = crate::usage::interner::MAX_NAMES;

/// The address of a shared name: its identity while the copy is held.
fn address(name: &Arc<str>) -> usize {
    Arc::as_ptr(name).cast::<u8>() as usize
}

/// What a run has looked up in Connect: assets by the subscription id records name them with
/// (at most the cache's cap of them, the first the run met), the contracts checked and those
/// in scope, products with their items. Kept across the periods of one run, so a catch-up
/// resolves each cached subscription once, not once per period (3 months of 10k
/// subscriptions: 112 asset requests instead of 336); the subscriptions past the cap are
/// resolved again each period, partition by partition. A run is minutes long, so what it
/// learnt about an asset at its start still holds at its end.
#[derive(Default)]
pub struct Lookups {
    assets: HashMap<String, AssetMatch>,
    contracts_checked: HashSet<String>,
    in_scope_contracts: HashSet<String>,
    products: HashMap<String, Arc<ResolvedProduct>>,
}

/// What the records so far came to, and what Connect said about their objects (each asked
/// for once: a chunk looks up only the subscriptions, contracts and products not seen yet).
struct Sorter<'c> {
    resolver: &'c Resolver,
    lookups: &'c mut Lookups,
    /// The most subscriptions `lookups` holds.
    cap: usize,
    /// Records whose subscriptions did not fit the cache, set aside by subscription.
    partitions: Partitions,
    /// While partitions are sorted: the current partition's assets (instead of `lookups`').
    partition_assets: Option<HashMap<String, AssetMatch>>,
    /// Each group's rows, encoded and spilled past the budget; its slot by contract and product.
    spiller: Spiller,
    slots: HashMap<(Arc<str>, Arc<str>), Slot>,
    /// Each placed asset's slot, by the address of its shared copy (held in the cache it came
    /// from: emptied with a partition's cache).
    asset_slots: HashMap<usize, Slot>,
    /// What subscriptions placed in a group resolved to, by the address of their shared name
    /// (forgotten with a partition's cache, and past [`MAX_PLACED`]). Each one is in the cache
    /// in use.
    placed: HashMap<usize, Placed>,
    /// The marketplaces of each slot's assets.
    marketplaces: Vec<BTreeSet<Arc<str>>>,
    /// Records of the current chunk found bad while placing them.
    placed_bad: Vec<BadRecord>,
    collection: Collection,
}

impl<'c> Sorter<'c> {
    fn new(
        resolver: &'c Resolver,
        lookups: &'c mut Lookups,
        spiller: Spiller,
        cap: usize,
        partitions: Partitions,
    ) -> Self {
        Sorter {
            resolver,
            lookups,
            cap,
            partitions,
            partition_assets: None,
            spiller,
            slots: HashMap::new(),
            asset_slots: HashMap::new(),
            placed: HashMap::new(),
            marketplaces: Vec::new(),
            placed_bad: Vec::new(),
            collection: Collection::default(),
        }
    }

    async fn sort(&mut self, records: Vec<VendorRecord>) -> Result<(), CollectError> {
        let started = Instant::now();
        let records = self.look_up(records).await?;
        let started = phases::add(Phase::Resolve, started);
        self.place_all(&records)?;
        phases::add(Phase::Group, started);
        Ok(())
    }

    /// Places records whose subscriptions are all in the cache in use, after checking the
    /// contracts and reading the products their assets name; the batches are left empty.
    async fn place_known(&mut self, batches: &mut [Vec<VendorRecord>]) -> Result<(), CollectError> {
        let started = Instant::now();
        self.look_up_scope(self.assets_of(batches.iter().flatten()))
            .await?;
        let started = phases::add(Phase::Resolve, started);
        self.place_all(batches.iter().flatten())?;
        // Dropped where they lie: moved out one by one, each record was copied first.
        batches.iter_mut().for_each(Vec::clear);
        phases::add(Phase::Group, started);
        Ok(())
    }

    /// Waits for `lookup` and takes its answer into the cache in use.
    async fn take_answer(&mut self, lookup: Lookup, asked: &mut Asked) -> Result<(), CollectError> {
        let started = Instant::now();
        let found = lookup
            .await
            .map_err(|error| CollectError::Reader(error.to_string()))??;
        asked.answered(found.keys());
        self.assets_mut().extend(found);
        debug_assert!(
            self.partition_assets.is_some() || self.lookups.assets.len() <= self.cap,
            "asked ahead past the cap"
        );
        phases::add(Phase::Resolve, started);
        Ok(())
    }

    /// The assets records are resolved with: the run's cache, or the partition's.
    fn assets(&self) -> &HashMap<String, AssetMatch> {
        self.partition_assets
            .as_ref()
            .unwrap_or(&self.lookups.assets)
    }

    fn assets_mut(&mut self) -> &mut HashMap<String, AssetMatch> {
        self.partition_assets
            .as_mut()
            .unwrap_or(&mut self.lookups.assets)
    }

    /// Resolves and places the records set aside, one partition at a time, each with a cache
    /// of its own dropped before the next.
    async fn sort_partitions(&mut self) -> Result<(), CollectError> {
        if self.partitions.records() > 0 {
            tracing::info!(
                records = self.partitions.records(),
                cached = self.lookups.assets.len(),
                "resolving the subscriptions past the cache, partition by partition"
            );
        }
        while let Some(mut partition) = self.partitions.next()? {
            self.partition_assets = Some(HashMap::new());
            self.placed.clear();
            // A partition's cache holds all of the partition's subscriptions: with no cap, a
            // chunk's are known or asked for, never left for later.
            let mut asked = Asked::default();
            let mut next = partition.chunk(CHUNK)?;
            let mut pending = self.look_up_ahead(&next, &mut asked, usize::MAX);
            while !next.is_empty() {
                let records = std::mem::take(&mut next);
                if let Ahead::Asked(lookup) = pending {
                    self.take_answer(lookup, &mut asked).await?;
                }
                let started = Instant::now();
                self.look_up_scope(self.assets_of(&records)).await?;
                let started = phases::add(Phase::Resolve, started);
                // The next chunk's subscriptions are asked for while this one is placed (the
                // source's chunks overlap so with their parsing): the same requests, sooner.
                next = partition.chunk(CHUNK)?;
                pending = self.look_up_ahead(&next, &mut asked, usize::MAX);
                self.place_all(&records)?;
                phases::add(Phase::Group, started);
                self.file_bad(Vec::new())?;
            }
            self.partition_assets = None;
            // Keyed by addresses of the partition's assets, which may now be reused.
            self.asset_slots.clear();
            self.placed.clear();
        }
        let collection = &mut self.collection;
        self.partitions.merge_bad(|bad| collection.bad.push(bad))?;
        Ok(())
    }

    /// Asks, on a task of its own, for the subscriptions `records` name that the cache in use
    /// does not hold and that are not asked for already, while `cap` subscriptions can take
    /// them with every subscription asked for before (none once they could not).
    fn look_up_ahead<'r>(
        &self,
        records: impl IntoIterator<Item = &'r VendorRecord>,
        asked: &mut Asked,
        cap: usize,
    ) -> Ahead {
        if asked.stopped {
            return Ahead::Later;
        }
        let cache = self.assets();
        let mut wanted: HashSet<String> = HashSet::default();
        // A placed subscription is in the cache.
        let unplaced =
            |record: &&VendorRecord| !self.placed.contains_key(&address(&record.subscription_id));
        for record in different_subscriptions(records).filter(unplaced) {
            let id = &*record.subscription_id;
            if !cache.contains_key(id) && !asked.pending.contains(id) && !wanted.contains(id) {
                wanted.insert(id.to_string());
            }
        }
        if cache.len() + asked.pending.len() + wanted.len() > cap {
            asked.stopped = true;
            return Ahead::Later;
        }
        if wanted.is_empty() {
            return Ahead::Known;
        }
        asked.pending.extend(wanted.iter().cloned());
        let resolver = self.resolver.clone();
        Ahead::Asked(AbortOnDropHandle::new(tokio::spawn(async move {
            resolver.assets(wanted).await
        })))
    }

    /// Files looked-up records under their groups (rows stored, spilled past the budget).
    fn place_all<'r>(
        &mut self,
        records: impl IntoIterator<Item = &'r VendorRecord>,
    ) -> Result<(), SpillError> {
        for record in records {
            let bad_before = self.placed_bad.len();
            let key = address(&record.subscription_id);
            if !self.placed.contains_key(&key) {
                if let Some((asset, product)) = self.place_subscription(record) {
                    if self.placed.len() >= MAX_PLACED {
                        self.placed.clear();
                    }
                    let placed = Placed {
                        _subscription: record.subscription_id.clone(),
                        asset,
                        product,
                        slot: None,
                    };
                    self.placed.insert(key, placed);
                }
            }
            // Absent when the record's subscription is bad or out of scope (recorded above).
            let placed = self.placed.get(&key);
            let item =
                placed.and_then(|placed| place_item(record, &placed.product, &mut self.placed_bad));
            // A record found bad here carries the id it was given.
            for bad in &mut self.placed_bad[bad_before..] {
                bad.record_id = Some(record.record_id.clone());
            }
            let (Some(placed), Some(item)) = (placed, item) else {
                continue;
            };
            if let Some(slot) = placed.slot {
                self.spiller.push(slot, &placed.asset, item, record)?;
                continue;
            }
            // A group is made by its first row, not by records of it that are refused.
            let (asset, item) = (placed.asset.clone(), item.clone());
            let slot = self.slot_of(&asset);
            if let Some(placed) = self.placed.get_mut(&key) {
                placed.slot = Some(slot);
            }
            self.spiller.push(slot, &asset, &item, record)?;
        }
        Ok(())
    }

    /// The slot of `asset`'s group, found by the asset's address first (one shared copy per
    /// asset, many rows each); a new group gets one.
    fn slot_of(&mut self, asset: &Arc<ResolvedAsset>) -> Slot {
        let address = Arc::as_ptr(asset) as usize;
        if let Some(slot) = self.asset_slots.get(&address) {
            return *slot;
        }
        let pair = (asset.contract_id.clone(), asset.product_id.clone());
        let slot = match self.slots.get(&pair) {
            Some(slot) => *slot,
            None => {
                let slot = self.spiller.add_group();
                self.slots.insert(pair, slot);
                self.marketplaces.push(BTreeSet::new());
                slot
            }
        };
        self.marketplaces[slot].insert(asset.marketplace_id.clone());
        self.asset_slots.insert(address, slot);
        slot
    }

    /// Files a chunk's bad records (found reading it, and placing it) in source order: chunks
    /// follow each other through the source, so the whole list ends up in source order. Once
    /// records are set aside, they go to the partitions' side files, merged in order at the end.
    fn file_bad(&mut self, mut bad: Vec<BadRecord>) -> Result<(), SpillError> {
        bad.append(&mut self.placed_bad);
        // Objects of a multi-object source are read in name order, each with its own lines.
        bad.sort_by(|a, b| (&a.object, a.line, a.element).cmp(&(&b.object, b.line, b.element)));
        for bad in bad {
            if self.partitions.active() {
                self.partitions.push_bad(&bad)?;
            } else {
                self.collection.bad.push(bad);
            }
        }
        Ok(())
    }

    /// Resolves what `records` name that earlier chunks did not, and returns the records to
    /// place now: all of them, unless the cache fills up; then those naming subscriptions it
    /// does not hold are set aside in partitions (new ones are let in, in the order records
    /// name them, while there is room).
    async fn look_up(
        &mut self,
        mut records: Vec<VendorRecord>,
    ) -> Result<Vec<VendorRecord>, CollectError> {
        // A partition's cache holds all of the partition's subscriptions.
        let room = match self.partition_assets {
            Some(_) => usize::MAX,
            None => self.cap.saturating_sub(self.lookups.assets.len()),
        };
        let mut new_subscriptions: HashSet<String> = HashSet::default();
        let mut full = false;
        for record in &records {
            let id = &*record.subscription_id;
            if self.assets().contains_key(id) || new_subscriptions.contains(id) {
                continue;
            }
            if new_subscriptions.len() < room {
                new_subscriptions.insert(id.to_string());
            } else {
                full = true;
            }
        }
        if full {
            let cached = &self.lookups.assets;
            let (now, aside): (Vec<_>, Vec<_>) = records.into_iter().partition(|record| {
                let id = &*record.subscription_id;
                cached.contains_key(id) || new_subscriptions.contains(id)
            });
            let started = Instant::now();
            for record in &aside {
                self.partitions.push(record)?;
            }
            phases::add(Phase::Group, started);
            records = now;
        }
        let found = self.resolver.assets(new_subscriptions).await?;
        self.assets_mut().extend(found);
        self.look_up_scope(self.assets_of(&records)).await?;
        Ok(records)
    }

    /// The assets `records` resolved to, each once: a chunk's thousands of records name a few
    /// hundred assets, and copying and hashing the ids of every record's asset was 3% of a
    /// 10M-record run.
    fn assets_of<'r>(
        &self,
        records: impl IntoIterator<Item = &'r VendorRecord>,
    ) -> Vec<Arc<ResolvedAsset>> {
        let cache = self.assets();
        let mut seen: HashSet<usize> = HashSet::default();
        // A placed subscription's contract was checked and its product read.
        different_subscriptions(records)
            .filter(|r| !self.placed.contains_key(&address(&r.subscription_id)))
            .filter_map(|r| match &cache[&*r.subscription_id] {
                AssetMatch::Found(asset) => Some(asset),
                _ => None,
            })
            .filter(|asset| seen.insert(Arc::as_ptr(asset) as usize))
            .cloned()
            .collect()
    }

    /// Checks the contracts and reads the products of `assets` that earlier chunks did not
    /// name.
    async fn look_up_scope(&mut self, assets: Vec<Arc<ResolvedAsset>>) -> Result<(), ConnectError> {
        let mut new_contracts: BTreeSet<String> = BTreeSet::new();
        for asset in &assets {
            let id = &*asset.contract_id;
            if !self.lookups.contracts_checked.contains(id) && !new_contracts.contains(id) {
                new_contracts.insert(id.to_string());
            }
        }
        let in_scope = self
            .resolver
            .active_distribution_contracts(new_contracts.iter().cloned())
            .await?;
        self.lookups.contracts_checked.extend(new_contracts);
        self.lookups.in_scope_contracts.extend(in_scope);
        let mut new_products: BTreeSet<String> = BTreeSet::new();
        for asset in &assets {
            let id = &*asset.product_id;
            if self
                .lookups
                .in_scope_contracts
                .contains(&*asset.contract_id)
                && !self.lookups.products.contains_key(id)
                && !new_products.contains(id)
            {
                new_products.insert(id.to_string());
            }
        }
        let products = self.resolver.products(new_products).await?;
        self.lookups
            .products
            .extend(products.into_iter().map(|(id, p)| (id, Arc::new(p))));
        Ok(())
    }

    /// The asset and product a looked-up record's subscription resolves to, when its group is
    /// reported; else the record is bad or out of scope (recorded here, `None` returned).
    fn place_subscription(
        &mut self,
        record: &VendorRecord,
    ) -> Option<(Arc<ResolvedAsset>, Arc<ResolvedProduct>)> {
        let line = record.line;
        let asset = match self.assets()[&*record.subscription_id].clone() {
            AssetMatch::Found(asset) => asset,
            AssetMatch::Unknown => {
                self.placed_bad.push(
                    BadRecord::new(
                        line,
                        BadReason::UnknownSubscription,
                        format!(
                            "no asset matches subscription_id {:?}",
                            record.subscription_id
                        ),
                    )
                    .in_element(record.element)
                    .in_object(record.object.clone()),
                );
                return None;
            }
            AssetMatch::Ambiguous(ids) => {
                self.placed_bad.push(
                    BadRecord::new(
                        line,
                        BadReason::UnknownSubscription,
                        format!(
                            "subscription_id {:?} matches several assets: {}",
                            record.subscription_id,
                            ids.join(", ")
                        ),
                    )
                    .in_element(record.element)
                    .in_object(record.object.clone()),
                );
                return None;
            }
        };
        let collection = &mut self.collection;
        if !self
            .lookups
            .in_scope_contracts
            .contains(&*asset.contract_id)
        {
            *collection
                .out_of_scope
                .entry(OutOfScope::ContractNotActiveDistribution)
                .or_default() += 1;
            return None;
        }
        let product = &self.lookups.products[&*asset.product_id];
        if !product.qt {
            *collection
                .out_of_scope
                .entry(OutOfScope::ProductNotQt)
                .or_default() += 1;
            return None;
        }
        Some((asset, product.clone()))
    }

    /// The groups with their currencies.
    async fn finish(self) -> Result<Collection, ConnectError> {
        let Sorter {
            resolver,
            lookups,
            spiller,
            slots,
            marketplaces,
            mut collection,
            ..
        } = self;
        let all: BTreeSet<String> = marketplaces
            .iter()
            .flatten()
            .map(|id| id.to_string())
            .collect();
        let currencies = resolver.currencies(all).await?;
        let mut rows: Vec<Option<GroupRows>> = spiller.finish().into_iter().map(Some).collect();
        for ((contract_id, product_id), slot) in slots {
            let found: BTreeSet<&String> = marketplaces[slot]
                .iter()
                .filter_map(|id| currencies.get(&**id))
                .collect();
            let currency = match found.len() {
                1 => Ok(found.into_iter().next().expect("one").clone()),
                0 => Err("the assets' marketplace has no currency".to_string()),
                _ => Err(format!(
                    "the assets span marketplaces with different currencies ({}); one usage file holds one currency",
                    found.into_iter().cloned().collect::<Vec<_>>().join(", ")
                )),
            };
            let key = GroupKey {
                contract_id: contract_id.to_string(),
                product_id: product_id.to_string(),
            };
            collection.groups.insert(
                key.clone(),
                Group {
                    product: lookups.products[&key.product_id].clone(),
                    key,
                    currency,
                    rows: rows[slot].take().expect("one group a slot"),
                },
            );
        }
        Ok(collection)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_source_of_only_bad_rows_is_handed_on_in_bounded_chunks() {
        let total = CHUNK * 3 + 7;
        let items: Vec<Item> = (1..=total as u64)
            .map(|line| Err(BadRecord::new(line, BadReason::UnparsableField, "bad")))
            .collect();
        let batches: Vec<Result<Vec<Item>, SourceError>> =
            items.chunks(500).map(|batch| Ok(batch.to_vec())).collect();
        let records: RecordStream = futures::stream::iter(batches).boxed();
        let (chunks, mut incoming) = tokio::sync::mpsc::channel(1);
        let (_spare, spares) = std::sync::mpsc::sync_channel(SPARE_BATCHES);
        let reader = tokio::spawn(read_chunks(
            records,
            RecordChecker::new(Period::parse("2024-01").unwrap()).into_stages(),
            chunks,
            spares,
        ));
        let mut sizes = Vec::new();
        while let Some(chunk) = incoming.recv().await {
            let chunk = chunk.unwrap();
            assert_eq!(chunk.read, chunk.bad.len() as u64);
            sizes.push(chunk.bad.len());
        }
        reader.await.unwrap();
        assert_eq!(sizes, [CHUNK, CHUNK, CHUNK, 7]);
    }

    #[test]
    fn a_record_is_placed_under_its_item_only_when_the_item_holds_its_quantity() {
        use crate::usage::workbook::Precision;
        let item = |precision| {
            Arc::new(ResolvedItem {
                precision,
                search: ("item.mpn".into(), "GB".into()),
            })
        };
        let product = ResolvedProduct {
            id: "PRD-1".into(),
            qt: true,
            items: [
                ("WHOLE".to_string(), item(Precision::Integer)),
                ("TWO".to_string(), item(Precision::Decimal(2))),
            ]
            .into_iter()
            .collect(),
        };
        // (item, quantity, why the record is bad)
        let cases = [
            ("WHOLE", "3", None),
            ("WHOLE", "3.5", Some(BadReason::FractionalQuantity)),
            ("TWO", "3.25", None),
            ("TWO", "3.125", Some(BadReason::ExcessPrecision)),
            ("OTHER", "1", Some(BadReason::UnknownItem)),
        ];
        for (item_name, quantity, reason) in cases {
            let record = VendorRecord {
                line: 7,
                element: None,
                object: None,
                subscription_id: "AS-1".into(),
                item: item_name.into(),
                quantity: Quantity::parse(quantity).unwrap(),
                start: NaiveDateTime::default(),
                end: NaiveDateTime::default(),
                record_id: RecordId::Vendor("R-1".into()),
                note: None,
            };
            let mut bad = Vec::new();
            let placed = place_item(&record, &product, &mut bad);
            assert_eq!(placed.is_some(), reason.is_none(), "{item_name} {quantity}");
            assert_eq!(
                bad.iter().map(|b| (b.line, b.reason)).collect::<Vec<_>>(),
                reason.map(|r| (7, r)).into_iter().collect::<Vec<_>>(),
                "{item_name} {quantity}"
            );
        }
    }

    /// Records cycling through subscriptions (placed, unknown, out of scope, another copy of a
    /// placed one's name) and items (known, unknown) are filed by a sorter that remembers what
    /// each subscription resolved to exactly as by one that forgets it after every record.
    #[tokio::test]
    async fn interleaved_subscriptions_are_placed_as_if_each_record_came_alone() {
        use crate::config::{AssetCriteria, ItemCriteria, Secret};
        use crate::connect::{ClientOptions, ConnectClient};
        use crate::usage::workbook::Precision;
        let root = tempfile::tempdir().unwrap();
        let client =
            ConnectClient::new(ClientOptions::new("http://127.0.0.1:9", Secret::new("k"))).unwrap();
        let resolver = Resolver::new(client, AssetCriteria::Id, ItemCriteria::Mpn, 1);
        let asset = |id: &str, contract: &str, product: &str| {
            AssetMatch::Found(Arc::new(ResolvedAsset {
                id: id.into(),
                contract_id: contract.into(),
                product_id: product.into(),
                marketplace_id: "MP-1".into(),
                search: ("asset.id".into(), id.into()),
                recon_id: None,
            }))
        };
        let product = |id: &str, qt: bool| {
            let item = Arc::new(ResolvedItem {
                precision: Precision::Integer,
                search: ("item.mpn".into(), "GB".into()),
            });
            let items = [("GB".to_string(), item)].into_iter().collect();
            (
                id.to_string(),
                Arc::new(ResolvedProduct {
                    id: id.into(),
                    qt,
                    items,
                }),
            )
        };
        let lookups = || Lookups {
            assets: [
                ("AS-1".to_string(), asset("AS-1", "CRD-1", "PRD-1")),
                ("AS-2".to_string(), asset("AS-2", "CRD-2", "PRD-1")),
                ("AS-3".to_string(), asset("AS-3", "CRD-3", "PRD-1")),
                ("AS-4".to_string(), asset("AS-4", "CRD-1", "PRD-2")),
                ("AS-9".to_string(), AssetMatch::Unknown),
            ]
            .into_iter()
            .collect(),
            contracts_checked: ["CRD-1", "CRD-2", "CRD-3"]
                .map(String::from)
                .into_iter()
                .collect(),
            in_scope_contracts: ["CRD-1", "CRD-2"].map(String::from).into_iter().collect(),
            products: [product("PRD-1", true), product("PRD-2", false)]
                .into_iter()
                .collect(),
        };
        let names: Vec<Arc<str>> = ["AS-1", "AS-2", "AS-9", "AS-3", "AS-4", "AS-1"]
            .map(Arc::from)
            .to_vec();
        let records: Vec<VendorRecord> = (0..60u64)
            .map(|line| VendorRecord {
                line,
                element: None,
                object: None,
                subscription_id: names[(line % 6) as usize].clone(),
                item: if line % 7 == 3 { "TB" } else { "GB" }.into(),
                quantity: Quantity::parse("1").unwrap(),
                start: NaiveDateTime::default(),
                end: NaiveDateTime::default(),
                record_id: RecordId::Vendor(format!("R-{line}").into()),
                note: None,
            })
            .collect();
        let mut filed = Vec::new();
        for forget in [false, true] {
            let mut lookups = lookups();
            let spiller = Spiller::new(usize::MAX, root.path().to_path_buf());
            let partitions = Partitions::new(root.path().to_path_buf());
            let mut sorter = Sorter::new(&resolver, &mut lookups, spiller, 100, partitions);
            for record in &records {
                sorter.place_all([record]).unwrap();
                if forget {
                    sorter.placed.clear();
                }
            }
            let bad: Vec<(u64, BadReason, Option<RecordId>)> = sorter
                .placed_bad
                .iter()
                .map(|bad| (bad.line, bad.reason, bad.record_id.clone()))
                .collect();
            let out_of_scope = sorter.collection.out_of_scope.clone();
            let groups: Vec<Vec<(Box<str>, RecordId)>> = sorter
                .spiller
                .finish()
                .iter()
                .map(|rows| {
                    let rows = rows.to_vec().unwrap();
                    rows.into_iter()
                        .map(|row| (row.asset.id.clone(), row.record_id))
                        .collect()
                })
                .collect();
            filed.push((bad, out_of_scope, groups));
        }
        let (bad, out_of_scope, groups) = &filed[0];
        // Two groups (AS-1 and its other copy, AS-2); AS-9 unknown, AS-3 and AS-4 out of scope.
        assert_eq!(groups.len(), 2);
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), 30 - 4);
        assert_eq!(bad.len(), 10 + 4);
        assert_eq!(out_of_scope.values().sum::<u64>(), 20);
        assert_eq!(filed[0], filed[1]);
    }

    #[test]
    fn a_subscription_is_skipped_only_where_the_same_shared_copy_repeats() {
        let record = |subscription: &Arc<str>| VendorRecord {
            line: 1,
            element: None,
            object: None,
            subscription_id: subscription.clone(),
            item: "GB".into(),
            quantity: Quantity::parse("1").unwrap(),
            start: NaiveDateTime::default(),
            end: NaiveDateTime::default(),
            record_id: RecordId::Vendor("R-1".into()),
            note: None,
        };
        let a: Arc<str> = "AS-1".into();
        let b: Arc<str> = "AS-2".into();
        // Another copy of the same text: looked up again (the lookup is by text, so it is found).
        let a_again: Arc<str> = "AS-1".into();
        let records = [&a, &a, &b, &a, &a_again, &a_again, &b, &b]
            .map(record)
            .to_vec();
        let kept: Vec<&str> = different_subscriptions(&records)
            .map(|r| &*r.subscription_id)
            .collect();
        assert_eq!(kept, ["AS-1", "AS-2", "AS-1", "AS-1", "AS-2"]);
    }

    #[test]
    fn external_ids_round_trip_and_foreign_ones_are_refused() {
        let key = GroupKey {
            contract_id: "CRD-1".into(),
            product_id: "PRD-2".into(),
        };
        let period = Period::parse("2024-12").unwrap();
        let id = key.external_id(period);
        assert_eq!(id, "CRD-1:PRD-2:2024-12");
        assert_eq!(GroupKey::parse_external_id(&id), Some((key, period)));
        for foreign in [
            "",
            "CRD-1:PRD-2",
            "CRD-1:PRD-2:2024-13",
            "X:PRD-2:2024-01",
            "CRD-1:PRD-2:2024-01:x",
        ] {
            assert_eq!(GroupKey::parse_external_id(foreign), None, "{foreign}");
        }
    }
}
