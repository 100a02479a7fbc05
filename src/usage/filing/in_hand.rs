//! The files a task of this process is about to submit, so that a file's `ready` event and the
//! scheduled run's follow-up ([`crate::usage::sweep`]), both running in the runner, take turns
//! at it instead of both submitting it (the platform refuses the second submit, which costs a
//! submit and a read for nothing).
//!
//! The event handler takes its turn at its file before it looks at it and keeps it until its
//! submit is answered, waiting while the sweep has the file (it then looks afresh and finds it
//! submitted); the sweep leaves a file alone while an event has it and submits only with a turn
//! it gets at once. Only a courtesy between the tasks of one process: another replica's tasks
//! are kept apart by the replica rule before every submit, and a second submit that happens all
//! the same finds the file submitted, which is success.
//!
//! Files are kept per platform (the client's base URL), as in [`super::recent`]: file ids are
//! unique on one platform only. A file is in the table only while a turn at it is held or
//! awaited.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OwnedMutexGuard;

/// (Platform, file id).
type At = (String, String);

/// One lock per file a turn is held at or awaited for.
static TURNS: Mutex<Option<HashMap<At, Arc<tokio::sync::Mutex<()>>>>> = Mutex::new(None);

/// A turn at a file; the next one waiting gets it when this is dropped (however its holder
/// ends, cancelled included).
#[must_use = "the turn ends when dropped"]
pub struct Turn {
    at: At,
    guard: Option<OwnedMutexGuard<()>>,
}

fn at(platform: &str, file_id: &str) -> At {
    (platform.to_string(), file_id.to_string())
}

/// The lock of `file_id` on `platform`, made when nobody holds or awaits it.
fn lock_of(at: &At) -> Arc<tokio::sync::Mutex<()>> {
    let mut turns = TURNS.lock().unwrap_or_else(PoisonError::into_inner);
    turns
        .get_or_insert_with(HashMap::new)
        .entry(at.clone())
        .or_default()
        .clone()
}

/// The turn at `file_id` on `platform`, once whoever has it now is done.
pub async fn wait_turn(platform: &str, file_id: &str) -> Turn {
    let at = at(platform, file_id);
    let guard = lock_of(&at).lock_owned().await;
    Turn {
        at,
        guard: Some(guard),
    }
}

/// The turn at `file_id` on `platform` if nobody has it now.
pub fn try_turn(platform: &str, file_id: &str) -> Option<Turn> {
    let at = at(platform, file_id);
    let guard = lock_of(&at).try_lock_owned().ok();
    match guard {
        Some(guard) => Some(Turn {
            at,
            guard: Some(guard),
        }),
        None => {
            forget_if_idle(&at);
            None
        }
    }
}

/// Whether a task has the turn at `file_id` on `platform` now.
pub fn is_held(platform: &str, file_id: &str) -> bool {
    let turns = TURNS.lock().unwrap_or_else(PoisonError::into_inner);
    turns
        .as_ref()
        .and_then(|turns| turns.get(&at(platform, file_id)))
        .is_some_and(|lock| lock.try_lock().is_err())
}

/// Drops the file's lock when nobody holds or awaits it any more (the table keeps the only
/// reference). Waiters take their reference under the table's lock, so none can appear here.
fn forget_if_idle(at: &At) {
    let mut turns = TURNS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(turns) = turns.as_mut() {
        if turns
            .get(at)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            turns.remove(at);
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        drop(self.guard.take());
        forget_if_idle(&self.at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const P: &str = "http://127.0.0.1:1/public/v1";

    fn table_len() -> usize {
        let turns = TURNS.lock().unwrap_or_else(PoisonError::into_inner);
        turns.as_ref().map_or(0, |turns| {
            turns
                .keys()
                .filter(|(_, id)| id.starts_with("UF-TEST-TURN"))
                .count()
        })
    }

    #[tokio::test]
    async fn tasks_take_turns_at_a_file_and_the_table_empties() {
        let event = wait_turn(P, "UF-TEST-TURN-1").await;
        assert!(is_held(P, "UF-TEST-TURN-1"));
        assert!(
            try_turn(P, "UF-TEST-TURN-1").is_none(),
            "the sweep leaves it"
        );
        assert!(
            !is_held("http://elsewhere", "UF-TEST-TURN-1"),
            "per platform"
        );
        assert!(!is_held(P, "UF-TEST-TURN-2"), "per file");
        let sweep = try_turn(P, "UF-TEST-TURN-2").expect("nobody has it");
        drop(sweep);
        // A second event waits for the first.
        let second = tokio::spawn(async { wait_turn(P, "UF-TEST-TURN-1").await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!second.is_finished(), "waits its turn");
        drop(event);
        let second = second.await.unwrap();
        assert!(is_held(P, "UF-TEST-TURN-1"));
        drop(second);
        assert!(!is_held(P, "UF-TEST-TURN-1"));
        // A waiter cancelled before its turn came leaves nothing held.
        let held = try_turn(P, "UF-TEST-TURN-3").unwrap();
        let waiting =
            tokio::time::timeout(Duration::from_millis(10), wait_turn(P, "UF-TEST-TURN-3"));
        assert!(waiting.await.is_err());
        drop(held);
        assert!(try_turn(P, "UF-TEST-TURN-3").is_some());
        assert_eq!(
            table_len(),
            0,
            "no file is kept once nobody holds or awaits it"
        );
    }
}
