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
//! * `ready`: the event should be submitting it. The runner answers events a few at a time,
//!   and a month's uploads send thousands of them at once, so an event may wait its turn for
//!   long. A file is taken for having lost its event, and submitted here with the same replica
//!   rule as the event handler, only once it has been `ready` for [`EVENT_GRACE`] while no
//!   event was answered for another followed file (no look found one submitted), and while no
//!   event task of this process is at it ([`in_hand`]); the sweep submits with its own turn at
//!   the file, so the event, when it comes, finds the file submitted. (An event answered by
//!   another replica at the same moment makes a second submit, which finds the file already
//!   submitted: success.) Such files are submitted several at a time;
//! * `invalid`: the group failed with the platform's detail (the run alerts it);
//! * still processing when `READY_TIMEOUT` runs out: the group failed (a later run retries).
//!
//! Looks come every `READY_POLL_INTERVAL_MS` while they find files moving (turned `ready`,
//! submitted, settled), so the task answers soon after its last file is submitted; the pause
//! doubles (up to [`MAX_POLL`]) while nothing moves, as when the platform is slow to process.
//! A look lists only what it needs: a file whose submit by this process's event was answered
//! is known submitted ([`recent`]), and while events are being answered a file already seen
//! `ready` waits for the next full look ([`FULL_LOOKS_AFTER`]).
//!
//! What to do at each look is decided with the rest of filing's rules
//! ([`decide`], [`Trigger::Follow`]); this file carries the steps out and keeps the time.
//!
//! [`EVENT_GRACE`]: crate::usage::filing::decide::EVENT_GRACE
//! [`in_hand`]: crate::usage::filing::in_hand
//! [`recent`]: crate::usage::filing::recent

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::connect::models::{FileStatus, UsageFile};
use crate::connect::Rql;
use crate::usage::filing::decide::{
    decide, submitted_since, unexpected, Step, Trigger, EVENT_GRACE,
};
use crate::usage::filing::late::Part;
use crate::usage::filing::{
    in_hand, lost, recent, Filer, FilingError, FilingResult, GroupOutcome, Submission,
};
use crate::usage::group::GroupKey;

/// Longest pause between two looks.
const MAX_POLL: Duration = Duration::from_secs(30);

/// How long after a look last found events being answered the files already seen `ready` are
/// listed again: well within [`EVENT_GRACE`], so that the events' quiet is seen in time.
const FULL_LOOKS_AFTER: Duration = Duration::from_millis(EVENT_GRACE.as_millis() as u64 / 2);

/// Files whose events were lost submitted at once (the client's own limit, `API_CONCURRENCY`,
/// bounds the requests in flight).
const SUBMITS_AT_ONCE: usize = 32;

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
    let platform = filer.client.base_url().to_string();
    let started = Instant::now();
    let mut ready_since: HashMap<String, Instant> = HashMap::new();
    // When a look last found a followed file submitted by someone else (the first look's time
    // until one does): the runner is answering events meanwhile.
    let mut events_answered: Option<Instant> = None;
    let mut interval = filer.poll_interval;
    let mut submitted_here = 0usize;
    loop {
        // Files this process's events submitted are known without a listing. While a look
        // found events being answered lately, files already seen `ready` are not listed either:
        // none is submitted here before the events have been quiet for EVENT_GRACE, and their
        // events' submits are known (another replica's are seen at the next full look).
        let answering = events_answered.is_some_and(|at| at.elapsed() < FULL_LOOKS_AFTER);
        let mut submitted: HashSet<&String> = HashSet::new();
        let mut listed: Vec<&String> = Vec::new();
        for id in open.keys() {
            if recent::is_submitted(&platform, id) {
                submitted.insert(id);
            } else if !(answering && ready_since.contains_key(id)) {
                listed.push(id);
            }
        }
        let mut files: HashMap<String, UsageFile> = look(filer, &listed)
            .await
            .into_iter()
            .map(|file| (file.id.clone(), file))
            .collect();
        let now = Instant::now();
        let answered =
            !submitted.is_empty() || files.values().any(|file| submitted_since(&file.status));
        if answered || events_answered.is_none() {
            events_answered = Some(now);
        }
        let events_quiet_for = now - events_answered.unwrap_or(now);
        let mut moved = answered;
        let mut looks = Vec::new();
        for (file_id, &index) in &open {
            let file = files.remove(file_id);
            let submitted_in_process = submitted.contains(&file_id);
            // Nothing new about a file neither listed nor known submitted.
            if file.is_none() && !submitted_in_process {
                continue;
            }
            let seen_ready = ready_since.get(file_id).map(|at| now - *at);
            let ready = file.as_ref().is_some_and(|f| f.status == FileStatus::Ready);
            if ready && seen_ready.is_none() {
                ready_since.insert(file_id.clone(), now);
                moved = true;
            }
            let look = Trigger::Follow {
                file_id: file_id.clone(),
                ready_for: seen_ready,
                events_quiet_for,
                event_in_hand: in_hand::is_held(&platform, file_id),
                submitted_in_process,
                uploaded_here: outcomes[index].result == FilingResult::Uploaded,
            };
            let steps = decide(&look, file.as_slice());
            looks.push((file_id.clone(), index, steps));
        }
        // Most looks only read the files; the submits of files whose events were lost go out
        // together.
        let (view, on): (&[GroupOutcome], &str) = (outcomes, &platform);
        let settled: Vec<(String, usize, Followed, bool)> = futures::stream::iter(looks)
            .map(|(file_id, index, steps)| async move {
                let outcome = &view[index];
                let (followed, submitted) =
                    follow_up(filer, on, steps, &outcome.key, outcome.part).await;
                (file_id, index, followed, submitted)
            })
            .buffer_unordered(SUBMITS_AT_ONCE)
            .collect()
            .await;
        for (file_id, index, followed, submitted) in settled {
            submitted_here += usize::from(submitted);
            let Followed::Closed(settled) = followed else {
                continue;
            };
            open.remove(&file_id);
            moved = true;
            if let Some(Settled {
                result,
                error_detail,
            }) = settled
            {
                outcomes[index].result = result;
                if error_detail.is_some() {
                    outcomes[index].error_detail = error_detail;
                }
            }
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
        interval = match moved {
            true => filer.poll_interval,
            false => (interval * 2).min(MAX_POLL),
        };
        tokio::time::sleep(interval).await;
    }
    if submitted_here > 0 {
        tracing::warn!(
            files = submitted_here,
            "submitted files whose ready events never came"
        );
    }
}

/// The files `ids` as the platform shows them now, in batched listings. A listing that fails
/// is said in the log; its files are looked at again next time.
async fn look(filer: &Filer, ids: &[&String]) -> Vec<UsageFile> {
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
    files
}

/// Whether the sweep keeps following a file after a look.
#[derive(Debug, PartialEq)]
enum Followed {
    Open,
    /// Done with the file; its group's outcome becomes this, if anything.
    Closed(Option<Settled>),
}

/// What a followed file's group came to.
#[derive(Debug, PartialEq)]
struct Settled {
    result: FilingResult,
    error_detail: Option<String>,
}

impl Followed {
    fn with(result: FilingResult) -> Followed {
        Followed::Closed(Some(Settled {
            result,
            error_detail: None,
        }))
    }
}

/// Carries out the steps of one look at a followed file of `key`'s `part`; true with the
/// answer when it submitted the file here.
async fn follow_up(
    filer: &Filer,
    platform: &str,
    steps: Vec<Step>,
    key: &GroupKey,
    part: Part,
) -> (Followed, bool) {
    let mut submitted = false;
    for step in steps {
        let followed = match step {
            Step::LookAgain => Followed::Open,
            Step::LeaveAlone(_) => Followed::Closed(None),
            Step::Conclude(result) => Followed::with(result),
            Step::Lost => Followed::with(lost()),
            Step::Invalid { file_id, detail } => Followed::Closed(Some(Settled {
                result: FilingResult::Failed(
                    FilingError::Invalid {
                        file_id,
                        detail: detail.clone(),
                    }
                    .to_string(),
                ),
                error_detail: Some(detail),
            })),
            Step::SubmitIfPreferred(file_id) => {
                // An event task of this process got to the file since the look: it is its.
                let Some(_turn) = in_hand::try_turn(platform, &file_id) else {
                    return (Followed::Open, false);
                };
                tracing::warn!(%file_id, "usage file still ready; its ready event was lost, submitting it here");
                match filer.submit_if_still_preferred(key, part, &file_id).await {
                    Ok(true) => submitted = true,
                    // Lost and withdrawn: the group is the winner's; this outcome stays.
                    Ok(false) => return (Followed::Closed(None), false),
                    Err(error) => {
                        tracing::warn!(%file_id, %error, "submitting failed; looking again");
                        return (Followed::Open, false);
                    }
                }
                continue;
            }
            other => Followed::with(FilingResult::Failed(unexpected(&[other]))),
        };
        return (followed, submitted);
    }
    (Followed::Closed(None), submitted)
}
