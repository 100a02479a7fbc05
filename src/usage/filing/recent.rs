//! The files this process created or filled lately, and which group part of which period each
//! one is, so the event of such a file can look at its group's files straight away (the look
//! its `ready` path needs before submitting anyway) instead of first reading the file by id.
//!
//! Files are remembered per platform (the client's base URL): file ids are unique on one
//! platform only, and a process (a test binary) may talk to several; a file id of another
//! platform would send the event to a listing that does not hold it, costing a second read.
//!
//! Only a shortcut, never a source of truth: the event handler uses the answer only when the
//! file is in that listing of the group (ids of another platform, or a file renamed since,
//! simply miss and the file is read by id), and what it then does is decided from the listing,
//! the platform's current state. Bounded: the oldest entries give way beyond [`CAPACITY`].
//!
//! Each file also records whether a submit of it by this process was answered since its last
//! upload ([`submitted`]): the scheduled run's follow-up ([`crate::usage::sweep`]) then knows it
//! submitted from the platform's own answer and need not list it again to see it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use super::late::{self, Part};
use crate::usage::group::GroupKey;
use crate::usage::period::Period;

/// Files remembered: a month's files many times over (each entry is two short strings).
const CAPACITY: usize = 20_000;

#[derive(Default)]
struct Recent {
    /// Platform → file id → the file (looked up without building a key).
    files: HashMap<String, HashMap<String, Entry>>,
    /// (Platform, file id), oldest first.
    order: VecDeque<(String, String)>,
}

struct Entry {
    external_id: String,
    /// A submit of this process was answered since the file was last remembered (filled).
    submitted: bool,
}

impl Recent {
    fn get(&self, platform: &str, file_id: &str) -> Option<&Entry> {
        self.files.get(platform)?.get(file_id)
    }
}

static RECENT: Mutex<Option<Recent>> = Mutex::new(None);

/// Remembers that `file_id` on `platform` is `part` of `key`'s file of `period`.
pub fn remember(platform: &str, file_id: &str, key: &GroupKey, period: Period, part: Part) {
    let mut recent = RECENT.lock().unwrap_or_else(PoisonError::into_inner);
    let recent = recent.get_or_insert_with(Recent::default);
    let entry = Entry {
        external_id: part.external_id(key, period),
        submitted: false,
    };
    let files = recent.files.entry(platform.to_string()).or_default();
    if files.insert(file_id.to_string(), entry).is_none() {
        recent
            .order
            .push_back((platform.to_string(), file_id.to_string()));
    }
    while recent.order.len() > CAPACITY {
        if let Some((platform, file_id)) = recent.order.pop_front() {
            if let Some(files) = recent.files.get_mut(&platform) {
                files.remove(&file_id);
                if files.is_empty() {
                    recent.files.remove(&platform);
                }
            }
        }
    }
}

/// The group, period and part `file_id` on `platform` was remembered as, if it was.
pub fn group_of(platform: &str, file_id: &str) -> Option<(GroupKey, Period, Part)> {
    let recent = RECENT.lock().unwrap_or_else(PoisonError::into_inner);
    late::parse_external_id(&recent.as_ref()?.get(platform, file_id)?.external_id)
}

/// Notes that the platform accepted this process's submit of `file_id` on `platform` (or
/// answered that it was submitted already); a file not remembered is left out.
pub fn submitted(platform: &str, file_id: &str) {
    let mut recent = RECENT.lock().unwrap_or_else(PoisonError::into_inner);
    let entry = recent
        .as_mut()
        .and_then(|r| r.files.get_mut(platform))
        .and_then(|files| files.get_mut(file_id));
    if let Some(entry) = entry {
        entry.submitted = true;
    }
}

/// Whether a submit of `file_id` on `platform` by this process was answered since the file was
/// last filled.
pub fn is_submitted(platform: &str, file_id: &str) -> bool {
    let recent = RECENT.lock().unwrap_or_else(PoisonError::into_inner);
    recent
        .as_ref()
        .and_then(|r| r.get(platform, file_id))
        .is_some_and(|entry| entry.submitted)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "http://127.0.0.1:1/public/v1";

    #[test]
    fn files_are_remembered_with_their_part_and_the_oldest_give_way() {
        let key = GroupKey {
            contract_id: "CRD-1".into(),
            product_id: "PRD-1".into(),
        };
        let period = Period::parse("2024-02").unwrap();
        remember(P, "UF-TEST-RECENT-1", &key, period, Part::Late(2));
        assert_eq!(
            group_of(P, "UF-TEST-RECENT-1"),
            Some((key.clone(), period, Part::Late(2)))
        );
        assert_eq!(
            group_of("http://elsewhere", "UF-TEST-RECENT-1"),
            None,
            "another platform"
        );
        assert_eq!(group_of(P, "UF-TEST-RECENT-NEVER"), None);
        assert!(!is_submitted(P, "UF-TEST-RECENT-1"));
        submitted(P, "UF-TEST-RECENT-1");
        submitted(P, "UF-TEST-RECENT-NEVER");
        assert!(is_submitted(P, "UF-TEST-RECENT-1"));
        assert!(!is_submitted("http://elsewhere", "UF-TEST-RECENT-1"));
        assert!(
            !is_submitted(P, "UF-TEST-RECENT-NEVER"),
            "only remembered files"
        );
        // Filled again (a rebuild): not submitted since.
        remember(P, "UF-TEST-RECENT-1", &key, period, Part::Late(2));
        assert!(!is_submitted(P, "UF-TEST-RECENT-1"));
        for n in 0..CAPACITY {
            remember(
                P,
                &format!("UF-TEST-RECENT-FILL-{n}"),
                &key,
                period,
                Part::Main,
            );
        }
        assert_eq!(group_of(P, "UF-TEST-RECENT-1"), None, "the oldest gave way");
        assert!(group_of(P, &format!("UF-TEST-RECENT-FILL-{}", CAPACITY - 1)).is_some());
    }
}
