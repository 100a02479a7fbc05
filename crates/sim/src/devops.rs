//! The simulator's DevOps side: the events websocket a runner connects to, the schedule
//! resource it reads, and the controls tests use to play the platform.
//!
//! The hub answers `setup_request` with a `setup_response` (configurable variables, the
//! usage-file event definitions, the extension id), hands out tasks — scheduled ones on
//! [`DevopsHub::fire_schedule`], background ones on request and, by itself, whenever a usage
//! file enters a status the runner subscribed to — and records every result. It checks every
//! runner message strictly (`validate`) and records each deviation as a protocol error, so a
//! happy-path test can assert there were none. Fault controls drop, close or silence sockets,
//! refuse upgrades, and send malformed or huge frames. The platform's log service (the
//! listener runners ship their logs to, and the setup response's logging object) is in `devops/logs.rs`.

mod endpoints;
mod logs;
mod validate;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::extract::ws::Message;
use axum::routing::get;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use super::state::SimState;
use super::SimConfig;
use payg_shared::protocol::{
    EventDefinition, LoggingMeta, LoggingSettings, ResultCode, RunnerMessage, ServerMessage,
    SetupRequest, SetupResponse, Task, TaskCategory, TaskInput, TaskOptions, TaskOutput, Variable,
};
use payg_shared::FileStatus;

pub use logs::{ListenerMode, LogListener, SetupLogging, ShippedBatch};
pub use payg_shared::protocol::USAGE_FILE_EVENT;

/// A result a runner sent for one task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskResult {
    pub task_id: String,
    pub category: TaskCategory,
    pub event_type: String,
    pub object_id: String,
    pub output: TaskOutput,
    /// `runner_type` of the connection the result came on.
    pub runner_type: String,
}

/// The query string of one websocket connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectQuery {
    pub instance_id: String,
    pub runner_type: Option<String>,
    pub running_tasks: Option<u64>,
    pub running_scheduled_tasks: Option<u64>,
}

/// Counters for tests to wait on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DevopsStats {
    /// Connections currently open and answering.
    pub open: usize,
    /// Upgrades accepted since start.
    pub opened: usize,
    /// Upgrades refused (auth, environment, injected refusals).
    pub refused: usize,
    /// `setup_request`s answered.
    pub handshakes: usize,
    /// `shutdown` messages received from runners.
    pub shutdowns: usize,
    /// Task deliveries, hand-outs again after a lost connection included.
    pub tasks_sent: usize,
    /// Tasks handed out again because the connection they went out on closed before their
    /// result arrived.
    pub handed_out_again: usize,
    /// Usage-file events swallowed by [`DevopsHub::lose_file_events`].
    pub events_lost: usize,
    /// Second results for a task that was handed out again (the runner cannot know whether
    /// its first answer arrived, so answering again is legitimate, not a protocol error).
    pub late_duplicates: usize,
    pub results: usize,
    pub protocol_errors: usize,
}

/// Frames a misbehaving platform might send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    NotJson,
    WrongVersion,
    UnknownType,
    MissingModelType,
    /// A text frame of this many bytes.
    Huge(usize),
}

enum Command {
    Send(Message),
    Close(u16),
    Drop,
    Silence,
}

struct Connection {
    runner_type: Option<String>,
    handshaken: bool,
    /// Told to close or drop: no new tasks go to it (they would die with it).
    closing: bool,
    commands: mpsc::UnboundedSender<Command>,
}

struct SentTask {
    /// The task as sent, to hand out again.
    task: Task,
    /// The task's `options` and `input` exactly as sent, for the echo check.
    options: Value,
    input: Value,
    category: TaskCategory,
    delivered: bool,
    /// The connection it last went out on.
    connection: Option<u64>,
    /// Handed out again after its connection closed unanswered.
    handed_out_again: bool,
    answered: bool,
}

struct Hub {
    stats: DevopsStats,
    next_connection: u64,
    connections: BTreeMap<u64, Connection>,
    /// Silenced sockets: no longer served, kept open until the simulator stops.
    silenced: Vec<mpsc::UnboundedSender<Command>>,
    refuse_upgrades: Option<(u16, usize)>,
    /// Re-deliver the object of a `retry` or `reschedule` result after this long.
    redelivery: Option<Duration>,
    /// How long an unanswered task whose connection closed waits before it is handed out again.
    handout_timeout: Duration,
    /// Usage-file events still to swallow, by status.
    lose_events: HashMap<FileStatus, usize>,
    /// `setup_request`s still to leave unanswered.
    withhold_setup: usize,
    queries: Vec<ConnectQuery>,
    setup_requests: Vec<SetupRequest>,
    subscriptions: BTreeMap<String, Vec<String>>,
    variables: Vec<Variable>,
    /// The setup response's logging object.
    logging: SetupLogging,
    next_id: u64,
    tasks: HashMap<String, SentTask>,
    /// Tasks waiting for a handshaken connection.
    pending: VecDeque<Task>,
    results: Vec<TaskResult>,
    schedules: BTreeMap<String, Value>,
    protocol_errors: Vec<String>,
}

/// The platform's time-out before it hands out again a task whose connection closed before
/// the result arrived. Connect does not publish it; five minutes matches the longest a
/// background task may run, so a runner that is still working on it is not raced.
pub const DEFAULT_HANDOUT_TIMEOUT: Duration = Duration::from_secs(300);

impl Default for Hub {
    fn default() -> Self {
        Hub {
            stats: DevopsStats::default(),
            next_connection: 0,
            connections: BTreeMap::new(),
            silenced: Vec::new(),
            refuse_upgrades: None,
            redelivery: None,
            handout_timeout: DEFAULT_HANDOUT_TIMEOUT,
            lose_events: HashMap::new(),
            withhold_setup: 0,
            queries: Vec::new(),
            setup_requests: Vec::new(),
            subscriptions: BTreeMap::new(),
            variables: Vec::new(),
            logging: SetupLogging::default(),
            next_id: 0,
            tasks: HashMap::new(),
            pending: VecDeque::new(),
            results: Vec::new(),
            schedules: BTreeMap::new(),
            protocol_errors: Vec::new(),
        }
    }
}

pub struct DevopsHub {
    /// For the timers that re-deliver tasks.
    me: Weak<DevopsHub>,
    api_key: String,
    environment_id: String,
    service_id: String,
    hub: Mutex<Hub>,
    /// The platform's log service, which runners ship their logs to.
    logs: Arc<LogListener>,
    /// Bumped on every change, for waiters.
    version: watch::Sender<u64>,
}

impl DevopsHub {
    pub fn new(state: Arc<SimState>, config: &SimConfig) -> Arc<DevopsHub> {
        let hub = Arc::new_cyclic(|me| DevopsHub {
            me: me.clone(),
            api_key: config.api_key.clone(),
            environment_id: config.environment_id.clone(),
            service_id: service_id_of(&config.environment_id),
            hub: Mutex::new(Hub::default()),
            logs: Arc::default(),
            version: watch::Sender::new(0),
        });
        let events = state.subscribe_file_events();
        tokio::spawn(follow_file_events(Arc::downgrade(&hub), events));
        hub
    }

    /// `SRVC-…` id the setup response names.
    pub fn service_id(&self) -> &str {
        &self.service_id
    }

    // ----- queries -----

    pub fn stats(&self) -> DevopsStats {
        self.lock().stats.clone()
    }

    pub fn protocol_errors(&self) -> Vec<String> {
        self.lock().protocol_errors.clone()
    }

    pub fn setup_requests(&self) -> Vec<SetupRequest> {
        self.lock().setup_requests.clone()
    }

    /// The query of every upgrade attempt, refused ones included.
    pub fn connect_queries(&self) -> Vec<ConnectQuery> {
        self.lock().queries.clone()
    }

    pub fn results(&self) -> Vec<TaskResult> {
        self.lock().results.clone()
    }

    pub fn result(&self, task_id: &str) -> Option<TaskResult> {
        self.lock()
            .results
            .iter()
            .find(|r| r.task_id == task_id)
            .cloned()
    }

    /// Waits until `condition` holds (checked after every change); false on time-out.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        condition: impl Fn(&DevopsStats) -> bool,
    ) -> bool {
        let mut changes = self.version.subscribe();
        let wait = async {
            loop {
                if condition(&self.stats()) {
                    return;
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok() && condition(&self.stats())
    }

    pub async fn wait_for_result(&self, task_id: &str, timeout: Duration) -> Option<TaskResult> {
        let mut changes = self.version.subscribe();
        let wait = async {
            loop {
                if let Some(result) = self.result(task_id) {
                    return result;
                }
                // The hub lives as long as `self`, so the sender cannot be gone.
                let _ = changes.changed().await;
            }
        };
        tokio::time::timeout(timeout, wait).await.ok()
    }

    // ----- configuration -----

    /// Variables of the next `setup_response`s.
    pub fn set_variables(&self, variables: Vec<Variable>) {
        self.lock().variables = variables;
    }

    /// The logging object of the next `setup_response`s; its key becomes one the log
    /// listener accepts.
    pub fn set_logging(&self, logging: SetupLogging) {
        if let Some(key) = &logging.logging_api_key {
            self.logs.know_token(key);
        }
        self.lock().logging = logging;
    }

    /// The log service runners ship to (`LOG_SHIPPING_URL` = `http://<sim>/_sim/logs`).
    pub fn logs(&self) -> &Arc<LogListener> {
        &self.logs
    }

    /// Sends a fresh `setup_response` (current variables) on every handshaken connection, as
    /// the platform does after a change in the DevOps UI.
    pub fn push_setup_response(&self) {
        let text = ServerMessage::SetupResponse(self.setup_response()).encode();
        let hub = self.lock();
        for connection in hub.connections.values().filter(|c| c.handshaken) {
            let _ = connection
                .commands
                .send(Command::Send(Message::text(text.clone())));
        }
    }

    /// Refuses the next `count` upgrades with HTTP `status` (502 = maintenance); a count of
    /// 0 accepts upgrades again.
    pub fn refuse_upgrades(&self, status: u16, count: usize) {
        self.lock().refuse_upgrades = (count > 0).then_some((status, count));
    }

    /// Makes the hub re-deliver the object of every `retry` or `reschedule` result as a new
    /// task after `delay` (the real platform's policy is unknown; off by default). Reschedule
    /// countdowns are not waited for: the simulator runs on test time.
    pub fn set_redelivery(&self, delay: Option<Duration>) {
        self.lock().redelivery = delay;
    }

    /// How long a task whose connection closed before its result arrived waits before it is
    /// handed out again on the next connection (default [`DEFAULT_HANDOUT_TIMEOUT`]; tests
    /// shorten it).
    pub fn set_handout_timeout(&self, timeout: Duration) {
        self.lock().handout_timeout = timeout;
    }

    /// Swallows the next `count` usage-file events into `status`: no task is ever sent for
    /// them, as if the platform had lost them for good.
    pub fn lose_file_events(&self, status: FileStatus, count: usize) {
        self.lock().lose_events.insert(status, count);
    }

    /// Every task id handed out so far, in the order they were made.
    pub fn task_ids(&self) -> Vec<String> {
        let hub = self.lock();
        let mut ids: Vec<String> = hub.tasks.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Whether every task handed out so far has been answered.
    pub fn all_answered(&self) -> bool {
        self.lock().tasks.values().all(|t| t.answered)
    }

    /// Leaves the next `count` `setup_request`s unanswered (the runner must give up on the
    /// handshake and retry).
    pub fn withhold_setup_responses(&self, count: usize) {
        self.lock().withhold_setup = count;
    }

    // ----- tasks -----

    /// Fires the schedule of `method` without parameters (creating it on first use); returns
    /// the task id.
    pub fn fire_schedule(&self, method: &str) -> String {
        self.fire_schedule_with(method, json!({}))
    }

    /// Fires the schedule of `method` whose `parameter` object is `parameter`, as a vendor
    /// sets it when creating the schedule in the portal; the first firing creates it, so
    /// schedules of one method with different parameters are different schedules, as on the
    /// platform. The runner reads the object back from the schedule resource. Returns the task
    /// id.
    pub fn fire_schedule_with(&self, method: &str, parameter: Value) -> String {
        let schedule_id = {
            let mut hub = self.lock();
            let existing = hub
                .schedules
                .values()
                .find(|s| s["method"] == method && s["parameter"] == parameter)
                .and_then(|s| s["id"].as_str().map(String::from));
            match existing {
                Some(id) => id,
                None => {
                    hub.next_id += 1;
                    let id = format!("EFS-{:03}-{:03}", hub.next_id / 1000, hub.next_id % 1000);
                    hub.schedules.insert(
                        id.clone(),
                        json!({"id": id, "name": method, "method": method, "description": "",
                               "parameter": parameter, "status": "enabled"}),
                    );
                    id
                }
            }
        };
        self.send_task(
            TaskCategory::Scheduled,
            "scheduled_execution",
            &schedule_id,
            Value::Null,
        )
    }

    /// Sends a background task for `object_id`; returns the task id.
    pub fn send_background_task(&self, event_type: &str, object_id: &str) -> String {
        self.send_task(TaskCategory::Background, event_type, object_id, Value::Null)
    }

    /// Sends any task (delivered at once, or as soon as a runner is connected).
    pub fn send_task(
        &self,
        category: TaskCategory,
        event_type: &str,
        object_id: &str,
        data: Value,
    ) -> String {
        let mut hub = self.lock();
        hub.next_id += 1;
        let task_id = format!(
            "TQ-{:03}-{:03}-{:03}",
            hub.next_id / 1_000_000,
            hub.next_id / 1000 % 1000,
            hub.next_id % 1000
        );
        let task = Task {
            options: TaskOptions {
                task_id: task_id.clone(),
                task_category: category,
                correlation_id: Some(uuid::Uuid::new_v4().to_string()),
                reply_to: None,
                api_key: None,
                installation_id: None,
                connect_correlation_id: Some(format!(
                    "00-{}-{:016x}-01",
                    uuid::Uuid::new_v4().simple(),
                    rand::random::<u64>()
                )),
            },
            input: TaskInput {
                event_type: event_type.into(),
                object_id: object_id.into(),
                data,
            },
            output: None,
        };
        hub.tasks.insert(
            task_id.clone(),
            SentTask {
                task: task.clone(),
                options: serde_json::to_value(&task.options).unwrap_or_default(),
                input: serde_json::to_value(&task.input).unwrap_or_default(),
                category,
                delivered: false,
                connection: None,
                handed_out_again: false,
                answered: false,
            },
        );
        hub.pending.push_back(task);
        self.deliver_pending(&mut hub);
        task_id
    }

    // ----- faults -----

    /// Cuts every connection without a close frame.
    pub fn drop_connections(&self) {
        self.end_all(|| Command::Drop);
    }

    /// Closes every connection with `code`.
    pub fn close_connections(&self, code: u16) {
        self.end_all(|| Command::Close(code));
    }

    /// Makes the current connections stop reading, answering pings and sending; later
    /// connections behave normally.
    pub fn go_silent(&self) {
        let mut hub = self.lock();
        let silenced = std::mem::take(&mut hub.connections);
        hub.stats.open = 0;
        // Nothing comes back from a silenced socket: its tasks count as orphaned.
        self.orphaned(&hub, silenced.keys().copied());
        let silenced: Vec<_> = silenced.into_values().collect();
        for connection in silenced {
            let _ = connection.commands.send(Command::Silence);
            hub.silenced.push(connection.commands);
        }
        self.changed();
    }

    /// Sends the platform's `shutdown` on every connection.
    pub fn send_shutdown(&self) {
        let text = ServerMessage::Shutdown.encode();
        self.command_all(|| Command::Send(Message::text(text.clone())));
    }

    pub fn send_malformed(&self, kind: Malformed) {
        let text = match kind {
            Malformed::NotJson => "this is not JSON {".to_string(),
            Malformed::WrongVersion => {
                json!({"version": 7, "message_type": "task", "data": {"model_type": "task"}})
                    .to_string()
            }
            Malformed::UnknownType => {
                json!({"version": 2, "message_type": "surprise", "data": {"model_type": "surprise"}})
                    .to_string()
            }
            Malformed::MissingModelType => json!({"version": 2, "message_type": "task",
                "data": {"options": {"task_id": "TQ-MALFORMED"}}})
            .to_string(),
            Malformed::Huge(bytes) => {
                let filler = "x".repeat(bytes.saturating_sub(60));
                json!({"version": 2, "message_type": "noise", "data": {"filler": filler}})
                    .to_string()
            }
        };
        self.command_all(|| Command::Send(Message::text(text.clone())));
    }

    // ----- internals -----

    fn setup_response(&self) -> SetupResponse {
        let (variables, logging) = {
            let hub = self.lock();
            (hub.variables.clone(), hub.logging.clone())
        };
        let definition = |event_type: &str, collection: &str| EventDefinition {
            event_type: event_type.into(),
            api_collection_endpoint: collection.into(),
            api_resource_endpoint: format!("{collection}/{{pk}}"),
            api_collection_filter: "and(eq(id,${_object_id_}),in(status,${_statuses_}))".into(),
        };
        SetupResponse {
            variables: Some(variables),
            environment_type: Some("development".into()),
            logging: Some(LoggingSettings {
                logging_api_key: logging.logging_api_key,
                log_level: logging.log_level,
                runner_log_level: logging.runner_log_level,
                meta: Some(LoggingMeta {
                    repository_tag: None,
                    account_id: Some("VA-000-000".into()),
                    account_name: Some("Simulated Vendor".into()),
                    service_id: Some(self.service_id.clone()),
                    products: None,
                    hub_id: None,
                }),
            }),
            event_definitions: Some(vec![
                definition(USAGE_FILE_EVENT, "usage/files"),
                definition("part_usage_file_request_processing", "usage/chunks"),
            ]),
            environment_runtime: None,
            environment_hostname: None,
            environment_domain: None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Hub> {
        self.hub.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    fn command_all(&self, command: impl Fn() -> Command) {
        for connection in self.lock().connections.values() {
            let _ = connection.commands.send(command());
        }
    }

    /// Sends a closing command to every connection and stops handing them tasks: a connection
    /// stays registered until its socket is gone, and a task queued behind the close would
    /// be lost with it rather than wait for the next connection.
    fn end_all(&self, command: impl Fn() -> Command) {
        for connection in self.lock().connections.values_mut() {
            connection.closing = true;
            let _ = connection.commands.send(command());
        }
    }

    fn protocol_error(&self, hub: &mut Hub, connection: u64, problem: String) {
        tracing::warn!(connection, %problem, "runner protocol error");
        hub.protocol_errors
            .push(format!("connection {connection}: {problem}"));
        hub.stats.protocol_errors = hub.protocol_errors.len();
    }

    /// Sends waiting tasks to a handshaken connection of the preferred runner type.
    fn deliver_pending(&self, hub: &mut Hub) {
        let mut waiting = VecDeque::new();
        while let Some(task) = hub.pending.pop_front() {
            // Answered while it waited to go out again: the runner has nothing left to do.
            if hub
                .tasks
                .get(&task.options.task_id)
                .is_some_and(|t| t.answered)
            {
                continue;
            }
            let preferred = match task.options.task_category {
                TaskCategory::Interactive => "interactive",
                TaskCategory::Background | TaskCategory::Scheduled => "background",
            };
            let target = hub
                .connections
                .iter()
                .filter(|(_, c)| c.handshaken && !c.closing)
                .max_by_key(|(_, c)| c.runner_type.as_deref() == Some(preferred));
            let sent = target.and_then(|(id, c)| {
                let text = ServerMessage::Task(task.clone()).encode();
                c.commands
                    .send(Command::Send(Message::text(text)))
                    .is_ok()
                    .then_some(*id)
            });
            if let Some(connection) = sent {
                if let Some(record) = hub.tasks.get_mut(&task.options.task_id) {
                    record.delivered = true;
                    record.connection = Some(connection);
                }
                hub.stats.tasks_sent += 1;
            } else {
                waiting.push_back(task);
            }
        }
        hub.pending = waiting;
        self.changed();
    }

    /// A usage file changed status: a task, if the runner subscribed to that status and no
    /// task for the file is still waiting to be delivered.
    fn on_file_event(&self, file_id: &str, status: &FileStatus) {
        let subscribed = {
            let mut hub = self.lock();
            if let Some(left) = hub.lose_events.get_mut(status).filter(|n| **n > 0) {
                *left -= 1;
                hub.stats.events_lost += 1;
                tracing::info!(file_id, %status, "usage-file event lost on purpose");
                return;
            }
            let wanted = hub
                .subscriptions
                .get(USAGE_FILE_EVENT)
                .is_some_and(|statuses| statuses.iter().any(|s| s == status.as_str()));
            let waiting = hub
                .pending
                .iter()
                .any(|t| t.input.object_id == file_id && t.input.event_type == USAGE_FILE_EVENT);
            wanted && !waiting
        };
        if subscribed {
            self.send_background_task(USAGE_FILE_EVENT, file_id);
        }
    }

    /// The connection's runner sent a text frame.
    fn on_text(&self, connection: u64, text: &str) {
        let (message, problems) = validate::check(text);
        let mut hub = self.lock();
        for problem in problems {
            self.protocol_error(&mut hub, connection, problem);
        }
        let handshaken = hub
            .connections
            .get(&connection)
            .is_some_and(|c| c.handshaken);
        match message {
            Some(RunnerMessage::SetupRequest(request)) => {
                if handshaken {
                    self.protocol_error(&mut hub, connection, "second setup_request".into());
                }
                hub.subscriptions = request.event_subscriptions.clone();
                hub.setup_requests.push(request);
                if hub.withhold_setup > 0 {
                    hub.withhold_setup -= 1;
                    drop(hub);
                    self.changed();
                    return;
                }
                drop(hub);
                let reply = ServerMessage::SetupResponse(self.setup_response()).encode();
                let mut hub = self.lock();
                if let Some(c) = hub.connections.get_mut(&connection) {
                    let _ = c.commands.send(Command::Send(Message::text(reply)));
                    c.handshaken = true;
                }
                hub.stats.handshakes += 1;
                self.deliver_pending(&mut hub);
            }
            Some(RunnerMessage::Task(task)) => {
                if !handshaken {
                    self.protocol_error(&mut hub, connection, "task before setup_request".into());
                }
                self.on_result(&mut hub, connection, text, task);
            }
            Some(RunnerMessage::Shutdown) => hub.stats.shutdowns += 1,
            Some(RunnerMessage::Ignored { .. }) | None => {}
        }
        self.changed();
    }

    fn on_binary(&self, connection: u64) {
        let mut hub = self.lock();
        let problem = "binary frame (the protocol uses text frames)".to_string();
        self.protocol_error(&mut hub, connection, problem);
        self.changed();
    }

    fn on_result(&self, hub: &mut Hub, connection: u64, text: &str, task: Task) {
        let task_id = task.options.task_id.clone();
        let Some(output) = task.output else {
            return; // reported by the validation
        };
        let raw: Value = serde_json::from_str(text).unwrap_or_default();
        let verdict = match hub.tasks.get_mut(&task_id) {
            None => Err(format!("result for unknown task {task_id}")),
            Some(record) if !record.delivered => {
                Err(format!("result for undelivered task {task_id}"))
            }
            Some(record) if record.answered && record.handed_out_again => {
                // Its first answer and the hand-out again crossed: the runner could not know.
                hub.stats.late_duplicates += 1;
                return;
            }
            Some(record) if record.answered => Err(format!("duplicate result for task {task_id}")),
            Some(record) => {
                record.answered = true;
                Ok(echo_problem(record, &raw["data"], &output))
            }
        };
        match verdict {
            Err(problem) => {
                // Answers nothing this hub waits for: not recorded as a result.
                self.protocol_error(hub, connection, problem);
                return;
            }
            Ok(Some(problem)) => self.protocol_error(hub, connection, problem),
            Ok(None) => {}
        }
        let runner_type = hub
            .connections
            .get(&connection)
            .and_then(|c| c.runner_type.clone())
            .unwrap_or_default();
        let again = matches!(output.result, ResultCode::Retry | ResultCode::Reschedule);
        if let (true, Some(delay)) = (again, hub.redelivery) {
            self.redeliver(delay, task.options.task_category, task.input.clone());
        }
        hub.results.push(TaskResult {
            task_id,
            category: task.options.task_category,
            event_type: task.input.event_type,
            object_id: task.input.object_id,
            output,
            runner_type,
        });
        hub.stats.results = hub.results.len();
    }

    fn redeliver(&self, delay: Duration, category: TaskCategory, input: TaskInput) {
        let me = self.me.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(hub) = me.upgrade() {
                hub.send_task(category, &input.event_type, &input.object_id, input.data);
            }
        });
    }

    fn register(&self, query: ConnectQuery) -> (u64, mpsc::UnboundedReceiver<Command>) {
        let (commands, receiver) = mpsc::unbounded_channel();
        let mut hub = self.lock();
        hub.next_connection += 1;
        let id = hub.next_connection;
        hub.connections.insert(
            id,
            Connection {
                runner_type: query.runner_type.clone(),
                handshaken: false,
                closing: false,
                commands,
            },
        );
        hub.stats.opened += 1;
        hub.stats.open = hub.connections.len();
        self.changed();
        (id, receiver)
    }

    /// The connection is gone. Tasks it carried that were not answered are handed out again
    /// after the time-out, as the platform does: their frame, or their result, may have died
    /// with the socket, and nothing else would ever bring them back.
    fn unregister(&self, connection: u64) {
        let mut hub = self.lock();
        hub.connections.remove(&connection);
        hub.stats.open = hub.connections.len();
        self.orphaned(&hub, [connection]);
        drop(hub);
        self.changed();
    }

    /// Starts the hand-out time-out of every unanswered task that went out on `connections`.
    fn orphaned(&self, hub: &Hub, connections: impl IntoIterator<Item = u64>) {
        let connections: Vec<u64> = connections.into_iter().collect();
        for (task_id, task) in &hub.tasks {
            let carried = task.connection.is_some_and(|c| connections.contains(&c));
            if carried && !task.answered {
                self.hand_out_again(task_id.clone(), hub.handout_timeout);
            }
        }
    }

    /// After `timeout`, queues the task again unless it was answered or went out on another
    /// connection meanwhile.
    fn hand_out_again(&self, task_id: String, timeout: Duration) {
        let me = self.me.clone();
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            let Some(hub) = me.upgrade() else { return };
            let mut state = hub.lock();
            let live: Vec<u64> = state.connections.keys().copied().collect();
            let Some(record) = state.tasks.get_mut(&task_id) else {
                return;
            };
            let elsewhere = record.connection.is_some_and(|c| live.contains(&c));
            if record.answered || elsewhere {
                return;
            }
            record.connection = None;
            record.handed_out_again = true;
            let task = record.task.clone();
            state.stats.handed_out_again += 1;
            tracing::info!(%task_id, "handing out a task whose connection closed unanswered");
            state.pending.push_back(task);
            hub.deliver_pending(&mut state);
        });
    }

    fn attempted(&self, query: ConnectQuery) {
        self.lock().queries.push(query);
    }

    /// An injected refusal for this upgrade, if any is left.
    fn take_refusal(&self) -> Option<u16> {
        let mut hub = self.lock();
        let (status, left) = hub.refuse_upgrades?;
        hub.refuse_upgrades = (left > 1).then(|| (status, left - 1));
        Some(status)
    }

    fn refused(&self) {
        self.lock().stats.refused += 1;
        self.changed();
    }

    fn schedule(&self, schedule_id: &str) -> Option<Value> {
        self.lock().schedules.get(schedule_id).cloned()
    }
}

/// Whether the result echoes the task and answers as its category may.
fn echo_problem(record: &SentTask, data: &Value, output: &TaskOutput) -> Option<String> {
    if data["options"] != record.options {
        return Some("result does not echo the task's options exactly".into());
    }
    if data["input"] != record.input {
        return Some("result does not echo the task's input exactly".into());
    }
    let background_only = matches!(output.result, ResultCode::Skip | ResultCode::Reschedule);
    if background_only && record.category != TaskCategory::Background {
        return Some(format!(
            "{} is not a valid answer to a {} task",
            output.result.as_str(),
            record.category
        ));
    }
    if output.result == ResultCode::Reschedule && output.countdown < 30 {
        return Some(format!(
            "reschedule countdown {} below 30 s",
            output.countdown
        ));
    }
    if output
        .message
        .as_ref()
        .is_some_and(|m| m.chars().count() > 4000)
    {
        return Some("message longer than 4000 characters".into());
    }
    None
}

/// `ENV-123-456-789-01` → `SRVC-123-456-789`.
fn service_id_of(environment_id: &str) -> String {
    let body = environment_id
        .strip_prefix("ENV-")
        .unwrap_or(environment_id);
    let body = match body.rsplit_once('-') {
        Some((head, tail)) if tail.len() == 2 && tail.chars().all(|c| c.is_ascii_digit()) => head,
        _ => body,
    };
    format!("SRVC-{body}")
}

async fn follow_file_events(
    hub: Weak<DevopsHub>,
    mut events: tokio::sync::broadcast::Receiver<super::state::FileEvent>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match events.recv().await {
            Ok(event) => match hub.upgrade() {
                Some(hub) => hub.on_file_event(&event.file_id, &event.status),
                None => return,
            },
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "devops hub missed usage-file events")
            }
            Err(RecvError::Closed) => return,
        }
    }
}

pub fn router(hub: Arc<DevopsHub>) -> axum::Router {
    axum::Router::new()
        .route(
            "/public/v1/devops/ws/{environment_id}/{instance_id}",
            get(endpoints::upgrade),
        )
        .route(
            "/public/v1/devops/services/{service_id}/environments/{environment_id}/schedules/{schedule_id}",
            get(endpoints::schedule),
        )
        .with_state(hub.clone())
        .merge(logs::router(hub))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_id_is_derived_from_the_environment() {
        assert_eq!(service_id_of("ENV-123-456-789-01"), "SRVC-123-456-789");
        assert_eq!(service_id_of("ENV-SIM"), "SRVC-SIM");
    }
}
