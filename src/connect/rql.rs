//! RQL (Resource Query Language) expressions for Connect list endpoints.
//!
//! Connect filters lists with RQL written straight into the query string. [`Rql`] builds those
//! expressions and renders them exactly as the official Python `R()` builder does
//! (`and(in(type,(distribution)),in(status,(active)))`): an empty builder contributes nothing,
//! nested `and`/`or` of the same kind are flattened, and a double negation cancels out.
//! [`Query`] adds projection (`select`) and sorting (`ordering`); the pager appends
//! `limit`/`offset`.
//!
//! Values are written bare when they only hold letters, digits and `_ - . : + @ *`; anything
//! else is wrapped in double quotes and percent-encoded, so a value can never break out of its
//! expression. `*` stays a wildcard (it is what `like`/`ilike` patterns are made of). Field names
//! are code, not data, and are written as given.

use std::fmt;
use std::ops::{BitAnd, BitOr, Not};

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Characters a value may contain and still be written bare.
const BARE_PUNCTUATION: &[char] = &['_', '-', '.', ':', '+', '@', '*'];

/// Inside quotes everything but letters, digits and the bare punctuation is percent-encoded.
const QUOTED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'-')
    .remove(b'.')
    .remove(b':')
    .remove(b'+')
    .remove(b'@')
    .remove(b'*');

/// An RQL filter expression; `Rql::default()` is the empty filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rql(Node);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum Node {
    #[default]
    Empty,
    Expr(String),
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
}

impl Rql {
    /// The empty filter: matches everything and renders as nothing.
    pub fn new() -> Self {
        Rql::default()
    }

    pub fn eq(field: &str, value: impl fmt::Display) -> Self {
        Rql::compare("eq", field, value)
    }
    pub fn ne(field: &str, value: impl fmt::Display) -> Self {
        Rql::compare("ne", field, value)
    }
    pub fn gt(field: &str, value: impl fmt::Display) -> Self {
        Rql::compare("gt", field, value)
    }
    pub fn ge(field: &str, value: impl fmt::Display) -> Self {
        Rql::compare("ge", field, value)
    }
    pub fn lt(field: &str, value: impl fmt::Display) -> Self {
        Rql::compare("lt", field, value)
    }
    pub fn le(field: &str, value: impl fmt::Display) -> Self {
        Rql::compare("le", field, value)
    }
    /// Case-sensitive pattern; `*` is the wildcard.
    pub fn like(field: &str, pattern: impl fmt::Display) -> Self {
        Rql::compare("like", field, pattern)
    }
    /// Case-insensitive pattern; `*` is the wildcard.
    pub fn ilike(field: &str, pattern: impl fmt::Display) -> Self {
        Rql::compare("ilike", field, pattern)
    }

    /// `in(field,(v1,v2,…))` — the builder's `oneof`; always a parenthesised list.
    pub fn one_of<V: fmt::Display>(field: &str, values: impl IntoIterator<Item = V>) -> Self {
        Rql::list("in", field, values)
    }
    /// `out(field,(v1,v2,…))`.
    pub fn out<V: fmt::Display>(field: &str, values: impl IntoIterator<Item = V>) -> Self {
        Rql::list("out", field, values)
    }

    /// `eq(field,null())`.
    pub fn null(field: &str) -> Self {
        Rql::expr(format!("eq({field},null())"))
    }
    /// `ne(field,null())`.
    pub fn not_null(field: &str) -> Self {
        Rql::expr(format!("ne({field},null())"))
    }
    /// `eq(field,empty())`.
    pub fn empty(field: &str) -> Self {
        Rql::expr(format!("eq({field},empty())"))
    }
    /// `ne(field,empty())`.
    pub fn not_empty(field: &str) -> Self {
        Rql::expr(format!("ne({field},empty())"))
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
        Rql(join(self.0, other.0, Node::And, |n| match n {
            Node::And(children) => Ok(children),
            other => Err(other),
        }))
    }

    pub fn or(self, other: Rql) -> Self {
        Rql(join(self.0, other.0, Node::Or, |n| match n {
            Node::Or(children) => Ok(children),
            other => Err(other),
        }))
    }

    pub fn negate(self) -> Self {
        Rql(match self.0 {
            Node::Empty => Node::Empty,
            Node::Not(inner) => *inner,
            node => Node::Not(Box::new(node)),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.0 == Node::Empty
    }

    fn expr(text: String) -> Self {
        Rql(Node::Expr(text))
    }

    fn compare(op: &str, field: &str, value: impl fmt::Display) -> Self {
        Rql::expr(format!(
            "{op}({field},{})",
            encode_value(&value.to_string())
        ))
    }

    fn list<V: fmt::Display>(op: &str, field: &str, values: impl IntoIterator<Item = V>) -> Self {
        let values: Vec<String> = values
            .into_iter()
            .map(|v| encode_value(&v.to_string()))
            .collect();
        Rql::expr(format!("{op}({field},({}))", values.join(",")))
    }
}

/// Combines two nodes under `make` (and/or), flattening children already of that kind.
fn join(
    left: Node,
    right: Node,
    make: fn(Vec<Node>) -> Node,
    children_of: fn(Node) -> Result<Vec<Node>, Node>,
) -> Node {
    match (left, right) {
        (Node::Empty, node) | (node, Node::Empty) => node,
        (left, right) => {
            let mut children = children_of(left).unwrap_or_else(|node| vec![node]);
            children.extend(children_of(right).unwrap_or_else(|node| vec![node]));
            make(children)
        }
    }
}

/// Writes a value bare when it is safe to, else quoted and percent-encoded.
pub fn encode_value(value: &str) -> String {
    let bare = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || BARE_PUNCTUATION.contains(&c));
    if bare {
        value.to_string()
    } else {
        format!("\"{}\"", utf8_percent_encode(value, QUOTED))
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = |f: &mut fmt::Formatter<'_>, op: &str, children: &[Node]| {
            write!(f, "{op}(")?;
            for (i, child) in children.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{child}")?;
            }
            f.write_str(")")
        };
        match self {
            Node::Empty => Ok(()),
            Node::Expr(text) => f.write_str(text),
            Node::And(children) => group(f, "and", children),
            Node::Or(children) => group(f, "or", children),
            Node::Not(inner) => write!(f, "not({inner})"),
        }
    }
}

impl fmt::Display for Rql {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
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

/// A list request's query string without paging: filter, `select(...)` and `ordering(...)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub filter: Rql,
    /// Projection, e.g. `-configuration` to drop a sub-object.
    pub select: Vec<String>,
    /// Sort fields, `-` prefix for descending.
    pub ordering: Vec<String>,
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
}

impl From<Rql> for Query {
    fn from(filter: Rql) -> Self {
        Query::new(filter)
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
}
