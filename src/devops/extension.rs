//! `extension.json`: the descriptor of this extension (name, version, README and changelog
//! URLs, subscriptions, schedulables, variables with defaults), embedded in
//! the binary so that what `run` declares in `setup_request` is exactly what the file says.
//!
//! The descriptor uses the SDK-v1 form (subscriptions, schedulables and variables in the file)
//! because a single source for the declarations is what keeps the handshake, the handler
//! registry and the packaging from drifting apart.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;

use super::protocol::{DeclaredVariable, Repository, Schedulable, SetupRequest, RUNNER_VERSION};

/// The repository's `extension.json`, as built into the binary.
pub const EXTENSION_JSON: &str = include_str!("../../extension.json");

const AUDIENCES: [&str; 3] = ["vendor", "distributor", "reseller"];

#[derive(Debug, thiserror::Error)]
pub enum DescriptorError {
    #[error("extension.json is not valid: {0}")]
    Json(#[from] serde_json::Error),
    #[error("extension.json: {0}")]
    Invalid(String),
}

/// What `extension.json` declares.
#[derive(Debug, Clone, Deserialize)]
pub struct ExtensionDescriptor {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub version: String,
    pub readme_url: String,
    pub changelog_url: String,
    #[serde(default)]
    pub audience: Option<Vec<String>>,
    #[serde(default)]
    pub icon: Option<String>,
    /// Event type → object statuses (`[]` for interactive events).
    #[serde(default)]
    pub capabilities: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub schedulables: Vec<Schedulable>,
    #[serde(default)]
    pub variables: Vec<DeclaredVariable>,
}

impl ExtensionDescriptor {
    pub fn parse(json: &str) -> Result<ExtensionDescriptor, DescriptorError> {
        let descriptor: ExtensionDescriptor = serde_json::from_str(json)?;
        descriptor.check()?;
        Ok(descriptor)
    }

    fn check(&self) -> Result<(), DescriptorError> {
        let invalid = |reason: String| Err(DescriptorError::Invalid(reason));
        // `setup_request` always carries both URLs: the official runner cannot start without.
        for (field, url) in [
            ("readme_url", &self.readme_url),
            ("changelog_url", &self.changelog_url),
        ] {
            if url::Url::parse(url).is_err() {
                return invalid(format!("{field} {url:?} is not a URL"));
            }
        }
        for audience in self.audience.iter().flatten() {
            if !AUDIENCES.contains(&audience.as_str()) {
                return invalid(format!(
                    "audience {audience:?} is not one of {}",
                    AUDIENCES.join(", ")
                ));
            }
        }
        let mut methods = HashSet::new();
        for schedulable in &self.schedulables {
            if schedulable.method.is_empty() || !methods.insert(&schedulable.method) {
                return invalid(format!(
                    "schedulable method {:?} is empty or declared twice",
                    schedulable.method
                ));
            }
        }
        let mut names = HashSet::new();
        for variable in &self.variables {
            if variable.name.is_empty() || !names.insert(&variable.name) {
                return invalid(format!(
                    "variable {:?} is empty or declared twice",
                    variable.name
                ));
            }
        }
        Ok(())
    }

    /// The `setup_request` this descriptor declares; identical on every connection.
    pub fn setup_request(&self) -> SetupRequest {
        SetupRequest {
            event_subscriptions: self.capabilities.clone(),
            // Icons and UI modules belong to the web-application channel; the events channel
            // sends null.
            ui_modules: None,
            icon: None,
            variables: self.variables.clone(),
            schedulables: self.schedulables.clone(),
            anvil_callables: None,
            transformations: None,
            audience: self.audience.clone(),
            repository: Repository {
                readme_url: self.readme_url.clone(),
                changelog_url: self.changelog_url.clone(),
            },
            runner_version: RUNNER_VERSION.into(),
            proxied_connect_api: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_descriptor_declares_the_product() {
        let descriptor = ExtensionDescriptor::parse(EXTENSION_JSON).unwrap();
        assert_eq!(descriptor.name, "connect-payg");
        assert_eq!(descriptor.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(
            descriptor.audience.as_deref(),
            Some(&["vendor".to_string()][..])
        );
        assert_eq!(
            descriptor.capabilities["usage_file_request_processing"],
            ["ready", "invalid", "rejected", "accepted"]
        );
        assert_eq!(
            descriptor.schedulables[0].method,
            "generate_monthly_usage_reports"
        );
        let variable = |name: &str| {
            descriptor
                .variables
                .iter()
                .find(|v| v.name == name)
                .unwrap_or_else(|| panic!("{name} not declared"))
                .clone()
        };
        assert_eq!(variable("USAGE_SOURCE").initial_value, "");
        assert!(variable("USAGE_SOURCE_AUTH").secure);
        assert_eq!(variable("ASSET_SEARCH_CRITERIA").initial_value, "asset.id");
        assert_eq!(variable("ITEM_SEARCH_CRITERIA").initial_value, "item.mpn");
        assert_eq!(variable("REPORT_PERIOD").initial_value, "");
        assert_eq!(variable("MAX_RESUBMISSIONS").initial_value, "2");
        assert_eq!(variable("ALERT_WEBHOOK_URL").initial_value, "");
        assert_eq!(variable("API_CONCURRENCY").initial_value, "8");
        let secure: Vec<&str> = descriptor
            .variables
            .iter()
            .filter(|v| v.secure)
            .map(|v| v.name.as_str())
            .collect();
        // Chat webhooks carry their token in the URL.
        assert_eq!(secure, ["USAGE_SOURCE_AUTH", "ALERT_WEBHOOK_URL"]);
    }

    #[test]
    fn setup_request_mirrors_the_descriptor() {
        let descriptor = ExtensionDescriptor::parse(EXTENSION_JSON).unwrap();
        let request = descriptor.setup_request();
        assert_eq!(request.event_subscriptions, descriptor.capabilities);
        assert_eq!(request.schedulables, descriptor.schedulables);
        assert_eq!(request.variables, descriptor.variables);
        assert_eq!(request.repository.readme_url, descriptor.readme_url);
        assert_eq!(request.audience, descriptor.audience);
        assert_eq!(request.runner_version, RUNNER_VERSION);
        assert_eq!(request.icon, None);
    }

    #[test]
    fn bad_descriptors_are_refused() {
        let base = serde_json::json!({"name": "x", "version": "1", "readme_url": "https://a/r",
                                      "changelog_url": "https://a/c"});
        assert!(ExtensionDescriptor::parse(&base.to_string()).is_ok());
        for (field, value) in [
            ("readme_url", serde_json::json!("")),
            ("audience", serde_json::json!(["everyone"])),
            (
                "schedulables",
                serde_json::json!([{"method": "m", "name": "a", "description": "d"},
                                   {"method": "m", "name": "b", "description": "d"}]),
            ),
            (
                "variables",
                serde_json::json!([{"name": "A", "initial_value": ""}, {"name": "A", "initial_value": ""}]),
            ),
        ] {
            let mut json = base.clone();
            json[field] = value;
            assert!(
                ExtensionDescriptor::parse(&json.to_string()).is_err(),
                "{field}"
            );
        }
        let mut json = base.clone();
        json.as_object_mut().unwrap().remove("changelog_url");
        assert!(ExtensionDescriptor::parse(&json.to_string()).is_err());
    }
}
