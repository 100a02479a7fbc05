//! What the runner itself says it did with each task, read off its tracing events: when it
//! started a task and when it wrote the result to a socket. The platform's side (the
//! simulator's record of results) cannot tell "never answered" from "answered, and the answer
//! died with the connection"; the two ledgers together can.
//!
//! Installed as the process's tracing subscriber (with the usual test log output), so call
//! [`install`] before anything else logs. Task ids restart with every simulator: [`clear`]
//! between worlds, and run worlds one after another.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry};

/// The runner's own account of one task.
#[derive(Debug, Clone, Default)]
pub struct TaskRecord {
    /// `scheduled`, `background` or `interactive`, as the runner logs it.
    pub category: String,
    /// Times the handler started (the runner's "task started").
    pub started: usize,
    /// When the result was written to a socket, once per write ("result sent").
    pub written: Vec<Instant>,
}

fn ledger() -> &'static Mutex<BTreeMap<String, TaskRecord>> {
    static LEDGER: OnceLock<Mutex<BTreeMap<String, TaskRecord>>> = OnceLock::new();
    LEDGER.get_or_init(Default::default)
}

/// Makes the ledger (plus `RUST_LOG`-filtered log output) the global subscriber; later calls
/// do nothing.
pub fn install() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let output = tracing_subscriber::fmt::layer()
            .with_test_writer()
            .with_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()));
        let ledger = TaskLedger.with_filter(EnvFilter::new("connect_payg::devops=debug"));
        let _ = Registry::default().with(output).with(ledger).try_init();
    });
}

pub fn clear() {
    ledger().lock().unwrap().clear();
}

pub fn records() -> BTreeMap<String, TaskRecord> {
    ledger().lock().unwrap().clone()
}

struct TaskLedger;

/// The span's `task_id` and `category`, kept in its extensions.
struct SpanTask {
    task_id: String,
    category: String,
}

#[derive(Default)]
struct Fields {
    message: Option<String>,
    task_id: Option<String>,
    category: Option<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.record(field, format!("{value:?}"));
    }
}

impl Fields {
    fn record(&mut self, field: &Field, value: String) {
        match field.name() {
            "message" => self.message = Some(value),
            "task_id" => self.task_id = Some(value),
            "category" => self.category = Some(value),
            _ => {}
        }
    }
}

impl<S> Layer<S> for TaskLedger
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attributes: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attributes.record(&mut fields);
        if let (Some(task_id), Some(span)) = (fields.task_id, ctx.span(id)) {
            let category = fields.category.unwrap_or_default();
            span.extensions_mut().insert(SpanTask { task_id, category });
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let Some(message) = fields.message else {
            return;
        };
        let span_task = ctx.event_scope(event).and_then(|mut scope| {
            scope.find_map(|span| {
                let extensions = span.extensions();
                let task = extensions.get::<SpanTask>()?;
                Some((task.task_id.clone(), task.category.clone()))
            })
        });
        let Some(task_id) = fields.task_id.or(span_task.as_ref().map(|t| t.0.clone())) else {
            return;
        };
        let mut ledger = ledger().lock().unwrap();
        match message.as_str() {
            "task started" => {
                let record = ledger.entry(task_id).or_default();
                record.started += 1;
                record.category = span_task.map(|t| t.1).unwrap_or_default();
            }
            "result sent" => ledger
                .entry(task_id)
                .or_default()
                .written
                .push(Instant::now()),
            _ => {}
        }
    }
}
