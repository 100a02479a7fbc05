//! What a task's handler receives, and which handler that is:
//! background tasks re-check the object's status and fetch its current state (unless their
//! handler reads the object itself), scheduled tasks
//! fetch their schedule and dispatch by its `method`, interactive tasks carry their payload.
//!
//! When that fails, the answer is the task's finished output instead.

use std::sync::Arc;

use serde_json::Value;

use super::outcome;
use super::platform::Snapshot;
use super::protocol::{Task, TaskCategory, TaskOutput};
use super::registry::{Handler, Registry};
use crate::config::Secret;

pub(crate) struct Prepared {
    pub handler: Arc<dyn Handler>,
    pub argument: Value,
}

pub(crate) async fn prepare(
    registry: &Registry,
    snapshot: &Snapshot,
    environment_id: &str,
    task: &Task,
) -> Result<Prepared, TaskOutput> {
    match task.options.task_category {
        TaskCategory::Background => background(registry, snapshot, task).await,
        TaskCategory::Scheduled => scheduled(registry, snapshot, environment_id, task).await,
        TaskCategory::Interactive => interactive(registry, task),
    }
}

fn event_handler(registry: &Registry, task: &Task) -> Result<Arc<dyn Handler>, TaskOutput> {
    let event_type = &task.input.event_type;
    registry.event_handler(event_type).cloned().ok_or_else(|| {
        outcome::unserviceable(
            task.options.task_category,
            &task.input,
            format!("No handler is registered for event type {event_type}."),
        )
    })
}

async fn background(
    registry: &Registry,
    snapshot: &Snapshot,
    task: &Task,
) -> Result<Prepared, TaskOutput> {
    let handler = event_handler(registry, task)?;
    let error =
        |message: String| outcome::runner_error(TaskCategory::Background, &task.input, message);
    let event_type = task.input.event_type.as_str();
    let object_id = task.input.object_id.as_str();
    let definition = snapshot.event_definition(event_type).ok_or_else(|| {
        error(format!(
            "The platform sent no event definition for {event_type}."
        ))
    })?;
    // Objects of multi-account installations are read with the installation's key.
    let client = match &task.options.api_key {
        Some(key) => snapshot.client.with_api_key(Secret::new(key.clone())),
        None => snapshot.client.clone(),
    };
    if handler.reads_own_object() {
        return Ok(Prepared {
            handler,
            argument: Value::Null,
        });
    }
    let statuses = registry.subscribed_statuses(event_type);
    let filter = definition
        .api_collection_filter
        .replace("${_object_id_}", object_id)
        .replace("${_statuses_}", &format!("({})", statuses.join(",")));
    let total = client
        .count(&definition.api_collection_endpoint, &filter)
        .await
        .map_err(|e| error(format!("Status re-check of {object_id} failed: {e}")))?;
    if total == 0 {
        return Err(outcome::status_mismatch(statuses));
    }
    let path = definition.api_resource_endpoint.replace("{pk}", object_id);
    let argument = client
        .get_json::<Value>(&path)
        .await
        .map_err(|e| error(format!("Reading {object_id} failed: {e}")))?;
    Ok(Prepared { handler, argument })
}

async fn scheduled(
    registry: &Registry,
    snapshot: &Snapshot,
    environment_id: &str,
    task: &Task,
) -> Result<Prepared, TaskOutput> {
    let error =
        |message: String| outcome::runner_error(TaskCategory::Scheduled, &task.input, message);
    let schedule_id = &task.input.object_id;
    let service_id = snapshot.service_id.as_deref().ok_or_else(|| {
        error(
            "The platform did not name this extension (setup_response logging.meta.service_id)."
                .into(),
        )
    })?;
    // Schedules are read with the environment key, never an installation's.
    let path = format!(
        "devops/services/{service_id}/environments/{environment_id}/schedules/{schedule_id}"
    );
    let schedule = snapshot
        .client
        .get_json::<Value>(&path)
        .await
        .map_err(|e| error(format!("Reading schedule {schedule_id} failed: {e}")))?;
    let method = schedule
        .get("method")
        .and_then(Value::as_str)
        .ok_or_else(|| error(format!("Schedule {schedule_id} names no method.")))?;
    let handler = registry.schedule_handler(method).cloned().ok_or_else(|| {
        outcome::unserviceable(
            TaskCategory::Scheduled,
            &task.input,
            format!("No handler is registered for schedulable method {method}."),
        )
    })?;
    Ok(Prepared {
        handler,
        argument: schedule,
    })
}

fn interactive(registry: &Registry, task: &Task) -> Result<Prepared, TaskOutput> {
    let handler = event_handler(registry, task)?;
    let empty = match &task.input.data {
        Value::Null => true,
        Value::Object(fields) => fields.is_empty(),
        Value::String(text) => text.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => false,
    };
    if empty {
        return Err(outcome::unserviceable(
            TaskCategory::Interactive,
            &task.input,
            "The interactive task carries no input data.".into(),
        ));
    }
    Ok(Prepared {
        handler,
        argument: task.input.data.clone(),
    })
}
