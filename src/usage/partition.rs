//! Records set aside while the run's resolution cache is full, so the memory of a month does
//! not grow with its subscriptions.
//!
//! Collection ([`crate::usage::group`]) resolves a month's subscriptions into a cache of at
//! most `RESOLVE_CACHE_SUBSCRIPTIONS` of them. Once it is full, a record naming a subscription
//! it does not hold is encoded and appended to one of [`PARTITIONS`] files in a scratch
//! directory of the run, chosen by a fixed hash of the subscription id ([`partition_of`]):
//! every record of a subscription lands in the same partition, and the same source always
//! splits the same way. When the source has ended, each partition is read back in order
//! ([`Partitions::next`]) and its records are resolved with a cache of their own, dropped
//! before the next partition: memory holds one partition's subscriptions, about
//! 1/[`PARTITIONS`] of those past the cap. The directory goes with [`Partitions`].
//!
//! Bad records keep source order: once records are set aside, those found bad are written to
//! side files, one for the rest of the source and one per partition (each in source order,
//! as records are), and merged by position at the end ([`Partitions::merge_bad`]).

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::usage::record::{BadRecord, VendorRecord};
use crate::usage::spill::{
    array, get_facts, put_facts, put_optional_text, read_text, text, DecodedTimes, Facts, Input,
    ScratchDir, SpillError,
};

/// Partition files of a month past the cache: at a million subscriptions and the default cap
/// (20,000), each partition names ~15,300 subscriptions, inside the cap. Beyond ~1.3 million a
/// partition's cache passes the cap and grows with the subscriptions (~400 bytes each), one
/// partition at a time; 64 files of 8 KiB write buffers cost 0.5 MiB.
pub const PARTITIONS: usize = 64;

/// Bytes each partition file buffers before writing.
const WRITE_BUFFER: usize = 8 << 10;

/// The partition of `subscription_id`: FNV-1a (64-bit) of its bytes, modulo `partitions`.
/// Fixed, not seeded: a run splits its records the same way every time.
pub fn partition_of(subscription_id: &str, partitions: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in subscription_id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % partitions as u64) as usize
}

/// The partition files of one collection: written while the source is read, then read back
/// one partition at a time.
pub struct Partitions {
    root: PathBuf,
    /// Created with the first record set aside.
    dir: Option<ScratchDir>,
    files: Vec<Partition>,
    /// The next partition [`Partitions::next`] reads.
    next: usize,
    encoded: Vec<u8>,
    /// Bad records found since records were first set aside: the source's, then each
    /// partition's; and the side filed to now.
    bad: Vec<BadSide>,
    bad_side: usize,
}

struct BadSide {
    path: PathBuf,
    writer: Option<BufWriter<File>>,
}

/// Bytes each bad-record side file buffers, writing or merging.
const BAD_BUFFER: usize = 8 << 10;

struct Partition {
    path: PathBuf,
    writer: Option<BufWriter<File>>,
    records: u64,
}

impl Partitions {
    /// Partition files in a scratch directory under `root`, made when first needed.
    pub fn new(root: PathBuf) -> Self {
        Partitions {
            root,
            dir: None,
            files: Vec::new(),
            next: 0,
            encoded: Vec::new(),
            bad: Vec::new(),
            bad_side: 0,
        }
    }

    /// Whether records have been set aside: bad records are then filed with
    /// [`Partitions::push_bad`].
    pub fn active(&self) -> bool {
        self.dir.is_some()
    }

    /// Files a bad record found since records were set aside (in source order within the
    /// source, or within the partition being read).
    pub fn push_bad(&mut self, bad: &BadRecord) -> Result<(), SpillError> {
        let side = &mut self.bad[self.bad_side];
        let failed = |source| SpillError::Scratch {
            path: side.path.clone(),
            source,
        };
        let writer = opened(&mut side.writer, &side.path, BAD_BUFFER)?;
        serde_json::to_writer(&mut *writer, bad).map_err(|e| failed(e.into()))?;
        writer.write_all(b"\n").map_err(failed)
    }

    /// Hands every bad record filed with [`Partitions::push_bad`] to `each`, in source order
    /// (by object, line and element; each side file is in that order).
    pub fn merge_bad(&mut self, mut each: impl FnMut(BadRecord)) -> Result<(), SpillError> {
        let mut sides = Vec::new();
        for side in &mut self.bad {
            let Some(file) = rewound(&mut side.writer, &side.path)? else {
                continue;
            };
            let mut lines = BufReader::with_capacity(BAD_BUFFER, file).lines();
            let mut next = move || -> io::Result<Option<BadRecord>> {
                lines
                    .next()
                    .transpose()?
                    .map(|line| serde_json::from_str(&line).map_err(io::Error::other))
                    .transpose()
            };
            let head = next().map_err(|source| SpillError::Read {
                path: side.path.clone(),
                source,
            })?;
            sides.push((side.path.clone(), head, next));
        }
        loop {
            // The first by position among the sides' next records (few sides: a scan).
            let first = sides
                .iter()
                .enumerate()
                .filter_map(|(at, (_, head, _))| head.as_ref().map(|bad| (at, bad)))
                .min_by(|(_, a), (_, b)| {
                    (&a.object, a.line, a.element).cmp(&(&b.object, b.line, b.element))
                })
                .map(|(at, _)| at);
            let Some(at) = first else {
                return Ok(());
            };
            let (path, head, next) = &mut sides[at];
            let following = next().map_err(|source| SpillError::Read {
                path: path.clone(),
                source,
            })?;
            each(std::mem::replace(head, following).expect("a head"));
        }
    }

    /// Records set aside so far.
    pub fn records(&self) -> u64 {
        self.files.iter().map(|file| file.records).sum()
    }

    /// Appends `record` to its subscription's partition.
    pub fn push(&mut self, record: &VendorRecord) -> Result<(), SpillError> {
        if self.dir.is_none() {
            let dir = ScratchDir::create(&self.root)?;
            tracing::info!(dir = %dir.path().display(), partitions = PARTITIONS, "the month's subscriptions outgrow the resolution cache; setting the records of the others aside in partitions");
            self.files = (0..PARTITIONS)
                .map(|at| Partition {
                    path: dir.path().join(format!("partition-{at:02}")),
                    writer: None,
                    records: 0,
                })
                .collect();
            self.bad = (0..=PARTITIONS)
                .map(|at| BadSide {
                    path: dir.path().join(format!("bad-{at:02}")),
                    writer: None,
                })
                .collect();
            self.dir = Some(dir);
        }
        let partition = &mut self.files[partition_of(&record.subscription_id, PARTITIONS)];
        let writer = opened(&mut partition.writer, &partition.path, WRITE_BUFFER)?;
        self.encoded.clear();
        encode(&mut self.encoded, record);
        writer
            .write_all(&self.encoded)
            .map_err(|source| SpillError::Scratch {
                path: partition.path.clone(),
                source,
            })?;
        partition.records += 1;
        Ok(())
    }

    /// The next partition with records, to read back; `None` after the last.
    pub fn next(&mut self) -> Result<Option<PartitionReader>, SpillError> {
        while let Some(partition) = self.files.get_mut(self.next) {
            self.next += 1;
            // Side 0 is the source's.
            self.bad_side = self.next;
            let Some(file) = rewound(&mut partition.writer, &partition.path)? else {
                continue;
            };
            return Ok(Some(PartitionReader {
                path: partition.path.clone(),
                reader: BufReader::with_capacity(64 << 10, file),
                left: partition.records,
                last: Names::default(),
            }));
        }
        Ok(None)
    }
}

/// The writer of the scratch file at `path`, created on first use.
fn opened<'a>(
    writer: &'a mut Option<BufWriter<File>>,
    path: &Path,
    buffer: usize,
) -> Result<&'a mut BufWriter<File>, SpillError> {
    if writer.is_none() {
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|source| SpillError::Scratch {
                path: path.to_path_buf(),
                source,
            })?;
        *writer = Some(BufWriter::with_capacity(buffer, file));
    }
    Ok(writer.as_mut().expect("opened above"))
}

/// The file `writer` wrote (flushed, from its start), to read back; `None` if never written.
fn rewound(writer: &mut Option<BufWriter<File>>, path: &Path) -> Result<Option<File>, SpillError> {
    let Some(writer) = writer.take() else {
        return Ok(None);
    };
    let failed = |source| SpillError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = writer.into_inner().map_err(|e| failed(e.into_error()))?;
    file.rewind().map_err(failed)?;
    Ok(Some(file))
}

/// One partition's records, read back a chunk at a time.
pub struct PartitionReader {
    path: PathBuf,
    reader: BufReader<File>,
    left: u64,
    last: Names,
}

impl PartitionReader {
    /// Up to `at_most` more records; empty at the end.
    pub fn chunk(&mut self, at_most: usize) -> Result<Vec<VendorRecord>, SpillError> {
        let take = self.left.min(at_most as u64) as usize;
        let mut records = Vec::with_capacity(take);
        for _ in 0..take {
            let record =
                decode(&mut self.reader, &mut self.last).map_err(|source| SpillError::Read {
                    path: self.path.clone(),
                    source,
                })?;
            records.push(record);
        }
        self.left -= take as u64;
        Ok(records)
    }
}

/// The previous record's shared names: records of a subscription follow each other in its
/// partition, so most share them with the one before.
#[derive(Default)]
struct Names {
    subscription_id: Option<Arc<str>>,
    item: Option<Arc<str>>,
    object: Option<Arc<str>>,
    times: DecodedTimes,
}

fn shared(last: &mut Option<Arc<str>>, value: &str) -> Arc<str> {
    match last {
        Some(known) if **known == *value => known.clone(),
        _ => last.insert(Arc::from(value)).clone(),
    }
}

const NONE: u8 = 0;
const SOME: u8 = 1;

/// A record as bytes: line, element, object, subscription, item, quantity, interval, id, note.
fn encode(out: &mut Vec<u8>, record: &VendorRecord) {
    out.extend_from_slice(&record.line.to_le_bytes());
    match record.element {
        Some(element) => {
            out.push(SOME);
            out.extend_from_slice(&element.to_le_bytes());
        }
        None => out.push(NONE),
    }
    put_optional_text(out, record.object.as_deref());
    text(out, &record.subscription_id);
    text(out, &record.item);
    put_facts(out, record);
}

fn decode(input: &mut impl Input, last: &mut Names) -> io::Result<VendorRecord> {
    let corrupt = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let line = u64::from_le_bytes(array(input)?);
    let element = match array(input)? {
        [NONE] => None,
        [SOME] => Some(u64::from_le_bytes(array(input)?)),
        _ => return Err(corrupt("element")),
    };
    let object = read_text(input, |object| shared(&mut last.object, object))?;
    let subscription_id = read_text(input, |id| shared(&mut last.subscription_id, id))?
        .ok_or_else(|| corrupt("subscription"))?;
    let item =
        read_text(input, |item| shared(&mut last.item, item))?.ok_or_else(|| corrupt("item"))?;
    let Facts {
        quantity,
        start,
        end,
        record_id,
        note,
    } = get_facts(input, &mut last.times)?;
    Ok(VendorRecord {
        line,
        element,
        object,
        subscription_id,
        item,
        quantity,
        start,
        end,
        record_id,
        note,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::record::{Quantity, RecordId};
    use chrono::DateTime;

    fn record(n: u64) -> VendorRecord {
        let start = DateTime::from_timestamp(1_704_067_200 + n as i64, 0)
            .unwrap()
            .naive_utc();
        VendorRecord {
            line: n + 2,
            element: n.is_multiple_of(3).then_some(n),
            object: n
                .is_multiple_of(2)
                .then(|| Arc::from(format!("day-{}.csv", n % 4))),
            subscription_id: Arc::from(format!("AS-{}", n % 37)),
            item: Arc::from(if n.is_multiple_of(5) {
                "CPU"
            } else {
                "Disk, é"
            }),
            quantity: Quantity::parse(&format!("{n}.5")).unwrap(),
            start,
            end: start + chrono::Duration::hours(1),
            record_id: match n % 2 {
                0 => RecordId::Vendor(format!("R-{n}").into()),
                _ => RecordId::Derived {
                    digest: [n as u8; 12],
                    occurrence: n as u32,
                },
            },
            note: (n % 4 == 1).then(|| Arc::from("a note")),
        }
    }

    fn spelled(record: &VendorRecord) -> String {
        format!("{record:?}")
    }

    #[test]
    fn the_partition_of_an_id_is_fixed_and_spreads_ids_evenly() {
        // FNV-1a's published values: a run splits its records the same way on every build.
        assert_eq!(
            partition_of("", 1 << 20),
            (0xcbf2_9ce4_8422_2325u64 % (1 << 20)) as usize
        );
        assert_eq!(
            partition_of("a", 1 << 20),
            (0xaf63_dc4c_8601_ec8cu64 % (1 << 20)) as usize
        );
        let mut sizes = [0usize; PARTITIONS];
        for n in 0..100_000 {
            sizes[partition_of(
                &format!("AS-{:04}-{:04}-{:04}", n / 10_000, n / 100 % 100, n % 100),
                PARTITIONS,
            )] += 1;
        }
        let (least, most) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        assert!(*least > 1_300 && *most < 1_830, "{least}..{most}");
    }

    #[test]
    fn bad_records_filed_per_side_are_merged_back_in_source_order() {
        use crate::usage::record::BadReason;
        let root = tempfile::tempdir().unwrap();
        let mut partitions = Partitions::new(root.path().to_path_buf());
        assert!(!partitions.active());
        partitions.push(&record(0)).unwrap();
        partitions.push(&record(1)).unwrap();
        assert!(partitions.active());
        let bad = |object: Option<&str>, line: u64, element: Option<u64>| {
            BadRecord::new(line, BadReason::UnknownSubscription, format!("{line}"))
                .in_element(element)
                .in_object(object.map(Arc::from))
        };
        // The rest of the source, then each partition's: every side in order.
        let source = [
            bad(None, 3, None),
            bad(None, 9, None),
            bad(Some("b"), 1, None),
        ];
        for record in &source {
            partitions.push_bad(record).unwrap();
        }
        let mut from_partitions = vec![
            vec![
                bad(None, 4, None),
                bad(None, 9, Some(2)),
                bad(Some("a"), 7, None),
            ],
            vec![bad(None, 1, None), bad(Some("b"), 2, None)],
        ];
        let mut side = 0;
        while let Some(mut partition) = partitions.next().unwrap() {
            while !partition.chunk(10).unwrap().is_empty() {}
            for record in from_partitions.get(side).into_iter().flatten() {
                partitions.push_bad(record).unwrap();
            }
            side += 1;
        }
        assert!(side >= 1, "a partition read");
        from_partitions.truncate(side);
        let mut expected: Vec<BadRecord> = source.into_iter().collect();
        expected.extend(from_partitions.into_iter().flatten());
        expected
            .sort_by(|a, b| (&a.object, a.line, a.element).cmp(&(&b.object, b.line, b.element)));
        let mut merged = Vec::new();
        partitions.merge_bad(|bad| merged.push(bad)).unwrap();
        assert_eq!(merged, expected);
    }

    #[test]
    fn records_read_back_equal_partition_by_partition_and_the_directory_goes_with_them() {
        let root = tempfile::tempdir().unwrap();
        let records: Vec<VendorRecord> = (0..1_000).map(record).collect();
        let mut partitions = Partitions::new(root.path().to_path_buf());
        assert!(partitions.next().unwrap().is_none(), "nothing set aside");
        for record in &records {
            partitions.push(record).unwrap();
        }
        assert_eq!(partitions.records(), 1_000);
        let mut read = Vec::new();
        let mut seen_partitions = Vec::new();
        while let Some(mut partition) = partitions.next().unwrap() {
            let mut ids = std::collections::BTreeSet::new();
            loop {
                let chunk = partition.chunk(7).unwrap();
                if chunk.is_empty() {
                    break;
                }
                assert!(chunk.len() <= 7);
                ids.extend(
                    chunk
                        .iter()
                        .map(|r| partition_of(&r.subscription_id, PARTITIONS)),
                );
                read.extend(chunk);
            }
            assert_eq!(ids.len(), 1, "one partition's subscriptions");
            seen_partitions.extend(ids);
        }
        assert!(seen_partitions.windows(2).all(|w| w[0] < w[1]), "in order");
        // Within a partition records keep their order: sorted by line they are the source.
        read.sort_by_key(|r| r.line);
        assert_eq!(
            read.iter().map(spelled).collect::<Vec<_>>(),
            records.iter().map(spelled).collect::<Vec<_>>()
        );
        drop(partitions);
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }
}
