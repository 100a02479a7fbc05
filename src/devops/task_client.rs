//! The REST client a handler gets for one task: the runner's client plus
//! the headers the official runner adds, so the platform can attribute the calls to the
//! extension and the task, and the installation's API key when the task carries one.

use crate::config::Secret;
use crate::connect::ConnectClient;

use super::protocol::Task;

pub(crate) fn for_task(
    base: &ConnectClient,
    service_id: Option<&str>,
    task: &Task,
) -> ConnectClient {
    let mut client = base.clone();
    if let Some(service_id) = service_id {
        client = client.with_header("EAAS_EXT_ID", service_id);
    }
    client = client
        .with_header("EAAS_TASK_ID", &task.options.task_id)
        .with_header("EAAS_TASK_TYPE", &task.input.event_type);
    if let Some(traceparent) = task
        .options
        .connect_correlation_id
        .as_deref()
        .and_then(traceparent)
    {
        client = client.with_header("ext-traceparent", &traceparent);
    }
    if let Some(api_key) = &task.options.api_key {
        client = client.with_api_key(Secret::new(api_key.clone()));
    }
    client
}

/// `ext-traceparent` as the official runner builds it: characters 3..34 of the correlation id
/// (31 of the 32 trace-id digits — a quirk kept for parity), a random span id, flags `01`.
pub(crate) fn traceparent(connect_correlation_id: &str) -> Option<String> {
    if connect_correlation_id.is_empty() {
        return None;
    }
    let trace: String = connect_correlation_id.chars().skip(3).take(31).collect();
    let span: u64 = rand::random();
    Some(format!("00-{trace}-{span:016x}-01"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_keeps_31_trace_digits() {
        let header =
            traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
        let parts: Vec<&str> = header.split('-').collect();
        assert_eq!(parts[0], "00");
        assert_eq!(parts[1], "0af7651916cd43dd8448eb211c80319");
        assert_eq!(parts[2].len(), 16);
        assert!(parts[2]
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
        assert_eq!(parts[3], "01");
        assert_eq!(traceparent(""), None);
    }
}
