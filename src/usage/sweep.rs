//! The scheduled run's own check that every file it uploaded ends submitted.
//!
//! Under the runner, an uploaded file is submitted by its `ready` event: the platform sends
//! the event when it has processed the upload, and the event handler submits the file. One lost
//! event would leave the file `ready` for good (the platform hands an unanswered task out again
//! only after its own time-out, and a vendor should not depend on that alone). So before the
//! scheduled task answers, it follows the files it uploaded (and those it found still being
//! processed) with batched status listings until each has left processing:
//!
//! * `pending`, `accepted`, `closed`, `rejected`: submitted — by the event (or another
//!   replica, or a person), and maybe in the provider's hands already; a file this run
//!   uploaded then counts as created and submitted;
//! * `deleted`: withdrawn, another replica's file won the group;
//! * `ready`: the event should be submitting it. Only a file still `ready` at a look at least
//!   [`EVENT_GRACE`] after it was first seen `ready` is submitted here, with the same replica
//!   rule as the event handler; if the event gets there at the same moment, the second submit
//!   finds the file already submitted, which is success;
//! * `invalid`: the group failed with the platform's detail (the run alerts it);
//! * still processing when `READY_TIMEOUT` runs out: the group failed (a later run retries).
//!
//! The decision per look is [`decide`], a pure function; [`sweep`] carries it out.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::connect::models::{FileStatus, UsageFile};
use crate::connect::Rql;
use crate::usage::filing::{lost, Filer, FilingResult, GroupOutcome, Submission};

/// How long a file may sit `ready` before the run stops waiting for its event and submits it
/// itself. The runner answers a `ready` event within milliseconds of the platform sending it,
/// so a file still `ready` after this long has lost its event.
pub const EVENT_GRACE: Duration = Duration::from_secs(2);

/// Longest pause between two looks.
const MAX_POLL: Duration = Duration::from_secs(30);

/// What to do about one followed file at one look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Look again later.
    Wait,
    /// Its event had its chance: submit it here.
    Submit,
    /// Submitted (by its event, another replica or a person) and maybe in the provider's
    /// hands already: the file's group is filed.
    Submitted,
    /// Withdrawn: another replica's file won the group.
    Withdrawn,
    /// A status this code does not know: not ours to act on.
    Unknown,
    /// The platform refused the upload; the detail says why.
    Invalid(String),
}

/// The step for a file in `status`, first seen `ready` `ready_for` ago (None when it was not
/// `ready` at an earlier look).
pub fn decide(file: &UsageFile, ready_for: Option<Duration>) -> Step {
    match &file.status {
        FileStatus::Ready => match ready_for {
            Some(waited) if waited >= EVENT_GRACE => Step::Submit,
            _ => Step::Wait,
        },
        FileStatus::Draft => Step::Wait,
        status if status.is_processing() => Step::Wait,
        FileStatus::Invalid => Step::Invalid(
            file.error_detail
                .clone()
                .unwrap_or_else(|| "no detail given".into()),
        ),
        status if status.is_done() || *status == FileStatus::Rejected => Step::Submitted,
        FileStatus::Deleted => Step::Withdrawn,
        _ => Step::Unknown,
    }
}

/// Whether the run must follow this group's file after filing: it uploaded it, or found it
/// still being processed and left it to its event.
fn followed(outcome: &GroupOutcome) -> bool {
    match &outcome.result {
        FilingResult::Uploaded => true,
        FilingResult::Skipped(_) => outcome.awaiting_ready,
        _ => false,
    }
}

/// Follows the files the run left to their `ready` events until each is submitted (by its
/// event, or here), invalid, or `READY_TIMEOUT` runs out; updates the outcomes accordingly.
pub async fn sweep(filer: &Filer, outcomes: &mut [GroupOutcome]) {
    if filer.submission != Submission::OnReadyEvent || filer.dry_run {
        return;
    }
    let mut open: HashMap<String, usize> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| followed(o))
        .filter_map(|(i, o)| Some((o.file_id.clone()?, i)))
        .collect();
    if open.is_empty() {
        return;
    }
    tracing::info!(
        files = open.len(),
        "following uploaded files until submitted"
    );
    let started = Instant::now();
    let mut ready_since: HashMap<String, Instant> = HashMap::new();
    let mut interval = filer.poll_interval;
    let mut submitted_here = 0usize;
    loop {
        let ids: Vec<&String> = open.keys().collect();
        let mut files = Vec::with_capacity(ids.len());
        let mut failed_look = None;
        for batch in ids.chunks(crate::usage::resolve::BATCH) {
            match filer
                .client
                .usage_files(Rql::one_of("id", batch.iter().copied()))
                .await
            {
                Ok(found) => files.extend(found),
                Err(error) => failed_look = Some(error),
            }
        }
        if let Some(error) = failed_look {
            tracing::warn!(%error, "looking at the uploaded files failed; looking again");
        }
        let now = Instant::now();
        for file in files {
            let Some(&index) = open.get(&file.id) else {
                continue;
            };
            let seen_ready = ready_since.get(&file.id).map(|at| now - *at);
            if file.status == FileStatus::Ready && seen_ready.is_none() {
                ready_since.insert(file.id.clone(), now);
            }
            let outcome = &mut outcomes[index];
            match decide(&file, seen_ready) {
                Step::Wait => continue,
                // Uploaded here and submitted by its event: created and submitted, as the
                // `report` command would say of it.
                Step::Submitted if outcome.result == FilingResult::Uploaded => {
                    outcome.result = FilingResult::Created;
                }
                Step::Withdrawn if outcome.result == FilingResult::Uploaded => {
                    outcome.result = lost();
                }
                Step::Submitted | Step::Withdrawn | Step::Unknown => {}
                Step::Invalid(detail) => {
                    outcome.result = FilingResult::Failed(format!(
                        "usage file {} is invalid: {detail}",
                        file.id
                    ));
                    outcome.error_detail = Some(detail);
                }
                Step::Submit => {
                    tracing::warn!(file_id = %file.id, "usage file still ready; its ready event was lost, submitting it here");
                    match filer
                        .submit_if_still_preferred(&outcome.key, &file.id)
                        .await
                    {
                        Ok(true) => {
                            submitted_here += 1;
                            if outcome.result == FilingResult::Uploaded {
                                outcome.result = FilingResult::Created;
                            } else {
                                outcome.result = FilingResult::Submitted;
                            }
                        }
                        Ok(false) => {}
                        Err(error) => {
                            tracing::warn!(file_id = %file.id, %error, "submitting failed; looking again");
                            continue;
                        }
                    }
                }
            }
            open.remove(&file.id);
        }
        if open.is_empty() {
            break;
        }
        if started.elapsed() >= filer.ready_timeout {
            for (file_id, index) in open.drain() {
                outcomes[index].result = FilingResult::Failed(format!(
                    "usage file {file_id} was not submitted within READY_TIMEOUT ({:?}); a later run retries",
                    filer.ready_timeout
                ));
            }
            break;
        }
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(MAX_POLL);
    }
    if submitted_here > 0 {
        tracing::warn!(
            files = submitted_here,
            "submitted files whose ready events never came"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(status: FileStatus) -> UsageFile {
        UsageFile {
            id: "UF-1".into(),
            error_detail: (status == FileStatus::Invalid).then(|| "bad row 3".into()),
            status,
            ..UsageFile::default()
        }
    }

    #[test]
    fn every_status_has_its_step() {
        use FileStatus::*;
        let just = Some(Duration::from_millis(10));
        let long = Some(EVENT_GRACE);
        let table: [(FileStatus, Option<Duration>, Step); 14] = [
            (Draft, None, Step::Wait),
            (Uploading, None, Step::Wait),
            (Uploaded, None, Step::Wait),
            (Processing, long, Step::Wait),
            (Ready, None, Step::Wait),
            (Ready, just, Step::Wait),
            (Ready, long, Step::Submit),
            (FileStatus::parse("READY"), long, Step::Submit),
            (Invalid, None, Step::Invalid("bad row 3".into())),
            (Pending, None, Step::Submitted),
            (Accepted, None, Step::Submitted),
            (Rejected, None, Step::Submitted),
            (Deleted, long, Step::Withdrawn),
            (Other("a-status-of-the-future".into()), None, Step::Unknown),
        ];
        for (status, ready_for, step) in table {
            let label = format!("{status} {ready_for:?}");
            assert_eq!(decide(&file(status), ready_for), step, "{label}");
        }
    }
}
