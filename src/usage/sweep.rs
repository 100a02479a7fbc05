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
//! What to do at each look is decided with the rest of filing's rules
//! ([`decide`], [`Trigger::Follow`]); this file carries the steps out and keeps the time.
//!
//! [`EVENT_GRACE`]: crate::usage::filing::decide::EVENT_GRACE

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::connect::models::FileStatus;
use crate::connect::Rql;
use crate::usage::filing::decide::{decide, unexpected, Step, Trigger};
use crate::usage::filing::{lost, Filer, FilingError, FilingResult, GroupOutcome, Submission};

/// Longest pause between two looks.
const MAX_POLL: Duration = Duration::from_secs(30);

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
            let look = Trigger::Follow {
                file_id: file.id.clone(),
                ready_for: seen_ready,
                uploaded_here: outcome.result == FilingResult::Uploaded,
            };
            let steps = decide(&look, std::slice::from_ref(&file));
            if follow_up(filer, steps, outcome, &mut submitted_here).await == Followed::Open {
                continue;
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

/// Whether the sweep keeps following a file after a look.
#[derive(Debug, PartialEq, Eq)]
enum Followed {
    Open,
    Closed,
}

/// Carries out the steps of one look at a followed file, updating its group's outcome.
async fn follow_up(
    filer: &Filer,
    steps: Vec<Step>,
    outcome: &mut GroupOutcome,
    submitted_here: &mut usize,
) -> Followed {
    for step in steps {
        match step {
            Step::LookAgain => return Followed::Open,
            Step::LeaveAlone(_) => return Followed::Closed,
            Step::Conclude(result) => {
                outcome.result = result;
                return Followed::Closed;
            }
            Step::Lost => {
                outcome.result = lost();
                return Followed::Closed;
            }
            Step::Invalid { file_id, detail } => {
                outcome.result = FilingResult::Failed(
                    FilingError::Invalid {
                        file_id,
                        detail: detail.clone(),
                    }
                    .to_string(),
                );
                outcome.error_detail = Some(detail);
                return Followed::Closed;
            }
            Step::SubmitIfPreferred(file_id) => {
                tracing::warn!(%file_id, "usage file still ready; its ready event was lost, submitting it here");
                match filer
                    .submit_if_still_preferred(&outcome.key, outcome.part, &file_id)
                    .await
                {
                    Ok(true) => *submitted_here += 1,
                    // Lost and withdrawn: the group is the winner's; this outcome stays.
                    Ok(false) => return Followed::Closed,
                    Err(error) => {
                        tracing::warn!(%file_id, %error, "submitting failed; looking again");
                        return Followed::Open;
                    }
                }
            }
            other => {
                outcome.result = FilingResult::Failed(unexpected(&[other]));
                return Followed::Closed;
            }
        }
    }
    Followed::Closed
}
