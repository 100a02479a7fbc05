//! A rebuild's read of the source: only the records that may belong to the rebuilt group go on
//! to resolution and grouping, yet each of them comes out exactly as in the full run.
//!
//! Which records may belong to the group is the resolver's scope (the group's assets, see
//! [`Resolver::scoped_to`]). Every record of the source is still checked here, in source order,
//! by the run's one [`RecordChecker`]: a record's fate depends on the records before it (a
//! repeated record id is refused; a record without an id gets one from its content and how many
//! identical records came before), so checking only the group's records could keep a record the
//! full run refuses. A kept record carries the id the full check gave it, so checking it again
//! downstream (among the group's records only) neither refuses it nor renames it.

use futures::{StreamExt, TryStreamExt};

use crate::usage::period::Period;
use crate::usage::record::RecordChecker;
use crate::usage::resolve::Resolver;
use crate::usage::source::RecordStream;

/// `records` reduced to the good records whose subscription `resolver` may resolve, each with
/// its record id written out; source errors pass through, bad records are dropped (a rebuild
/// files rows, it does not report bad records).
pub(crate) fn within_scope(
    records: RecordStream,
    period: Period,
    resolver: Resolver,
) -> RecordStream {
    let mut checker = RecordChecker::new(period);
    records
        .map_ok(move |items| {
            items
                .into_iter()
                .filter_map(|item| {
                    let raw = item.ok()?;
                    let candidate = raw
                        .subscription_id
                        .as_deref()
                        .is_some_and(|id| resolver.may_resolve(id.trim()));
                    let copy = candidate.then(|| raw.clone());
                    match (checker.check(raw), copy) {
                        (Ok(record), Some(mut copy)) => {
                            copy.record_id = Some(record.record_id.spelled(period).into());
                            Some(Ok(copy))
                        }
                        _ => None,
                    }
                })
                .collect()
        })
        .boxed()
}
