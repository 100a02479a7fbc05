//! The rules per usage-file status, in one place: a pure function from what the platform holds
//! for one key (contract, product, month) and what prompted the look, to the steps to take.
//!
//! Filing never keeps state of its own: every run, event and follow-up look reads the platform
//! and acts on what it finds, so the same look gives the same steps whoever takes it — another
//! replica, a restarted process, a repeated event. [`decide`] does no I/O; the executors
//! (`filing/execute.rs` for runs, [`crate::usage::sweep`] for the scheduled run's follow-up,
//! `handlers::file_events` for the platform's events) carry the steps out through the client.
//!
//! The replica rule ([`preferred`]): when two instances create a file for the same key, every
//! side keeps the same one — one already submitted, else the earliest created, else the lowest
//! id — and the others are withdrawn where the platform allows it. Because every side applies
//! the same order to the same platform state, at most one file per key is ever submitted.

use std::time::Duration;

use super::late::Part;
use super::{FilingResult, Submission};
use crate::alert::{AlertKind, Severity};
use crate::connect::models::{FileStatus, UsageFile};
use crate::usage::period::NotEnded;

/// How long a file may sit `ready`, while no other file the scheduled run follows was submitted
/// by its event, before the run stops waiting for the file's event and submits it itself. The
/// runner answers a `ready` event within milliseconds of getting a slot for it; while other
/// files' events are being answered, this one may still be queued behind them (the runner
/// answers a few events at a time, and a month's uploads send thousands at once), but a file
/// still `ready` this long after the last of them has lost its event.
pub const EVENT_GRACE: Duration = Duration::from_secs(2);

/// What prompted a look, and at which moment of filing it comes.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// A run filing the group (the schedule's, or the `report` command's): its first look at the
    /// key's live files, and each look again after it removed a leftover or waited for one.
    /// `part`: the group's main file, or a supplemental file of late records.
    Run { submission: Submission, part: Part },
    /// Right before submitting the ready `file_id` (the run's own upload, a `ready` event's
    /// file, or one the sweep found still ready), at the key's live files: the replica rule.
    Submit { file_id: String },
    /// Before uploading into the existing `file_id` (a draft being filled, a rejected file being
    /// rebuilt), at the file as it is now.
    Upload { file_id: String },
    /// The platform refused the upload into `file_id`; at the file as it is now.
    UploadRefused { file_id: String },
    /// The run's own upload into `file_id` has been processed (the run polls for it).
    Processed { file_id: String },
    /// The platform refused to submit `file_id`; at the file once it is processed.
    SubmitRefused { file_id: String },
    /// The scheduled run's follow-up look at `file_id` (the sweep). `ready_for`: how long ago
    /// it was first seen `ready` (None: not at an earlier look); `events_quiet_for`: how long
    /// ago a look last found one of the followed files submitted by someone else (its event,
    /// mostly), or the first look was, if none was; `event_in_hand`: a `ready` event task of
    /// this process is at the file now ([`super::in_hand`]); `submitted_in_process`: the
    /// platform accepted a submit of the file by this process since its upload
    /// ([`super::recent::is_submitted`]), so the sweep did not list it; `uploaded_here`: this
    /// run uploaded it (rather than finding it being processed).
    Follow {
        file_id: String,
        ready_for: Option<Duration>,
        events_quiet_for: Duration,
        event_in_hand: bool,
        submitted_in_process: bool,
        uploaded_here: bool,
    },
    /// The platform's usage-file event for `file_id`, at the file as it is now. `ended`: whether
    /// its period may be reported; `rebuilds`: how many rebuilds its note counts; `limit`:
    /// `MAX_RESUBMISSIONS`.
    Event {
        file_id: String,
        ended: Result<(), NotEnded>,
        rebuilds: u32,
        limit: u32,
    },
}

/// One step to take, in the order [`decide`] lists them. Every list ends in a step that settles
/// the look (a result, a failure, a hand-over) or asks for another look.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Delete `file_id`, a duplicate that lost the key to `winner`. The platform refusing (its
    /// owner uploaded or submitted it since the listing) leaves it to its owner.
    Withdraw { file_id: String, winner: String },
    /// A duplicate that lost to `winner` but cannot be deleted in its `status`: said in the log.
    KeepDuplicate {
        file_id: String,
        status: FileStatus,
        winner: String,
    },
    /// Delete `file_id`; the platform refusing is an error.
    Delete { file_id: String, reason: String },
    /// `file_id` is the group's file: the group's outcome names it.
    Adopt(String),
    /// Create a file for the key and upload the group's workbook into it.
    Create,
    /// Upload the group's workbook into the existing `file_id` (an empty draft: an interrupted
    /// run's or another replica's, and both build the same workbook).
    Fill(String),
    /// Send the workbook into `file_id` now.
    Upload(String),
    /// `file_id` already holds an upload (another instance's, of the same rows): carry on
    /// with it as uploaded.
    CarryOn(String),
    /// Wait until the platform has processed `file_id`'s upload.
    AwaitProcessing(String),
    /// The scheduled run follows `file_id` after filing until it is submitted (the sweep).
    Follow(String),
    /// Look again: at once within a run, at the next look of the sweep.
    LookAgain,
    /// Apply the replica rule at a fresh look ([`Trigger::Submit`]) and submit `file_id` if it
    /// still wins; when it lost, it is withdrawn and the group is the winner's.
    SubmitIfPreferred(String),
    /// Submit `file_id` now.
    Submit(String),
    /// The platform's refusal stands: its error is the answer.
    Refused,
    /// The group's result (after a refused submit: the file is submitted already, which is
    /// success).
    Conclude(FilingResult),
    /// Another instance's file won the key: this one is (being) withdrawn, the group is theirs.
    Lost,
    /// Nothing to do; the reason says why.
    LeaveAlone(String),
    /// The platform found the upload into `file_id` invalid; `detail` is its `error_detail`.
    Invalid { file_id: String, detail: String },
    /// The look cannot be settled here; the reason says why.
    Fail(String),
    /// Take `file_id` for rebuilding in this process: a second delivery of the same rejection
    /// meanwhile is skipped, never rebuilt twice.
    Claim(String),
    /// Tell a person.
    Alert {
        kind: AlertKind,
        severity: Severity,
        message: String,
        details: String,
    },
    /// The provider accepted the file: logged with its counts.
    LogAccepted,
    /// Rebuild the group from the (corrected) source into the rejected `file_id`; `count` is
    /// this rebuild's number, recorded in the file's note before the upload.
    Rebuild { file_id: String, count: u32 },
    /// The group's main file `file_id` is submitted: compare what the group's files hold with
    /// the source (late records, changes after filing: [`super::late`]).
    CheckLate(String),
}

/// The steps to take for `trigger`, given the key's `files` as the platform shows them: its live
/// files for [`Trigger::Run`] and [`Trigger::Submit`], else the one file the trigger names (a
/// file missing from `files` is taken as deleted, except by the sweep, which looks again).
pub fn decide(trigger: &Trigger, files: &[UsageFile]) -> Vec<Step> {
    let find = |file_id: &str| files.iter().find(|f| f.id == file_id);
    let status_of = |file_id: &str| find(file_id).map_or(FileStatus::Deleted, |f| f.status.clone());
    match trigger {
        Trigger::Run { submission, part } => run(*submission, *part, files),
        Trigger::Submit { file_id } => submit(file_id, files),
        Trigger::Upload { file_id } => {
            upload(file_id, &status_of(file_id), Step::Upload(file_id.clone()))
        }
        Trigger::UploadRefused { file_id } => upload(file_id, &status_of(file_id), Step::Refused),
        Trigger::Processed { file_id } => processed(file_id, find(file_id)),
        Trigger::SubmitRefused { file_id } => match status_of(file_id) {
            // Another replica filling the same file uploaded it again: submit once ready again.
            FileStatus::Ready => vec![Step::SubmitIfPreferred(file_id.clone())],
            // Submitted meanwhile (a replica, the event): success.
            status if status.is_done() => vec![Step::Conclude(FilingResult::Submitted)],
            _ => vec![Step::Refused],
        },
        Trigger::Follow {
            file_id,
            ready_for,
            events_quiet_for,
            event_in_hand,
            submitted_in_process,
            uploaded_here,
        } => match find(file_id) {
            Some(file) => {
                let lost = event_lost(*ready_for, *events_quiet_for, *event_in_hand);
                follow(file, lost, *uploaded_here)
            }
            None if *submitted_in_process => {
                followed_submitted(&FileStatus::Pending, *uploaded_here)
            }
            None => vec![Step::LookAgain],
        },
        Trigger::Event {
            file_id,
            ended,
            rebuilds,
            limit,
        } => match find(file_id) {
            Some(file) => event(file, ended, *rebuilds, *limit),
            None => vec![Step::LeaveAlone(format!(
                "usage file {file_id} is {}; nothing to do",
                FileStatus::Deleted
            ))],
        },
    }
}

fn created_at(file: &UsageFile) -> Option<&str> {
    file.events
        .get("created")
        .and_then(|event| event.at.as_deref())
}

fn status_rank(file: &UsageFile) -> u8 {
    if file.status.is_done() {
        0
    } else {
        1
    }
}

/// The file every replica agrees to keep among several live ones for a key: one already
/// submitted, else the earliest created, else the lowest id.
pub fn preferred(files: &[UsageFile]) -> Option<&UsageFile> {
    files.iter().min_by(|a, b| {
        (status_rank(a), created_at(a), &a.id).cmp(&(status_rank(b), created_at(b), &b.id))
    })
}

/// A run's look at the key: settle duplicates, then act on the file every replica keeps. A
/// submitted main file is compared with the source; a submitted supplemental file is done.
fn run(submission: Submission, part: Part, live: &[UsageFile]) -> Vec<Step> {
    let Some(winner) = preferred(live) else {
        return vec![Step::Create];
    };
    let id = winner.id.clone();
    let mut steps: Vec<Step> = live
        .iter()
        .filter(|file| file.id != winner.id)
        .map(|file| match file.status.is_deletable() {
            true => Step::Withdraw {
                file_id: file.id.clone(),
                winner: id.clone(),
            },
            false => Step::KeepDuplicate {
                file_id: file.id.clone(),
                status: file.status.clone(),
                winner: id.clone(),
            },
        })
        .collect();
    steps.push(Step::Adopt(id.clone()));
    steps.extend(match &winner.status {
        status if status.is_done() => match part {
            Part::Main => vec![Step::CheckLate(id)],
            Part::Late(_) => vec![Step::LeaveAlone(format!("already {status}"))],
        },
        FileStatus::Rejected => vec![Step::LeaveAlone(
            "rejected; the rejection handler rebuilds it".into(),
        )],
        FileStatus::Ready => vec![
            Step::SubmitIfPreferred(id),
            Step::Conclude(FilingResult::Submitted),
        ],
        status if status.is_processing() => match submission {
            Submission::OnReadyEvent => vec![
                Step::Follow(id),
                Step::LeaveAlone(format!("{status}; its ready event submits it")),
            ],
            Submission::Poll => vec![Step::AwaitProcessing(id), Step::LookAgain],
        },
        FileStatus::Draft => vec![Step::Fill(id)],
        FileStatus::Invalid => vec![
            Step::Delete {
                file_id: id,
                reason: "an invalid upload: deleted to be rebuilt".into(),
            },
            Step::LookAgain,
        ],
        other => vec![Step::Fail(format!(
            "usage file {id} is in an unexpected status {:?}",
            other.as_str()
        ))],
    });
    steps
}

/// The look right before submitting `file_id`: submit it only if it still wins the key. Losing
/// drafts are withdrawn too (a create whose answer was lost leaves one when the client, looking
/// for it, finds the other replica's file instead: nobody else would fill it); another
/// replica's uploaded loser is left to it (it withdraws its own at its look before submitting).
/// A listing that does not show `file_id` yet cannot prove another file won.
fn submit(file_id: &str, live: &[UsageFile]) -> Vec<Step> {
    let Some(winner) = preferred(live) else {
        return vec![Step::Submit(file_id.to_string())];
    };
    let mut steps = Vec::new();
    if winner.id != file_id && !live.iter().any(|f| f.id == file_id) {
        steps.push(Step::Delete {
            file_id: file_id.to_string(),
            reason: format!("lost the group to {} before a listing showed it", winner.id),
        });
    }
    for file in live.iter().filter(|f| f.id != winner.id) {
        let withdraw = match file.id == file_id {
            true => file.status.is_deletable(),
            false => file.status == FileStatus::Draft,
        };
        if withdraw {
            steps.push(Step::Withdraw {
                file_id: file.id.clone(),
                winner: winner.id.clone(),
            });
        }
    }
    steps.push(match winner.id == file_id {
        true => Step::Submit(file_id.to_string()),
        false => Step::Lost,
    });
    steps
}

/// Before an upload into an existing file (`otherwise`: [`Step::Upload`]) or after the platform
/// refused one ([`Step::Refused`]): a file withdrawn meanwhile lost the key; one that holds an
/// upload got another instance's (the same rows), which is carried on with.
fn upload(file_id: &str, status: &FileStatus, otherwise: Step) -> Vec<Step> {
    vec![match status {
        FileStatus::Deleted => Step::Lost,
        status if status.holds_upload() => Step::CarryOn(file_id.to_string()),
        _ => otherwise,
    }]
}

/// The run's own upload, processed.
fn processed(file_id: &str, file: Option<&UsageFile>) -> Vec<Step> {
    let status = file.map_or(FileStatus::Deleted, |f| f.status.clone());
    match status {
        FileStatus::Ready => vec![
            Step::SubmitIfPreferred(file_id.to_string()),
            Step::Conclude(FilingResult::Created),
        ],
        FileStatus::Invalid => vec![invalid(file_id, file, "no detail given")],
        status if status.is_done() => vec![Step::Conclude(FilingResult::Created)],
        // Another replica's file won the key and withdrew this one while it was processed.
        FileStatus::Deleted => vec![Step::Lost],
        other => vec![Step::Fail(format!(
            "usage file {file_id} went to {:?} after upload",
            other.as_str()
        ))],
    }
}

fn invalid(file_id: &str, file: Option<&UsageFile>, no_detail: &str) -> Step {
    Step::Invalid {
        file_id: file_id.to_string(),
        detail: file
            .and_then(|f| f.error_detail.clone())
            .unwrap_or_else(|| no_detail.into()),
    }
}

/// Whether a file the sweep follows, found in `status`, has been submitted (by its event,
/// another replica or a person) since the run left it to its event: submitted, or already in
/// the provider's hands.
pub fn submitted_since(status: &FileStatus) -> bool {
    status.is_done() || *status == FileStatus::Rejected
}

/// A followed file found submitted (by its event, another replica or a person), maybe in the
/// provider's hands already: a file this run uploaded counts as created and submitted.
fn followed_submitted(status: &FileStatus, uploaded_here: bool) -> Vec<Step> {
    match uploaded_here {
        true => vec![Step::Conclude(FilingResult::Created)],
        false => vec![Step::LeaveAlone(format!(
            "{status}: submitted by its event, another instance or a person"
        ))],
    }
}

/// Whether a file the sweep sees `ready` has lost its event: it was `ready` at a look
/// [`EVENT_GRACE`] ago or earlier, no event was answered for a followed file since (else the
/// runner is still working through the events, and this one may be queued), and no event task
/// of this process is at the file now.
fn event_lost(
    ready_for: Option<Duration>,
    events_quiet_for: Duration,
    event_in_hand: bool,
) -> bool {
    let waited = ready_for.map(|ready_for| ready_for.min(events_quiet_for));
    !event_in_hand && waited.is_some_and(|waited| waited >= EVENT_GRACE)
}

/// The sweep's look at a file the run left to its `ready` event; `event_lost`: a `ready` one
/// ([`event_lost`]).
fn follow(file: &UsageFile, event_lost: bool, uploaded_here: bool) -> Vec<Step> {
    let id = file.id.clone();
    match &file.status {
        // Its event had its chance: submit it here, with the same replica rule.
        FileStatus::Ready if event_lost => vec![
            Step::SubmitIfPreferred(id),
            Step::Conclude(match uploaded_here {
                true => FilingResult::Created,
                false => FilingResult::Submitted,
            }),
        ],
        FileStatus::Ready | FileStatus::Draft => vec![Step::LookAgain],
        status if status.is_processing() => vec![Step::LookAgain],
        FileStatus::Invalid => vec![invalid(&id, Some(file), "no detail given")],
        // Submitted by its event, another replica or a person, and maybe in the provider's
        // hands already: a file this run uploaded counts as created and submitted.
        status if submitted_since(status) => followed_submitted(status, uploaded_here),
        // Withdrawn: another replica's file won the key.
        FileStatus::Deleted => match uploaded_here {
            true => vec![Step::Lost],
            false => vec![Step::LeaveAlone(
                "withdrawn: another instance's file won the group".into(),
            )],
        },
        other => vec![Step::LeaveAlone(format!(
            "in a status this program does not know ({:?}): not ours to act on",
            other.as_str()
        ))],
    }
}

/// The reaction to a usage-file event, by the file's current status (a late or repeated
/// delivery does the right thing: a rejected file rebuilt since is `ready` or `pending`).
fn event(file: &UsageFile, ended: &Result<(), NotEnded>, rebuilds: u32, limit: u32) -> Vec<Step> {
    let id = file.id.clone();
    if matches!(file.status, FileStatus::Ready | FileStatus::Rejected) {
        // Neither submitted nor rebuilt before its month has ended.
        if let Err(not_ended) = ended {
            return vec![Step::Fail(format!(
                "usage file {id} is left as it is: {not_ended}"
            ))];
        }
    }
    match &file.status {
        FileStatus::Ready => vec![Step::SubmitIfPreferred(id)],
        FileStatus::Invalid => vec![Step::Alert {
            kind: AlertKind::InvalidFile,
            severity: Severity::Error,
            message: "the platform marked the usage file invalid".into(),
            details: file
                .error_detail
                .clone()
                .unwrap_or_else(|| "the platform gave no detail".into()),
        }],
        FileStatus::Accepted => vec![Step::LogAccepted],
        FileStatus::Rejected => {
            let note = file
                .rejection_note
                .clone()
                .unwrap_or_else(|| "no note given".into());
            if rebuilds >= limit {
                return vec![
                    Step::Claim(id),
                    Step::Alert {
                        kind: AlertKind::ResubmissionLimit,
                        severity: Severity::Error,
                        message: format!(
                            "the provider rejected the usage file again after {rebuilds} rebuilds; it is left for a person (MAX_RESUBMISSIONS = {limit})"
                        ),
                        details: note,
                    },
                ];
            }
            vec![
                Step::Claim(id.clone()),
                Step::Alert {
                    kind: AlertKind::RejectedFile,
                    severity: Severity::Warning,
                    message: format!(
                        "the provider rejected the usage file; rebuilding it from the source (rebuild {} of {limit})",
                        rebuilds + 1
                    ),
                    details: note,
                },
                Step::Rebuild {
                    file_id: id,
                    count: rebuilds + 1,
                },
            ]
        }
        other => vec![Step::LeaveAlone(format!(
            "usage file {id} is {other}; nothing to do"
        ))],
    }
}

/// Steps an executor met that its look never produces: a bug, said rather than ignored.
pub(crate) fn unexpected(steps: &[Step]) -> String {
    format!("filing met steps it cannot take here: {steps:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::models::UsageFileEvent;
    use crate::usage::period::Period;
    use FileStatus::*;

    const LIMIT: u32 = 3;

    fn file(id: &str, status: FileStatus) -> UsageFile {
        UsageFile {
            id: id.into(),
            status,
            ..UsageFile::default()
        }
    }

    /// A file created `second` seconds into a day (only the order of creation matters).
    fn made(id: &str, status: FileStatus, second: u32) -> UsageFile {
        let mut file = file(id, status);
        file.events.insert(
            "created".into(),
            UsageFileEvent {
                at: Some(format!("2024-06-01T00:00:{second:02}")),
                by: None,
            },
        );
        file
    }

    fn with_detail(mut file: UsageFile, detail: &str) -> UsageFile {
        file.error_detail = Some(detail.into());
        file
    }

    fn with_rejection(mut file: UsageFile, note: &str) -> UsageFile {
        file.rejection_note = Some(note.into());
        file
    }

    fn every_status() -> Vec<FileStatus> {
        let mut all = FileStatus::KNOWN.to_vec();
        all.push(Other("quarantined".into()));
        all
    }

    fn run(submission: Submission) -> Trigger {
        Trigger::Run {
            submission,
            part: Part::Main,
        }
    }
    fn run_late(submission: Submission) -> Trigger {
        Trigger::Run {
            submission,
            part: Part::Late(1),
        }
    }
    const POLL: Submission = Submission::Poll;
    const EVENT: Submission = Submission::OnReadyEvent;

    fn submit() -> Trigger {
        Trigger::Submit { file_id: s("UF-1") }
    }
    fn upload() -> Trigger {
        Trigger::Upload { file_id: s("UF-1") }
    }
    fn refused_upload() -> Trigger {
        Trigger::UploadRefused { file_id: s("UF-1") }
    }
    fn processed() -> Trigger {
        Trigger::Processed { file_id: s("UF-1") }
    }
    fn refused_submit() -> Trigger {
        Trigger::SubmitRefused { file_id: s("UF-1") }
    }
    /// The sweep's look, no event answered since the first look (a second before it saw the
    /// file ready, if it did) and no event task at the file.
    fn follow(ready_for: Option<Duration>, uploaded_here: bool) -> Trigger {
        let quiet = ready_for.unwrap_or_default() + Duration::from_secs(1);
        follow_with(ready_for, quiet, false, uploaded_here)
    }
    fn follow_with(
        ready_for: Option<Duration>,
        events_quiet_for: Duration,
        event_in_hand: bool,
        uploaded_here: bool,
    ) -> Trigger {
        Trigger::Follow {
            file_id: "UF-1".into(),
            ready_for,
            events_quiet_for,
            event_in_hand,
            submitted_in_process: false,
            uploaded_here,
        }
    }
    fn follow_submitted_here(uploaded_here: bool) -> Trigger {
        Trigger::Follow {
            file_id: "UF-1".into(),
            ready_for: None,
            events_quiet_for: Duration::ZERO,
            event_in_hand: false,
            submitted_in_process: true,
            uploaded_here,
        }
    }
    fn event_at(rebuilds: u32, ended: bool) -> Trigger {
        let period = Period::new(2024, 5).unwrap();
        Trigger::Event {
            file_id: "UF-1".into(),
            ended: if ended {
                Ok(())
            } else {
                Err(NotEnded {
                    period,
                    reportable_at: period.next().start(),
                    delay_hours: 0,
                })
            },
            rebuilds,
            limit: LIMIT,
        }
    }
    fn event(rebuilds: u32) -> Trigger {
        event_at(rebuilds, true)
    }

    fn s(text: &str) -> String {
        text.to_string()
    }
    fn adopt(id: &str) -> Step {
        Step::Adopt(s(id))
    }
    fn withdraw(id: &str, winner: &str) -> Step {
        Step::Withdraw {
            file_id: s(id),
            winner: s(winner),
        }
    }
    fn keep(id: &str, status: FileStatus, winner: &str) -> Step {
        Step::KeepDuplicate {
            file_id: s(id),
            status,
            winner: s(winner),
        }
    }
    fn skip(reason: &str) -> Step {
        Step::LeaveAlone(s(reason))
    }
    fn submit_if(id: &str) -> Step {
        Step::SubmitIfPreferred(s(id))
    }
    fn check_late(id: &str) -> Step {
        Step::CheckLate(s(id))
    }
    fn delete_invalid(id: &str) -> Step {
        Step::Delete {
            file_id: s(id),
            reason: s("an invalid upload: deleted to be rebuilt"),
        }
    }
    fn is_invalid(detail: &str) -> Step {
        Step::Invalid {
            file_id: s("UF-1"),
            detail: s(detail),
        }
    }
    fn created() -> Step {
        Step::Conclude(FilingResult::Created)
    }
    fn submitted() -> Step {
        Step::Conclude(FilingResult::Submitted)
    }
    fn unexpected_status(status: &str) -> Step {
        Step::Fail(format!(
            "usage file UF-1 is in an unexpected status {status:?}"
        ))
    }

    struct Row {
        what: &'static str,
        trigger: Trigger,
        files: Vec<UsageFile>,
        steps: Vec<Step>,
    }

    fn row(what: &'static str, trigger: Trigger, files: Vec<UsageFile>, steps: Vec<Step>) -> Row {
        Row {
            what,
            trigger,
            files,
            steps,
        }
    }

    fn check(rows: Vec<Row>) {
        for Row {
            what,
            trigger,
            files,
            steps,
        } in rows
        {
            let statuses: Vec<String> = files
                .iter()
                .map(|f| format!("{}={}", f.id, f.status))
                .collect();
            assert_eq!(
                decide(&trigger, &files),
                steps,
                "{what}: {trigger:?} at {statuses:?}"
            );
        }
    }

    /// A run's look at one file alone, by its status and who submits uploads.
    #[test]
    fn a_run_acts_on_a_lone_file_in_every_status() {
        let one = |status: FileStatus| vec![file("UF-1", status)];
        let mut rows = vec![
            row("nothing filed yet", run(POLL), vec![], vec![Step::Create]),
            row("nothing filed yet", run(EVENT), vec![], vec![Step::Create]),
        ];
        for submission in [POLL, EVENT] {
            let waiting = |status: &str| match submission {
                Submission::Poll => vec![
                    adopt("UF-1"),
                    Step::AwaitProcessing(s("UF-1")),
                    Step::LookAgain,
                ],
                Submission::OnReadyEvent => vec![
                    adopt("UF-1"),
                    Step::Follow(s("UF-1")),
                    skip(&format!("{status}; its ready event submits it")),
                ],
            };
            rows.extend([
                row(
                    "a draft (an interrupted run's or another replica's) is filled, not deleted",
                    run(submission),
                    one(Draft),
                    vec![adopt("UF-1"), Step::Fill(s("UF-1"))],
                ),
                row(
                    "still processing",
                    run(submission),
                    one(Uploading),
                    waiting("uploading"),
                ),
                row(
                    "still processing",
                    run(submission),
                    one(Uploaded),
                    waiting("uploaded"),
                ),
                row(
                    "still processing",
                    run(submission),
                    one(Processing),
                    waiting("processing"),
                ),
                row(
                    "an invalid upload is deleted and built again",
                    run(submission),
                    one(Invalid),
                    vec![adopt("UF-1"), delete_invalid("UF-1"), Step::LookAgain],
                ),
                row(
                    "ready: submitted after the replica rule",
                    run(submission),
                    one(Ready),
                    vec![adopt("UF-1"), submit_if("UF-1"), submitted()],
                ),
                row(
                    "submitted already: compared with the source",
                    run(submission),
                    one(Pending),
                    vec![adopt("UF-1"), check_late("UF-1")],
                ),
                row(
                    "accepted: compared with the source",
                    run(submission),
                    one(Accepted),
                    vec![adopt("UF-1"), check_late("UF-1")],
                ),
                row(
                    "closed: compared with the source",
                    run(submission),
                    one(Closed),
                    vec![adopt("UF-1"), check_late("UF-1")],
                ),
                row(
                    "a submitted supplemental file: left alone",
                    run_late(submission),
                    one(Pending),
                    vec![adopt("UF-1"), skip("already pending")],
                ),
                row(
                    "a closed supplemental file: left alone",
                    run_late(submission),
                    one(Closed),
                    vec![adopt("UF-1"), skip("already closed")],
                ),
                row(
                    "a supplemental draft is filled like any other",
                    run_late(submission),
                    one(Draft),
                    vec![adopt("UF-1"), Step::Fill(s("UF-1"))],
                ),
                row(
                    "a ready supplemental file is submitted like any other",
                    run_late(submission),
                    one(Ready),
                    vec![adopt("UF-1"), submit_if("UF-1"), submitted()],
                ),
                row(
                    "rejected: the event handler's to rebuild",
                    run(submission),
                    one(Rejected),
                    vec![
                        adopt("UF-1"),
                        skip("rejected; the rejection handler rebuilds it"),
                    ],
                ),
                row(
                    "a listing never holds deleted files",
                    run(submission),
                    one(Deleted),
                    vec![adopt("UF-1"), unexpected_status("deleted")],
                ),
                row(
                    "a status of a future Connect",
                    run(submission),
                    one(Other(s("quarantined"))),
                    vec![adopt("UF-1"), unexpected_status("quarantined")],
                ),
            ]);
        }
        check(rows);
    }

    /// Several live files for one key: every replica keeps the same one and withdraws the rest
    /// where the platform lets it.
    #[test]
    fn a_run_settles_replica_races_the_same_way_on_every_side() {
        check(vec![
            row(
                "two replicas' drafts, neither uploaded yet: the earlier is filled",
                run(EVENT),
                vec![made("UF-2", Draft, 1), made("UF-1", Draft, 0)],
                vec![
                    withdraw("UF-2", "UF-1"),
                    adopt("UF-1"),
                    Step::Fill(s("UF-1")),
                ],
            ),
            row(
                "both uploaded and ready: the earlier is submitted, the later withdrawn",
                run(POLL),
                vec![made("UF-1", Ready, 0), made("UF-2", Ready, 1)],
                vec![
                    withdraw("UF-2", "UF-1"),
                    adopt("UF-1"),
                    submit_if("UF-1"),
                    submitted(),
                ],
            ),
            row(
                "a submitted file wins over an earlier one",
                run(EVENT),
                vec![made("UF-1", Ready, 0), made("UF-2", Pending, 1)],
                vec![withdraw("UF-1", "UF-2"), adopt("UF-2"), check_late("UF-2")],
            ),
            row(
                "two replicas' supplemental files: the earlier is filled, the later withdrawn",
                run_late(EVENT),
                vec![made("UF-2", Draft, 1), made("UF-1", Draft, 0)],
                vec![
                    withdraw("UF-2", "UF-1"),
                    adopt("UF-1"),
                    Step::Fill(s("UF-1")),
                ],
            ),
            row(
                "created at the same moment: the lowest id wins",
                run(EVENT),
                vec![made("UF-2", Draft, 0), made("UF-1", Draft, 0)],
                vec![
                    withdraw("UF-2", "UF-1"),
                    adopt("UF-1"),
                    Step::Fill(s("UF-1")),
                ],
            ),
            row(
                "a loser being processed cannot be deleted: left, said in the log",
                run(EVENT),
                vec![made("UF-1", Pending, 0), made("UF-2", Processing, 1)],
                vec![
                    keep("UF-2", Processing, "UF-1"),
                    adopt("UF-1"),
                    check_late("UF-1"),
                ],
            ),
            row(
                "a rejected loser cannot be deleted either",
                run(EVENT),
                vec![made("UF-1", Ready, 0), made("UF-2", Rejected, 1)],
                vec![
                    keep("UF-2", Rejected, "UF-1"),
                    adopt("UF-1"),
                    submit_if("UF-1"),
                    submitted(),
                ],
            ),
            row(
                "an invalid winner: losers withdrawn, it deleted, the key looked at again",
                run(POLL),
                vec![made("UF-1", Invalid, 0), made("UF-2", Draft, 1)],
                vec![
                    withdraw("UF-2", "UF-1"),
                    adopt("UF-1"),
                    delete_invalid("UF-1"),
                    Step::LookAgain,
                ],
            ),
            row(
                "a crash between create and upload on one replica, the other's upload processing",
                run(EVENT),
                vec![made("UF-1", Processing, 0), made("UF-2", Draft, 1)],
                vec![
                    withdraw("UF-2", "UF-1"),
                    adopt("UF-1"),
                    Step::Follow(s("UF-1")),
                    skip("processing; its ready event submits it"),
                ],
            ),
        ]);
    }

    /// The look right before submitting UF-1 (ready).
    #[test]
    fn the_look_before_submitting_applies_the_replica_rule() {
        check(vec![
            row(
                "alone: submitted",
                submit(),
                vec![made("UF-1", Ready, 0)],
                vec![Step::Submit(s("UF-1"))],
            ),
            row(
                "a listing that does not show it yet cannot prove another won",
                submit(),
                vec![],
                vec![Step::Submit(s("UF-1"))],
            ),
            row(
                "the earlier of two: submitted; the other replica's uploaded loser is left to it",
                submit(),
                vec![made("UF-1", Ready, 0), made("UF-2", Ready, 1)],
                vec![Step::Submit(s("UF-1"))],
            ),
            row(
                "the earlier of two: a losing draft nobody will fill is withdrawn",
                submit(),
                vec![made("UF-1", Ready, 0), made("UF-2", Draft, 1)],
                vec![withdraw("UF-2", "UF-1"), Step::Submit(s("UF-1"))],
            ),
            row(
                "the later of two: it withdraws itself and leaves the group to the winner",
                submit(),
                vec![made("UF-0", Ready, 0), made("UF-1", Ready, 1)],
                vec![withdraw("UF-1", "UF-0"), Step::Lost],
            ),
            row(
                "a ready duplicate of a submitted group is withdrawn, never submitted",
                submit(),
                vec![made("UF-1", Ready, 0), made("UF-2", Pending, 1)],
                vec![withdraw("UF-1", "UF-2"), Step::Lost],
            ),
            row(
                "another won and the listing does not show this one yet: it is deleted",
                submit(),
                vec![made("UF-0", Ready, 0)],
                vec![
                    Step::Delete {
                        file_id: s("UF-1"),
                        reason: s("lost the group to UF-0 before a listing showed it"),
                    },
                    Step::Lost,
                ],
            ),
            row(
                "lost while a replica uploads into it again: not deletable now, left",
                submit(),
                vec![made("UF-0", Pending, 0), made("UF-1", Processing, 1)],
                vec![Step::Lost],
            ),
            row(
                "lost, with a third replica's draft: both withdrawn",
                submit(),
                vec![
                    made("UF-0", Ready, 0),
                    made("UF-1", Ready, 1),
                    made("UF-2", Draft, 2),
                ],
                vec![
                    withdraw("UF-1", "UF-0"),
                    withdraw("UF-2", "UF-0"),
                    Step::Lost,
                ],
            ),
        ]);
    }

    /// The single-file looks of filing, at every status of the file.
    #[test]
    fn single_file_looks_at_every_status() {
        let mut rows = Vec::new();
        for status in every_status() {
            let label = status.to_string();
            let one = || vec![with_detail(file("UF-1", status.clone()), "bad row 3")];
            let holds = status.holds_upload();
            let before_upload = match &status {
                Deleted => Step::Lost,
                _ if holds => Step::CarryOn(s("UF-1")),
                _ => Step::Upload(s("UF-1")),
            };
            rows.push(row(
                "before filling a file",
                upload(),
                one(),
                vec![before_upload],
            ));
            let after_refusal = match &status {
                Deleted => Step::Lost,
                _ if holds => Step::CarryOn(s("UF-1")),
                _ => Step::Refused,
            };
            rows.push(row(
                "an upload refused",
                refused_upload(),
                one(),
                vec![after_refusal],
            ));
            let processed_steps = match &status {
                Ready => vec![submit_if("UF-1"), created()],
                Invalid => vec![is_invalid("bad row 3")],
                Pending | Accepted | Closed => vec![created()],
                Deleted => vec![Step::Lost],
                _ => vec![Step::Fail(format!(
                    "usage file UF-1 went to {label:?} after upload"
                ))],
            };
            rows.push(row(
                "the run's upload processed",
                processed(),
                one(),
                processed_steps,
            ));
            let after_submit_refusal = match &status {
                Ready => vec![submit_if("UF-1")],
                Pending | Accepted | Closed => vec![submitted()],
                _ => vec![Step::Refused],
            };
            rows.push(row(
                "a submit refused",
                refused_submit(),
                one(),
                after_submit_refusal,
            ));
        }
        rows.extend([
            row(
                "a file deleted under us",
                upload(),
                vec![],
                vec![Step::Lost],
            ),
            row(
                "a file deleted under us",
                refused_upload(),
                vec![],
                vec![Step::Lost],
            ),
            row(
                "a file deleted under us",
                processed(),
                vec![],
                vec![Step::Lost],
            ),
            row(
                "a file deleted under us",
                refused_submit(),
                vec![],
                vec![Step::Refused],
            ),
            row(
                "an invalid upload without a detail",
                processed(),
                vec![file("UF-1", Invalid)],
                vec![is_invalid("no detail given")],
            ),
        ]);
        check(rows);
    }

    /// The sweep's look at a file it follows, with and without this run having uploaded it.
    #[test]
    fn the_sweep_follows_every_status() {
        let just = Some(Duration::from_millis(10));
        let long = Some(EVENT_GRACE);
        let one = |status: FileStatus| vec![with_detail(file("UF-1", status), "bad row 3")];
        let mut rows = Vec::new();
        for uploaded_here in [true, false] {
            let done = |status: FileStatus| match uploaded_here {
                true => vec![created()],
                false => vec![skip(&format!(
                    "{status}: submitted by its event, another instance or a person"
                ))],
            };
            let here = || follow(None, uploaded_here);
            rows.extend([
                row("a draft", here(), one(Draft), vec![Step::LookAgain]),
                row("uploading", here(), one(Uploading), vec![Step::LookAgain]),
                row("uploaded", here(), one(Uploaded), vec![Step::LookAgain]),
                row(
                    "processing, however long",
                    follow(long, uploaded_here),
                    one(Processing),
                    vec![Step::LookAgain],
                ),
                row(
                    "ready for the first time",
                    here(),
                    one(Ready),
                    vec![Step::LookAgain],
                ),
                row(
                    "ready, its event still has time",
                    follow(just, uploaded_here),
                    one(Ready),
                    vec![Step::LookAgain],
                ),
                row(
                    "ready past the grace: its event was lost",
                    follow(long, uploaded_here),
                    one(Ready),
                    vec![
                        submit_if("UF-1"),
                        match uploaded_here {
                            true => created(),
                            false => submitted(),
                        },
                    ],
                ),
                row(
                    "upper-case status from the platform",
                    follow(long, uploaded_here),
                    one(FileStatus::parse("READY")),
                    vec![
                        submit_if("UF-1"),
                        match uploaded_here {
                            true => created(),
                            false => submitted(),
                        },
                    ],
                ),
                row(
                    "invalid",
                    here(),
                    one(Invalid),
                    vec![is_invalid("bad row 3")],
                ),
                row(
                    "submitted by its event",
                    here(),
                    one(Pending),
                    done(Pending),
                ),
                row("accepted", here(), one(Accepted), done(Accepted)),
                row("closed", here(), one(Closed), done(Closed)),
                row(
                    "rejected: submitted, then the provider's answer",
                    here(),
                    one(Rejected),
                    done(Rejected),
                ),
                row(
                    "withdrawn by a winning replica",
                    follow(long, uploaded_here),
                    one(Deleted),
                    match uploaded_here {
                        true => vec![Step::Lost],
                        false => vec![skip("withdrawn: another instance's file won the group")],
                    },
                ),
                row(
                    "a status of a future Connect: not ours to act on",
                    here(),
                    one(Other(s("quarantined"))),
                    vec![skip(concat!(
                        "in a status this program does not know (\"quarantined\"): ",
                        "not ours to act on"
                    ))],
                ),
                row("not in this listing", here(), vec![], vec![Step::LookAgain]),
            ]);
        }
        check(rows);
    }

    /// When the sweep takes a `ready` file's event for lost: not while other files' events
    /// are still being answered (it may be queued behind them), nor while an event task of
    /// this process is at the file.
    #[test]
    fn the_sweep_submits_a_ready_file_only_once_the_events_went_quiet() {
        let grace = EVENT_GRACE;
        let short = Duration::from_millis(300);
        let ready = || vec![file("UF-1", Ready)];
        let lost = |uploaded_here: bool| {
            vec![
                submit_if("UF-1"),
                match uploaded_here {
                    true => created(),
                    false => submitted(),
                },
            ]
        };
        let mut rows = Vec::new();
        for uploaded_here in [true, false] {
            let look = |ready_for: Option<Duration>, quiet: Duration, in_hand: bool| {
                follow_with(ready_for, quiet, in_hand, uploaded_here)
            };
            rows.extend([
                row(
                    "ready long, events quiet as long: lost",
                    look(Some(grace), grace, false),
                    ready(),
                    lost(uploaded_here),
                ),
                row(
                    "ready long, the events quiet longer: lost",
                    look(Some(grace * 3), grace * 10, false),
                    ready(),
                    lost(uploaded_here),
                ),
                row(
                    "ready long, another file's event answered lately: maybe queued",
                    look(Some(grace * 10), short, false),
                    ready(),
                    vec![Step::LookAgain],
                ),
                row(
                    "ready long, events quiet, but an event task is at it",
                    look(Some(grace * 10), grace * 10, true),
                    ready(),
                    vec![Step::LookAgain],
                ),
                row(
                    "ready lately, events quiet long",
                    look(Some(short), grace * 10, false),
                    ready(),
                    vec![Step::LookAgain],
                ),
                row(
                    "ready for the first time, events quiet long",
                    look(None, grace * 10, false),
                    ready(),
                    vec![Step::LookAgain],
                ),
                row(
                    "submitted by its event while its task is at it",
                    look(Some(grace), grace, true),
                    vec![file("UF-1", Pending)],
                    match uploaded_here {
                        true => vec![created()],
                        false => vec![skip(
                            "pending: submitted by its event, another instance or a person",
                        )],
                    },
                ),
                row(
                    "submitted by this process (not listed)",
                    follow_submitted_here(uploaded_here),
                    vec![],
                    match uploaded_here {
                        true => vec![created()],
                        false => vec![skip(
                            "pending: submitted by its event, another instance or a person",
                        )],
                    },
                ),
                row(
                    "submitted by this process, listed all the same: as listed",
                    follow_submitted_here(uploaded_here),
                    vec![file("UF-1", Ready)],
                    vec![Step::LookAgain],
                ),
                row(
                    "still processing, events quiet long",
                    look(Some(grace * 10), grace * 10, false),
                    vec![file("UF-1", Processing)],
                    vec![Step::LookAgain],
                ),
            ]);
        }
        check(rows);
    }

    /// The event handler's reaction, by the file's current status.
    #[test]
    fn an_event_reacts_to_every_current_status() {
        let rejected = |note: &str| vec![with_rejection(file("UF-1", Rejected), note)];
        let mut rows = Vec::new();
        for status in every_status() {
            let steps = match &status {
                Ready => vec![submit_if("UF-1")],
                Invalid => vec![Step::Alert {
                    kind: AlertKind::InvalidFile,
                    severity: Severity::Error,
                    message: s("the platform marked the usage file invalid"),
                    details: s("bad row 3"),
                }],
                Accepted => vec![Step::LogAccepted],
                Rejected => vec![
                    Step::Claim(s("UF-1")),
                    Step::Alert {
                        kind: AlertKind::RejectedFile,
                        severity: Severity::Warning,
                        message: s(concat!(
                            "the provider rejected the usage file; ",
                            "rebuilding it from the source (rebuild 1 of 3)"
                        )),
                        details: s("no note given"),
                    },
                    Step::Rebuild {
                        file_id: s("UF-1"),
                        count: 1,
                    },
                ],
                other => vec![skip(&format!("usage file UF-1 is {other}; nothing to do"))],
            };
            rows.push(row(
                "an event",
                event(0),
                vec![with_detail(file("UF-1", status.clone()), "bad row 3")],
                steps,
            ));
        }
        let not_ended = Step::Fail(s(concat!(
            "usage file UF-1 is left as it is: period 2024-05 is not reportable yet: ",
            "it becomes reportable at 2024-06-01 00:00 UTC (when it ends), ",
            "and a period can be reported only after it has ended"
        )));
        rows.extend([
            row(
                "ready before its month ended: not submitted",
                event_at(0, false),
                vec![file("UF-1", Ready)],
                vec![not_ended.clone()],
            ),
            row(
                "rejected before its month ended: not rebuilt",
                event_at(0, false),
                rejected("too high"),
                vec![not_ended],
            ),
            row(
                "invalid before its month ended: alerted all the same",
                event_at(0, false),
                vec![file("UF-1", Invalid)],
                vec![Step::Alert {
                    kind: AlertKind::InvalidFile,
                    severity: Severity::Error,
                    message: s("the platform marked the usage file invalid"),
                    details: s("the platform gave no detail"),
                }],
            ),
            row(
                "rejected below the limit: rebuilt, counted as the next rebuild",
                event(2),
                rejected("quantity looks too high"),
                vec![
                    Step::Claim(s("UF-1")),
                    Step::Alert {
                        kind: AlertKind::RejectedFile,
                        severity: Severity::Warning,
                        message: s(concat!(
                            "the provider rejected the usage file; ",
                            "rebuilding it from the source (rebuild 3 of 3)"
                        )),
                        details: s("quantity looks too high"),
                    },
                    Step::Rebuild {
                        file_id: s("UF-1"),
                        count: 3,
                    },
                ],
            ),
            row(
                "rejected at the limit: left for a person",
                event(LIMIT),
                rejected("still too high"),
                vec![
                    Step::Claim(s("UF-1")),
                    Step::Alert {
                        kind: AlertKind::ResubmissionLimit,
                        severity: Severity::Error,
                        message: s(concat!(
                            "the provider rejected the usage file again after 3 rebuilds; ",
                            "it is left for a person (MAX_RESUBMISSIONS = 3)"
                        )),
                        details: s("still too high"),
                    },
                ],
            ),
            row(
                "a rejection delivered again after the rebuild: the file is ready, submitted",
                event(1),
                vec![file("UF-1", Ready)],
                vec![submit_if("UF-1")],
            ),
            row(
                "a rejection delivered again after the resubmission: pending, nothing to do",
                event(1),
                vec![file("UF-1", Pending)],
                vec![skip("usage file UF-1 is pending; nothing to do")],
            ),
        ]);
        check(rows);
    }

    /// Every list of steps ends in one that settles the look or asks for another.
    #[test]
    fn every_plan_ends_settled() {
        let triggers = [
            run(POLL),
            run(EVENT),
            run_late(POLL),
            submit(),
            upload(),
            refused_upload(),
            processed(),
            refused_submit(),
            follow(None, true),
            follow(Some(EVENT_GRACE), false),
            follow_with(Some(EVENT_GRACE), EVENT_GRACE, true, true),
            follow_submitted_here(true),
            event(0),
            event(LIMIT),
            event_at(0, false),
        ];
        for trigger in &triggers {
            for status in every_status() {
                for files in [
                    vec![],
                    vec![file("UF-1", status.clone())],
                    vec![file("UF-0", Ready), file("UF-1", status.clone())],
                ] {
                    let steps = decide(trigger, &files);
                    let last = steps.last().expect("at least one step");
                    let settles = !matches!(
                        last,
                        Step::Withdraw { .. }
                            | Step::KeepDuplicate { .. }
                            | Step::Delete { .. }
                            | Step::Adopt(_)
                            | Step::AwaitProcessing(_)
                            | Step::Follow(_)
                            | Step::Claim(_)
                    );
                    assert!(settles, "{trigger:?} at {status}: {steps:?}");
                }
            }
        }
    }

    #[test]
    fn the_preferred_file_is_the_same_whatever_the_listing_order() {
        let files = vec![
            made("UF-3", Ready, 0),
            made("UF-2", Draft, 0),
            made("UF-4", Pending, 9),
            made("UF-1", Processing, 1),
        ];
        let mut reversed = files.clone();
        reversed.reverse();
        assert_eq!(preferred(&files).unwrap().id, "UF-4", "submitted first");
        assert_eq!(preferred(&reversed).unwrap().id, "UF-4");
        let open: Vec<UsageFile> = files.into_iter().filter(|f| f.id != "UF-4").collect();
        assert_eq!(
            preferred(&open).unwrap().id,
            "UF-2",
            "earliest, then lowest id"
        );
        assert!(preferred(&[]).is_none());
    }
}
