//! The handler registry: which code runs for which event type and schedulable.
//!
//! Declarations come from `extension.json` and handlers from code; [`RegistryBuilder::build`]
//! refuses any disagreement between the two (a declared event or schedulable without a
//! handler, a handler nobody declared, one registered twice), so what the runner announces in
//! `setup_request` is always exactly what it can serve.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::extension::{DescriptorError, ExtensionDescriptor, EXTENSION_JSON};
use super::protocol::{SetupRequest, TaskCategory};
use crate::config::Settings;
use crate::connect::ConnectClient;

/// What a handler made of its task; the runner turns it into the task's result code.
#[derive(Debug, Clone, PartialEq)]
pub enum HandlerOutcome {
    /// Done. The message is reported for scheduled and interactive tasks (for background tasks
    /// the platform expects none, so it is only logged).
    Success(Option<String>),
    /// Failed for good; the platform will not re-deliver.
    Fail(String),
    /// Nothing to do for this object (background tasks only).
    Skip(String),
    /// Deliver the task again after `countdown` seconds (background only; at least 30 s).
    Reschedule { countdown: u64 },
    /// A failure that a later attempt may fix.
    Retry(String),
}

/// Everything a handler gets besides its argument (the object, schedule or payload).
#[derive(Clone)]
pub struct TaskContext {
    pub task_id: String,
    pub category: TaskCategory,
    pub event_type: String,
    pub object_id: String,
    /// Settings with the extension variables of the latest `setup_response` merged in.
    pub settings: Arc<Settings>,
    /// REST client carrying the `EAAS_*` and `ext-traceparent` headers of this task, and the
    /// task's installation API key when the platform sent one.
    pub client: ConnectClient,
    /// Cancelled when the task's time limit expires or the runner stops waiting for it.
    pub cancel: CancellationToken,
    /// The statuses this runner subscribed to for the task's event type (`[]` for other
    /// categories).
    pub statuses: Vec<String>,
}

pub trait Handler: Send + Sync + 'static {
    fn handle(&self, ctx: TaskContext, argument: Value) -> BoxFuture<'static, HandlerOutcome>;

    /// Background tasks: whether the handler reads the task's object itself. The runner then
    /// skips its status re-check and read and passes `Value::Null`; the handler must read the
    /// object's current state (an event can be stale) and answer `skip` with
    /// [`status_mismatch_message`] when it is not in one of `TaskContext::statuses`.
    fn reads_own_object(&self) -> bool {
        false
    }
}

/// The runner's `skip` message for an object found in none of the statuses subscribed to.
pub fn status_mismatch_message(statuses: &[String]) -> String {
    format!(
        "The request status does not match the supported statuses: {}.",
        statuses.join(",")
    )
}

/// Any `async fn(TaskContext, Value) -> HandlerOutcome` (or closure) is a handler.
impl<F, Fut> Handler for F
where
    F: Fn(TaskContext, Value) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerOutcome> + Send + 'static,
{
    fn handle(&self, ctx: TaskContext, argument: Value) -> BoxFuture<'static, HandlerOutcome> {
        self(ctx, argument).boxed()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Descriptor(#[from] DescriptorError),
    #[error("handlers and extension.json disagree: {}", .0.join("; "))]
    Mismatch(Vec<String>),
}

/// Collects handlers for the declarations of one descriptor; see [`Registry`].
pub struct RegistryBuilder {
    descriptor: ExtensionDescriptor,
    events: BTreeMap<String, Arc<dyn Handler>>,
    schedules: BTreeMap<String, Arc<dyn Handler>>,
    duplicates: Vec<String>,
}

impl RegistryBuilder {
    /// The handler for one event type declared under `capabilities`.
    pub fn on_event(mut self, event_type: &str, handler: Arc<dyn Handler>) -> Self {
        if self.events.insert(event_type.into(), handler).is_some() {
            self.duplicates
                .push(format!("event {event_type} has two handlers"));
        }
        self
    }

    /// The handler for one schedulable `method` declared under `schedulables`.
    pub fn on_schedule(mut self, method: &str, handler: Arc<dyn Handler>) -> Self {
        if self.schedules.insert(method.into(), handler).is_some() {
            self.duplicates
                .push(format!("schedulable {method} has two handlers"));
        }
        self
    }

    pub fn build(self) -> Result<Registry, RegistryError> {
        let mut problems = self.duplicates;
        let declared_events: Vec<&String> = self.descriptor.capabilities.keys().collect();
        let declared_methods: Vec<&String> = self
            .descriptor
            .schedulables
            .iter()
            .map(|s| &s.method)
            .collect();
        mismatches("event", &declared_events, &self.events, &mut problems);
        mismatches(
            "schedulable",
            &declared_methods,
            &self.schedules,
            &mut problems,
        );
        if !problems.is_empty() {
            return Err(RegistryError::Mismatch(problems));
        }
        Ok(Registry {
            descriptor: self.descriptor,
            events: self.events,
            schedules: self.schedules,
        })
    }
}

fn mismatches(
    kind: &str,
    declared: &[&String],
    handlers: &BTreeMap<String, Arc<dyn Handler>>,
    problems: &mut Vec<String>,
) {
    for name in declared {
        if !handlers.contains_key(*name) {
            problems.push(format!("{kind} {name} is declared but has no handler"));
        }
    }
    for name in handlers.keys() {
        if !declared.contains(&name) {
            problems.push(format!("{kind} {name} has a handler but is not declared"));
        }
    }
}

/// Declarations plus their handlers, checked to agree.
pub struct Registry {
    descriptor: ExtensionDescriptor,
    events: BTreeMap<String, Arc<dyn Handler>>,
    schedules: BTreeMap<String, Arc<dyn Handler>>,
}

impl Registry {
    /// Starts a registry for the declarations of an `extension.json` text.
    pub fn from_extension_json(json: &str) -> Result<RegistryBuilder, RegistryError> {
        Ok(RegistryBuilder {
            descriptor: ExtensionDescriptor::parse(json)?,
            events: BTreeMap::new(),
            schedules: BTreeMap::new(),
            duplicates: Vec::new(),
        })
    }

    /// Starts a registry for the `extension.json` built into this binary.
    pub fn embedded() -> Result<RegistryBuilder, RegistryError> {
        Self::from_extension_json(EXTENSION_JSON)
    }

    pub fn descriptor(&self) -> &ExtensionDescriptor {
        &self.descriptor
    }

    pub fn setup_request(&self) -> SetupRequest {
        self.descriptor.setup_request()
    }

    pub fn event_handler(&self, event_type: &str) -> Option<&Arc<dyn Handler>> {
        self.events.get(event_type)
    }

    pub fn schedule_handler(&self, method: &str) -> Option<&Arc<dyn Handler>> {
        self.schedules.get(method)
    }

    /// The statuses this runner subscribed to for an event type (`[]` when none).
    pub fn subscribed_statuses(&self, event_type: &str) -> &[String] {
        self.descriptor
            .capabilities
            .get(event_type)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noop() -> Arc<dyn Handler> {
        Arc::new(|_ctx: TaskContext, _argument: Value| async { HandlerOutcome::Success(None) })
    }

    #[test]
    fn embedded_declarations_need_exactly_their_handlers() {
        let registry = Registry::embedded()
            .unwrap()
            .on_event("usage_file_request_processing", noop())
            .on_schedule("generate_monthly_usage_reports", noop())
            .build()
            .unwrap();
        assert!(registry
            .event_handler("usage_file_request_processing")
            .is_some());
        assert!(registry
            .schedule_handler("generate_monthly_usage_reports")
            .is_some());
        assert_eq!(
            registry.subscribed_statuses("usage_file_request_processing"),
            ["ready", "invalid", "rejected", "accepted"]
        );
        assert!(registry.subscribed_statuses("other").is_empty());
        assert_eq!(
            registry.setup_request().event_subscriptions,
            registry.descriptor().capabilities
        );
    }

    #[test]
    fn disagreements_are_refused_and_named() {
        let missing = Registry::embedded()
            .unwrap()
            .on_event("usage_file_request_processing", noop())
            .build()
            .err()
            .unwrap()
            .to_string();
        assert!(
            missing.contains("generate_monthly_usage_reports is declared but has no handler"),
            "{missing}"
        );

        let undeclared = Registry::embedded()
            .unwrap()
            .on_event("usage_file_request_processing", noop())
            .on_schedule("generate_monthly_usage_reports", noop())
            .on_event("asset_purchase_request_processing", noop())
            .build()
            .err()
            .unwrap()
            .to_string();
        assert!(
            undeclared
                .contains("asset_purchase_request_processing has a handler but is not declared"),
            "{undeclared}"
        );

        let twice = Registry::embedded()
            .unwrap()
            .on_event("usage_file_request_processing", noop())
            .on_event("usage_file_request_processing", noop())
            .on_schedule("generate_monthly_usage_reports", noop())
            .build()
            .err()
            .unwrap()
            .to_string();
        assert!(twice.contains("two handlers"), "{twice}");
    }
}
