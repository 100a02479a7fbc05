//! The DevOps events-channel wire format: the version-2 envelope and its
//! four messages, as serde types shared by the runner and the simulator.
//!
//! The serialisation follows the official runner byte for byte where it matters: `version` is
//! always `2`, every `data` object carries its `model_type`, and every defined field is written
//! (with `null` when empty). Reading is lenient the same way the official runner is: unknown
//! fields are ignored, a missing `model_type` is accepted, and `shutdown` may come without a
//! `version` (legacy version 1) or without `data`. Unknown message types are reported as
//! [`ServerMessage::Ignored`] rather than as errors: a runner must ignore a type it does not
//! know.
//!
//! Values that are secrets on the wire (`options.api_key`, secure variable values, the logging
//! token) are redacted in every `Debug` implementation here.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// The protocol version this runner speaks (and always sends).
pub const PROTOCOL_VERSION: u64 = 2;

/// `runner_version` sent in `setup_request`: the official runner's current version, which is
/// the safest value while nobody knows whether the server checks it.
pub const RUNNER_VERSION: &str = "43.1";

/// The event type the platform sends when a usage file changes status; the runner subscribes
/// to it by name, and the platform (or the simulator) names it in every such task.
pub const USAGE_FILE_EVENT: &str = "usage_file_request_processing";

const REDACTED: &str = "***";

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message is not JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("message is not an envelope: {0}")]
    NotEnvelope(serde_json::Error),
    #[error("unsupported protocol version {version} for {message_type}")]
    Version { message_type: String, version: u64 },
    #[error("{message_type} has no data object")]
    MissingData { message_type: String },
    #[error("{message_type} carries model_type {found:?}")]
    ModelType { message_type: String, found: String },
    #[error("{message_type} data is invalid: {reason}")]
    Data {
        message_type: String,
        reason: String,
    },
}

/// `options.task_category`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskCategory {
    Background,
    Interactive,
    Scheduled,
}

impl TaskCategory {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskCategory::Background => "background",
            TaskCategory::Interactive => "interactive",
            TaskCategory::Scheduled => "scheduled",
        }
    }
}

impl fmt::Display for TaskCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `output.result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultCode {
    Success,
    Fail,
    Skip,
    Retry,
    Reschedule,
}

impl ResultCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ResultCode::Success => "success",
            ResultCode::Fail => "fail",
            ResultCode::Skip => "skip",
            ResultCode::Retry => "retry",
            ResultCode::Reschedule => "reschedule",
        }
    }
}

/// A variable the extension wants created (`setup_request.variables`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclaredVariable {
    pub name: String,
    pub initial_value: String,
    #[serde(default)]
    pub secure: bool,
}

/// `setup_request.schedulables`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedulable {
    pub method: String,
    pub name: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repository {
    pub readme_url: String,
    pub changelog_url: String,
}

/// `setup_request` data (runner → server), fields in the official order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetupRequest {
    pub event_subscriptions: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub ui_modules: Option<Value>,
    #[serde(default)]
    pub icon: Option<Value>,
    pub variables: Vec<DeclaredVariable>,
    pub schedulables: Vec<Schedulable>,
    #[serde(default)]
    pub anvil_callables: Option<Value>,
    #[serde(default)]
    pub transformations: Option<Value>,
    #[serde(default)]
    pub audience: Option<Vec<String>>,
    pub repository: Repository,
    pub runner_version: String,
    #[serde(default)]
    pub proxied_connect_api: Option<Value>,
}

/// An environment variable as the server reports it (`setup_response.variables`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variable {
    pub name: String,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub secure: bool,
}

impl fmt::Debug for Variable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = if self.secure {
            self.value.as_ref().map(|_| REDACTED)
        } else {
            self.value.as_deref()
        };
        f.debug_struct("Variable")
            .field("name", &self.name)
            .field("value", &value)
            .field("secure", &self.secure)
            .finish()
    }
}

/// `setup_response.logging.meta`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggingMeta {
    #[serde(default)]
    pub repository_tag: Option<String>,
    #[serde(default)]
    pub account_id: Option<String>,
    #[serde(default)]
    pub account_name: Option<String>,
    #[serde(default)]
    pub service_id: Option<String>,
    #[serde(default)]
    pub products: Option<Vec<String>>,
    #[serde(default)]
    pub hub_id: Option<String>,
}

/// `setup_response.logging`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggingSettings {
    #[serde(default)]
    pub logging_api_key: Option<String>,
    #[serde(default)]
    pub log_level: Option<String>,
    #[serde(default)]
    pub runner_log_level: Option<String>,
    #[serde(default)]
    pub meta: Option<LoggingMeta>,
}

impl fmt::Debug for LoggingSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoggingSettings")
            .field(
                "logging_api_key",
                &self.logging_api_key.as_ref().map(|_| REDACTED),
            )
            .field("log_level", &self.log_level)
            .field("runner_log_level", &self.runner_log_level)
            .field("meta", &self.meta)
            .finish()
    }
}

/// `setup_response.event_definitions[]`: where the object of a background event lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventDefinition {
    pub event_type: String,
    pub api_collection_endpoint: String,
    pub api_resource_endpoint: String,
    pub api_collection_filter: String,
}

/// `setup_response` data (server → runner).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SetupResponse {
    #[serde(default)]
    pub variables: Option<Vec<Variable>>,
    #[serde(default)]
    pub environment_type: Option<String>,
    #[serde(default)]
    pub logging: Option<LoggingSettings>,
    #[serde(default)]
    pub event_definitions: Option<Vec<EventDefinition>>,
    #[serde(default)]
    pub environment_runtime: Option<String>,
    #[serde(default)]
    pub environment_hostname: Option<String>,
    #[serde(default)]
    pub environment_domain: Option<String>,
}

impl SetupResponse {
    pub fn service_id(&self) -> Option<&str> {
        self.logging.as_ref()?.meta.as_ref()?.service_id.as_deref()
    }
}

/// `task.options`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskOptions {
    pub task_id: String,
    pub task_category: TaskCategory,
    #[serde(default)]
    pub correlation_id: Option<String>,
    #[serde(default)]
    pub reply_to: Option<String>,
    #[serde(default)]
    pub api_key: Option<String>,
    #[serde(default)]
    pub installation_id: Option<String>,
    #[serde(default)]
    pub connect_correlation_id: Option<String>,
}

impl fmt::Debug for TaskOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskOptions")
            .field("task_id", &self.task_id)
            .field("task_category", &self.task_category)
            .field("correlation_id", &self.correlation_id)
            .field("reply_to", &self.reply_to)
            .field("api_key", &self.api_key.as_ref().map(|_| REDACTED))
            .field("installation_id", &self.installation_id)
            .field("connect_correlation_id", &self.connect_correlation_id)
            .finish()
    }
}

/// `task.input`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskInput {
    pub event_type: String,
    pub object_id: String,
    /// Interactive payload; `null` for background and scheduled tasks.
    #[serde(default)]
    pub data: Value,
}

/// `task.output`: present on results only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskOutput {
    pub result: ResultCode,
    #[serde(default)]
    pub data: Option<Value>,
    #[serde(default)]
    pub countdown: u64,
    #[serde(default)]
    pub runtime: f64,
    #[serde(default)]
    pub message: Option<String>,
}

/// `task` data, inbound (no output) and as a result (output added, the rest echoed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub options: TaskOptions,
    pub input: TaskInput,
    #[serde(default)]
    pub output: Option<TaskOutput>,
}

/// A message from the server, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    SetupResponse(SetupResponse),
    Task(Task),
    Shutdown,
    /// A message type the events channel does not define (or a legacy version-1 shape other
    /// than `shutdown`): to be logged and ignored.
    Ignored {
        message_type: String,
        version: u64,
    },
}

/// A message from the runner, decoded (the simulator reads these).
#[derive(Debug, Clone, PartialEq)]
pub enum RunnerMessage {
    SetupRequest(SetupRequest),
    Task(Task),
    Shutdown,
    Ignored { message_type: String, version: u64 },
}

#[derive(Deserialize)]
struct RawEnvelope {
    #[serde(default)]
    version: Option<u64>,
    message_type: String,
    #[serde(default)]
    data: Option<Value>,
}

/// The pieces of an envelope, once its version has been checked.
struct Envelope {
    message_type: String,
    version: u64,
    data: Option<Value>,
}

impl Envelope {
    fn parse(text: &str) -> Result<Envelope, DecodeError> {
        let value: Value = serde_json::from_str(text).map_err(DecodeError::NotJson)?;
        let raw: RawEnvelope = serde_json::from_value(value).map_err(DecodeError::NotEnvelope)?;
        // A missing version means the legacy shapes of version 1 (before 2022).
        let version = raw.version.unwrap_or(1);
        if version != 1 && version != PROTOCOL_VERSION {
            return Err(DecodeError::Version {
                message_type: raw.message_type,
                version,
            });
        }
        Ok(Envelope {
            message_type: raw.message_type,
            version,
            data: raw.data,
        })
    }

    /// Version-2 `data` of a model message, checked against its `model_type` when present.
    fn model<T: serde::de::DeserializeOwned>(self) -> Result<T, DecodeError> {
        let Envelope {
            message_type, data, ..
        } = self;
        let data = match data {
            Some(Value::Null) | None => return Err(DecodeError::MissingData { message_type }),
            Some(data) => data,
        };
        match data.get("model_type") {
            None => {}
            Some(Value::String(found)) if *found == message_type => {}
            Some(found) => {
                return Err(DecodeError::ModelType {
                    found: found.to_string().trim_matches('"').to_string(),
                    message_type,
                })
            }
        }
        serde_json::from_value(data).map_err(|error| DecodeError::Data {
            message_type,
            reason: describe(&error),
        })
    }

    fn is_v2(&self) -> bool {
        self.version == PROTOCOL_VERSION
    }
}

/// A decoding error without the values serde quotes for type mismatches: the data may hold an
/// API key or a secure variable, and these errors are logged.
fn describe(error: &serde_json::Error) -> String {
    let text = error.to_string();
    if text.starts_with("invalid type") || text.starts_with("invalid value") {
        "a field has a value of the wrong type or shape".into()
    } else {
        text
    }
}

impl ServerMessage {
    pub fn decode(text: &str) -> Result<ServerMessage, DecodeError> {
        let envelope = Envelope::parse(text)?;
        Ok(match envelope.message_type.as_str() {
            "shutdown" => ServerMessage::Shutdown,
            "setup_response" if envelope.is_v2() => ServerMessage::SetupResponse(envelope.model()?),
            "task" if envelope.is_v2() => ServerMessage::Task(envelope.model()?),
            _ => ServerMessage::Ignored {
                message_type: envelope.message_type,
                version: envelope.version,
            },
        })
    }

    pub fn encode(&self) -> String {
        match self {
            ServerMessage::SetupResponse(data) => encode_model("setup_response", data),
            ServerMessage::Task(data) => encode_model("task", data),
            ServerMessage::Shutdown => encode_shutdown(),
            ServerMessage::Ignored {
                message_type,
                version,
            } => {
                json!({"version": version, "message_type": message_type, "data": null}).to_string()
            }
        }
    }
}

impl RunnerMessage {
    pub fn decode(text: &str) -> Result<RunnerMessage, DecodeError> {
        let envelope = Envelope::parse(text)?;
        Ok(match envelope.message_type.as_str() {
            "shutdown" => RunnerMessage::Shutdown,
            "setup_request" if envelope.is_v2() => RunnerMessage::SetupRequest(envelope.model()?),
            "task" if envelope.is_v2() => RunnerMessage::Task(envelope.model()?),
            _ => RunnerMessage::Ignored {
                message_type: envelope.message_type,
                version: envelope.version,
            },
        })
    }

    pub fn encode(&self) -> String {
        match self {
            RunnerMessage::SetupRequest(data) => encode_model("setup_request", data),
            RunnerMessage::Task(data) => encode_model("task", data),
            RunnerMessage::Shutdown => encode_shutdown(),
            RunnerMessage::Ignored {
                message_type,
                version,
            } => {
                json!({"version": version, "message_type": message_type, "data": null}).to_string()
            }
        }
    }
}

/// Version-2 envelope around a model, with `model_type` appended to its fields.
fn encode_model<T: Serialize>(model_type: &str, data: &T) -> String {
    let mut fields = match serde_json::to_value(data) {
        Ok(Value::Object(fields)) => fields,
        // Every model here is a struct, which serde_json always turns into an object.
        _ => Map::new(),
    };
    fields.insert("model_type".into(), Value::String(model_type.into()));
    json!({"version": PROTOCOL_VERSION, "message_type": model_type, "data": fields}).to_string()
}

fn encode_shutdown() -> String {
    json!({"version": PROTOCOL_VERSION, "message_type": "shutdown", "data": null}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The platform's published example messages, verbatim.
    const SETUP_REQUEST: &str = r#"{
      "version": 2, "message_type": "setup_request",
      "data": {
        "event_subscriptions": {
          "usage_file_request_processing": ["draft", "uploading", "uploaded", "invalid", "processing", "ready", "rejected", "pending", "accepted", "closed"],
          "part_usage_file_request_processing": ["draft", "ready", "closed", "failed"],
          "product_action_execution": []
        },
        "ui_modules": null, "icon": null,
        "variables": [{"name": "REPORT_BATCH", "initial_value": "100", "secure": false}],
        "schedulables": [{"method": "report_usage", "name": "Report usage", "description": "Creates and submits usage files"}],
        "anvil_callables": null, "transformations": null, "audience": ["vendor"],
        "repository": {"readme_url": "https://example.org/README.md", "changelog_url": "https://example.org/CHANGELOG.md"},
        "runner_version": "43.1", "proxied_connect_api": null, "model_type": "setup_request"
      }
    }"#;

    const SETUP_RESPONSE: &str = r#"{
      "version": 2, "message_type": "setup_response",
      "data": {
        "variables": [
          {"name": "REPORT_BATCH", "value": "100", "secure": false},
          {"name": "SMTP_PASSWORD", "value": "s3cr3t", "secure": true}
        ],
        "environment_type": "production",
        "logging": {
          "logging_api_key": "ZmFrZS1sb2d6LXRva2Vu", "log_level": "INFO", "runner_log_level": "INFO",
          "meta": {"repository_tag": "1.4.0", "account_id": "VA-123-456", "account_name": "Example Vendor",
                   "service_id": "SRVC-123-456-789", "products": ["PRD-123-456-789"], "hub_id": null}
        },
        "event_definitions": [
          {"event_type": "usage_file_request_processing", "api_collection_endpoint": "usage/files",
           "api_resource_endpoint": "usage/files/{pk}", "api_collection_filter": "and(eq(id,${_object_id_}),in(status,${_statuses_}))"},
          {"event_type": "part_usage_file_request_processing", "api_collection_endpoint": "usage/chunks",
           "api_resource_endpoint": "usage/chunks/{pk}", "api_collection_filter": "and(eq(id,${_object_id_}),in(status,${_statuses_}))"}
        ],
        "environment_runtime": null, "environment_hostname": null, "environment_domain": null,
        "model_type": "setup_response"
      }
    }"#;

    const BACKGROUND_TASK: &str = r#"{
      "version": 2, "message_type": "task",
      "data": {
        "options": {"task_id": "TQ-001-002-003", "task_category": "background",
                    "correlation_id": "4a3c0f2e-6c54-4d6a-9f0e-2f1c7e1b9d10", "reply_to": null, "api_key": null,
                    "installation_id": null, "connect_correlation_id": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        "input": {"event_type": "usage_file_request_processing", "object_id": "UF-2024-05-1234-5678", "data": null},
        "output": null, "model_type": "task"
      }
    }"#;

    const CHUNK_TASK: &str = r#"{
      "version": 2, "message_type": "task",
      "data": {
        "options": {"task_id": "TQ-001-002-004", "task_category": "background", "correlation_id": null, "reply_to": null,
                    "api_key": "ApiKey SU-987-654-321:installationsecret", "installation_id": "EIN-111-222-333",
                    "connect_correlation_id": null},
        "input": {"event_type": "part_usage_file_request_processing", "object_id": "UFC-2024-05-1234-5678-000", "data": null},
        "output": null, "model_type": "task"
      }
    }"#;

    const SCHEDULED_TASK: &str = r#"{
      "version": 2, "message_type": "task",
      "data": {
        "options": {"task_id": "TQ-001-002-005", "task_category": "scheduled", "correlation_id": null, "reply_to": null,
                    "api_key": null, "installation_id": null, "connect_correlation_id": null},
        "input": {"event_type": "scheduled_execution", "object_id": "EFS-123-456-789", "data": null},
        "output": null, "model_type": "task"
      }
    }"#;

    const INTERACTIVE_TASK: &str = r#"{
      "version": 2, "message_type": "task",
      "data": {
        "options": {"task_id": "TQ-001-002-006", "task_category": "interactive", "correlation_id": "corr-77",
                    "reply_to": "reply-queue-3", "api_key": null, "installation_id": null, "connect_correlation_id": null},
        "input": {"event_type": "product_action_execution", "object_id": "PRD-123-456-789",
                  "data": {"action": "sso", "asset_id": "AS-1111-2222-3333"}},
        "output": null, "model_type": "task"
      }
    }"#;

    const RESULT: &str = r#"{"version": 2, "message_type": "task", "data": {
      "options": {"task_id": "TQ-001-002-003", "task_category": "background", "correlation_id": "4a3c0f2e-6c54-4d6a-9f0e-2f1c7e1b9d10",
                  "reply_to": null, "api_key": null, "installation_id": null,
                  "connect_correlation_id": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
      "input": {"event_type": "usage_file_request_processing", "object_id": "UF-2024-05-1234-5678", "data": null},
      "output": {"result": "success", "data": null, "countdown": 0, "runtime": 1.734, "message": null},
      "model_type": "task"}}"#;

    fn json(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn server_messages_round_trip_exactly() {
        for text in [
            SETUP_RESPONSE,
            BACKGROUND_TASK,
            CHUNK_TASK,
            SCHEDULED_TASK,
            INTERACTIVE_TASK,
        ] {
            let message = ServerMessage::decode(text).unwrap();
            assert_eq!(json(&message.encode()), json(text), "{text}");
        }
    }

    #[test]
    fn runner_messages_round_trip_exactly() {
        for text in [SETUP_REQUEST, RESULT] {
            let message = RunnerMessage::decode(text).unwrap();
            assert_eq!(json(&message.encode()), json(text), "{text}");
        }
        assert_eq!(
            json(&RunnerMessage::Shutdown.encode()),
            json(r#"{"version": 2, "message_type": "shutdown", "data": null}"#)
        );
    }

    #[test]
    fn decoded_fields_are_typed() {
        let ServerMessage::SetupResponse(setup) = ServerMessage::decode(SETUP_RESPONSE).unwrap()
        else {
            panic!("not a setup_response")
        };
        assert_eq!(setup.service_id(), Some("SRVC-123-456-789"));
        assert_eq!(setup.event_definitions.unwrap().len(), 2);
        let ServerMessage::Task(task) = ServerMessage::decode(INTERACTIVE_TASK).unwrap() else {
            panic!("not a task")
        };
        assert_eq!(task.options.task_category, TaskCategory::Interactive);
        assert_eq!(task.input.data["action"], "sso");
    }

    #[test]
    fn absent_fields_are_written_as_null() {
        let task = ServerMessage::decode(
            r#"{"version": 2, "message_type": "task", "data": {
                "options": {"task_id": "TQ-1", "task_category": "scheduled"},
                "input": {"event_type": "scheduled_execution", "object_id": "EFS-1"}}}"#,
        )
        .unwrap();
        assert_eq!(
            json(&task.encode()),
            json(
                SCHEDULED_TASK
                    .replace("TQ-001-002-005", "TQ-1")
                    .replace("EFS-123-456-789", "EFS-1")
                    .as_str()
            )
        );
    }

    #[test]
    fn lenient_reading() {
        // Unknown fields ignored, model_type optional.
        let message = ServerMessage::decode(
            r#"{"version": 2, "message_type": "setup_response", "data": {"novel": 1, "variables": null}}"#,
        )
        .unwrap();
        assert_eq!(
            message,
            ServerMessage::SetupResponse(SetupResponse::default())
        );
        // Legacy shutdown without version and data.
        assert_eq!(
            ServerMessage::decode(r#"{"message_type": "shutdown"}"#).unwrap(),
            ServerMessage::Shutdown
        );
        assert_eq!(
            ServerMessage::decode(r#"{"version": 2, "message_type": "shutdown", "data": null}"#)
                .unwrap(),
            ServerMessage::Shutdown
        );
        // Unknown types and version-1 shapes other than shutdown are ignored, not errors.
        assert_eq!(
            ServerMessage::decode(r#"{"version": 2, "message_type": "web_task", "data": {}}"#)
                .unwrap(),
            ServerMessage::Ignored {
                message_type: "web_task".into(),
                version: 2
            }
        );
        assert!(matches!(
            ServerMessage::decode(r#"{"message_type": "configuration", "data": {}}"#).unwrap(),
            ServerMessage::Ignored { version: 1, .. }
        ));
    }

    #[test]
    fn malformed_messages_are_errors() {
        for text in [
            "not json",
            r#"[1, 2]"#,
            r#"{"version": 3, "message_type": "task", "data": {}}"#,
            r#"{"version": 2, "message_type": "task", "data": null}"#,
            r#"{"version": 2, "message_type": "task", "data": {"model_type": "setup_response"}}"#,
            r#"{"version": 2, "message_type": "task", "data": {"options": {}, "model_type": "task"}}"#,
            r#"{"version": 2, "message_type": "task", "data": {"options": {"task_id": "TQ-1", "task_category": "other"},
                "input": {"event_type": "x", "object_id": "y"}}}"#,
        ] {
            assert!(ServerMessage::decode(text).is_err(), "{text}");
        }
    }

    #[test]
    fn decoding_errors_do_not_quote_values() {
        let error = ServerMessage::decode(
            r#"{"version": 2, "message_type": "setup_response",
                "data": {"variables": [{"name": "K", "value": 424242, "secure": true}]}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(!error.contains("424242"), "{error}");
        let missing = ServerMessage::decode(
            r#"{"version": 2, "message_type": "task", "data": {"input": {}}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(missing.contains("missing field"), "{missing}");
    }

    #[test]
    fn debug_output_hides_secrets() {
        let ServerMessage::Task(task) = ServerMessage::decode(CHUNK_TASK).unwrap() else {
            panic!("not a task")
        };
        let ServerMessage::SetupResponse(setup) = ServerMessage::decode(SETUP_RESPONSE).unwrap()
        else {
            panic!("not a setup_response")
        };
        let debug = format!("{task:?} {setup:?}");
        assert!(!debug.contains("installationsecret"), "{debug}");
        assert!(!debug.contains("s3cr3t"), "{debug}");
        assert!(!debug.contains("ZmFrZS1sb2d6LXRva2Vu"), "{debug}");
        assert!(
            debug.contains("REPORT_BATCH") && debug.contains("100"),
            "{debug}"
        );
    }
}
