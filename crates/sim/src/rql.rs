//! RQL evaluated as Connect's list endpoints evaluate it: a list request's query — the shared
//! [`payg_shared::rql`] tree, parsed from the raw query string exactly as the client renders it —
//! compiled to a filter over JSON objects, then ordered, paged and projected.
//!
//! The simulator answers list requests with the same filtering, ordering, projection and paging
//! rules as Connect, so that a client which builds wrong RQL (unbalanced parentheses, an `in`
//! without a list, an unknown operator) fails here exactly as it would in production instead of
//! silently getting everything back. Parsing (and every refusal) lives in the shared crate, next
//! to the rendering it must invert; what the platform does with a query lives here.
//!
//! A raw `*` in a `like`/`ilike` pattern is a wildcard while an encoded one (`%2A`) is a literal
//! asterisk; everywhere else a value is compared as plain text.

use std::cmp::Ordering;
use std::collections::HashSet;

use payg_shared::rql::{
    CompareOp, Expr, LikeOp, MemberOp, Operand, Piece, Query, RequestParam, RqlError,
    Value as RqlValue,
};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue as JsonText;
use serde_json::Value;

/// A parsed list request: its query (filter, projection, ordering), compiled for evaluation,
/// and the request's own paging and free-text search.
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    /// The query as the client wrote it.
    query: Query,
    limit: Option<usize>,
    offset: usize,
    search: Option<String>,
    /// The query's filter, compiled (`None`: every object matches).
    filter: Option<Filter>,
    /// The query's `select(-…)` paths.
    removed_fields: Vec<Vec<String>>,
    /// The query's `ordering(…)`.
    ordering: Vec<SortKey>,
}

/// One page of a list answer and where it sits in the whole result. Its items are written
/// out as they are serialized: stored objects through the query's `select(-…)`
/// ([`Projected`]), pages of thousands of objects without first copying every object kept.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub offset: usize,
    pub total: usize,
}

impl<T> Page<T> {
    /// The `Content-Range` header value: `items first-last/total`, `items 0-0/total` when empty.
    pub fn content_range(&self) -> String {
        match self.items.len() {
            0 => format!("items 0-0/{}", self.total),
            n => format!(
                "items {}-{}/{}",
                self.offset,
                self.offset + n - 1,
                self.total
            ),
        }
    }
}

/// An object rendered once and served many times, kept with each top-level field already
/// written as JSON: a page of assets copies the kept fields' text instead of serializing the
/// same values again for every request (those pages were the simulator's costliest answers).
#[derive(Debug, Clone)]
pub struct Stored {
    value: Value,
    /// The JSON of each field of `value`, in the map's order (none unless it is an object:
    /// only objects are served field by field).
    fields: Vec<Box<JsonText>>,
}

impl Stored {
    pub fn new(value: Value) -> Self {
        let fields = match &value {
            Value::Object(map) => map
                .values()
                .map(|field| serde_json::value::to_raw_value(field).expect("JSON values serialize"))
                .collect(),
            _ => Vec::new(),
        };
        Stored { value, fields }
    }
}

/// What lists and details are made of: objects as they are, or stored with their fields' JSON.
pub trait Listed<'v>: Copy {
    fn object(self) -> &'v Value;
    fn fields(self) -> Option<&'v [Box<JsonText>]>;
}

impl<'v> Listed<'v> for &'v Value {
    fn object(self) -> &'v Value {
        self
    }

    fn fields(self) -> Option<&'v [Box<JsonText>]> {
        None
    }
}

impl<'v> Listed<'v> for &'v Stored {
    fn object(self) -> &'v Value {
        &self.value
    }

    fn fields(self) -> Option<&'v [Box<JsonText>]> {
        Some(&self.fields)
    }
}

/// An object as `select(-…)` shows it: the removed paths are skipped as it is serialized.
#[derive(Debug, Clone)]
pub struct Projected<'q, 'v> {
    object: &'v Value,
    /// The JSON of each of `object`'s fields, when it was stored with them.
    fields: Option<&'v [Box<JsonText>]>,
    /// The removed paths, relative to `object`.
    removed: Vec<&'q [String]>,
}

impl Serialize for Projected<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.object {
            Value::Object(map) if self.fields.is_some() || !self.removed.is_empty() => {
                let mut out = serializer.serialize_map(None)?;
                for (at, (key, value)) in map.iter().enumerate() {
                    if self
                        .removed
                        .iter()
                        .any(|path| path.len() == 1 && path[0] == *key)
                    {
                        continue;
                    }
                    let removed: Vec<&[String]> = self
                        .removed
                        .iter()
                        .filter(|path| path.len() > 1 && path[0] == *key)
                        .map(|path| &path[1..])
                        .collect();
                    match self.fields {
                        Some(fields) if removed.is_empty() => {
                            out.serialize_entry(key, &fields[at])?;
                        }
                        _ => out.serialize_entry(
                            key,
                            &Projected {
                                object: value,
                                fields: None,
                                removed,
                            },
                        )?,
                    }
                }
                out.end()
            }
            // A path through an array applies to each of its elements.
            Value::Array(items) if !self.removed.is_empty() => {
                serializer.collect_seq(items.iter().map(|object| Projected {
                    object,
                    fields: None,
                    removed: self.removed.clone(),
                }))
            }
            other => other.serialize(serializer),
        }
    }
}

/// A filter compiled for evaluation: dotted fields split into paths, lists made sets.
#[derive(Debug, Clone, PartialEq)]
enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    Compare {
        op: CompareOp,
        field: Vec<String>,
        operand: Operand,
    },
    Member {
        field: Vec<String>,
        /// The list as given, for numbers and booleans (compared by value)…
        values: Vec<String>,
        /// …and as a set, for strings: `in(id,…)` with a hundred ids over thousands of objects
        /// would otherwise compare every pair.
        texts: HashSet<String>,
        negated: bool,
    },
    Like {
        field: Vec<String>,
        pattern: RqlValue,
        case_insensitive: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
struct SortKey {
    field: Vec<String>,
    descending: bool,
}

impl ListRequest {
    /// Parses a raw (still percent-encoded) query string such as
    /// `and(eq(status,active),in(id,(A,B)))&ordering(-id)&limit=10&offset=0`.
    pub fn parse(raw_query: &str) -> Result<ListRequest, RqlError> {
        let (query, params) = Query::parse_request(raw_query)?;
        let mut request = ListRequest {
            filter: query.filter.expr().map(Filter::compile),
            // Positive `select(field)` entries ask Connect for optional sub-objects; every
            // field is already present here.
            removed_fields: query
                .select
                .iter()
                .filter_map(|field| field.strip_prefix('-'))
                .map(field_path)
                .collect(),
            ordering: query.ordering.iter().map(|key| SortKey::new(key)).collect(),
            query,
            ..ListRequest::default()
        };
        // Written later wins, as query strings go.
        for param in params {
            match param {
                RequestParam::Limit(limit) => request.limit = Some(limit),
                RequestParam::Offset(offset) => request.offset = offset,
                RequestParam::Search(term) => request.search = Some(term),
            }
        }
        Ok(request)
    }

    /// True when the object passes the query's filter and the search.
    pub fn matches(&self, object: &Value) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|filter| filter.matches(object))
            && self
                .search
                .as_deref()
                .is_none_or(|term| text_search(object, term))
    }

    /// Filters, orders, pages (at most `page_cap` items, whatever `limit` asks) and projects.
    pub fn apply<'q, 'v, O: Listed<'v>>(
        &'q self,
        objects: impl IntoIterator<Item = O>,
        page_cap: usize,
    ) -> Page<Projected<'q, 'v>> {
        let mut selected: Vec<O> = objects
            .into_iter()
            .filter(|o| self.matches(o.object()))
            .collect();
        if !self.ordering.is_empty() {
            selected.sort_by(|a, b| self.compare_for_ordering(a.object(), b.object()));
        }
        let total = selected.len();
        let limit = self.limit.unwrap_or(page_cap).min(page_cap);
        let items = selected
            .into_iter()
            .skip(self.offset)
            .take(limit)
            .map(|object| self.project(object))
            .collect();
        Page {
            items,
            offset: self.offset,
            total,
        }
    }

    /// [`ListRequest::apply`] over objects rendered on demand: `render(candidate, wanted)`
    /// gives a candidate's object with at least the top-level fields `wanted` accepts (the
    /// others may be left out), here the fields the query checks ([`ListRequest::inspects`]).
    /// Each candidate is rendered, checked and dropped, its sort keys kept. Returns the
    /// candidates on the page, for the caller to write out ([`ListRequest::page_of`]), and
    /// the total that matched. Without a filter, a search or an ordering none is rendered.
    pub fn select<C: Copy>(
        &self,
        candidates: impl IntoIterator<Item = C>,
        render: impl Fn(C, &dyn Fn(&str) -> bool) -> Value,
        page_cap: usize,
    ) -> (Vec<C>, usize) {
        let limit = self.limit.unwrap_or(page_cap).min(page_cap);
        let inspect = self.filter.is_some() || self.search.is_some() || !self.ordering.is_empty();
        let inspected = |field: &str| self.inspects(field);
        // (candidate, its sort keys)
        let mut kept: Vec<(C, Vec<Option<Value>>)> = Vec::new();
        for candidate in candidates {
            if !inspect {
                kept.push((candidate, Vec::new()));
                continue;
            }
            let object = render(candidate, &inspected);
            if !self.matches(&object) {
                continue;
            }
            let keys = (0..self.ordering.len())
                .map(|at| self.key_of(&object, at).cloned())
                .collect();
            kept.push((candidate, keys));
        }
        if !self.ordering.is_empty() {
            // Stable, as `apply`'s: equal keys keep the candidates' order.
            kept.sort_by(|(_, a), (_, b)| {
                self.compare_keys(|at| a[at].as_ref(), |at| b[at].as_ref())
            });
        }
        let total = kept.len();
        let page = kept
            .into_iter()
            .skip(self.offset)
            .take(limit)
            .map(|(candidate, _)| candidate)
            .collect();
        (page, total)
    }

    /// The page made of `items` (what [`ListRequest::select`] chose, as they are shown) out of
    /// `total`.
    pub fn page_of<T>(&self, items: Vec<T>, total: usize) -> Page<T> {
        Page {
            items,
            offset: self.offset,
            total,
        }
    }

    /// The values the query pins the top-level `field` to (`eq(field,…)` or `in(field,(…))`
    /// in its top conjunction), if it does: a collection indexed by that field then matches
    /// only those objects instead of every one it holds.
    pub fn pinned(&self, field: &str) -> Option<Vec<&str>> {
        fn pinned<'q>(expr: &'q Expr, wanted: &str) -> Option<Vec<&'q str>> {
            match expr {
                Expr::And(parts) => parts.iter().find_map(|part| pinned(part, wanted)),
                Expr::Compare {
                    op: CompareOp::Eq,
                    field,
                    operand: Operand::Value(value),
                } if field == wanted => Some(vec![value.text()]),
                Expr::Member {
                    op: MemberOp::In,
                    field,
                    values,
                } if field == wanted => Some(values.iter().map(RqlValue::text).collect()),
                _ => None,
            }
        }
        pinned(self.query.filter.expr()?, field)
    }

    /// Whether checking an object against the query (filter, search, ordering) reads its
    /// top-level `field`: an object rendered on demand needs no other field to be checked.
    pub fn inspects(&self, field: &str) -> bool {
        // The search reads every top-level text field.
        self.search.is_some()
            || self.ordering.iter().any(|key| key.field[0] == field)
            || self
                .filter
                .as_ref()
                .is_some_and(|filter| filter.reads(field))
    }

    /// Whether the answer shows the top-level `field` (in part, when only paths below it are
    /// removed): an object rendered for a page needs no other field.
    pub fn shows(&self, field: &str) -> bool {
        !self
            .removed_fields
            .iter()
            .any(|path| path.len() == 1 && path[0] == field)
    }

    /// Whether `select(-…)` removes paths below the top-level `field` (`-params.value`).
    pub fn removes_below(&self, field: &str) -> bool {
        self.removed_fields
            .iter()
            .any(|path| path.len() > 1 && path[0] == field)
    }

    /// The top-level `field`'s `value` without the `select(-…)` paths below it.
    pub fn project_below<'q, 'v>(&'q self, field: &str, value: &'v Value) -> Projected<'q, 'v> {
        Projected {
            object: value,
            fields: None,
            removed: self
                .removed_fields
                .iter()
                .filter(|path| path.len() > 1 && path[0] == field)
                .map(|path| &path[1..])
                .collect(),
        }
    }

    /// The object without the `select(-field)` paths.
    pub fn project<'q, 'v>(&'q self, object: impl Listed<'v>) -> Projected<'q, 'v> {
        Projected {
            object: object.object(),
            fields: object.fields(),
            removed: self.removed_fields.iter().map(Vec::as_slice).collect(),
        }
    }

    fn compare_for_ordering(&self, a: &Value, b: &Value) -> Ordering {
        self.compare_keys(|at| self.key_of(a, at), |at| self.key_of(b, at))
    }

    /// `object`'s value of ordering key `at`: the first at its path.
    fn key_of<'v>(&self, object: &'v Value, at: usize) -> Option<&'v Value> {
        lookup(object, &self.ordering[at].field).first().copied()
    }

    /// Orders two objects by their values of each `ordering` key (`a(n)`: `a`'s value of key n).
    fn compare_keys<'v>(
        &self,
        a: impl Fn(usize) -> Option<&'v Value>,
        b: impl Fn(usize) -> Option<&'v Value>,
    ) -> Ordering {
        for (at, key) in self.ordering.iter().enumerate() {
            let ordering = compare_sort_values(a(at), b(at));
            let ordering = if key.descending {
                ordering.reverse()
            } else {
                ordering
            };
            if ordering != Ordering::Equal {
                return ordering;
            }
        }
        Ordering::Equal
    }
}

impl SortKey {
    /// `-field` sorts descending, `field` or `+field` ascending.
    fn new(key: &str) -> SortKey {
        let (descending, field) = match key.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, key.strip_prefix('+').unwrap_or(key)),
        };
        SortKey {
            field: field_path(field),
            descending,
        }
    }
}

fn field_path(text: &str) -> Vec<String> {
    text.split('.').map(str::to_string).collect()
}

impl Filter {
    fn compile(expr: &Expr) -> Filter {
        match expr {
            Expr::And(parts) => Filter::And(parts.iter().map(Filter::compile).collect()),
            Expr::Or(parts) => Filter::Or(parts.iter().map(Filter::compile).collect()),
            Expr::Not(inner) => Filter::Not(Box::new(Filter::compile(inner))),
            Expr::Compare { op, field, operand } => Filter::Compare {
                op: *op,
                field: field_path(field),
                operand: operand.clone(),
            },
            Expr::Member { op, field, values } => {
                let values: Vec<String> = values
                    .iter()
                    .map(|value| value.text().to_string())
                    .collect();
                Filter::Member {
                    field: field_path(field),
                    texts: values.iter().cloned().collect(),
                    values,
                    negated: *op == MemberOp::Out,
                }
            }
            Expr::Like { op, field, pattern } => Filter::Like {
                field: field_path(field),
                pattern: pattern.clone(),
                case_insensitive: *op == LikeOp::Ilike,
            },
        }
    }

    /// Whether the filter looks at the top-level `field` (the first step of a path).
    fn reads(&self, field: &str) -> bool {
        match self {
            Filter::And(parts) | Filter::Or(parts) => parts.iter().any(|part| part.reads(field)),
            Filter::Not(inner) => inner.reads(field),
            Filter::Compare { field: path, .. }
            | Filter::Member { field: path, .. }
            | Filter::Like { field: path, .. } => path[0] == field,
        }
    }

    fn matches(&self, object: &Value) -> bool {
        match self {
            Filter::And(parts) => parts.iter().all(|part| part.matches(object)),
            Filter::Or(parts) => parts.iter().any(|part| part.matches(object)),
            Filter::Not(inner) => !inner.matches(object),
            Filter::Compare { op, field, operand } => {
                let found = lookup(object, field);
                match op {
                    CompareOp::Eq => equals_any(operand, &found),
                    CompareOp::Ne => !equals_any(operand, &found),
                    _ => {
                        let Operand::Value(wanted) = operand else {
                            return false;
                        };
                        scalars(&found).any(|value| {
                            compare_with_text(value, wanted.text()).is_some_and(|ordering| match op
                            {
                                CompareOp::Gt => ordering == Ordering::Greater,
                                CompareOp::Ge => ordering != Ordering::Less,
                                CompareOp::Lt => ordering == Ordering::Less,
                                _ => ordering != Ordering::Greater,
                            })
                        })
                    }
                }
            }
            Filter::Member {
                field,
                values,
                texts,
                negated,
            } => {
                let found = lookup(object, field);
                let member = scalars(&found).any(|value| match value {
                    Value::String(own) => texts.contains(own),
                    other => values.iter().any(|text| equals_text(other, text)),
                });
                member != *negated
            }
            Filter::Like {
                field,
                pattern,
                case_insensitive,
            } => scalars(&lookup(object, field)).any(|value| {
                scalar_text(value)
                    .is_some_and(|text| like_matches(&text, pattern, *case_insensitive))
            }),
        }
    }
}

/// Whether `operand` holds for the values found at a comparison's field.
fn equals_any(operand: &Operand, found: &[&Value]) -> bool {
    match operand {
        Operand::Null => found.is_empty() || found.iter().any(|value| value.is_null()),
        Operand::Empty => found.iter().any(|value| match value {
            Value::String(text) => text.is_empty(),
            Value::Array(items) => items.is_empty(),
            _ => false,
        }),
        Operand::Value(text) => scalars(found).any(|value| equals_text(value, text.text())),
    }
}

/// Every value at a dotted path; arrays on the way fan out (so `params.id` matches any param).
/// The values themselves may be arrays (see [`scalars`]).
fn lookup<'v>(object: &'v Value, path: &[String]) -> Vec<&'v Value> {
    let mut current = vec![object];
    for segment in path {
        let mut next = Vec::new();
        for value in current {
            collect_child(value, segment, &mut next);
        }
        current = next;
    }
    current
}

/// The values found, with arrays opened: `eq(tags,x)` matches when any tag is `x`.
fn scalars<'f, 'v>(found: &'f [&'v Value]) -> impl Iterator<Item = &'v Value> + 'f {
    found.iter().flat_map(|value| match value {
        Value::Array(items) => items.iter().collect::<Vec<_>>(),
        other => vec![*other],
    })
}

fn collect_child<'v>(value: &'v Value, segment: &str, into: &mut Vec<&'v Value>) {
    match value {
        Value::Object(map) => into.extend(map.get(segment)),
        Value::Array(items) => items
            .iter()
            .for_each(|item| collect_child(item, segment, into)),
        _ => {}
    }
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

fn equals_text(value: &Value, text: &str) -> bool {
    compare_with_text(value, text) == Some(Ordering::Equal)
}

/// Compares a JSON scalar with a query value, the query value taking the JSON value's type.
fn compare_with_text(value: &Value, text: &str) -> Option<Ordering> {
    match value {
        Value::String(own) => Some(own.as_str().cmp(text)),
        Value::Number(number) => number.as_f64()?.partial_cmp(&text.parse::<f64>().ok()?),
        Value::Bool(flag) => match text {
            "true" => Some(flag.cmp(&true)),
            "false" => Some(flag.cmp(&false)),
            _ => None,
        },
        _ => None,
    }
}

fn compare_sort_values(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    fn rank(value: Option<&Value>) -> u8 {
        match value {
            None => 0,
            Some(Value::Null) => 1,
            Some(Value::Bool(_)) => 2,
            Some(Value::Number(_)) => 3,
            Some(Value::String(_)) => 4,
            Some(_) => 5,
        }
    }
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)),
    }
}

/// Whole-string glob match where only raw asterisks are wildcards.
fn like_matches(text: &str, pattern: &RqlValue, case_insensitive: bool) -> bool {
    let fold = |s: &str| {
        if case_insensitive {
            s.to_lowercase()
        } else {
            s.to_string()
        }
    };
    let text = fold(text);
    let mut rest = text.as_str();
    let mut after_wildcard = false;
    let mut pieces = pattern.pieces().peekable();
    while let Some(piece) = pieces.next() {
        match piece {
            Piece::Wildcard => after_wildcard = true,
            Piece::Text(literal) => {
                let literal = fold(literal);
                let is_last = pieces.peek().is_none();
                let found = if !after_wildcard {
                    rest.starts_with(&literal).then_some(0)
                } else if is_last {
                    rest.ends_with(&literal).then(|| rest.len() - literal.len())
                } else {
                    rest.find(&literal)
                };
                let Some(at) = found else {
                    return false;
                };
                rest = &rest[at + literal.len()..];
                after_wildcard = false;
            }
        }
    }
    after_wildcard || rest.is_empty()
}

/// The plain `search=` parameter: a case-insensitive substring of any top-level text field.
fn text_search(object: &Value, term: &str) -> bool {
    let term = term.to_lowercase();
    object.as_object().is_some_and(|map| {
        map.values()
            .filter_map(Value::as_str)
            .any(|text| text.to_lowercase().contains(&term))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn assets() -> Vec<Value> {
        vec![
            json!({"id": "AS-1", "status": "active", "name": "Alpha cloud", "n": 5,
                   "product": {"id": "PRD-1"}, "params": [{"id": "tenant_id", "value": "t-1"}],
                   "note": null, "tags": []}),
            json!({"id": "AS-2", "status": "terminated", "name": "beta", "n": 12,
                   "product": {"id": "PRD-2"}, "params": [{"id": "tenant_id", "value": "t-2"}],
                   "note": "a, b", "tags": ["x"]}),
            json!({"id": "AS-3", "status": "active", "name": "Gamma*star", "n": 7,
                   "product": {"id": "PRD-1"}, "params": [], "tags": ["y"]}),
        ]
    }

    fn json(projected: &Projected<'_, '_>) -> Value {
        serde_json::to_value(projected).unwrap()
    }

    fn ids(raw: &str) -> Vec<String> {
        let data = assets();
        ListRequest::parse(raw)
            .unwrap_or_else(|error| panic!("{raw}: {error}"))
            .apply(&data, 100)
            .items
            .iter()
            .map(|item| json(item)["id"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn comparison_operators_follow_the_json_type() {
        assert_eq!(ids("eq(status,active)"), ["AS-1", "AS-3"]);
        assert_eq!(ids("ne(status,active)"), ["AS-2"]);
        assert_eq!(ids("gt(n,5)"), ["AS-2", "AS-3"]);
        assert_eq!(ids("ge(n,7)&le(n,7)"), ["AS-3"]);
        assert_eq!(ids("lt(id,AS-2)"), ["AS-1"]);
        assert_eq!(ids("eq(product.id,PRD-1)"), ["AS-1", "AS-3"]);
        assert_eq!(ids("status=terminated"), ["AS-2"]);
    }

    #[test]
    fn logic_and_membership_nest() {
        assert_eq!(
            ids("and(in(status,(active)),or(eq(n,5),eq(n,12)))"),
            ["AS-1"]
        );
        assert_eq!(ids("out(id,(AS-1,AS-3))"), ["AS-2"]);
        assert_eq!(ids("not(eq(status,active))"), ["AS-2"]);
        assert_eq!(ids("in(params.value,(t-2))"), ["AS-2"]);
        assert_eq!(ids("eq(params.id,tenant_id)"), ["AS-1", "AS-2"]);
    }

    #[test]
    fn null_and_empty_are_distinct_tests() {
        assert_eq!(ids("eq(note,null())"), ["AS-1", "AS-3"]);
        assert_eq!(ids("ne(note,null())"), ["AS-2"]);
        assert_eq!(ids("eq(tags,empty())"), ["AS-1"]);
    }

    #[test]
    fn like_uses_raw_asterisks_as_wildcards_only() {
        assert_eq!(ids("ilike(name,*CLOUD*)"), ["AS-1"]);
        assert_eq!(ids("like(name,*CLOUD*)"), Vec::<String>::new());
        assert_eq!(ids("like(name,Gamma%2Astar)"), ["AS-3"]);
        assert_eq!(ids("like(name,Alpha%2A)"), Vec::<String>::new());
        assert_eq!(ids("like(name,b*)"), ["AS-2"]);
    }

    #[test]
    fn quoted_and_encoded_values_keep_their_commas() {
        assert_eq!(ids("eq(note,%22a%2C%20b%22)"), ["AS-2"]);
        assert_eq!(ids("eq(note,\"a, b\")"), ["AS-2"]);
        assert_eq!(ids("eq(note,\"a%2C%20b\")"), ["AS-2"]);
    }

    #[test]
    fn ordering_paging_and_select() {
        let data = assets();
        let query = ListRequest::parse("ordering(-n)&select(-params,-product.id)&limit=2&offset=1")
            .unwrap();
        let page = query.apply(&data, 100);
        assert_eq!(page.total, 3);
        assert_eq!(page.content_range(), "items 1-2/3");
        let first = json(&page.items[0]);
        assert_eq!(first["id"], "AS-3");
        assert!(first.get("params").is_none());
        assert_eq!(first["product"], json!({}));
        let query = ListRequest::parse("select(-params.value)&eq(id,AS-2)").unwrap();
        let page = query.apply(&data, 100);
        assert_eq!(
            json(&page.items[0])["params"],
            json!([{"id": "tenant_id"}]),
            "a path through an array applies to each element"
        );
        let query = ListRequest::parse("limit=0").unwrap();
        let counted = query.apply(&data, 100);
        assert!(counted.items.is_empty());
        assert_eq!(counted.content_range(), "items 0-0/3");
    }

    #[test]
    fn stored_objects_answer_exactly_as_plain_ones() {
        let plain = assets();
        let stored: Vec<Stored> = plain.iter().cloned().map(Stored::new).collect();
        for raw in [
            "",
            "select(-params)",
            "select(-product.id,-tags)",
            "select(-params.value)&ordering(-n)&limit=2&offset=1",
        ] {
            let query = ListRequest::parse(raw).unwrap();
            let text = |page: Page<Projected<'_, '_>>| serde_json::to_string(&page.items).unwrap();
            assert_eq!(
                text(query.apply(&stored, 100)),
                text(query.apply(&plain, 100)),
                "{raw}"
            );
            assert_eq!(
                serde_json::to_string(&query.project(&stored[0])).unwrap(),
                serde_json::to_string(&query.project(&plain[0])).unwrap(),
                "{raw}"
            );
        }
    }

    #[test]
    fn the_page_cap_wins_over_a_larger_limit() {
        let data = assets();
        let query = ListRequest::parse("limit=1000").unwrap();
        let page = query.apply(&data, 2);
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.content_range(), "items 0-1/3");
        let query = ListRequest::parse("limit(1,2)").unwrap();
        let page = query.apply(&data, 2);
        assert_eq!(page.content_range(), "items 2-2/3");
    }

    #[test]
    fn malformed_queries_are_refused() {
        for bad in [
            "eq(status,active",
            "eq(status)",
            "in(id,AS-1)",
            "frobnicate(id,1)",
            "and()",
            "eq(status,active))",
            "limit=ten",
            "offset=-1",
            "eq(a,b)c",
            "eq(name,\"open",
            "eq(name,%FF)",
            "not(eq(a,1),eq(b,2))",
        ] {
            assert!(ListRequest::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn search_and_empty_terms() {
        assert_eq!(ids("search=BETA&"), ["AS-2"]);
        assert_eq!(ids(""), ["AS-1", "AS-2", "AS-3"]);
    }
}
