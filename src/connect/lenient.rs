//! Forgiving field decoders for Connect payloads.
//!
//! Real payloads differ from the published model: fields come back `null` where a string or a
//! list was expected, quantities and counts arrive as strings, references are sometimes a bare
//! id and sometimes an object. A report must not fail because of that, so the models decode
//! through these helpers.

use std::fmt;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// `null` (or absence, with `#[serde(default)]`) becomes the type's default.
pub(crate) fn or_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A scalar as text (`42` → `"42"`); `null` → `None`; anything else as its JSON text.
pub(crate) fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(deserializer)? {
        Value::Null => None,
        Value::String(text) => Some(text),
        other => Some(other.to_string()),
    })
}

/// A number given as a number or a numeric string; `null` and `""` → `None`.
pub(crate) fn number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::Null => Ok(None),
        Value::Number(number) => Ok(number.as_f64()),
        Value::String(text) if text.trim().is_empty() => Ok(None),
        Value::String(text) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("{text:?} is not a number"))),
        other => Err(serde::de::Error::custom(format!("{other} is not a number"))),
    }
}

/// A count given as a number or a numeric string; `null` → 0.
pub(crate) fn count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let value = number(deserializer)?.unwrap_or(0.0);
    if value < 0.0 || value.fract() != 0.0 {
        return Err(serde::de::Error::custom(format!("{value} is not a count")));
    }
    Ok(value as u64)
}

/// A reference to another object: `{"id": "PRD-1", "name": …}` or, in flat payloads, the bare
/// id `"PRD-1"`. Serialises as `{"id": …}` (plus `name` when set), the shape request bodies use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Reference {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Reference {
    pub fn id(id: impl Into<String>) -> Self {
        Reference {
            id: id.into(),
            name: None,
        }
    }
}

impl<'de> Deserialize<'de> for Reference {
    /// Decided by the JSON's shape, not by trying one form and then the other: a failed try
    /// builds an error message, and every asset of a month carries three references.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Object {
            #[serde(default, deserialize_with = "or_default")]
            id: String,
            #[serde(default, deserialize_with = "text")]
            name: Option<String>,
        }

        struct Shape;

        impl<'de> Visitor<'de> for Shape {
            type Value = Reference;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an id or an object with an id")
            }

            fn visit_str<E: de::Error>(self, id: &str) -> Result<Reference, E> {
                Ok(Reference::id(id))
            }

            fn visit_string<E: de::Error>(self, id: String) -> Result<Reference, E> {
                Ok(Reference::id(id))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Reference, A::Error> {
                let Object { id, name } = Object::deserialize(MapAccessDeserializer::new(map))?;
                Ok(Reference { id, name })
            }
        }

        deserializer.deserialize_any(Shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Sample {
        #[serde(default, deserialize_with = "or_default")]
        list: Vec<String>,
        #[serde(default, deserialize_with = "text")]
        label: Option<String>,
        #[serde(default, deserialize_with = "number")]
        quantity: Option<f64>,
        #[serde(default, deserialize_with = "count")]
        rows: u64,
        #[serde(default)]
        owner: Option<Reference>,
    }

    fn sample(json: &str) -> Sample {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn nulls_and_absences_decode_to_defaults() {
        let s = sample(
            r#"{"list": null, "label": null, "quantity": null, "rows": null, "owner": null}"#,
        );
        assert!(s.list.is_empty() && s.label.is_none() && s.quantity.is_none() && s.rows == 0);
        assert!(s.owner.is_none());
        let s = sample("{}");
        assert!(s.list.is_empty() && s.rows == 0);
    }

    #[test]
    fn numbers_may_be_strings_and_text_may_be_numbers() {
        let s = sample(r#"{"label": 42, "quantity": "12.5", "rows": "3"}"#);
        assert_eq!(s.label.as_deref(), Some("42"));
        assert_eq!(s.quantity, Some(12.5));
        assert_eq!(s.rows, 3);
        assert_eq!(sample(r#"{"quantity": 0}"#).quantity, Some(0.0));
        assert!(serde_json::from_str::<Sample>(r#"{"quantity": "lots"}"#).is_err());
    }

    #[test]
    fn references_may_be_objects_or_bare_ids() {
        let s = sample(r#"{"owner": {"id": "PRD-1", "name": "P", "icon": "/x"}}"#);
        assert_eq!(
            s.owner.unwrap(),
            Reference {
                id: "PRD-1".into(),
                name: Some("P".into())
            }
        );
        let s = sample(r#"{"owner": "MP-41136"}"#);
        assert_eq!(s.owner.unwrap(), Reference::id("MP-41136"));
        assert_eq!(
            serde_json::to_string(&Reference::id("CRD-1")).unwrap(),
            r#"{"id":"CRD-1"}"#
        );
    }
}
