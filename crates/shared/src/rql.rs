//! RQL (Resource Query Language), the filter language of Connect's list endpoints: one syntax
//! tree that the product's client builds and renders, and the simulator parses and evaluates.
//!
//! It is shared because both sides must agree on every byte: what the client writes into a
//! query string is exactly what the simulator reads back (a property test checks
//! `parse(render(q)) == q`), so a filter that selects the right objects in the simulator asks
//! Connect the same question, and a malformed one is refused by both.
//!
//! * [`Rql`] — a filter: empty, or an [`Expr`] tree whose leaves are comparisons
//!   (`eq(field,value)`, `eq(field,null())`, …), list membership (`in`/`out`) and patterns
//!   (`like`/`ilike`), joined by `and`/`or`/`not`. Its builder renders exactly as the official
//!   Python `R()` builder does (`and(in(type,(distribution)),in(status,(active)))`): an empty
//!   filter contributes nothing, nested `and`/`or` of the same kind are flattened, and a double
//!   negation cancels out.
//! * [`Query`] — a filter plus projection (`select`) and sorting (`ordering`). Paging and
//!   free-text search belong to the request, not to the query: the client's pager appends
//!   `limit`/`offset`, and [`Query::parse_request`] hands them back apart, as [`RequestParam`]s.
//! * [`Value`] — a value as written: its text, and which of its asterisks are wildcards.
//!
//! Rendering: a value is written bare when it only holds letters, digits, `_ - . : + @` and
//! wildcards; anything else is wrapped in double quotes and percent-encoded, so a value can never
//! break out of its expression. A wildcard is always a raw `*` (what `like`/`ilike` patterns are
//! made of); a literal asterisk is written `%2A`. Field names are code, not data, and are written
//! as given.
//!
//! Parsing is as strict as Connect: unbalanced parentheses, an `in` without a list, an unknown
//! operator, broken percent-encoding… are refused with an [`RqlError`]. Values are
//! percent-decoded after tokenising, so encoded commas and parentheses stay inside their value;
//! one pair of surrounding double quotes (raw or encoded) is removed. Nothing is normalised: the
//! tree is the expression as written, except that several top-level filter terms
//! (`eq(a,1)&eq(b,2)`) are joined as the builder's `and` joins them.

use std::fmt;
use std::mem;
use std::ops::{BitAnd, BitOr, Not};
use std::str::FromStr;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Punctuation a value may contain and still be written bare (besides wildcards).
const BARE_PUNCTUATION: &[char] = &['_', '-', '.', ':', '+', '@'];

/// Inside quotes everything but letters, digits and the bare punctuation is percent-encoded
/// (a literal `*` too: only wildcards are written raw).
const QUOTED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'-')
    .remove(b'.')
    .remove(b':')
    .remove(b'+')
    .remove(b'@');

/// Why a query string is not RQL Connect would accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RqlError {
    #[error("unexpected end of RQL expression in {0:?}")]
    UnexpectedEnd(String),
    #[error("unexpected {found:?} in RQL expression {term:?}")]
    Unexpected { found: String, term: String },
    #[error("unknown RQL operator {0:?}")]
    UnknownOperator(String),
    #[error("RQL operator {operator} expects {expected}")]
    Arguments {
        operator: String,
        expected: &'static str,
    },
    #[error("{name} must be a non-negative integer, not {value:?}")]
    Paging { name: &'static str, value: String },
    #[error("invalid percent-encoding in {0:?}")]
    Encoding(String),
    /// [`Query::parse`] met paging or search, which belong to the request, not to the query.
    #[error("{0:?} is a request parameter (paging or search), not part of a query")]
    RequestParam(String),
}

// ----- values -----

/// A value as written in an expression: its text, and which of its asterisks are wildcards (a
/// raw `*` is a wildcard, an encoded `%2A` a literal asterisk).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Value {
    /// The value, each wildcard an asterisk.
    text: String,
    /// Byte offsets in `text` of the asterisks that are wildcards, ascending.
    wildcards: Vec<usize>,
}

/// A piece of a [`Value`]: literal text (never empty, never two in a row) or a wildcard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    Text(&'a str),
    Wildcard,
}

impl Value {
    /// `text` with every `*` a wildcard: what the builder writes.
    pub fn pattern(text: impl Into<String>) -> Value {
        let text = text.into();
        let wildcards = text.match_indices('*').map(|(at, _)| at).collect();
        Value { text, wildcards }
    }

    /// `text` with no wildcard: every `*` is a literal asterisk.
    pub fn literal(text: impl Into<String>) -> Value {
        Value {
            text: text.into(),
            wildcards: Vec::new(),
        }
    }

    /// The value as plain text, each wildcard an asterisk: what comparisons and lists compare.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The literal texts between wildcards, in order.
    pub fn pieces(&self) -> impl Iterator<Item = Piece<'_>> + '_ {
        let mut start = 0;
        let mut wildcards = self.wildcards.iter().copied().peekable();
        std::iter::from_fn(move || match wildcards.peek().copied() {
            Some(at) if at == start => {
                wildcards.next();
                start = at + 1;
                Some(Piece::Wildcard)
            }
            Some(at) => {
                let text = &self.text[start..at];
                start = at;
                Some(Piece::Text(text))
            }
            None if start < self.text.len() => {
                let text = &self.text[start..];
                start = self.text.len();
                Some(Piece::Text(text))
            }
            None => None,
        })
    }

    fn push(&mut self, piece: Piece<'_>) {
        match piece {
            Piece::Text(text) => self.text.push_str(text),
            Piece::Wildcard => {
                self.wildcards.push(self.text.len());
                self.text.push('*');
            }
        }
    }
}

impl<'a> FromIterator<Piece<'a>> for Value {
    fn from_iter<I: IntoIterator<Item = Piece<'a>>>(pieces: I) -> Self {
        let mut value = Value::default();
        pieces.into_iter().for_each(|piece| value.push(piece));
        value
    }
}

/// Bare when it is safe to be, else quoted and percent-encoded; wildcards always raw.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bare = !self.text.is_empty()
            && self.pieces().all(|piece| match piece {
                Piece::Wildcard => true,
                Piece::Text(text) => text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || BARE_PUNCTUATION.contains(&c)),
            });
        if bare {
            return f.write_str(&self.text);
        }
        f.write_str("\"")?;
        for piece in self.pieces() {
            match piece {
                Piece::Text(text) => write!(f, "{}", utf8_percent_encode(text, QUOTED))?,
                Piece::Wildcard => f.write_str("*")?,
            }
        }
        f.write_str("\"")
    }
}

/// Writes a value as the builder does (every `*` a wildcard): bare when it is safe to, else
/// quoted and percent-encoded.
pub fn encode_value(value: &str) -> String {
    Value::pattern(value).to_string()
}

// ----- the syntax tree -----

/// A filter expression. The parser builds it as written; the [`Rql`] builder keeps it in the
/// official builder's shape (no empty or single-child groups, no double negation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `eq(field,value)`, `ne(field,null())`, `gt(field,value)`, …
    Compare {
        op: CompareOp,
        field: String,
        operand: Operand,
    },
    /// `in(field,(v1,v2,…))` / `out(field,(…))`.
    Member {
        op: MemberOp,
        field: String,
        values: Vec<Value>,
    },
    /// `like(field,pattern)` / `ilike(field,pattern)`.
    Like {
        op: LikeOp,
        field: String,
        pattern: Value,
    },
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CompareOp {
    pub const ALL: [CompareOp; 6] = [
        CompareOp::Eq,
        CompareOp::Ne,
        CompareOp::Gt,
        CompareOp::Ge,
        CompareOp::Lt,
        CompareOp::Le,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CompareOp::Eq => "eq",
            CompareOp::Ne => "ne",
            CompareOp::Gt => "gt",
            CompareOp::Ge => "ge",
            CompareOp::Lt => "lt",
            CompareOp::Le => "le",
        }
    }

    fn from_name(name: &str) -> Option<CompareOp> {
        CompareOp::ALL.into_iter().find(|op| op.name() == name)
    }
}

/// `in` (the builder's `oneof`) or its negation `out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberOp {
    In,
    Out,
}

impl MemberOp {
    pub fn name(self) -> &'static str {
        match self {
            MemberOp::In => "in",
            MemberOp::Out => "out",
        }
    }
}

/// `like` (case-sensitive) or `ilike` (case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LikeOp {
    Like,
    Ilike,
}

impl LikeOp {
    pub fn name(self) -> &'static str {
        match self {
            LikeOp::Like => "like",
            LikeOp::Ilike => "ilike",
        }
    }
}

/// What a comparison compares with: a value, `null()` (absent or null) or `empty()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    Value(Value),
    Null,
    Empty,
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Value(value) => value.fmt(f),
            Operand::Null => f.write_str("null()"),
            Operand::Empty => f.write_str("empty()"),
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list<T: fmt::Display>(f: &mut fmt::Formatter<'_>, items: &[T]) -> fmt::Result {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                item.fmt(f)?;
            }
            Ok(())
        }
        match self {
            Expr::Compare { op, field, operand } => write!(f, "{}({field},{operand})", op.name()),
            Expr::Member { op, field, values } => {
                write!(f, "{}({field},(", op.name())?;
                list(f, values)?;
                f.write_str("))")
            }
            Expr::Like { op, field, pattern } => write!(f, "{}({field},{pattern})", op.name()),
            Expr::And(children) => {
                f.write_str("and(")?;
                list(f, children)?;
                f.write_str(")")
            }
            Expr::Or(children) => {
                f.write_str("or(")?;
                list(f, children)?;
                f.write_str(")")
            }
            Expr::Not(inner) => write!(f, "not({inner})"),
        }
    }
}

// ----- the builder -----

/// An RQL filter; `Rql::default()` is the empty filter (matches everything, renders as nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rql(Option<Expr>);

impl Rql {
    /// The empty filter: matches everything and renders as nothing.
    pub fn new() -> Self {
        Rql::default()
    }

    pub fn eq(field: &str, value: impl fmt::Display) -> Self {
        Rql::compare(CompareOp::Eq, field, value)
    }
    pub fn ne(field: &str, value: impl fmt::Display) -> Self {
        Rql::compare(CompareOp::Ne, field, value)
    }
    pub fn gt(field: &str, value: impl fmt::Display) -> Self {
        Rql::compare(CompareOp::Gt, field, value)
    }
    pub fn ge(field: &str, value: impl fmt::Display) -> Self {
        Rql::compare(CompareOp::Ge, field, value)
    }
    pub fn lt(field: &str, value: impl fmt::Display) -> Self {
        Rql::compare(CompareOp::Lt, field, value)
    }
    pub fn le(field: &str, value: impl fmt::Display) -> Self {
        Rql::compare(CompareOp::Le, field, value)
    }
    /// Case-sensitive pattern; `*` is the wildcard.
    pub fn like(field: &str, pattern: impl fmt::Display) -> Self {
        Rql::pattern(LikeOp::Like, field, pattern)
    }
    /// Case-insensitive pattern; `*` is the wildcard.
    pub fn ilike(field: &str, pattern: impl fmt::Display) -> Self {
        Rql::pattern(LikeOp::Ilike, field, pattern)
    }

    /// `in(field,(v1,v2,…))` — the builder's `oneof`; always a parenthesised list.
    pub fn one_of<V: fmt::Display>(field: &str, values: impl IntoIterator<Item = V>) -> Self {
        Rql::member(MemberOp::In, field, values)
    }
    /// `out(field,(v1,v2,…))`.
    pub fn out<V: fmt::Display>(field: &str, values: impl IntoIterator<Item = V>) -> Self {
        Rql::member(MemberOp::Out, field, values)
    }

    /// `eq(field,null())`.
    pub fn null(field: &str) -> Self {
        Rql::test(CompareOp::Eq, field, Operand::Null)
    }
    /// `ne(field,null())`.
    pub fn not_null(field: &str) -> Self {
        Rql::test(CompareOp::Ne, field, Operand::Null)
    }
    /// `eq(field,empty())`.
    pub fn empty(field: &str) -> Self {
        Rql::test(CompareOp::Eq, field, Operand::Empty)
    }
    /// `ne(field,empty())`.
    pub fn not_empty(field: &str) -> Self {
        Rql::test(CompareOp::Ne, field, Operand::Empty)
    }

    /// All of `filters` (empty ones are ignored).
    pub fn all(filters: impl IntoIterator<Item = Rql>) -> Self {
        filters.into_iter().fold(Rql::new(), Rql::and)
    }
    /// Any of `filters` (empty ones are ignored).
    pub fn any(filters: impl IntoIterator<Item = Rql>) -> Self {
        filters.into_iter().fold(Rql::new(), Rql::or)
    }

    pub fn and(self, other: Rql) -> Self {
        join(self, other, Expr::And, |expr| match expr {
            Expr::And(children) => Ok(children),
            other => Err(other),
        })
    }

    pub fn or(self, other: Rql) -> Self {
        join(self, other, Expr::Or, |expr| match expr {
            Expr::Or(children) => Ok(children),
            other => Err(other),
        })
    }

    pub fn negate(self) -> Self {
        Rql(self.0.map(|expr| match expr {
            Expr::Not(inner) => *inner,
            expr => Expr::Not(Box::new(expr)),
        }))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The expression, `None` for the empty filter.
    pub fn expr(&self) -> Option<&Expr> {
        self.0.as_ref()
    }

    fn compare(op: CompareOp, field: &str, value: impl fmt::Display) -> Self {
        Rql::test(op, field, Operand::Value(Value::pattern(value.to_string())))
    }

    fn test(op: CompareOp, field: &str, operand: Operand) -> Self {
        Rql::from(Expr::Compare {
            op,
            field: field.to_string(),
            operand,
        })
    }

    fn pattern(op: LikeOp, field: &str, pattern: impl fmt::Display) -> Self {
        Rql::from(Expr::Like {
            op,
            field: field.to_string(),
            pattern: Value::pattern(pattern.to_string()),
        })
    }

    fn member<V: fmt::Display>(
        op: MemberOp,
        field: &str,
        values: impl IntoIterator<Item = V>,
    ) -> Self {
        Rql::from(Expr::Member {
            op,
            field: field.to_string(),
            values: values
                .into_iter()
                .map(|value| Value::pattern(value.to_string()))
                .collect(),
        })
    }
}

impl From<Expr> for Rql {
    fn from(expr: Expr) -> Self {
        Rql(Some(expr))
    }
}

/// Combines two filters under `make` (and/or), flattening children already of that kind.
fn join(
    left: Rql,
    right: Rql,
    make: fn(Vec<Expr>) -> Expr,
    children_of: fn(Expr) -> Result<Vec<Expr>, Expr>,
) -> Rql {
    match (left.0, right.0) {
        (None, expr) | (expr, None) => Rql(expr),
        (Some(left), Some(right)) => {
            let mut children = children_of(left).unwrap_or_else(|expr| vec![expr]);
            children.extend(children_of(right).unwrap_or_else(|expr| vec![expr]));
            Rql(Some(make(children)))
        }
    }
}

impl fmt::Display for Rql {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(expr) => expr.fmt(f),
            None => Ok(()),
        }
    }
}

impl BitAnd for Rql {
    type Output = Rql;
    fn bitand(self, other: Rql) -> Rql {
        self.and(other)
    }
}

impl BitOr for Rql {
    type Output = Rql;
    fn bitor(self, other: Rql) -> Rql {
        self.or(other)
    }
}

impl Not for Rql {
    type Output = Rql;
    fn not(self) -> Rql {
        self.negate()
    }
}

// ----- the query -----

/// A list request's query without paging: filter, `select(...)` and `ordering(...)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub filter: Rql,
    /// Projection, e.g. `-configuration` to drop a sub-object.
    pub select: Vec<String>,
    /// Sort fields, `-` prefix for descending (`+` for ascending is accepted too).
    pub ordering: Vec<String>,
}

/// What a list request's query string carries besides its [`Query`], in the order written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestParam {
    /// `limit=N`, or the first argument of `limit(N)` / `limit(N,M)`.
    Limit(usize),
    /// `offset=M`, or the second argument of `limit(N,M)`.
    Offset(usize),
    /// `search=text`: free-text search.
    Search(String),
}

impl Query {
    pub fn new(filter: Rql) -> Self {
        Query {
            filter,
            ..Query::default()
        }
    }

    pub fn select<S: Into<String>>(mut self, fields: impl IntoIterator<Item = S>) -> Self {
        self.select.extend(fields.into_iter().map(Into::into));
        self
    }

    pub fn ordering<S: Into<String>>(mut self, fields: impl IntoIterator<Item = S>) -> Self {
        self.ordering.extend(fields.into_iter().map(Into::into));
        self
    }

    /// Parses a raw (still percent-encoded) query string such as
    /// `and(eq(status,active),in(id,(A,B)))&ordering(-id)`; paging or search is refused.
    pub fn parse(raw_query: &str) -> Result<Query, RqlError> {
        parse_terms(raw_query, |term, _| {
            Err(RqlError::RequestParam(term.into()))
        })
    }

    /// Parses a list request's raw query string, such as
    /// `and(eq(status,active),in(id,(A,B)))&ordering(-id)&limit=10&offset=0`: the query, and the
    /// paging and search parameters in the order written.
    pub fn parse_request(raw_query: &str) -> Result<(Query, Vec<RequestParam>), RqlError> {
        let mut params = Vec::new();
        let query = parse_terms(raw_query, |_, param| {
            params.push(param);
            Ok(())
        })?;
        Ok((query, params))
    }
}

impl From<Rql> for Query {
    fn from(filter: Rql) -> Self {
        Query::new(filter)
    }
}

impl FromStr for Query {
    type Err = RqlError;

    fn from_str(raw_query: &str) -> Result<Query, RqlError> {
        Query::parse(raw_query)
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::with_capacity(3);
        if !self.filter.is_empty() {
            parts.push(self.filter.to_string());
        }
        if !self.select.is_empty() {
            parts.push(format!("select({})", self.select.join(",")));
        }
        if !self.ordering.is_empty() {
            parts.push(format!("ordering({})", self.ordering.join(",")));
        }
        f.write_str(&parts.join("&"))
    }
}

// ----- parsing -----

/// Parses every `&`-separated term; `on_param` is handed each paging or search parameter with
/// the term it came from.
fn parse_terms(
    raw_query: &str,
    mut on_param: impl FnMut(&str, RequestParam) -> Result<(), RqlError>,
) -> Result<Query, RqlError> {
    let mut query = Query::default();
    for term in split_top_level(raw_query) {
        if term.is_empty() {
            continue;
        }
        match plain_pair(term) {
            Some((key, value)) => {
                let key = decode(key)?;
                let value = decode_value(value)?;
                match key.as_str() {
                    "limit" => on_param(
                        term,
                        RequestParam::Limit(parse_count("limit", value.text())?),
                    )?,
                    "offset" => on_param(
                        term,
                        RequestParam::Offset(parse_count("offset", value.text())?),
                    )?,
                    "search" => on_param(term, RequestParam::Search(value.text.clone()))?,
                    "" => {
                        return Err(RqlError::Unexpected {
                            found: "=".into(),
                            term: term.into(),
                        })
                    }
                    // `field=value` is `eq(field,value)`.
                    _ => query.add_filter(Expr::Compare {
                        op: CompareOp::Eq,
                        field: key,
                        operand: Operand::Value(value),
                    }),
                }
            }
            None => {
                let node = Parser::new(term)?.parse_whole()?;
                query.add_call(term, node, &mut on_param)?;
            }
        }
    }
    Ok(query)
}

impl Query {
    fn add_filter(&mut self, expr: Expr) {
        self.filter = mem::take(&mut self.filter).and(Rql::from(expr));
    }

    fn add_call(
        &mut self,
        term: &str,
        node: Syntax,
        on_param: &mut impl FnMut(&str, RequestParam) -> Result<(), RqlError>,
    ) -> Result<(), RqlError> {
        let Syntax::Call { name, args } = node else {
            return Err(RqlError::Arguments {
                operator: "query".into(),
                expected: "an operator call at the top level",
            });
        };
        match name.as_str() {
            "select" => {
                for arg in args {
                    self.select.push(atom_text(&name, arg)?);
                }
            }
            "ordering" | "sort" => {
                for arg in args {
                    self.ordering.push(atom_text(&name, arg)?);
                }
            }
            "limit" => {
                let expected = "limit(count) or limit(count,offset)";
                let count = |node| parse_count("limit", &atom_text(&name, node)?);
                match <[Syntax; 2]>::try_from(args) {
                    Ok([limit, offset]) => {
                        on_param(term, RequestParam::Limit(count(limit)?))?;
                        let offset = parse_count("offset", &atom_text(&name, offset)?)?;
                        on_param(term, RequestParam::Offset(offset))?;
                    }
                    Err(args) => match <[Syntax; 1]>::try_from(args) {
                        Ok([limit]) => on_param(term, RequestParam::Limit(count(limit)?))?,
                        Err(_) => {
                            return Err(RqlError::Arguments {
                                operator: name,
                                expected,
                            })
                        }
                    },
                }
            }
            _ => self.add_filter(Expr::from_syntax(Syntax::Call { name, args })?),
        }
        Ok(())
    }
}

impl Expr {
    /// The filter an operator call stands for, refused when the operator is unknown or its
    /// arguments are not the ones it takes.
    fn from_syntax(node: Syntax) -> Result<Expr, RqlError> {
        let Syntax::Call { name, args } = node else {
            return Err(RqlError::Arguments {
                operator: "and/or/not".into(),
                expected: "operator calls as arguments",
            });
        };
        let wrong = |expected: &'static str| RqlError::Arguments {
            operator: name.clone(),
            expected,
        };
        if let Some(op) = CompareOp::from_name(&name) {
            let [field, operand] =
                <[Syntax; 2]>::try_from(args).map_err(|_| wrong("a field and a value"))?;
            return Ok(Expr::Compare {
                op,
                field: atom_text(&name, field)?,
                operand: operand_of(&name, operand)?,
            });
        }
        match name.as_str() {
            "and" | "or" => {
                if args.is_empty() {
                    return Err(wrong("at least one expression"));
                }
                let children = args
                    .into_iter()
                    .map(Expr::from_syntax)
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(if name == "and" {
                    Expr::And(children)
                } else {
                    Expr::Or(children)
                })
            }
            "not" => {
                let [inner] =
                    <[Syntax; 1]>::try_from(args).map_err(|_| wrong("exactly one expression"))?;
                Ok(Expr::Not(Box::new(Expr::from_syntax(inner)?)))
            }
            "in" | "out" => {
                let expected = "a field and a parenthesised list of values";
                let [field, Syntax::List(values)] =
                    <[Syntax; 2]>::try_from(args).map_err(|_| wrong(expected))?
                else {
                    return Err(wrong(expected));
                };
                let values = values
                    .into_iter()
                    .map(|value| atom_value(&name, value))
                    .collect::<Result<_, _>>()?;
                Ok(Expr::Member {
                    op: if name == "in" {
                        MemberOp::In
                    } else {
                        MemberOp::Out
                    },
                    field: atom_text(&name, field)?,
                    values,
                })
            }
            "like" | "ilike" => {
                let [field, Syntax::Atom(pattern)] =
                    <[Syntax; 2]>::try_from(args).map_err(|_| wrong("a field and a pattern"))?
                else {
                    return Err(wrong("a field and a pattern"));
                };
                Ok(Expr::Like {
                    op: if name == "like" {
                        LikeOp::Like
                    } else {
                        LikeOp::Ilike
                    },
                    field: atom_text(&name, field)?,
                    pattern,
                })
            }
            _ => Err(RqlError::UnknownOperator(name)),
        }
    }
}

fn operand_of(operator: &str, node: Syntax) -> Result<Operand, RqlError> {
    match node {
        Syntax::Atom(value) => Ok(Operand::Value(value)),
        Syntax::Call { name, args } if args.is_empty() && name == "null" => Ok(Operand::Null),
        Syntax::Call { name, args } if args.is_empty() && name == "empty" => Ok(Operand::Empty),
        _ => Err(RqlError::Arguments {
            operator: operator.into(),
            expected: "a value, null() or empty()",
        }),
    }
}

fn atom_value(operator: &str, node: Syntax) -> Result<Value, RqlError> {
    match node {
        Syntax::Atom(value) => Ok(value),
        _ => Err(RqlError::Arguments {
            operator: operator.into(),
            expected: "plain values as arguments",
        }),
    }
}

/// A plain argument (a field name, a `select` or `ordering` entry) as text.
fn atom_text(operator: &str, node: Syntax) -> Result<String, RqlError> {
    atom_value(operator, node).map(|value| value.text)
}

fn parse_count(name: &'static str, text: &str) -> Result<usize, RqlError> {
    text.parse().map_err(|_| RqlError::Paging {
        name,
        value: text.into(),
    })
}

/// Splits on `&` outside parentheses and raw double quotes.
fn split_top_level(raw: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0);
    for (at, byte) in raw.bytes().enumerate() {
        match byte {
            b'"' => quoted = !quoted,
            b'(' if !quoted => depth += 1,
            b')' if !quoted => depth -= 1,
            b'&' if !quoted && depth <= 0 => {
                terms.push(&raw[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    terms.push(&raw[start..]);
    terms
}

/// `key=value` when the `=` comes before any parenthesis.
fn plain_pair(term: &str) -> Option<(&str, &str)> {
    let equals = term.find('=')?;
    match term.find('(') {
        Some(paren) if paren < equals => None,
        _ => Some((&term[..equals], &term[equals + 1..])),
    }
}

fn decode(raw: &str) -> Result<String, RqlError> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(|text| text.into_owned())
        .map_err(|_| RqlError::Encoding(raw.into()))
}

/// A value as written: the raw asterisks are its wildcards, the rest is percent-decoded, and
/// one pair of surrounding double quotes is removed.
fn decode_value(raw: &str) -> Result<Value, RqlError> {
    let mut pieces = Vec::new();
    for (index, part) in raw.split('*').enumerate() {
        if index > 0 {
            pieces.push(Owned::Wildcard);
        }
        if !part.is_empty() {
            pieces.push(Owned::Text(decode(part)?));
        }
    }
    strip_quotes(&mut pieces);
    Ok(pieces
        .iter()
        .map(|piece| match piece {
            Owned::Text(text) => Piece::Text(text),
            Owned::Wildcard => Piece::Wildcard,
        })
        .collect())
}

/// A decoded piece of a value still being read.
enum Owned {
    Text(String),
    Wildcard,
}

/// Removes one pair of surrounding double quotes (they may have been percent-encoded).
fn strip_quotes(pieces: &mut Vec<Owned>) {
    let opens = matches!(pieces.first(), Some(Owned::Text(t)) if t.starts_with('"'));
    let closes = matches!(pieces.last(), Some(Owned::Text(t)) if t.ends_with('"'));
    let single_quote_char = matches!(pieces.as_slice(), [Owned::Text(t)] if t == "\"");
    if !(opens && closes) || single_quote_char {
        return;
    }
    if let Some(Owned::Text(first)) = pieces.first_mut() {
        first.remove(0);
    }
    if let Some(Owned::Text(last)) = pieces.last_mut() {
        last.pop();
    }
    pieces.retain(|piece| !matches!(piece, Owned::Text(t) if t.is_empty()));
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    Comma,
    Word(String),
}

/// A term as written, before it is known what its calls mean.
#[derive(Debug, Clone, PartialEq)]
enum Syntax {
    Call { name: String, args: Vec<Syntax> },
    List(Vec<Syntax>),
    Atom(Value),
}

struct Parser<'a> {
    term: &'a str,
    tokens: Vec<Token>,
    position: usize,
}

impl<'a> Parser<'a> {
    fn new(term: &'a str) -> Result<Self, RqlError> {
        Ok(Parser {
            term,
            tokens: tokenize(term)?,
            position: 0,
        })
    }

    fn parse_whole(mut self) -> Result<Syntax, RqlError> {
        let node = self.parse_node()?;
        match self.tokens.get(self.position) {
            None => Ok(node),
            Some(token) => Err(self.unexpected(token)),
        }
    }

    fn parse_node(&mut self) -> Result<Syntax, RqlError> {
        match self.next()? {
            Token::Open => Ok(Syntax::List(self.parse_arguments()?)),
            Token::Word(word) => {
                if self.tokens.get(self.position) == Some(&Token::Open) {
                    self.position += 1;
                    let name = decode(&word)?;
                    Ok(Syntax::Call {
                        name,
                        args: self.parse_arguments()?,
                    })
                } else {
                    Ok(Syntax::Atom(decode_value(&word)?))
                }
            }
            token => Err(self.unexpected(&token)),
        }
    }

    /// Comma-separated nodes up to the closing parenthesis (already past the opening one).
    fn parse_arguments(&mut self) -> Result<Vec<Syntax>, RqlError> {
        let mut args = Vec::new();
        if self.tokens.get(self.position) == Some(&Token::Close) {
            self.position += 1;
            return Ok(args);
        }
        loop {
            args.push(self.parse_node()?);
            match self.next()? {
                Token::Comma => continue,
                Token::Close => return Ok(args),
                token => return Err(self.unexpected(&token)),
            }
        }
    }

    fn next(&mut self) -> Result<Token, RqlError> {
        let token = self
            .tokens
            .get(self.position)
            .cloned()
            .ok_or_else(|| RqlError::UnexpectedEnd(self.term.into()))?;
        self.position += 1;
        Ok(token)
    }

    fn unexpected(&self, token: &Token) -> RqlError {
        let found = match token {
            Token::Open => "(".into(),
            Token::Close => ")".into(),
            Token::Comma => ",".into(),
            Token::Word(word) => word.clone(),
        };
        RqlError::Unexpected {
            found,
            term: self.term.into(),
        }
    }
}

fn tokenize(term: &str) -> Result<Vec<Token>, RqlError> {
    let mut tokens = Vec::new();
    let mut chars = term.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        match c {
            '(' => tokens.push(Token::Open),
            ')' => tokens.push(Token::Close),
            ',' => tokens.push(Token::Comma),
            '"' => {
                let end = chars
                    .by_ref()
                    .find(|&(_, c)| c == '"')
                    .map(|(at, _)| at)
                    .ok_or_else(|| RqlError::UnexpectedEnd(term.into()))?;
                tokens.push(Token::Word(term[start..=end].to_string()));
            }
            _ => {
                let mut end = start + c.len_utf8();
                while let Some(&(at, next)) = chars.peek() {
                    if matches!(next, '(' | ')' | ',' | '"') {
                        break;
                    }
                    end = at + next.len_utf8();
                    chars.next();
                }
                tokens.push(Token::Word(term[start..end].to_string()));
            }
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_documented_builder_examples() {
        let cases = [
            (
                Rql::one_of("type", ["distribution"]) & Rql::one_of("status", ["active"]),
                "and(in(type,(distribution)),in(status,(active)))",
            ),
            (
                Rql::one_of("contract.id", ["CRD-1"]) & Rql::one_of("id", ["AS-1"]),
                "and(in(contract.id,(CRD-1)),in(id,(AS-1)))",
            ),
            (Rql::ne("status", "terminated"), "ne(status,terminated)"),
            (
                Rql::ilike("name", "*foo*") | Rql::null("x"),
                "or(ilike(name,*foo*),eq(x,null()))",
            ),
            (!Rql::eq("status", "draft"), "not(eq(status,draft))"),
            (
                Rql::all([Rql::eq("status", "active"), Rql::eq("product.id", "PRD-1")]),
                "and(eq(status,active),eq(product.id,PRD-1))",
            ),
        ];
        for (rql, expected) in cases {
            assert_eq!(rql.to_string(), expected);
        }
    }

    #[test]
    fn empty_builders_contribute_nothing() {
        assert_eq!(Rql::new().to_string(), "");
        assert!((Rql::new() & Rql::new()).is_empty());
        assert_eq!(
            (Rql::new() & Rql::eq("a", 1)).to_string(),
            "eq(a,1)",
            "a single expression is not wrapped in and()"
        );
        assert_eq!((Rql::eq("a", 1) | Rql::new()).to_string(), "eq(a,1)");
        assert!((!Rql::new()).is_empty());
        assert!(Rql::all([]).is_empty());
    }

    #[test]
    fn nested_groups_of_the_same_kind_are_flattened() {
        let a = Rql::eq("a", 1);
        let b = Rql::eq("b", 2);
        let c = Rql::eq("c", 3);
        assert_eq!(
            ((a.clone() & b.clone()) & (c.clone() & Rql::eq("d", 4))).to_string(),
            "and(eq(a,1),eq(b,2),eq(c,3),eq(d,4))"
        );
        assert_eq!(
            (a.clone() & (b.clone() | c.clone())).to_string(),
            "and(eq(a,1),or(eq(b,2),eq(c,3)))"
        );
        assert_eq!(
            ((a.clone() | b.clone()) | c.clone()).to_string(),
            "or(eq(a,1),eq(b,2),eq(c,3))"
        );
        assert_eq!(
            (!(a.clone() & b.clone()) & c).to_string(),
            "and(not(and(eq(a,1),eq(b,2))),eq(c,3))",
            "a negated group is not flattened into its parent"
        );
        assert_eq!((!!a).to_string(), "eq(a,1)");
    }

    #[test]
    fn lists_null_and_empty_forms() {
        assert_eq!(
            Rql::one_of("id", ["AS-1", "AS-2"]).to_string(),
            "in(id,(AS-1,AS-2))"
        );
        assert_eq!(
            Rql::out("status", ["draft", "deleted"]).to_string(),
            "out(status,(draft,deleted))"
        );
        assert_eq!(Rql::not_null("x").to_string(), "ne(x,null())");
        assert_eq!(Rql::empty("x").to_string(), "eq(x,empty())");
        assert_eq!(Rql::not_empty("x").to_string(), "ne(x,empty())");
        assert_eq!(
            Rql::ge("created.at", "2024-01-01T00:00:00").to_string(),
            "ge(created.at,2024-01-01T00:00:00)"
        );
        assert_eq!(Rql::eq("flag", true).to_string(), "eq(flag,true)");
    }

    #[test]
    fn values_outside_the_bare_set_are_quoted_and_percent_encoded() {
        assert_eq!(encode_value("CRD-1:PRD-2:2024-01"), "CRD-1:PRD-2:2024-01");
        assert_eq!(encode_value("a+b@c.d_e*"), "a+b@c.d_e*");
        assert_eq!(encode_value("foo bar"), "\"foo%20bar\"");
        assert_eq!(encode_value("a,b(c)"), "\"a%2Cb%28c%29\"");
        assert_eq!(encode_value("say \"hi\""), "\"say%20%22hi%22\"");
        assert_eq!(encode_value("a&b=c"), "\"a%26b%3Dc\"");
        assert_eq!(encode_value("Zürich"), "\"Z%C3%BCrich\"");
        assert_eq!(encode_value(""), "\"\"");
        assert_eq!(
            Rql::eq("name", "My Product").to_string(),
            "eq(name,\"My%20Product\")"
        );
    }

    #[test]
    fn query_adds_select_and_ordering() {
        let query = Query::new(Rql::eq("product.id", "PRD-1"))
            .select(["-configuration"])
            .ordering(["id", "-created"]);
        assert_eq!(
            query.to_string(),
            "eq(product.id,PRD-1)&select(-configuration)&ordering(id,-created)"
        );
        assert_eq!(Query::default().to_string(), "");
        assert_eq!(
            Query::default().ordering(["id"]).to_string(),
            "ordering(id)"
        );
    }

    // ----- parsing: what the simulator reads -----

    fn value(text: &str) -> Operand {
        Operand::Value(Value::pattern(text))
    }

    fn compare(op: CompareOp, field: &str, operand: Operand) -> Expr {
        Expr::Compare {
            op,
            field: field.into(),
            operand,
        }
    }

    #[test]
    fn parses_what_is_written_into_the_tree() {
        let eq = |field: &str, text: &str| compare(CompareOp::Eq, field, value(text));
        let cases = [
            ("eq(status,active)", Rql::eq("status", "active")),
            ("status=active", Rql::eq("status", "active")),
            (
                "and(in(type,(distribution)),in(status,(active)))",
                Rql::one_of("type", ["distribution"]) & Rql::one_of("status", ["active"]),
            ),
            (
                "eq(a,1)&and(eq(b,2),eq(c,3))",
                Rql::eq("a", 1) & Rql::eq("b", 2) & Rql::eq("c", 3),
            ),
            ("and(eq(a,1))", Rql::from(Expr::And(vec![eq("a", "1")]))),
            (
                "not(not(eq(a,1)))",
                Rql::from(Expr::Not(Box::new(Expr::Not(Box::new(eq("a", "1")))))),
            ),
            ("ne(note,null())", Rql::not_null("note")),
            ("eq(tags,empty())", Rql::empty("tags")),
            (
                "gt(n,null())",
                Rql::from(compare(CompareOp::Gt, "n", Operand::Null)),
            ),
            ("out(id,())", Rql::out("id", Vec::<String>::new())),
            ("ilike(name,*CLOUD*)", Rql::ilike("name", "*CLOUD*")),
            (
                "like(name,Gamma%2Astar)",
                Rql::from(Expr::Like {
                    op: LikeOp::Like,
                    field: "name".into(),
                    pattern: Value::literal("Gamma*star"),
                }),
            ),
            ("eq(note,%22a%2C%20b%22)", Rql::eq("note", "a, b")),
            ("eq(note,\"a, b\")", Rql::eq("note", "a, b")),
            ("eq(note,\"a%2C%20b\")", Rql::eq("note", "a, b")),
            ("eq(\"note\",\"\")", Rql::eq("note", "")),
            ("eq(q,%22)", Rql::eq("q", "\"")),
            ("eq(q,\"%22\")", Rql::eq("q", "\"")),
            ("eq(q,\"a*b\")", Rql::eq("q", "a*b")),
            ("eq(q,Z%C3%BCrich)", Rql::eq("q", "Zürich")),
            ("", Rql::new()),
            ("&&", Rql::new()),
        ];
        for (raw, filter) in cases {
            assert_eq!(Query::parse(raw), Ok(Query::new(filter)), "{raw}");
        }
    }

    #[test]
    fn values_keep_which_asterisks_are_wildcards() {
        fn pieces(value: &Value) -> Vec<Piece<'_>> {
            value.pieces().collect()
        }
        let parsed = |raw: &str| match Query::parse(&format!("like(f,{raw})")).unwrap().filter.0 {
            Some(Expr::Like { pattern, .. }) => pattern,
            other => panic!("{raw}: {other:?}"),
        };
        assert_eq!(
            pieces(&parsed("a*b%2Ac**")),
            [
                Piece::Text("a"),
                Piece::Wildcard,
                Piece::Text("b*c"),
                Piece::Wildcard,
                Piece::Wildcard
            ]
        );
        assert_eq!(parsed("a*b%2Ac**").text(), "a*b*c**");
        assert_eq!(
            pieces(&parsed("%22*%20%22")),
            [Piece::Wildcard, Piece::Text(" ")]
        );
        assert_eq!(Value::literal("2*3").to_string(), "\"2%2A3\"");
        assert_eq!(Value::pattern("2*3").to_string(), "2*3");
        assert_eq!(
            [Piece::Text("a b"), Piece::Wildcard, Piece::Text("*")]
                .into_iter()
                .collect::<Value>()
                .to_string(),
            "\"a%20b*%2A\""
        );
    }

    #[test]
    fn select_ordering_and_request_params() {
        let (query, params) = Query::parse_request(
            "eq(a,1)&select(-params,x)&sort(-n)&ordering(+id)&limit=2&offset=1&search=Be%20ta&limit(5,6)&limit(7)&select()",
        )
        .unwrap();
        assert_eq!(
            query,
            Query::new(Rql::eq("a", 1))
                .select(["-params", "x"])
                .ordering(["-n", "+id"])
        );
        assert_eq!(
            params,
            [
                RequestParam::Limit(2),
                RequestParam::Offset(1),
                RequestParam::Search("Be ta".into()),
                RequestParam::Limit(5),
                RequestParam::Offset(6),
                RequestParam::Limit(7),
            ]
        );
        assert_eq!(
            Query::parse("eq(a,1)&limit=10").unwrap_err().to_string(),
            "\"limit=10\" is a request parameter (paging or search), not part of a query"
        );
        assert!("search=x".parse::<Query>().is_err());
        assert_eq!(
            "ordering(id)".parse(),
            Ok(Query::default().ordering(["id"]))
        );
    }

    #[test]
    fn malformed_queries_are_refused_with_their_reason() {
        let cases = [
            (
                "eq(status,active",
                "unexpected end of RQL expression in \"eq(status,active\"",
            ),
            ("eq(status)", "RQL operator eq expects a field and a value"),
            (
                "in(id,AS-1)",
                "RQL operator in expects a field and a parenthesised list of values",
            ),
            ("frobnicate(id,1)", "unknown RQL operator \"frobnicate\""),
            ("and()", "RQL operator and expects at least one expression"),
            (
                "eq(status,active))",
                "unexpected \")\" in RQL expression \"eq(status,active))\"",
            ),
            (
                "limit=ten",
                "limit must be a non-negative integer, not \"ten\"",
            ),
            (
                "offset=-1",
                "offset must be a non-negative integer, not \"-1\"",
            ),
            (
                "eq(a,b)c",
                "unexpected \"c\" in RQL expression \"eq(a,b)c\"",
            ),
            (
                "eq(name,\"open",
                "unexpected end of RQL expression in \"eq(name,\\\"open\"",
            ),
            ("eq(name,%FF)", "invalid percent-encoding in \"%FF\""),
            (
                "not(eq(a,1),eq(b,2))",
                "RQL operator not expects exactly one expression",
            ),
            ("=x", "unexpected \"=\" in RQL expression \"=x\""),
            (
                "abc",
                "RQL operator query expects an operator call at the top level",
            ),
            (
                "(a,b)",
                "RQL operator query expects an operator call at the top level",
            ),
            (
                "and(a)",
                "RQL operator and/or/not expects operator calls as arguments",
            ),
            (
                "and(eq(a,1),x)",
                "RQL operator and/or/not expects operator calls as arguments",
            ),
            ("eq(a,b,c)", "RQL operator eq expects a field and a value"),
            (
                "eq((a),b)",
                "RQL operator eq expects plain values as arguments",
            ),
            (
                "eq(a,(b))",
                "RQL operator eq expects a value, null() or empty()",
            ),
            (
                "eq(a,foo())",
                "RQL operator eq expects a value, null() or empty()",
            ),
            (
                "eq(a,null(1))",
                "RQL operator eq expects a value, null() or empty()",
            ),
            (
                "like(a,(b))",
                "RQL operator like expects a field and a pattern",
            ),
            ("like(a)", "RQL operator like expects a field and a pattern"),
            (
                "in(a,(b,c()))",
                "RQL operator in expects plain values as arguments",
            ),
            (
                "in((a),(b))",
                "RQL operator in expects plain values as arguments",
            ),
            (
                "select(a,(b))",
                "RQL operator select expects plain values as arguments",
            ),
            (
                "ordering(x())",
                "RQL operator ordering expects plain values as arguments",
            ),
            (
                "limit(1,2,3)",
                "RQL operator limit expects limit(count) or limit(count,offset)",
            ),
            (
                "limit(a)",
                "limit must be a non-negative integer, not \"a\"",
            ),
            (
                "limit(1,b)",
                "offset must be a non-negative integer, not \"b\"",
            ),
            (
                "limit()",
                "RQL operator limit expects limit(count) or limit(count,offset)",
            ),
            ("%FF=1", "invalid percent-encoding in \"%FF\""),
            ("eq(%FF,1)", "invalid percent-encoding in \"%FF\""),
            ("and(select(a))", "unknown RQL operator \"select\""),
            (
                "limit=1(",
                "limit must be a non-negative integer, not \"1(\"",
            ),
            ("eq(a,b)&)", "unexpected \")\" in RQL expression \")\""),
            ("not()", "RQL operator not expects exactly one expression"),
            (
                "out(a)",
                "RQL operator out expects a field and a parenthesised list of values",
            ),
            (
                "ilike(a,b,c)",
                "RQL operator ilike expects a field and a pattern",
            ),
            ("gt(a)", "RQL operator gt expects a field and a value"),
            ("null()", "unknown RQL operator \"null\""),
            (
                "eq(\"a\",b)x",
                "unexpected \"x\" in RQL expression \"eq(\\\"a\\\",b)x\"",
            ),
            ("search=%FF", "invalid percent-encoding in \"%FF\""),
            (",", "unexpected \",\" in RQL expression \",\""),
            (")", "unexpected \")\" in RQL expression \")\""),
        ];
        for (raw, reason) in cases {
            let error = Query::parse_request(raw).unwrap_err();
            assert_eq!(error.to_string(), reason, "{raw}");
        }
    }

    // ----- what the client writes is what the simulator reads -----

    use proptest::prelude::*;

    /// Value text with what breaks naive quoting: quotes, commas, parentheses, `&`, `=`, `%`,
    /// asterisks, spaces, unicode, and nothing at all.
    fn text() -> impl Strategy<Value = String> {
        prop::string::string_regex("([a-zA-Z0-9_.:+@-]|[\"',()&=%* ]|[äß€中😀]|\\\\){0,8}").unwrap()
    }

    fn value_strategy() -> impl Strategy<Value = Value> {
        let piece = prop_oneof![
            text().prop_map(Some),
            Just(None), // a wildcard
        ];
        prop_oneof![
            text().prop_map(Value::pattern),
            text().prop_map(Value::literal),
            prop::collection::vec(piece, 0..5).prop_map(|pieces| {
                pieces
                    .iter()
                    .map(|piece| match piece {
                        Some(text) => Piece::Text(text),
                        None => Piece::Wildcard,
                    })
                    .collect()
            }),
        ]
    }

    fn field() -> impl Strategy<Value = String> {
        prop::string::string_regex("[a-z_][a-z0-9_]{0,6}(\\.[a-z_][a-z0-9_]{0,6}){0,2}").unwrap()
    }

    fn leaf() -> impl Strategy<Value = Expr> {
        let operand = prop_oneof![
            value_strategy().prop_map(Operand::Value),
            Just(Operand::Null),
            Just(Operand::Empty),
        ];
        prop_oneof![
            (
                prop::sample::select(CompareOp::ALL.to_vec()),
                field(),
                operand
            )
                .prop_map(|(op, field, operand)| Expr::Compare { op, field, operand }),
            (
                prop::sample::select(vec![MemberOp::In, MemberOp::Out]),
                field(),
                prop::collection::vec(value_strategy(), 0..4)
            )
                .prop_map(|(op, field, values)| Expr::Member { op, field, values }),
            (
                prop::sample::select(vec![LikeOp::Like, LikeOp::Ilike]),
                field(),
                value_strategy()
            )
                .prop_map(|(op, field, pattern)| Expr::Like { op, field, pattern }),
        ]
    }

    fn expr() -> impl Strategy<Value = Expr> {
        leaf().prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 1..4).prop_map(Expr::And),
                prop::collection::vec(inner.clone(), 1..4).prop_map(Expr::Or),
                inner.prop_map(|expr| Expr::Not(Box::new(expr))),
            ]
        })
    }

    fn query() -> impl Strategy<Value = Query> {
        let entry = || prop::string::string_regex("[-+]?[a-z_][a-z0-9_.]{0,8}").unwrap();
        (
            prop::option::of(expr()),
            prop::collection::vec(entry(), 0..3),
            prop::collection::vec(entry(), 0..3),
        )
            .prop_map(|(filter, select, ordering)| Query {
                filter: Rql(filter),
                select,
                ordering,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever the tree holds, rendering it and parsing the text gives the tree back.
        #[test]
        fn what_is_rendered_parses_back_to_the_same_query(query in query()) {
            let rendered = query.to_string();
            prop_assert_eq!(Query::parse(&rendered), Ok(query), "{}", rendered);
        }

        /// The builder's values, read back, are the values it was given.
        #[test]
        fn builder_values_read_back_as_given(text in text()) {
            let rendered = Rql::eq("f", &text).to_string();
            let parsed = Query::parse(&rendered).unwrap().filter;
            prop_assert_eq!(&parsed, &Rql::eq("f", &text));
            let Some(Expr::Compare { operand: Operand::Value(value), .. }) = parsed.expr() else {
                panic!("{rendered}");
            };
            prop_assert_eq!(value.text(), text.as_str());
        }
    }
}
