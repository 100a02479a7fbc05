//! Checks the JSON bodies of `POST /usage/files` and `PUT /usage/files/{id}` the way Connect's
//! serializers do: lengths, date shapes (`YYYY-MM-DD`), existing references. Every
//! problem is collected, field-prefixed, into one 400 `VAL_001`.

use chrono::NaiveDate;
use serde_json::{Map, Value};

use super::error::ApiError;
use super::state::World;
use super::usage_file::{FileFields, Placement};

const NAME_MAX: usize = 100;
const DESCRIPTION_MAX: usize = 200;
const NOTE_MAX: usize = 200;
const EXTERNAL_ID_MAX: usize = 200;
const CURRENCY_MAX: usize = 20;

/// The fields and placement of a file to create.
pub(crate) fn new_file(body: &Value, world: &World) -> Result<(FileFields, Placement), ApiError> {
    let mut checker = Checker::new(body)?;
    let name = checker.text("name", NAME_MAX, true);
    let description = checker.text("description", DESCRIPTION_MAX, false);
    let note = checker.text("note", NOTE_MAX, false);
    let external_id = checker.external_id();
    let currency = checker.text("currency", CURRENCY_MAX, false);
    let period = checker.period(true);
    let placement = checker.placement(world);
    checker.finish()?;
    let (Some(name), Some((period_from, period_to)), Some((placement, market_currency))) =
        (name, period, placement)
    else {
        // Each missing piece pushed its own error above; this is only the type system's view.
        return Err(ApiError::validation(vec![
            "non_field_errors: incomplete body.".into(),
        ]));
    };
    let fields = FileFields {
        name,
        description: description.unwrap_or_default(),
        note: note.unwrap_or_default(),
        external_id,
        currency: currency.unwrap_or(market_currency),
        period_from,
        period_to,
    };
    Ok((fields, placement))
}

/// `fields` with the changes of a `PUT` body applied (product and contract cannot change).
pub(crate) fn update(fields: &FileFields, body: &Value) -> Result<FileFields, ApiError> {
    let mut checker = Checker::new(body)?;
    let name = checker.text("name", NAME_MAX, false);
    let description = checker.text("description", DESCRIPTION_MAX, false);
    let note = checker.text("note", NOTE_MAX, false);
    let external_id = checker.external_id();
    let currency = checker.text("currency", CURRENCY_MAX, false);
    let period = checker.period(false);
    checker.finish()?;
    let mut updated = fields.clone();
    updated.name = name.unwrap_or(updated.name);
    updated.description = description.unwrap_or(updated.description);
    updated.note = note.unwrap_or(updated.note);
    updated.external_id = external_id.or(updated.external_id);
    updated.currency = currency.unwrap_or(updated.currency);
    if let Some((from, to)) = period {
        updated.period_from = from;
        updated.period_to = to;
    }
    Ok(updated)
}

struct Checker<'a> {
    object: &'a Map<String, Value>,
    errors: Vec<String>,
}

impl<'a> Checker<'a> {
    fn new(body: &'a Value) -> Result<Self, ApiError> {
        match body {
            Value::Object(object) => Ok(Checker {
                object,
                errors: Vec::new(),
            }),
            _ => Err(ApiError::validation(vec![
                "non_field_errors: Invalid data. Expected a dictionary.".into(),
            ])),
        }
    }

    fn finish(self) -> Result<(), ApiError> {
        match self.errors.is_empty() {
            true => Ok(()),
            false => Err(ApiError::validation(self.errors)),
        }
    }

    fn present(&self, field: &str) -> Option<&'a Value> {
        self.object.get(field).filter(|value| !value.is_null())
    }

    fn text(&mut self, field: &str, max: usize, required: bool) -> Option<String> {
        let text = match self.present(field) {
            None => None,
            Some(Value::String(text)) => Some(text.clone()),
            Some(_) => {
                self.errors.push(format!("{field}: Not a valid string."));
                return None;
            }
        };
        match text {
            None if required => self
                .errors
                .push(format!("{field}: This field is required.")),
            Some(text) if required && text.trim().is_empty() => self
                .errors
                .push(format!("{field}: This field may not be blank.")),
            Some(text) if text.chars().count() > max => self.errors.push(format!(
                "{field}: Ensure this field has no more than {max} characters."
            )),
            text => return text,
        }
        None
    }

    fn external_id(&mut self) -> Option<String> {
        let external_id = self.text("external_id", EXTERNAL_ID_MAX, false)?;
        if external_id.chars().any(char::is_whitespace) {
            self.errors
                .push("external_id: must not contain spaces.".into());
            return None;
        }
        Some(external_id)
    }

    fn period(&mut self, required: bool) -> Option<(NaiveDate, NaiveDate)> {
        let Some(period) = self.present("period") else {
            if required {
                self.errors.push("period: This field is required.".into());
            }
            return None;
        };
        let date = |key: &str| {
            period
                .get(key)
                .and_then(Value::as_str)
                .filter(|text| text.len() == 10)
                .and_then(|text| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok())
        };
        match (date("from"), date("to")) {
            (Some(from), Some(to)) if from <= to => Some((from, to)),
            (Some(_), Some(_)) => {
                self.errors
                    .push("period: from must not be after to.".into());
                None
            }
            _ => {
                self.errors
                    .push("period: from and to must be dates in the format YYYY-MM-DD.".into());
                None
            }
        }
    }

    /// `{"id": …}` of a reference field.
    fn reference(&mut self, field: &str) -> Option<String> {
        match self.present(field).map(|value| value.get("id")) {
            Some(Some(Value::String(id))) if !id.is_empty() => Some(id.clone()),
            None => {
                self.errors
                    .push(format!("{field}: This field is required."));
                None
            }
            Some(_) => {
                self.errors
                    .push(format!("{field}: expected an object with an id."));
                None
            }
        }
    }

    /// Product and contract, checked against the catalogue; the marketplace (and its currency)
    /// comes from the contract's assets of that product.
    fn placement(&mut self, world: &World) -> Option<(Placement, String)> {
        let catalogue = &world.catalogue;
        let product_id = self.reference("product");
        let contract_id = self.reference("contract");
        let product = product_id.as_deref().and_then(|id| {
            let product = catalogue.product(id);
            if product.is_none() {
                self.errors
                    .push(format!("product: object {id} does not exist."));
            }
            product
        });
        let contract = contract_id.as_deref().and_then(|id| {
            let contract = catalogue.contract(id);
            if contract.is_none() {
                self.errors
                    .push(format!("contract: object {id} does not exist."));
            }
            contract
        });
        let (product, contract) = (product?, contract?);
        let Some(schema) = &product.ppu_schema else {
            self.errors.push(format!(
                "product: {} has no pay-as-you-go capability.",
                product.id
            ));
            return None;
        };
        if !contract.is_active_distribution() {
            self.errors.push(format!(
                "contract: {} is not an active distribution contract.",
                contract.id
            ));
            return None;
        }
        let marketplace_id = world
            .assets_on(&contract.id, &product.id)
            .map(|asset| asset.marketplace_id.clone())
            .next()
            .unwrap_or_else(|| contract.marketplace_id.clone());
        let currency = catalogue
            .marketplace(&marketplace_id)
            .map(|marketplace| marketplace.currency.clone())
            .unwrap_or_default();
        let placement = Placement {
            product_id: product.id.clone(),
            contract_id: contract.id.clone(),
            marketplace_id,
            schema: schema.to_ascii_lowercase(),
        };
        Some((placement, currency))
    }
}
