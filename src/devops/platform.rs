//! What the platform told this runner: the merged `setup_response`s and the
//! live settings and REST client derived from the extension variables in them.
//!
//! Both connections feed the same state, because the official runner merges per process: the
//! first response is stored as is, later ones replace a field only when they carry a non-empty
//! value, and event definitions never change once known. Handlers started after a merge see
//! the new variables; running handlers keep the snapshot they started with.
//!
//! The `logging` object is applied at once to the subscriber this runner logs to: its levels
//! (a missing one keeps the current level) and its shipping key. Unlike the merged fields, a
//! `logging` object whose key is null stops shipping — the portal's way to turn it off — while a
//! response without a `logging` object changes nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tracing::{debug, error, info, warn};

use super::protocol::{EventDefinition, LoggingSettings, SetupResponse, Variable};
use crate::config::{ConnectionSettings, LogLevel, Secret, Settings, SettingsSources};
use crate::connect::{ClientOptions, ConnectClient};
use crate::logging::{clip, LevelChange, LogControl, LogMeta, ShipTarget};

/// What a task needs from the platform state, taken once when it starts.
#[derive(Clone)]
pub(crate) struct Snapshot {
    pub settings: Arc<Settings>,
    pub client: ConnectClient,
    pub service_id: Option<String>,
    pub event_definitions: Arc<Vec<EventDefinition>>,
}

impl Snapshot {
    pub(crate) fn event_definition(&self, event_type: &str) -> Option<&EventDefinition> {
        self.event_definitions
            .iter()
            .find(|d| d.event_type == event_type)
    }
}

/// The merged setup: only the fields the official runner merges and this runner uses.
#[derive(Default)]
struct Merged {
    service_id: Option<String>,
    environment_type: Option<String>,
    account_id: Option<String>,
    account_name: Option<String>,
    repository_tag: Option<String>,
    variables: Vec<Variable>,
    /// Empty until a response carried some; then fixed for the life of the process.
    event_definitions: Arc<Vec<EventDefinition>>,
}

pub(crate) struct Platform {
    /// The layers below the extension variables (file, environment, command line).
    sources: SettingsSources,
    /// Fixed at start: where we connect and as whom, and this instance's id, never change.
    connection: ConnectionSettings,
    state: Mutex<(Merged, Snapshot)>,
    /// Serialises merges from the two connections (settings are reloaded off the runtime).
    merging: tokio::sync::Mutex<()>,
    /// The levels and shipping of the subscriber this runner logs to; `None` when it is not
    /// one this program built (a test's own).
    logging: Option<LogControl>,
}

impl Platform {
    pub(crate) fn new(sources: SettingsSources, settings: Settings, client: ConnectClient) -> Self {
        let snapshot = Snapshot {
            settings: Arc::new(settings.clone()),
            client,
            service_id: None,
            event_definitions: Arc::default(),
        };
        Platform {
            sources,
            connection: settings.connection,
            state: Mutex::new((Merged::default(), snapshot)),
            merging: tokio::sync::Mutex::new(()),
            logging: crate::logging::control(),
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        self.lock().1.clone()
    }

    /// Merges one `setup_response`; reloads the settings when the variables changed; applies
    /// its logging object.
    pub(crate) async fn apply(&self, response: SetupResponse) {
        let _serialised = self.merging.lock().await;
        let plan = logging_plan(response.logging.as_ref());
        let variables_changed = {
            let mut state = self.lock();
            let (merged, snapshot) = &mut *state;
            let changed = merge(merged, response);
            snapshot.service_id = merged.service_id.clone();
            snapshot.event_definitions = Arc::clone(&merged.event_definitions);
            changed
        };
        if variables_changed {
            self.reload_settings().await;
        }
        self.apply_logging(plan);
    }

    /// Applies the levels and the shipping key of a setup response.
    fn apply_logging(&self, plan: LoggingPlan) {
        let Some(control) = &self.logging else {
            debug!("the log subscriber is not this program's: platform log settings not applied");
            return;
        };
        for name in &plan.unknown {
            warn!(level = %clip(name), "the platform's log level is not one this runner knows; the current level stays");
        }
        match control.set_levels(plan.extension, plan.runner) {
            LevelChange::Applied(levels) => info!(
                extension = %levels.extension,
                runner = %levels.runner,
                "log levels set by the platform"
            ),
            LevelChange::Unchanged(_) => {}
            LevelChange::RustLogWins => {
                debug!("RUST_LOG is set: the platform's log levels are not applied")
            }
        }
        match plan.shipping {
            Shipping::Keep => {}
            Shipping::Stop => {
                control.stop_shipping();
            }
            Shipping::Ship(key) => {
                let target = self.ship_target(key);
                if let Err(problem) = control.ship(target) {
                    error!(%problem, "cannot ship logs to the portal");
                }
            }
        }
    }

    /// Where and as whom to ship: the merged metadata, and every secret value known.
    fn ship_target(&self, key: Secret) -> ShipTarget {
        let state = self.lock();
        let (merged, snapshot) = &*state;
        let meta = LogMeta {
            service_id: merged.service_id.clone(),
            environment_id: self.connection.environment_id.clone(),
            environment_type: merged.environment_type.clone(),
            instance_id: Some(self.connection.instance_id.clone()),
            account_id: merged.account_id.clone(),
            account_name: merged.account_name.clone(),
            repository_tag: merged.repository_tag.clone(),
        };
        let report = &snapshot.settings.report;
        let mut secrets: Vec<Secret> = self.connection.api_key.iter().cloned().collect();
        secrets.extend(report.usage_source_auth.iter().cloned());
        secrets.extend(report.alert_webhook_url.iter().map(Secret::new));
        secrets.extend(
            merged
                .variables
                .iter()
                .filter(|v| v.secure)
                .filter_map(|v| v.value.as_deref().map(Secret::new)),
        );
        ShipTarget {
            url: self.connection.log_shipping_url.clone(),
            token: key,
            meta,
            secrets,
        }
    }

    async fn reload_settings(&self) {
        let variables = self.lock().0.variables.clone();
        let mut sources = self.sources.clone();
        // An empty variable means "not set here": the file or environment value (or the
        // default) applies, as for the variables' empty initial values in extension.json.
        sources.extension = variables
            .iter()
            .filter_map(|v| {
                let value = v.value.as_deref()?.trim();
                (!value.is_empty()).then(|| (v.name.to_ascii_uppercase(), value.to_string()))
            })
            .collect::<BTreeMap<_, _>>();
        // Reading the layers touches the file system.
        let loaded = tokio::task::spawn_blocking(move || sources.load()).await;
        let mut settings = match loaded {
            Ok(Ok(settings)) => settings,
            Ok(Err(problem)) => {
                error!(
                    problem = %redact(&problem.to_string(), &variables),
                    "extension variables rejected; keeping the previous settings"
                );
                return;
            }
            Err(join) => {
                error!(%join, "reloading the settings failed; keeping the previous settings");
                return;
            }
        };
        settings.connection = self.connection.clone();
        let metrics = self.lock().1.client.metrics().clone();
        let options =
            ClientOptions::from_settings(&settings).map(|o| ClientOptions { metrics, ..o });
        let client = match options.and_then(ConnectClient::new) {
            Ok(client) => client,
            Err(problem) => {
                error!(%problem, "cannot build a REST client for the new settings; keeping the previous settings");
                return;
            }
        };
        let names: Vec<&str> = variables.iter().map(|v| v.name.as_str()).collect();
        info!(variables = %names.join(","), "extension variables applied");
        let mut state = self.lock();
        state.1.settings = Arc::new(settings);
        state.1.client = client;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Merged, Snapshot)> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Applies the merge rules; returns whether the variables changed.
fn merge(merged: &mut Merged, response: SetupResponse) -> bool {
    fn replace<T>(slot: &mut Option<T>, value: Option<T>, empty: impl Fn(&T) -> bool) {
        if let Some(value) = value.filter(|v| !empty(v)) {
            *slot = Some(value);
        }
    }
    let meta = response.logging.as_ref().and_then(|l| l.meta.clone());
    let meta = meta.unwrap_or_default();
    replace(&mut merged.service_id, meta.service_id, String::is_empty);
    replace(&mut merged.account_id, meta.account_id, String::is_empty);
    replace(
        &mut merged.account_name,
        meta.account_name,
        String::is_empty,
    );
    replace(
        &mut merged.repository_tag,
        meta.repository_tag,
        String::is_empty,
    );
    replace(
        &mut merged.environment_type,
        response.environment_type,
        String::is_empty,
    );
    if merged.event_definitions.is_empty() {
        if let Some(definitions) = response.event_definitions.filter(|d| !d.is_empty()) {
            merged.event_definitions = Arc::new(definitions);
        }
    }
    match response.variables.filter(|v| !v.is_empty()) {
        Some(variables) if variables != merged.variables => {
            merged.variables = variables;
            true
        }
        _ => false,
    }
}

/// What a setup response's `logging` object asks.
#[derive(Debug, PartialEq)]
struct LoggingPlan {
    extension: Option<LogLevel>,
    runner: Option<LogLevel>,
    /// Level names given that are not levels (the current level stays).
    unknown: Vec<String>,
    shipping: Shipping,
}

#[derive(Debug, PartialEq)]
enum Shipping {
    Keep,
    Ship(Secret),
    Stop,
}

/// The decision for one `logging` object: levels that are given and valid change, the others
/// keep; a key ships with it, a null or empty key stops; no object at all changes nothing.
fn logging_plan(logging: Option<&LoggingSettings>) -> LoggingPlan {
    let Some(logging) = logging else {
        return LoggingPlan {
            extension: None,
            runner: None,
            unknown: Vec::new(),
            shipping: Shipping::Keep,
        };
    };
    let mut unknown = Vec::new();
    let mut level = |name: &Option<String>| {
        let name = name.as_deref().map(str::trim).filter(|n| !n.is_empty())?;
        let parsed = LogLevel::parse(name);
        if parsed.is_none() {
            unknown.push(name.to_string());
        }
        parsed
    };
    let extension = level(&logging.log_level);
    let runner = level(&logging.runner_log_level);
    let shipping = match logging.logging_api_key.as_deref().map(str::trim) {
        Some(key) if !key.is_empty() => Shipping::Ship(Secret::new(key)),
        _ => Shipping::Stop,
    };
    LoggingPlan {
        extension,
        runner,
        unknown,
        shipping,
    }
}

/// Hides the values of secure variables in a message that may quote a value.
fn redact(message: &str, variables: &[Variable]) -> String {
    variables
        .iter()
        .filter(|v| v.secure)
        .filter_map(|v| v.value.as_deref())
        .filter(|value| !value.is_empty())
        .fold(message.to_string(), |message, value| {
            message.replace(value, "***")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devops::protocol::{LoggingMeta, LoggingSettings};

    fn response(service_id: Option<&str>, variables: Option<Vec<(&str, &str)>>) -> SetupResponse {
        SetupResponse {
            variables: variables.map(|vars| {
                vars.into_iter()
                    .map(|(name, value)| Variable {
                        name: name.into(),
                        value: Some(value.into()),
                        secure: false,
                    })
                    .collect()
            }),
            logging: Some(LoggingSettings {
                meta: Some(LoggingMeta {
                    service_id: service_id.map(Into::into),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            event_definitions: Some(vec![EventDefinition {
                event_type: format!("event-{}", service_id.unwrap_or("none")),
                api_collection_endpoint: "c".into(),
                api_resource_endpoint: "c/{pk}".into(),
                api_collection_filter: "f".into(),
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn later_responses_replace_only_non_empty_fields() {
        let mut merged = Merged::default();
        assert!(merge(
            &mut merged,
            response(Some("SRVC-1"), Some(vec![("A", "1")]))
        ));
        assert!(!merge(&mut merged, response(None, Some(vec![]))));
        assert_eq!(merged.service_id.as_deref(), Some("SRVC-1"));
        assert_eq!(merged.variables.len(), 1, "variables are never emptied");
        assert!(merge(
            &mut merged,
            response(Some("SRVC-2"), Some(vec![("A", "2")]))
        ));
        assert_eq!(merged.service_id.as_deref(), Some("SRVC-2"));
        assert_eq!(merged.variables[0].value.as_deref(), Some("2"));
        assert_eq!(
            merged.event_definitions[0].event_type, "event-SRVC-1",
            "event definitions come from the first response"
        );
        assert!(!merge(
            &mut merged,
            response(Some("SRVC-2"), Some(vec![("A", "2")]))
        ));
    }

    #[test]
    fn the_logging_object_decides_levels_and_shipping() {
        let logging =
            |key: Option<&str>, level: Option<&str>, runner: Option<&str>| LoggingSettings {
                logging_api_key: key.map(Into::into),
                log_level: level.map(Into::into),
                runner_log_level: runner.map(Into::into),
                meta: None,
            };
        let plan = |settings: Option<LoggingSettings>| logging_plan(settings.as_ref());
        use LogLevel::*;
        for (settings, extension, runner, unknown, shipping) in [
            (None, None, None, vec![], Shipping::Keep),
            (
                Some(logging(Some("k3y"), Some("DEBUG"), Some("WARNING"))),
                Some(Debug),
                Some(Warn),
                vec![],
                Shipping::Ship(Secret::new("k3y")),
            ),
            (
                Some(logging(None, None, Some("ERROR"))),
                None,
                Some(Error),
                vec![],
                Shipping::Stop,
            ),
            (
                Some(logging(Some("  "), Some(""), Some("LOUD"))),
                None,
                None,
                vec!["LOUD".to_string()],
                Shipping::Stop,
            ),
        ] {
            let found = plan(settings.clone());
            assert_eq!(
                found,
                LoggingPlan {
                    extension,
                    runner,
                    unknown,
                    shipping
                },
                "{settings:?}"
            );
        }
    }

    #[test]
    fn metadata_fields_merge_like_the_others() {
        let mut merged = Merged::default();
        let with_meta = |account_name: Option<&str>, tag: Option<&str>| SetupResponse {
            logging: Some(LoggingSettings {
                meta: Some(LoggingMeta {
                    account_name: account_name.map(Into::into),
                    repository_tag: tag.map(Into::into),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        merge(&mut merged, with_meta(Some("Vendor"), Some("1.0")));
        merge(&mut merged, with_meta(None, Some("")));
        assert_eq!(merged.account_name.as_deref(), Some("Vendor"));
        assert_eq!(merged.repository_tag.as_deref(), Some("1.0"));
        merge(&mut merged, with_meta(Some("Renamed"), Some("1.1")));
        assert_eq!(merged.account_name.as_deref(), Some("Renamed"));
        assert_eq!(merged.repository_tag.as_deref(), Some("1.1"));
    }

    #[test]
    fn secure_values_are_redacted() {
        let variables = vec![
            Variable {
                name: "TOKEN".into(),
                value: Some("hunter2".into()),
                secure: true,
            },
            Variable {
                name: "PLAIN".into(),
                value: Some("visible".into()),
                secure: false,
            },
        ];
        assert_eq!(
            redact("TOKEN hunter2 and visible", &variables),
            "TOKEN *** and visible"
        );
    }
}
