//! Strict checks of what a runner sends, message by message: stricter
//! than any real server is known to be, so that a test against the simulator fails when the
//! runner deviates from the official runner's wire format in any detail.

use serde_json::Value;

use payg_shared::protocol::{RunnerMessage, PROTOCOL_VERSION};

const SETUP_REQUEST_FIELDS: [&str; 12] = [
    "event_subscriptions",
    "ui_modules",
    "icon",
    "variables",
    "schedulables",
    "anvil_callables",
    "transformations",
    "audience",
    "repository",
    "runner_version",
    "proxied_connect_api",
    "model_type",
];
const TASK_FIELDS: [&str; 4] = ["options", "input", "output", "model_type"];
const OPTIONS_FIELDS: [&str; 7] = [
    "task_id",
    "task_category",
    "correlation_id",
    "reply_to",
    "api_key",
    "installation_id",
    "connect_correlation_id",
];
const INPUT_FIELDS: [&str; 3] = ["event_type", "object_id", "data"];
const OUTPUT_FIELDS: [&str; 5] = ["result", "data", "countdown", "runtime", "message"];

/// The decoded message when it could be decoded, and every rule it broke.
pub(super) fn check(text: &str) -> (Option<RunnerMessage>, Vec<String>) {
    let mut problems = Vec::new();
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(error) => return (None, vec![format!("not JSON: {error}")]),
    };
    let Some(envelope) = value.as_object() else {
        return (None, vec!["message is not a JSON object".into()]);
    };
    if envelope.get("version").and_then(Value::as_u64) != Some(PROTOCOL_VERSION) {
        problems.push(format!(
            "version must be {PROTOCOL_VERSION}, found {}",
            envelope
                .get("version")
                .map_or("nothing".into(), Value::to_string)
        ));
    }
    let message_type = envelope
        .get("message_type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let data = envelope.get("data");
    match (message_type, data) {
        ("shutdown", Some(Value::Null)) => {}
        ("shutdown", _) => problems.push("shutdown must carry \"data\": null".into()),
        ("setup_request", Some(data)) => {
            model(data, "setup_request", &SETUP_REQUEST_FIELDS, &mut problems);
            setup_request(data, &mut problems);
        }
        ("task", Some(data)) => {
            model(data, "task", &TASK_FIELDS, &mut problems);
            result(data, &mut problems);
        }
        ("setup_request" | "task", None) => problems.push(format!("{message_type} without data")),
        (other, _) => problems.push(format!("unknown message_type {other:?}")),
    }
    match RunnerMessage::decode(text) {
        Ok(RunnerMessage::Ignored { .. }) => (None, problems),
        Ok(message) => (Some(message), problems),
        Err(error) => {
            problems.push(error.to_string());
            (None, problems)
        }
    }
}

fn model(data: &Value, model_type: &str, fields: &[&str], problems: &mut Vec<String>) {
    if data.get("model_type").and_then(Value::as_str) != Some(model_type) {
        problems.push(format!(
            "{model_type} data must carry model_type {model_type:?}"
        ));
    }
    require_fields(data, model_type, fields, problems);
}

fn require_fields(object: &Value, what: &str, fields: &[&str], problems: &mut Vec<String>) {
    let Some(object) = object.as_object() else {
        problems.push(format!("{what} is not an object"));
        return;
    };
    for field in fields {
        if !object.contains_key(*field) {
            problems.push(format!("{what} lacks field {field:?}"));
        }
    }
}

fn setup_request(data: &Value, problems: &mut Vec<String>) {
    for url in ["readme_url", "changelog_url"] {
        if data["repository"][url].as_str().is_none_or(str::is_empty) {
            problems.push(format!("setup_request repository.{url} missing"));
        }
    }
    for variable in data["variables"].as_array().into_iter().flatten() {
        require_fields(
            variable,
            "setup_request variable",
            &["name", "initial_value", "secure"],
            problems,
        );
    }
    for schedulable in data["schedulables"].as_array().into_iter().flatten() {
        require_fields(
            schedulable,
            "setup_request schedulable",
            &["method", "name", "description"],
            problems,
        );
    }
}

/// A runner only ever sends tasks as results.
fn result(data: &Value, problems: &mut Vec<String>) {
    require_fields(&data["options"], "task options", &OPTIONS_FIELDS, problems);
    require_fields(&data["input"], "task input", &INPUT_FIELDS, problems);
    let output = &data["output"];
    if output.is_null() {
        problems.push("task sent without output".into());
        return;
    }
    require_fields(output, "task output", &OUTPUT_FIELDS, problems);
    if !output["countdown"].is_u64() {
        problems.push("output.countdown must be a non-negative integer".into());
    }
    if !output["runtime"].is_f64() {
        problems.push("output.runtime must be a floating-point number".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use payg_shared::protocol::{
        ResultCode, Task, TaskCategory, TaskInput, TaskOptions, TaskOutput,
    };

    fn result_text() -> String {
        RunnerMessage::Task(Task {
            options: TaskOptions {
                task_id: "TQ-1".into(),
                task_category: TaskCategory::Background,
                correlation_id: None,
                reply_to: None,
                api_key: None,
                installation_id: None,
                connect_correlation_id: None,
            },
            input: TaskInput {
                event_type: "e".into(),
                object_id: "o".into(),
                data: Value::Null,
            },
            output: Some(TaskOutput {
                result: ResultCode::Success,
                data: None,
                countdown: 0,
                runtime: 0.0,
                message: None,
            }),
        })
        .encode()
    }

    #[test]
    fn a_well_formed_result_passes() {
        let (message, problems) = check(&result_text());
        assert!(problems.is_empty(), "{problems:?}");
        assert!(matches!(message, Some(RunnerMessage::Task(_))));
        let (_, problems) = check(&RunnerMessage::Shutdown.encode());
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn deviations_are_named() {
        let mut value: Value = serde_json::from_str(&result_text()).unwrap();
        value["data"]["options"]
            .as_object_mut()
            .unwrap()
            .remove("reply_to");
        value["data"]["output"]["runtime"] = serde_json::json!(0);
        value["data"].as_object_mut().unwrap().remove("model_type");
        let (_, problems) = check(&value.to_string());
        let all = problems.join("; ");
        assert!(all.contains("reply_to"), "{all}");
        assert!(all.contains("runtime"), "{all}");
        assert!(all.contains("model_type"), "{all}");
        for text in [
            "nope",
            r#"{"message_type": "shutdown", "data": null}"#,
            r#"{"version": 2, "message_type": "hello", "data": null}"#,
        ] {
            assert!(!check(text).1.is_empty(), "{text}");
        }
    }
}
