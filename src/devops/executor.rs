//! Running one task: count it, wait for a slot of its category, resolve its
//! argument and handler, run the handler under the category's time limit, and queue the result
//! on the connection the task came from.
//!
//! The handler runs in its own tokio task so that a panic is caught (as a `JoinError`) and a
//! time-out can abort it; either becomes the category's error result, never a crashed runner.
//! A panic anywhere else in a task's work (resolving its argument, a REST read) is caught too:
//! every task taken gets a result. Reading the socket never waits for any of this.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;

use tracing::{debug, info, info_span, warn, Instrument};

use super::channel::Channel;
use super::outcome;
use super::platform::Snapshot;
use super::protocol::{ResultCode, Task, TaskCategory, TaskOutput};
use super::registry::{HandlerOutcome, TaskContext};
use super::resolve::{self, Prepared};
use super::shared::Shared;
use super::task_client;
use crate::config::RunnerSettings;
use crate::logging::clip;

/// Takes a task received on `channel` and starts it in the background.
pub(crate) fn dispatch(shared: &Arc<Shared>, channel: &Arc<Channel>, task: Task) {
    let task_id = task.options.task_id.clone();
    if shared.stop.draining.is_cancelled() {
        warn!(task_id = %clip(&task_id), "task received while stopping; not taken");
        return;
    }
    if !shared.take(&task_id) {
        debug!(task_id = %clip(&task_id), "task is already being processed; re-delivery ignored");
        return;
    }
    // Counted from now on, so that a reconnect reports it in running_tasks.
    let running = channel.running.start(task.options.task_category);
    let taken = Instant::now();
    let shared = Arc::clone(shared);
    let channel = Arc::clone(channel);
    tokio::spawn(async move {
        let output = match AssertUnwindSafe(execute(&shared, &task))
            .catch_unwind()
            .await
        {
            Ok(output) => output,
            Err(panic) => {
                let output = outcome::runner_error(
                    task.options.task_category,
                    &task.input,
                    format!(
                        "The runner panicked while working on the task: {}",
                        panic_message(panic)
                    ),
                );
                log_result(&output);
                output
            }
        };
        shared
            .metrics
            .task(task.options.task_category, output.result, taken.elapsed());
        let mut result = task;
        result.output = Some(output);
        // Queued before the running count drops, so an idle channel has nothing in flight.
        channel.outbox.push(result);
        drop(running);
    });
}

async fn execute(shared: &Shared, task: &Task) -> TaskOutput {
    let span = info_span!(
        "task",
        task_id = %clip(&task.options.task_id),
        category = %task.options.task_category,
        event_type = %clip(&task.input.event_type),
        object_id = %clip(&task.input.object_id),
    );
    async {
        let _slot = shared.limits.acquire(task.options.task_category).await;
        info!("task started");
        let snapshot = shared.platform.snapshot();
        let output =
            match resolve::prepare(&shared.registry, &snapshot, &shared.environment_id, task).await
            {
                Ok(prepared) => run_handler(shared, &snapshot, task, prepared).await,
                Err(output) => output,
            };
        log_result(&output);
        output
    }
    .instrument(span)
    .await
}

async fn run_handler(
    shared: &Shared,
    snapshot: &Snapshot,
    task: &Task,
    prepared: Prepared,
) -> TaskOutput {
    let category = task.options.task_category;
    let limit = time_limit(&snapshot.settings.runner, category);
    let cancel = shared.stop.abandon.child_token();
    let context = TaskContext {
        task_id: task.options.task_id.clone(),
        category,
        event_type: task.input.event_type.clone(),
        object_id: task.input.object_id.clone(),
        settings: Arc::clone(&snapshot.settings),
        client: task_client::for_task(&snapshot.client, snapshot.service_id.as_deref(), task),
        cancel: cancel.clone(),
        statuses: match category {
            TaskCategory::Background => shared
                .registry
                .subscribed_statuses(&task.input.event_type)
                .to_vec(),
            _ => Vec::new(),
        },
    };
    let started = Instant::now();
    // `handle` itself is called inside the task: a panic before its future exists is caught too.
    let Prepared { handler, argument } = prepared;
    let mut handle =
        tokio::spawn(async move { handler.handle(context, argument).await }.in_current_span());
    let error = |message: String| outcome::runner_error(category, &task.input, message);
    let joined = tokio::select! {
        joined = &mut handle => joined,
        _ = tokio::time::sleep(limit) => {
            cancel.cancel();
            handle.abort();
            return error(format!(
                "The handler did not finish within the {category} time limit of {} s.",
                limit.as_secs()
            ));
        }
        _ = shared.stop.abandon.cancelled() => {
            handle.abort();
            return error("The runner stopped before the handler finished.".into());
        }
    };
    match joined {
        Ok(outcome) => {
            if let (TaskCategory::Background, HandlerOutcome::Success(Some(summary))) =
                (category, &outcome)
            {
                info!(%summary, "handler summary");
            }
            outcome::from_handler(
                category,
                &task.input,
                outcome,
                started.elapsed().as_secs_f64(),
            )
        }
        Err(join) if join.is_panic() => error(format!(
            "The handler panicked: {}",
            panic_message(join.into_panic())
        )),
        Err(join) => error(format!("The handler was cancelled: {join}")),
    }
}

fn time_limit(runner: &RunnerSettings, category: TaskCategory) -> Duration {
    match category {
        TaskCategory::Background => runner.background_time_limit,
        TaskCategory::Interactive => runner.interactive_time_limit,
        TaskCategory::Scheduled => runner.scheduled_time_limit,
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "(no message)".into()
    }
}

fn log_result(output: &TaskOutput) {
    let result = output.result.as_str();
    let detail = output.message.as_deref().unwrap_or("");
    match output.result {
        ResultCode::Success | ResultCode::Skip | ResultCode::Reschedule => {
            info!(result, detail, runtime = output.runtime, "task finished")
        }
        ResultCode::Fail | ResultCode::Retry => {
            warn!(result, detail, runtime = output.runtime, "task failed")
        }
    }
}
