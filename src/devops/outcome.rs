//! Turning what happened to a task into its `output`: the result
//! code each category may answer, the countdown floor, the interactive `data` object, the
//! message length limit.

use serde_json::{json, Value};

use super::protocol::{ResultCode, TaskCategory, TaskInput, TaskOutput};
use super::registry::HandlerOutcome;

/// Longest `output.message` the platform is sent.
pub(crate) const MAX_MESSAGE_CHARS: usize = 4000;
/// Smallest countdown of a `reschedule`.
pub(crate) const MIN_COUNTDOWN: u64 = 30;

/// Interactive events whose failures carry an HTTP-like 400 answer.
const HTTP_ANSWERING_EVENTS: [&str; 2] = [
    "product_action_execution",
    "product_custom_event_processing",
];

/// The output for what a handler returned after running `runtime` seconds.
pub(crate) fn from_handler(
    category: TaskCategory,
    input: &TaskInput,
    outcome: HandlerOutcome,
    runtime: f64,
) -> TaskOutput {
    let output = match (category, outcome) {
        (TaskCategory::Interactive, HandlerOutcome::Success(message)) => {
            // Validation handlers answer with the (possibly modified) request as the body.
            let body = if input.event_type.ends_with("_validation") {
                input.data.clone()
            } else {
                message.clone().map_or(Value::Null, Value::String)
            };
            TaskOutput {
                data: Some(json!({"http_status": 200, "headers": null, "body": body})),
                message,
                ..output(ResultCode::Success)
            }
        }
        (TaskCategory::Interactive, HandlerOutcome::Fail(message)) => {
            interactive_failure(input, message)
        }
        (TaskCategory::Interactive, other) => interactive_failure(
            input,
            format!(
                "interactive handlers answer success or fail, not {}",
                code_of(&other).as_str()
            ),
        ),
        // The platform expects no message on a background success; handlers' summaries are
        // logged by the executor instead.
        (TaskCategory::Background, HandlerOutcome::Success(_)) => output(ResultCode::Success),
        (TaskCategory::Scheduled, HandlerOutcome::Success(message)) => TaskOutput {
            message,
            ..output(ResultCode::Success)
        },
        (_, HandlerOutcome::Fail(message)) => with_message(ResultCode::Fail, message),
        (_, HandlerOutcome::Retry(message)) => with_message(ResultCode::Retry, message),
        (TaskCategory::Background, HandlerOutcome::Skip(message)) => {
            with_message(ResultCode::Skip, message)
        }
        (TaskCategory::Background, HandlerOutcome::Reschedule { countdown }) => TaskOutput {
            countdown: countdown.max(MIN_COUNTDOWN),
            ..output(ResultCode::Reschedule)
        },
        // Schedules answer success or fail only: a schedule with nothing to do succeeded, and
        // "try later" is what retry means.
        (TaskCategory::Scheduled, HandlerOutcome::Skip(message)) => TaskOutput {
            message: Some(message),
            ..output(ResultCode::Success)
        },
        (TaskCategory::Scheduled, HandlerOutcome::Reschedule { countdown }) => with_message(
            ResultCode::Retry,
            format!("the handler asked to run again in {countdown} s"),
        ),
    };
    TaskOutput {
        runtime,
        message: output.message.map(truncate),
        ..output
    }
}

/// The output when the runner, not the handler, failed the task (REST error before the
/// handler, time limit, panic): `retry`, or `fail` for interactive tasks.
pub(crate) fn runner_error(
    category: TaskCategory,
    input: &TaskInput,
    message: String,
) -> TaskOutput {
    failure(ResultCode::Retry, category, input, message)
}

/// The output when nothing can ever process the task (no handler for it): `fail`, so that the
/// platform does not re-deliver it.
pub(crate) fn unserviceable(
    category: TaskCategory,
    input: &TaskInput,
    message: String,
) -> TaskOutput {
    failure(ResultCode::Fail, category, input, message)
}

/// A failure answered as `code`, except interactive tasks, which always answer `fail` with the
/// HTTP-like data object.
fn failure(
    code: ResultCode,
    category: TaskCategory,
    input: &TaskInput,
    message: String,
) -> TaskOutput {
    match category {
        TaskCategory::Interactive => interactive_failure(input, message),
        TaskCategory::Background | TaskCategory::Scheduled => with_message(code, message),
    }
}

/// The runner's `skip` after the status re-check found the object elsewhere.
pub(crate) fn status_mismatch(statuses: &[String]) -> TaskOutput {
    with_message(
        ResultCode::Skip,
        super::registry::status_mismatch_message(statuses),
    )
}

fn interactive_failure(input: &TaskInput, message: String) -> TaskOutput {
    let message = truncate(message);
    let data = HTTP_ANSWERING_EVENTS
        .contains(&input.event_type.as_str())
        .then(|| json!({"http_status": 400, "headers": null, "body": message}));
    TaskOutput {
        data,
        ..with_message(ResultCode::Fail, message)
    }
}

fn code_of(outcome: &HandlerOutcome) -> ResultCode {
    match outcome {
        HandlerOutcome::Success(_) => ResultCode::Success,
        HandlerOutcome::Fail(_) => ResultCode::Fail,
        HandlerOutcome::Skip(_) => ResultCode::Skip,
        HandlerOutcome::Reschedule { .. } => ResultCode::Reschedule,
        HandlerOutcome::Retry(_) => ResultCode::Retry,
    }
}

fn output(result: ResultCode) -> TaskOutput {
    TaskOutput {
        result,
        data: None,
        countdown: 0,
        runtime: 0.0,
        message: None,
    }
}

fn with_message(result: ResultCode, message: String) -> TaskOutput {
    TaskOutput {
        message: Some(truncate(message)),
        ..output(result)
    }
}

fn truncate(message: String) -> String {
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => message[..cut].to_string(),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(event_type: &str) -> TaskInput {
        TaskInput {
            event_type: event_type.into(),
            object_id: "X-1".into(),
            data: json!({"id": "X-1"}),
        }
    }

    #[test]
    fn background_outcomes() {
        let i = input("usage_file_request_processing");
        let bg = TaskCategory::Background;
        let success = from_handler(bg, &i, HandlerOutcome::Success(Some("done".into())), 1.5);
        assert_eq!(
            (success.result, success.message, success.runtime),
            (ResultCode::Success, None, 1.5)
        );
        let reschedule = from_handler(bg, &i, HandlerOutcome::Reschedule { countdown: 5 }, 0.1);
        assert_eq!(
            (reschedule.result, reschedule.countdown),
            (ResultCode::Reschedule, 30)
        );
        let later = from_handler(bg, &i, HandlerOutcome::Reschedule { countdown: 600 }, 0.1);
        assert_eq!(later.countdown, 600);
        let skip = from_handler(bg, &i, HandlerOutcome::Skip("not ours".into()), 0.1);
        assert_eq!(
            (skip.result, skip.message.as_deref()),
            (ResultCode::Skip, Some("not ours"))
        );
        let fail = from_handler(bg, &i, HandlerOutcome::Fail("bad".into()), 0.1);
        assert_eq!((fail.result, fail.data), (ResultCode::Fail, None));
    }

    #[test]
    fn scheduled_outcomes_are_success_fail_or_retry() {
        let i = input("scheduled_execution");
        let sc = TaskCategory::Scheduled;
        let success = from_handler(sc, &i, HandlerOutcome::Success(Some("3 files".into())), 2.0);
        assert_eq!(success.message.as_deref(), Some("3 files"));
        assert_eq!(
            from_handler(sc, &i, HandlerOutcome::Skip("idle".into()), 0.0).result,
            ResultCode::Success
        );
        assert_eq!(
            from_handler(sc, &i, HandlerOutcome::Reschedule { countdown: 60 }, 0.0).result,
            ResultCode::Retry
        );
    }

    #[test]
    fn interactive_outcomes_carry_http_answers() {
        let action = input("product_action_execution");
        let it = TaskCategory::Interactive;
        let success = from_handler(it, &action, HandlerOutcome::Success(Some("ok".into())), 0.1);
        assert_eq!(
            success.data,
            Some(json!({"http_status": 200, "headers": null, "body": "ok"}))
        );
        let fail = runner_error(it, &action, "boom".into());
        assert_eq!(fail.result, ResultCode::Fail);
        assert_eq!(
            fail.data,
            Some(json!({"http_status": 400, "headers": null, "body": "boom"}))
        );
        let validation = input("asset_purchase_request_validation");
        assert_eq!(runner_error(it, &validation, "boom".into()).data, None);
        let valid = from_handler(it, &validation, HandlerOutcome::Success(None), 0.1);
        assert_eq!(valid.data.unwrap()["body"], json!({"id": "X-1"}));
        assert_eq!(
            from_handler(it, &action, HandlerOutcome::Skip("x".into()), 0.0).result,
            ResultCode::Fail
        );
    }

    #[test]
    fn runner_errors_map_per_category() {
        let i = input("usage_file_request_processing");
        assert_eq!(
            runner_error(TaskCategory::Background, &i, "x".into()).result,
            ResultCode::Retry
        );
        assert_eq!(
            runner_error(TaskCategory::Scheduled, &i, "x".into()).result,
            ResultCode::Retry
        );
        assert_eq!(
            unserviceable(TaskCategory::Background, &i, "x".into()).result,
            ResultCode::Fail
        );
    }

    #[test]
    fn messages_are_cut_at_4000_characters() {
        let long = "é".repeat(5000);
        let output = runner_error(TaskCategory::Background, &input("e"), long);
        assert_eq!(output.message.unwrap().chars().count(), MAX_MESSAGE_CHARS);
    }

    #[test]
    fn skip_message_is_exact() {
        let output = status_mismatch(&["ready".into(), "closed".into()]);
        assert_eq!(
            output.message.as_deref(),
            Some("The request status does not match the supported statuses: ready,closed.")
        );
        assert_eq!(output.result, ResultCode::Skip);
    }
}
