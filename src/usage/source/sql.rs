//! Records from a database: `postgres://…` (also `postgresql://`) or `mysql://…` (also
//! `mariadb://`) in `USAGE_SOURCE`, with `USAGE_QUERY` returning the record fields as columns by
//! name. One crate (`sqlx`) speaks to both engines, over rustls when the URL asks for TLS.
//!
//! The rules this module keeps, and why:
//! * The month reaches the query only as bound parameters: `{from}`, `{to}` (SQL `DATE`s, first
//!   and last day) and `{period}` (text `YYYY-MM`) become `$n` / `?`, never text, so no value can
//!   change the statement ([`bind_placeholders`]).
//! * Values are read exactly: a numeric column becomes its exact decimal text (PostgreSQL's
//!   binary `NUMERIC` is spelled out digit by digit, never through a float), a timestamp the
//!   `YYYY-MM-DD HH:MM:SS` the record checker reads (a fraction of a second is kept, so the
//!   checker refuses it rather than it being cut). Float and other columns are refused by name.
//! * Columns are checked before the first row: a missing required column or a column of a type
//!   that cannot be read exactly stops the source (every row would be bad otherwise); a value
//!   that cannot be decoded is a bad record at its row number; `NULL` is a missing field.
//! * Rows are streamed through a bounded channel from a task that owns the connection, so
//!   memory does not grow with the result; dropping the stream ends the task and the
//!   connection.
//! * The statement runs read-only, under a server-side statement timeout and a client-side
//!   deadline, both `USAGE_SOURCE_TIMEOUT`.
//! * The password (`USAGE_SOURCE_AUTH`, or the URL's) goes only over TLS that cannot be
//!   skipped (`sslmode=require` or stricter) or to this machine, and never into an error: the
//!   source is named by its redacted URL and error texts are scrubbed of the password.
//! * The URL's parameters are checked here before the driver sees them ([`check_parameters`]):
//!   sqlx logs a parameter it does not know together with its value (a vendor may have put a
//!   token there), or drops it silently (MySQL). An unknown parameter is refused by name, its
//!   value never shown.

use std::str::FromStr;
use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime, Timelike};
use futures::StreamExt;
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlRow, MySqlSslMode};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow, PgSslMode};
use sqlx::{Column, Connection, Executor, Row, TypeInfo};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::csv::REQUIRED;
use super::{RecordStream, SourceError, TimedOut};
use crate::config::Secret;
use crate::usage::period::{format_time, Period};
use crate::usage::record::{BadReason, BadRecord, RawRecord, FIELDS};

/// Records decoded ahead of the reader: enough to keep the connection busy, few enough to keep
/// memory flat.
const CHANNEL_RECORDS: usize = 512;

/// How long after `USAGE_SOURCE_TIMEOUT` the client gives up on a statement the server should
/// have stopped (the server's own timeout speaks first, with its reason).
const CLIENT_GRACE: Duration = Duration::from_secs(5);

/// The database engines a `USAGE_SOURCE` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    MySql,
}

impl Engine {
    /// The engine a source location names by its scheme, if it is a database.
    pub fn of(location: &str) -> Option<Engine> {
        let scheme = location.split_once("://")?.0.to_ascii_lowercase();
        match scheme.as_str() {
            "postgres" | "postgresql" => Some(Engine::Postgres),
            "mysql" | "mariadb" => Some(Engine::MySql),
            _ => None,
        }
    }

    /// The `n`th (1-based) bound parameter as the engine writes it. PostgreSQL's carries its
    /// type: the statement is described before it is bound, and a parameter whose type the
    /// server had to guess (`{from} < {to}`: text) would not take the date it is given.
    fn parameter(self, n: usize, placeholder: Placeholder) -> String {
        match (self, placeholder) {
            (Engine::Postgres, Placeholder::From | Placeholder::To) => format!("${n}::date"),
            (Engine::Postgres, Placeholder::Period) => format!("${n}::text"),
            (Engine::MySql, _) => "?".to_string(),
        }
    }
}

/// The values `{from}`, `{to}` and `{period}` stand for. Public so a test can bind any value,
/// including one a month could never hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryValues {
    /// `{period}`, bound as text.
    pub period: String,
    /// `{from}`, bound as a SQL `DATE`.
    pub from: NaiveDate,
    /// `{to}`, bound as a SQL `DATE`.
    pub to: NaiveDate,
}

impl QueryValues {
    pub fn of(period: Period) -> Self {
        QueryValues {
            period: period.to_string(),
            from: period.first_day(),
            to: period.last_day(),
        }
    }
}

/// A placeholder of `USAGE_QUERY`, in the order the statement's parameters take them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placeholder {
    From,
    To,
    Period,
}

const PLACEHOLDERS: [(&str, Placeholder); 3] = [
    ("{from}", Placeholder::From),
    ("{to}", Placeholder::To),
    ("{period}", Placeholder::Period),
];

/// `query` with each placeholder replaced by the engine's next parameter, and the placeholders
/// in parameter order. A placeholder inside a quoted string or identifier, or a comment, is an
/// error: it would not be a parameter there, and the month would silently not reach the query.
fn bind_placeholders(query: &str, engine: Engine) -> Result<(String, Vec<Placeholder>), String> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Code,
        Quoted(u8),
        LineComment,
        BlockComment,
    }
    let bytes = query.as_bytes();
    let mut text = String::with_capacity(query.len());
    let mut order = Vec::new();
    let mut state = State::Code;
    let mut at = 0;
    while at < bytes.len() {
        let rest = &query[at..];
        if let Some((name, placeholder)) =
            PLACEHOLDERS.iter().find(|(name, _)| rest.starts_with(name))
        {
            if state != State::Code {
                return Err(format!(
                    "USAGE_QUERY has {name} inside a quoted string, identifier or comment; \
                     write it bare (e.g. WHERE month = {name}): it is passed as a parameter"
                ));
            }
            order.push(*placeholder);
            text.push_str(&engine.parameter(order.len(), *placeholder));
            at += name.len();
            continue;
        }
        let byte = bytes[at];
        state = match state {
            State::Code => match byte {
                b'\'' | b'"' => State::Quoted(byte),
                b'`' if engine == Engine::MySql => State::Quoted(byte),
                b'-' if rest.starts_with("--") => State::LineComment,
                b'#' if engine == Engine::MySql => State::LineComment,
                b'/' if rest.starts_with("/*") => State::BlockComment,
                _ => State::Code,
            },
            // A doubled quote inside a string is one quote: leaving and re-entering is the same.
            State::Quoted(quote) if byte == quote => State::Code,
            State::Quoted(b'\'') if byte == b'\\' && engine == Engine::MySql => {
                // MySQL strings take backslash escapes: the next character is part of the string.
                let next = rest[1..].chars().next().map_or(0, char::len_utf8);
                text.push_str(&rest[..1 + next]);
                at += 1 + next;
                continue;
            }
            State::LineComment if byte == b'\n' => State::Code,
            State::BlockComment if rest.starts_with("*/") => {
                text.push_str("*/");
                at += 2;
                state = State::Code;
                continue;
            }
            other => other,
        };
        let width = rest.chars().next().map_or(1, char::len_utf8);
        text.push_str(&rest[..width]);
        at += width;
    }
    Ok((text, order))
}

/// How a column's values are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Text as stored (a MySQL string with a binary collation is read as UTF-8 text too).
    Text,
    /// PostgreSQL `CHAR(n)`: text padded with spaces, which are not part of the value.
    PaddedText,
    Integer,
    UnsignedInteger,
    /// An exact decimal: PostgreSQL `NUMERIC`, MySQL `DECIMAL`.
    Decimal,
    /// A time without zone, taken as UTC.
    Timestamp,
    /// An instant (PostgreSQL `TIMESTAMPTZ`), written in UTC.
    TimestampUtc,
    Uuid,
}

/// How a column of the engine's type `type_name` is read; `None` for types that cannot be read
/// exactly as a record field (floats, dates without time, binary, JSON, ...).
fn kind_of(engine: Engine, type_name: &str) -> Option<Kind> {
    let kind = match (engine, type_name) {
        (Engine::Postgres, "TEXT" | "VARCHAR" | "NAME" | "UNKNOWN" | "citext") => Kind::Text,
        (Engine::Postgres, "CHAR") => Kind::PaddedText,
        (Engine::Postgres, "INT2" | "INT4" | "INT8") => Kind::Integer,
        (Engine::Postgres, "NUMERIC") => Kind::Decimal,
        (Engine::Postgres, "TIMESTAMP") => Kind::Timestamp,
        (Engine::Postgres, "TIMESTAMPTZ") => Kind::TimestampUtc,
        (Engine::Postgres, "UUID") => Kind::Uuid,
        (
            Engine::MySql,
            "CHAR" | "VARCHAR" | "TINYTEXT" | "TEXT" | "MEDIUMTEXT" | "LONGTEXT" | "BINARY"
            | "VARBINARY" | "ENUM",
        ) => Kind::Text,
        (Engine::MySql, "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT") => Kind::Integer,
        (
            Engine::MySql,
            "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "MEDIUMINT UNSIGNED" | "INT UNSIGNED"
            | "BIGINT UNSIGNED",
        ) => Kind::UnsignedInteger,
        (Engine::MySql, "DECIMAL") => Kind::Decimal,
        // The connection's time zone is UTC, so a MySQL TIMESTAMP arrives in UTC.
        (Engine::MySql, "DATETIME" | "TIMESTAMP") => Kind::Timestamp,
        _ => return None,
    };
    Some(kind)
}

/// Whether the record field `field` may come from a column read as `kind`.
fn field_accepts(field: &str, kind: Kind) -> bool {
    match field {
        "quantity" => matches!(
            kind,
            Kind::Text | Kind::PaddedText | Kind::Integer | Kind::UnsignedInteger | Kind::Decimal
        ),
        "start_time_utc" | "end_time_utc" => matches!(
            kind,
            Kind::Text | Kind::PaddedText | Kind::Timestamp | Kind::TimestampUtc
        ),
        // Identifiers and notes: text, or an id the database keeps as a number or a UUID.
        _ => !matches!(kind, Kind::Decimal | Kind::Timestamp | Kind::TimestampUtc),
    }
}

/// What each type may be, for the message refusing a column.
fn expected_types(field: &str) -> &'static str {
    match field {
        "quantity" => "an exact number (NUMERIC/DECIMAL or an integer) or text",
        "start_time_utc" | "end_time_utc" => {
            "a timestamp (TIMESTAMP, TIMESTAMPTZ, DATETIME) or text"
        }
        _ => "text, an integer or a UUID",
    }
}

/// Which result column feeds which field, and how it is read.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    columns: Vec<PlannedColumn>,
}

#[derive(Debug, Clone, PartialEq)]
struct PlannedColumn {
    index: usize,
    field: &'static str,
    kind: Kind,
    /// The type as the database names it, for messages.
    type_name: String,
}

/// Matches the result's columns (name, type name) to the record fields by name (case does not
/// matter; columns that are no field are ignored).
fn plan(engine: Engine, columns: &[(String, String)]) -> Result<Plan, String> {
    let mut planned: Vec<PlannedColumn> = Vec::new();
    for (index, (name, type_name)) in columns.iter().enumerate() {
        let Some(field) = FIELDS
            .iter()
            .copied()
            .find(|f| f.eq_ignore_ascii_case(name))
        else {
            continue;
        };
        if planned.iter().any(|c| c.field == field) {
            return Err(format!("USAGE_QUERY returns the column {field} twice"));
        }
        let kind = kind_of(engine, type_name)
            .filter(|kind| field_accepts(field, *kind))
            .ok_or_else(|| {
                format!(
                    "USAGE_QUERY's column {field} is of type {type_name}, which cannot be read \
                     exactly; it must be {} (cast it in the query)",
                    expected_types(field)
                )
            })?;
        planned.push(PlannedColumn {
            index,
            field,
            kind,
            type_name: type_name.clone(),
        });
    }
    if let Some(missing) = REQUIRED
        .iter()
        .find(|field| !planned.iter().any(|c| c.field == **field))
    {
        return Err(format!("USAGE_QUERY returns no {missing} column"));
    }
    Ok(Plan { columns: planned })
}

/// PostgreSQL's binary `NUMERIC` as exact decimal text, with as many fraction digits as the
/// value's scale (`12.50` stays `12.50`). `NaN` and the infinities are spelled as PostgreSQL
/// does: not quantities, so the record checker refuses them.
fn pg_numeric_text(bytes: &[u8]) -> Result<String, String> {
    let word = |at: usize| -> Result<u16, String> {
        bytes
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "a NUMERIC value is cut short".to_string())
    };
    let count = usize::from(word(0)?);
    let weight = i64::from(word(2)? as i16);
    let sign = word(4)?;
    let scale = usize::from(word(6)?);
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        other => return Err(format!("a NUMERIC value has the unknown sign {other:#06x}")),
    }
    let digits = (0..count)
        .map(|i| match word(8 + 2 * i)? {
            digit @ 0..=9999 => Ok(digit),
            digit => Err(format!("a NUMERIC digit is out of range: {digit}")),
        })
        .collect::<Result<Vec<u16>, String>>()?;
    // Digit i is worth 10000^(weight - i): groups 0..=weight are the whole part.
    let group = |i: i64| -> u16 {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    let mut text = String::new();
    if sign == 0x4000 && digits.iter().any(|d| *d != 0) {
        text.push('-');
    }
    if weight < 0 {
        text.push('0');
    } else {
        text.push_str(&group(0).to_string());
        for i in 1..=weight {
            text.push_str(&format!("{:04}", group(i)));
        }
    }
    if scale > 0 {
        text.push('.');
        let mut fraction = String::with_capacity(scale + 4);
        let mut i = weight + 1;
        while fraction.len() < scale {
            fraction.push_str(&format!("{:04}", group(i)));
            i += 1;
        }
        fraction.truncate(scale);
        text.push_str(&fraction);
    }
    Ok(text)
}

/// PostgreSQL's binary `TIMESTAMP`/`TIMESTAMPTZ` (microseconds from 2000-01-01 00:00:00 UTC)
/// as the record checker reads it; `infinity` and `-infinity` as PostgreSQL spells them (the
/// checker refuses them), never an overflow.
fn pg_timestamp_text(bytes: &[u8]) -> Result<String, String> {
    let micros = <[u8; 8]>::try_from(bytes)
        .map(i64::from_be_bytes)
        .map_err(|_| format!("a timestamp of {} bytes, not 8", bytes.len()))?;
    match micros {
        i64::MAX => return Ok("infinity".into()),
        i64::MIN => return Ok("-infinity".into()),
        _ => {}
    }
    let epoch = NaiveDate::from_ymd_opt(2000, 1, 1)
        .and_then(|day| day.and_hms_opt(0, 0, 0))
        .expect("a valid date");
    epoch
        .checked_add_signed(chrono::TimeDelta::microseconds(micros))
        .map(timestamp_text)
        .ok_or_else(|| format!("the timestamp is out of range ({micros} µs from 2000)"))
}

/// A time as the record checker reads it; a fraction of a second is kept (and refused there)
/// rather than cut off.
fn timestamp_text(time: NaiveDateTime) -> String {
    let mut text = format_time(time);
    let nanos = time.nanosecond();
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text
}

/// Reads one value of a PostgreSQL row: `None` for `NULL`.
fn pg_value(row: &PgRow, column: &PlannedColumn) -> Result<Option<String>, String> {
    let raw = row.try_get_raw(column.index).map_err(|e| e.to_string())?;
    if sqlx::ValueRef::is_null(&raw) {
        return Ok(None);
    }
    let binary = matches!(raw.format(), sqlx::postgres::PgValueFormat::Binary);
    let text = |bytes: &[u8]| {
        std::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|_| "it is not valid UTF-8".to_string())
    };
    let value = match column.kind {
        // A text value's binary form is its text; any value's text form is its text.
        Kind::Text => text(raw.as_bytes().map_err(|e| e.to_string())?)?,
        Kind::PaddedText => text(raw.as_bytes().map_err(|e| e.to_string())?)?
            .trim_end_matches(' ')
            .to_string(),
        _ if !binary => text(raw.as_bytes().map_err(|e| e.to_string())?)?,
        Kind::Decimal => pg_numeric_text(raw.as_bytes().map_err(|e| e.to_string())?)?,
        Kind::Integer => match column.type_name.as_str() {
            "INT2" => row.try_get::<i16, _>(column.index).map(|v| v.to_string()),
            "INT4" => row.try_get::<i32, _>(column.index).map(|v| v.to_string()),
            _ => row.try_get::<i64, _>(column.index).map(|v| v.to_string()),
        }
        .map_err(|e| e.to_string())?,
        // Both are microseconds from 2000-01-01 (an instant in UTC for TIMESTAMPTZ).
        Kind::Timestamp | Kind::TimestampUtc => {
            pg_timestamp_text(raw.as_bytes().map_err(|e| e.to_string())?)?
        }
        Kind::Uuid => uuid::Uuid::from_slice(raw.as_bytes().map_err(|e| e.to_string())?)
            .map(|u| u.hyphenated().to_string())
            .map_err(|e| e.to_string())?,
        Kind::UnsignedInteger => return Err("unsigned integers are MySQL's".into()),
    };
    Ok(Some(value))
}

/// Reads one value of a MySQL row: `None` for `NULL` (and MySQL's zero dates).
fn mysql_value(row: &MySqlRow, column: &PlannedColumn) -> Result<Option<String>, String> {
    let raw = row.try_get_raw(column.index).map_err(|e| e.to_string())?;
    if sqlx::ValueRef::is_null(&raw) {
        return Ok(None);
    }
    let value = match column.kind {
        // Strings and DECIMAL travel as text, whatever the protocol: read their bytes as such
        // (the type was checked by name above).
        Kind::Text | Kind::PaddedText | Kind::Decimal => {
            let bytes = row
                .try_get_unchecked::<&[u8], _>(column.index)
                .map_err(|e| e.to_string())?;
            std::str::from_utf8(bytes)
                .map_err(|_| "it is not valid UTF-8".to_string())?
                .to_string()
        }
        Kind::Integer => row
            .try_get::<i64, _>(column.index)
            .map(|v| v.to_string())
            .map_err(|e| e.to_string())?,
        Kind::UnsignedInteger => row
            .try_get::<u64, _>(column.index)
            .map(|v| v.to_string())
            .map_err(|e| e.to_string())?,
        // DATETIME and TIMESTAMP share their encoding (the type was checked by name above).
        Kind::Timestamp | Kind::TimestampUtc => row
            .try_get_unchecked::<NaiveDateTime, _>(column.index)
            .map(timestamp_text)
            .map_err(|e| e.to_string())?,
        Kind::Uuid => return Err("UUID columns are PostgreSQL's".into()),
    };
    Ok(Some(value))
}

/// A row as a record (`line` is its 1-based row number), or the bad record naming the column
/// that could not be read.
fn to_record<R>(
    row: &R,
    line: u64,
    plan: &Plan,
    read: fn(&R, &PlannedColumn) -> Result<Option<String>, String>,
) -> Result<RawRecord, BadRecord> {
    let mut record = RawRecord {
        line,
        ..Default::default()
    };
    for column in &plan.columns {
        let value = read(row, column).map_err(|reason| {
            BadRecord::new(
                line,
                BadReason::UnparsableField,
                format!(
                    "column {} ({}) cannot be read: {reason}",
                    column.field, column.type_name
                ),
            )
        })?;
        record.set(column.field, value);
    }
    Ok(record)
}

/// Where the password would go, as [`crate::config`] checks it at start: the origin as it may
/// be shown, and whether the password is safe on the way (TLS that cannot be skipped, or this
/// machine). `None` when `location` is no database URL.
pub fn credential_target(location: &str) -> Option<(String, bool)> {
    let engine = Engine::of(location)?;
    let options = ConnectOptions::parse(engine, location).ok()?;
    let url = url::Url::parse(location).ok()?;
    let origin = format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or("localhost"),
        url.port().map(|p| format!(":{p}")).unwrap_or_default()
    );
    Some((origin, options.protects_password()))
}

/// The URL parameters each engine's client takes (sqlx's names; `options[NAME]` too for
/// PostgreSQL), and those it takes but this source sets itself, with the reason.
const POSTGRES_PARAMETERS: [&str; 18] = [
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "options",
    "options[…]",
];
const MYSQL_PARAMETERS: [&str; 12] = [
    "sslmode",
    "ssl-mode",
    "sslca",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "charset",
    "collation",
    "statement-cache-capacity",
    "socket",
];
const SET_HERE: [(Engine, &str, &str); 3] = [
    (
        Engine::Postgres,
        "application_name",
        "connect-payg names its connections itself",
    ),
    (
        Engine::MySql,
        "timezone",
        "the session's time zone is always UTC, so TIMESTAMP columns read as UTC",
    ),
    (
        Engine::MySql,
        "time-zone",
        "the session's time zone is always UTC, so TIMESTAMP columns read as UTC",
    ),
];

/// Refuses a database URL parameter the engine's client does not take (or takes but this source
/// sets itself), naming the parameter and never its value.
pub fn check_parameters(engine: Engine, location: &str) -> Result<(), String> {
    let Ok(url) = url::Url::parse(location) else {
        // The driver's parser refuses it, with a message that does not quote the URL.
        return Ok(());
    };
    let known: &[&str] = match engine {
        Engine::Postgres => &POSTGRES_PARAMETERS,
        Engine::MySql => &MYSQL_PARAMETERS,
    };
    let client = match engine {
        Engine::Postgres => "PostgreSQL",
        Engine::MySql => "MySQL",
    };
    for (key, _) in url.query_pairs() {
        if let Some((_, _, reason)) = SET_HERE
            .iter()
            .find(|(e, name, _)| *e == engine && *name == key)
        {
            return Err(format!(
                "USAGE_SOURCE's parameter {key:?} cannot be set: {reason}"
            ));
        }
        let indexed_option =
            engine == Engine::Postgres && key.starts_with("options[") && key.ends_with(']');
        if !indexed_option && !known.contains(&key.as_ref()) {
            return Err(format!(
                "USAGE_SOURCE has the parameter {key:?}, which the {client} client does not \
                 take (its value is not shown); it takes {}",
                known.join(", ")
            ));
        }
    }
    Ok(())
}

/// Parsed connection options of either engine.
enum ConnectOptions {
    Postgres(PgConnectOptions),
    MySql(MySqlConnectOptions),
}

impl ConnectOptions {
    fn parse(engine: Engine, location: &str) -> Result<Self, String> {
        // Before the driver's parser, which logs an unknown parameter with its value.
        check_parameters(engine, location)?;
        // Both engines' parsers read the URL's parts, not its scheme; `mariadb://` is MySQL's.
        let (_, rest) = location.split_once("://").unwrap_or(("", location));
        let parsed = match engine {
            Engine::Postgres => PgConnectOptions::from_str(&format!("postgres://{rest}"))
                .map(|o| ConnectOptions::Postgres(o.application_name("connect-payg"))),
            Engine::MySql => MySqlConnectOptions::from_str(&format!("mysql://{rest}"))
                // TIMESTAMP columns are sent in the session's zone: always UTC.
                .map(|o| ConnectOptions::MySql(o.timezone(Some("+00:00".to_string())))),
        };
        // The parser's message may quote the URL: it is not passed on.
        parsed.map_err(|_| {
            "is not a valid database URL (the value is not shown, it may hold a password)".into()
        })
    }

    fn with_password(self, password: &str) -> Self {
        match self {
            ConnectOptions::Postgres(o) => ConnectOptions::Postgres(o.password(password)),
            ConnectOptions::MySql(o) => ConnectOptions::MySql(o.password(password)),
        }
    }

    /// Whether a password sent on this connection stays between us and the server.
    fn protects_password(&self) -> bool {
        let local = |host: &str| {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            bare.eq_ignore_ascii_case("localhost")
                || bare
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        };
        match self {
            ConnectOptions::Postgres(o) => {
                o.get_socket().is_some()
                    || local(o.get_host())
                    || matches!(
                        o.get_ssl_mode(),
                        PgSslMode::Require | PgSslMode::VerifyCa | PgSslMode::VerifyFull
                    )
            }
            ConnectOptions::MySql(o) => {
                o.get_socket().is_some()
                    || local(o.get_host())
                    || matches!(
                        o.get_ssl_mode(),
                        MySqlSslMode::Required
                            | MySqlSslMode::VerifyCa
                            | MySqlSslMode::VerifyIdentity
                    )
            }
        }
    }
}

/// The password as `USAGE_SOURCE_AUTH` gives it and as the URL does (its user part and a
/// `password` parameter, as written and decoded): what an error text must never hold.
fn passwords(location: &str, auth: Option<&Secret>) -> Vec<String> {
    let mut secrets: Vec<String> = auth.map(|a| a.expose().to_string()).into_iter().collect();
    if let Ok(url) = url::Url::parse(location) {
        if let Some(written) = url.password() {
            secrets.push(written.to_string());
            if let Ok(decoded) = percent_encoding::percent_decode_str(written).decode_utf8() {
                secrets.push(decoded.into_owned());
            }
        }
        secrets.extend(
            url.query_pairs()
                .filter(|(key, _)| key == "password")
                .map(|(_, value)| value.into_owned()),
        );
    }
    secrets.retain(|s| !s.is_empty());
    secrets
}

/// Whether the URL carries a password (in its user part or as a `password` parameter).
fn url_has_password(location: &str) -> bool {
    url::Url::parse(location).is_ok_and(|url| {
        url.password().is_some_and(|p| !p.is_empty())
            || url.query_pairs().any(|(key, _)| key == "password")
    })
}

/// A database source, ready to be opened for a month.
pub struct SqlSource {
    engine: Engine,
    /// The full URL, credentials included: never shown.
    location: String,
    source_name: String,
    auth: Option<Secret>,
    query: Option<String>,
    timeout: Duration,
}

impl SqlSource {
    /// `location` is the database URL (with `{period}` filled), `source_name` its redacted form.
    pub fn new(
        location: String,
        source_name: String,
        auth: Option<Secret>,
        query: Option<String>,
        timeout: Duration,
    ) -> Option<Self> {
        Some(SqlSource {
            engine: Engine::of(&location)?,
            location,
            source_name,
            auth,
            query,
            timeout,
        })
    }

    fn format_error(&self, reason: impl Into<String>) -> SourceError {
        SourceError::Format {
            source_name: self.source_name.clone(),
            reason: reason.into(),
        }
    }

    /// Runs the query with `values` bound and streams its rows as records.
    pub async fn open(&self, values: &QueryValues) -> Result<RecordStream, SourceError> {
        let query = self
            .query
            .as_deref()
            .filter(|q| !q.trim().is_empty())
            .ok_or_else(|| {
                self.format_error(
                    "a database source needs USAGE_QUERY, the query returning the records",
                )
            })?;
        let (statement, order) =
            bind_placeholders(query, self.engine).map_err(|r| self.format_error(r))?;
        let mut options =
            ConnectOptions::parse(self.engine, &self.location).map_err(|r| self.format_error(r))?;
        let in_url = url_has_password(&self.location);
        if self.auth.is_some() && in_url {
            return Err(self.format_error(
                "the password is given twice, in USAGE_SOURCE_AUTH and in the URL; keep one \
                 (USAGE_SOURCE_AUTH, a secret variable, is the place)",
            ));
        }
        if let Some(auth) = &self.auth {
            options = options.with_password(auth.expose());
        }
        let secrets = passwords(&self.location, self.auth.as_ref());
        // PostgreSQL's client also takes a password from PGPASSWORD, as libpq does.
        let from_environment =
            self.engine == Engine::Postgres && std::env::var_os("PGPASSWORD").is_some();
        if (self.auth.is_some() || in_url || from_environment) && !options.protects_password() {
            return Err(self.format_error(
                "a password is sent only over TLS that cannot be skipped (sslmode=require, \
                 verify-ca or verify-full; for MySQL ssl-mode=REQUIRED, VERIFY_CA or \
                 VERIFY_IDENTITY) or to a loopback host or socket",
            ));
        }
        let run = Run {
            source_name: self.source_name.clone(),
            secrets,
            statement,
            order,
            values: values.clone(),
            timeout: self.timeout,
            deadline: Instant::now() + self.timeout,
        };
        let (sender, receiver) = mpsc::channel(CHANNEL_RECORDS);
        // Connecting and checking the columns happen before `open` returns, so a wrong URL,
        // password or query is an error of the source, not of its first record.
        let (ready, opened) = tokio::sync::oneshot::channel();
        match options {
            ConnectOptions::Postgres(options) => {
                tokio::spawn(run.serve::<sqlx::Postgres, _>(
                    Engine::Postgres,
                    options,
                    PreparePostgres,
                    pg_value,
                    ready,
                    sender,
                ));
            }
            ConnectOptions::MySql(options) => {
                tokio::spawn(run.serve::<sqlx::MySql, _>(
                    Engine::MySql,
                    options,
                    PrepareMySql,
                    mysql_value,
                    ready,
                    sender,
                ));
            }
        }
        match opened.await {
            Ok(Ok(())) => Ok(super::in_batches(
                tokio_stream::wrappers::ReceiverStream::new(receiver),
            )),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(self.format_error("the database reader stopped unexpectedly")),
        }
    }
}

/// What the query's reader sends on: a source item, or the error that ends the source.
type Sent = Result<super::Item, SourceError>;

/// An engine's session set-up, as [`Run::serve`] calls it.
trait AsyncPrepare<'a, DB: sqlx::Database> {
    fn call(
        &self,
        run: &'a Run,
        connection: &'a mut DB::Connection,
    ) -> futures::future::BoxFuture<'a, Result<(), sqlx::Error>>;
}

struct PreparePostgres;

impl<'a> AsyncPrepare<'a, sqlx::Postgres> for PreparePostgres {
    fn call(
        &self,
        run: &'a Run,
        connection: &'a mut PgConnection,
    ) -> futures::future::BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(run.prepare_postgres(connection))
    }
}

struct PrepareMySql;

impl<'a> AsyncPrepare<'a, sqlx::MySql> for PrepareMySql {
    fn call(
        &self,
        run: &'a Run,
        connection: &'a mut MySqlConnection,
    ) -> futures::future::BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(run.prepare_mysql(connection))
    }
}

/// One read of a query: the task that owns the connection.
struct Run {
    source_name: String,
    /// The password in every form it was given: scrubbed from every error text, whatever the
    /// driver puts there.
    secrets: Vec<String>,
    statement: String,
    order: Vec<Placeholder>,
    values: QueryValues,
    timeout: Duration,
    deadline: Instant,
}

impl Run {
    /// An error as it may be shown: the password never, whatever the driver wrote.
    fn describe(&self, what: &str, error: &dyn std::fmt::Display) -> SourceError {
        let mut reason = format!("{what}: {error}");
        for secret in &self.secrets {
            reason = reason.replace(secret.as_str(), "***");
        }
        SourceError::Unreadable {
            source_name: self.source_name.clone(),
            reason,
        }
    }

    fn timed_out(&self) -> SourceError {
        SourceError::Unreadable {
            source_name: self.source_name.clone(),
            reason: TimedOut(self.timeout).to_string(),
        }
    }

    /// Milliseconds left for the statement (at least one).
    fn statement_millis(&self) -> u64 {
        let left = self.deadline.saturating_duration_since(Instant::now());
        u64::try_from(left.as_millis()).unwrap_or(u64::MAX).max(1)
    }

    /// Reads rows until the end, the reader going away or a failure; `Err` ends the source.
    async fn pump<R>(
        &self,
        mut rows: futures::stream::BoxStream<'_, Result<R, sqlx::Error>>,
        plan: &Plan,
        read: fn(&R, &PlannedColumn) -> Result<Option<String>, String>,
        sender: &mpsc::Sender<Sent>,
    ) -> Result<(), SourceError> {
        let mut line = 0u64;
        loop {
            let row = match tokio::time::timeout_at(self.deadline + CLIENT_GRACE, rows.next()).await
            {
                Err(_) => return Err(self.timed_out()),
                Ok(None) => return Ok(()),
                Ok(Some(Err(error))) => {
                    return Err(
                        self.describe(&format!("the query failed after {line} rows"), &error)
                    )
                }
                Ok(Some(Ok(row))) => row,
            };
            line += 1;
            let item = to_record(&row, line, plan, read);
            if sender.send(Ok(item)).await.is_err() {
                // The reader went away: nothing more is wanted.
                return Ok(());
            }
        }
    }

    /// The session settings for PostgreSQL: the statement's timeout, read-only.
    async fn prepare_postgres(&self, connection: &mut PgConnection) -> Result<(), sqlx::Error> {
        let setup = format!(
            "SET statement_timeout = {}; SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            self.statement_millis()
        );
        connection.execute(sqlx::raw_sql(&setup)).await.map(drop)
    }

    /// The session settings for MySQL and MariaDB: the statement's timeout (MariaDB names it
    /// differently, in seconds), read-only.
    async fn prepare_mysql(&self, connection: &mut MySqlConnection) -> Result<(), sqlx::Error> {
        let version: String = sqlx::query_scalar("SELECT VERSION()")
            .fetch_one(&mut *connection)
            .await?;
        let millis = self.statement_millis();
        let limit = if version.to_ascii_lowercase().contains("mariadb") {
            format!(
                "SET SESSION max_statement_time = {}",
                millis as f64 / 1000.0
            )
        } else {
            format!("SET SESSION max_execution_time = {millis}")
        };
        for setup in [limit.as_str(), "SET SESSION TRANSACTION READ ONLY"] {
            connection.execute(sqlx::raw_sql(setup)).await?;
        }
        Ok(())
    }

    /// Connects, prepares the session, checks the columns (telling `ready` how that went), then
    /// streams the rows into `sender` and closes the connection.
    async fn serve<DB, P>(
        self,
        engine: Engine,
        options: <DB::Connection as Connection>::Options,
        prepare: P,
        read: fn(&DB::Row, &PlannedColumn) -> Result<Option<String>, String>,
        ready: tokio::sync::oneshot::Sender<Result<(), SourceError>>,
        sender: mpsc::Sender<Sent>,
    ) where
        DB: sqlx::Database,
        for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
        for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
        for<'q> NaiveDate: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        P: for<'a> AsyncPrepare<'a, DB>,
    {
        let connected = tokio::time::timeout_at(self.deadline, async {
            let mut connection = DB::Connection::connect_with(&options)
                .await
                .map_err(|e| self.describe("cannot connect", &e))?;
            prepare
                .call(&self, &mut connection)
                .await
                .map_err(|e| self.describe("cannot prepare the session", &e))?;
            let described = (&mut connection)
                .describe(&self.statement)
                .await
                .map_err(|e| self.describe("USAGE_QUERY is refused", &e))?;
            let plan = self.plan(engine, described.columns())?;
            Ok::<_, SourceError>((connection, plan))
        })
        .await
        .unwrap_or_else(|_| Err(self.timed_out()));
        let (mut connection, plan) = match connected {
            Ok(connected) => connected,
            Err(error) => {
                let _ = ready.send(Err(error));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        let mut query = sqlx::query::<DB>(&self.statement);
        for placeholder in &self.order {
            query = match placeholder {
                Placeholder::From => query.bind(self.values.from),
                Placeholder::To => query.bind(self.values.to),
                Placeholder::Period => query.bind(self.values.period.clone()),
            };
        }
        let result = self
            .pump((&mut connection).fetch(query), &plan, read, &sender)
            .await;
        if let Err(error) = result {
            let _ = sender.send(Err(error)).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), connection.close()).await;
    }

    fn plan<C: Column>(&self, engine: Engine, columns: &[C]) -> Result<Plan, SourceError> {
        let columns: Vec<(String, String)> = columns
            .iter()
            .map(|c| (c.name().to_string(), c.type_info().name().to_string()))
            .collect();
        plan(engine, &columns).map_err(|reason| SourceError::Format {
            source_name: self.source_name.clone(),
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_parameters_in_order() {
        for (engine, query, text, order) in [
            (
                Engine::Postgres,
                "SELECT * FROM u WHERE t >= {from} AND t <= {to} AND m = {period}",
                "SELECT * FROM u WHERE t >= $1::date AND t <= $2::date AND m = $3::text",
                vec![Placeholder::From, Placeholder::To, Placeholder::Period],
            ),
            (
                Engine::MySql,
                "SELECT * FROM u WHERE m = {period} OR (t BETWEEN {from} AND {to}) OR m = {period}",
                "SELECT * FROM u WHERE m = ? OR (t BETWEEN ? AND ?) OR m = ?",
                vec![
                    Placeholder::Period,
                    Placeholder::From,
                    Placeholder::To,
                    Placeholder::Period,
                ],
            ),
            (
                Engine::Postgres,
                "SELECT 'it''s', \"col\" FROM u -- note\nWHERE m = {period} /* c */",
                "SELECT 'it''s', \"col\" FROM u -- note\nWHERE m = $1::text /* c */",
                vec![Placeholder::Period],
            ),
            (
                Engine::MySql,
                "SELECT 'a\\'b', `c` FROM u WHERE m = {period} # done",
                "SELECT 'a\\'b', `c` FROM u WHERE m = ? # done",
                vec![Placeholder::Period],
            ),
            (
                Engine::Postgres,
                "SELECT ünï FROM u",
                "SELECT ünï FROM u",
                vec![],
            ),
        ] {
            assert_eq!(
                bind_placeholders(query, engine),
                Ok((text.to_string(), order)),
                "{query}"
            );
        }
    }

    #[test]
    fn a_placeholder_that_would_not_be_a_parameter_is_refused() {
        for (engine, query) in [
            (Engine::Postgres, "SELECT * FROM u WHERE m = '{period}'"),
            (Engine::Postgres, "SELECT * FROM u WHERE m = 'x''{from}'"),
            (Engine::MySql, "SELECT * FROM u WHERE m = 'x\\'{to}'"),
            (Engine::Postgres, "SELECT \"{period}\" FROM u"),
            (Engine::MySql, "SELECT `{period}` FROM u"),
            (Engine::Postgres, "SELECT 1 -- {period}\n"),
            (Engine::MySql, "SELECT 1 # {period}\n"),
            (Engine::Postgres, "SELECT 1 /* {period} */"),
        ] {
            let error = bind_placeholders(query, engine).unwrap_err();
            assert!(error.contains("USAGE_QUERY"), "{query}: {error}");
        }
    }

    #[test]
    fn engines_by_scheme() {
        for (location, engine) in [
            ("postgres://u@h/db", Some(Engine::Postgres)),
            ("postgresql://h/db", Some(Engine::Postgres)),
            ("PostgreSQL://h/db", Some(Engine::Postgres)),
            ("mysql://h/db", Some(Engine::MySql)),
            ("mariadb://h/db", Some(Engine::MySql)),
            ("https://h/x", None),
            ("file:///x.csv", None),
        ] {
            assert_eq!(Engine::of(location), engine, "{location}");
        }
    }

    /// A binary NUMERIC: digit count, weight, sign, scale, then the base-10000 digits.
    fn numeric(weight: i16, sign: u16, scale: u16, digits: &[u16]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend((digits.len() as u16).to_be_bytes());
        bytes.extend(weight.to_be_bytes());
        bytes.extend(sign.to_be_bytes());
        bytes.extend(scale.to_be_bytes());
        for digit in digits {
            bytes.extend(digit.to_be_bytes());
        }
        bytes
    }

    #[test]
    fn numerics_are_spelled_exactly() {
        for (bytes, text) in [
            (numeric(0, 0, 0, &[]), "0"),
            (numeric(0, 0, 2, &[]), "0.00"),
            (numeric(0, 0, 2, &[12, 5000]), "12.50"),
            (numeric(0, 0, 0, &[7]), "7"),
            (numeric(1, 0, 0, &[1]), "10000"),
            (numeric(2, 0, 0, &[12]), "1200000000"),
            (numeric(-1, 0, 4, &[1]), "0.0001"),
            (numeric(-2, 0, 8, &[1]), "0.00000001"),
            (numeric(-1, 0, 1, &[5000]), "0.5"),
            (numeric(0, 0x4000, 0, &[3]), "-3"),
            (numeric(0, 0x4000, 1, &[]), "0.0"),
            (numeric(2, 0, 3, &[1, 2345, 6789, 1230]), "123456789.123"),
            (
                numeric(3, 0, 10, &[12, 3456, 7890, 1234, 5000]),
                "12345678901234.5000000000",
            ),
            (
                numeric(3, 0, 10, &[123, 4567, 8901, 2345]),
                "123456789012345.0000000000",
            ),
            (numeric(0, 0xC000, 0, &[]), "NaN"),
            (numeric(0, 0xD000, 0, &[]), "Infinity"),
            (numeric(0, 0xF000, 0, &[]), "-Infinity"),
        ] {
            assert_eq!(pg_numeric_text(&bytes).as_deref(), Ok(text), "{bytes:?}");
        }
        assert!(pg_numeric_text(&[0, 1]).is_err());
        assert!(pg_numeric_text(&numeric(0, 0, 0, &[10000])).is_err());
        assert!(pg_numeric_text(&numeric(0, 0x1234, 0, &[])).is_err());
    }

    #[test]
    fn postgres_timestamps_are_read_without_overflow() {
        for (micros, text) in [
            (0i64, "2000-01-01 00:00:00"),
            (761_961_600_000_000, "2024-02-23 00:00:00"),
            (-1, "1999-12-31 23:59:59.999999"),
            (i64::MAX, "infinity"),
            (i64::MIN, "-infinity"),
        ] {
            assert_eq!(
                pg_timestamp_text(&micros.to_be_bytes()).as_deref(),
                Ok(text),
                "{micros}"
            );
        }
        assert!(pg_timestamp_text(&(i64::MAX - 1).to_be_bytes()).is_err());
        assert!(pg_timestamp_text(&[0; 4]).is_err());
    }

    #[test]
    fn timestamps_keep_their_fraction_for_the_checker_to_refuse() {
        let time =
            |text: &str| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").unwrap();
        assert_eq!(
            timestamp_text(time("2024-02-01 00:00:00")),
            "2024-02-01 00:00:00"
        );
        assert_eq!(
            timestamp_text(time("2024-02-29 23:59:59.5")),
            "2024-02-29 23:59:59.5"
        );
        assert_eq!(
            timestamp_text(time("2024-02-29 23:59:59.000001")),
            "2024-02-29 23:59:59.000001"
        );
    }

    fn columns(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect()
    }

    #[test]
    fn columns_are_matched_by_name_and_type() {
        let good = columns(&[
            ("ID", "INT8"),
            ("Subscription_ID", "TEXT"),
            ("item_mpn", "VARCHAR"),
            ("quantity", "NUMERIC"),
            ("start_time_utc", "TIMESTAMP"),
            ("end_time_utc", "TIMESTAMPTZ"),
            ("record_id", "INT8"),
        ]);
        let planned = plan(Engine::Postgres, &good).unwrap();
        let fields: Vec<(&str, usize, Kind)> = planned
            .columns
            .iter()
            .map(|c| (c.field, c.index, c.kind))
            .collect();
        assert_eq!(
            fields,
            [
                ("subscription_id", 1, Kind::Text),
                ("item_mpn", 2, Kind::Text),
                ("quantity", 3, Kind::Decimal),
                ("start_time_utc", 4, Kind::Timestamp),
                ("end_time_utc", 5, Kind::TimestampUtc),
                ("record_id", 6, Kind::Integer),
            ]
        );
        let with = |name: &str, type_name: &str| {
            let mut list = good.clone();
            list.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            list.push((name.to_string(), type_name.to_string()));
            plan(Engine::Postgres, &list)
        };
        for (name, type_name, fits) in [
            ("quantity", "FLOAT8", false),
            ("quantity", "FLOAT4", false),
            ("quantity", "TEXT", true),
            ("quantity", "INT4", true),
            ("quantity", "TIMESTAMP", false),
            ("start_time_utc", "DATE", false),
            ("start_time_utc", "TEXT", true),
            ("start_time_utc", "NUMERIC", false),
            ("record_id", "UUID", true),
            ("record_note", "JSONB", false),
            ("subscription_id", "BYTEA", false),
        ] {
            let planned = with(name, type_name);
            assert_eq!(planned.is_ok(), fits, "{name} {type_name}: {planned:?}");
            if let Err(reason) = planned {
                assert!(
                    reason.contains(name) && reason.contains(type_name),
                    "{reason}"
                );
            }
        }
        let mut missing = good.clone();
        missing.retain(|(n, _)| n != "end_time_utc");
        let reason = plan(Engine::Postgres, &missing).unwrap_err();
        assert!(reason.contains("no end_time_utc column"), "{reason}");
        let mut twice = good.clone();
        twice.push(("QUANTITY".into(), "NUMERIC".into()));
        assert!(plan(Engine::Postgres, &twice)
            .unwrap_err()
            .contains("twice"));
    }

    #[test]
    fn mysql_types() {
        for (type_name, kind) in [
            ("VARCHAR", Some(Kind::Text)),
            ("VARBINARY", Some(Kind::Text)),
            ("DECIMAL", Some(Kind::Decimal)),
            ("BIGINT UNSIGNED", Some(Kind::UnsignedInteger)),
            ("INT", Some(Kind::Integer)),
            ("DATETIME", Some(Kind::Timestamp)),
            ("TIMESTAMP", Some(Kind::Timestamp)),
            ("DOUBLE", None),
            ("FLOAT", None),
            ("DATE", None),
            ("BLOB", None),
            ("JSON", None),
            ("BOOLEAN", None),
        ] {
            assert_eq!(kind_of(Engine::MySql, type_name), kind, "{type_name}");
        }
    }

    #[test]
    fn unknown_url_parameters_are_refused_by_name_not_value() {
        for (location, refused) in [
            ("postgres://u@h/db", None),
            (
                "postgres://u@h/db?sslmode=verify-full&sslrootcert=/ca.pem&options[search_path]=x",
                None,
            ),
            ("postgresql://u@h/db?host=/run/pg&port=5433&dbname=x", None),
            (
                "postgres://u@h/db?vendor_token=Tk-991",
                Some("vendor_token"),
            ),
            (
                "postgres://u@h/db?sslmode=require&connect_timeout=Tk-991",
                Some("connect_timeout"),
            ),
            (
                "postgres://u@h/db?application_name=Tk-991",
                Some("application_name"),
            ),
            (
                "postgres://u@h/db?ssl-mode=require&sslca=Tk-991",
                Some("sslca"),
            ),
            (
                "mysql://u@h/db?ssl-mode=VERIFY_IDENTITY&ssl-ca=/ca.pem&charset=utf8mb4",
                None,
            ),
            ("mariadb://u@h/db?socket=/run/mysqld.sock", None),
            ("mysql://u@h/db?sslrootcert=Tk-991", Some("sslrootcert")),
            ("mysql://u@h/db?api%5Fkey=Tk-991", Some("api_key")),
            ("mysql://u@h/db?timezone=Tk-991", Some("timezone")),
        ] {
            let engine = Engine::of(location).unwrap();
            let checked = check_parameters(engine, location);
            match refused {
                None => assert_eq!(checked, Ok(()), "{location}"),
                Some(name) => {
                    let error = checked.expect_err(location);
                    assert!(error.contains(&format!("{name:?}")), "{error}");
                    assert!(!error.contains("Tk-991"), "{error}");
                }
            }
            // The check runs before the driver parses (and would log) anything.
            assert_eq!(
                ConnectOptions::parse(engine, location).is_ok(),
                refused.is_none(),
                "{location}"
            );
        }
    }

    #[test]
    fn every_form_of_the_password_is_known() {
        let auth = Secret::new("from-auth");
        assert_eq!(
            passwords("postgres://u:p%40ss@h/db?password=q&x=1", Some(&auth)),
            ["from-auth", "p%40ss", "p@ss", "q"]
        );
        assert!(passwords("mysql://u@h/db", None).is_empty());
    }

    #[test]
    fn a_password_goes_only_over_tls_or_to_this_machine() {
        for (location, safe) in [
            ("postgres://u@db.example/x", false),
            ("postgres://u@db.example/x?sslmode=prefer", false),
            ("postgres://u@db.example/x?sslmode=require", true),
            ("postgres://u@db.example/x?sslmode=verify-full", true),
            ("postgres://u@127.0.0.1:5432/x", true),
            ("postgres://u@localhost/x", true),
            ("postgres://u@[::1]:5432/x", true),
            ("postgres://u@%2Ftmp%2Fsock/x", true),
            ("mysql://u@db.example/x", false),
            ("mysql://u@db.example/x?ssl-mode=REQUIRED", true),
            ("mysql://u@db.example/x?ssl-mode=verify_identity", true),
            ("mariadb://u@127.0.0.1:3306/x", true),
            ("mysql://u@db.example/x?socket=/run/mysqld.sock", true),
        ] {
            let (_, protected) = credential_target(location).expect(location);
            assert_eq!(protected, safe, "{location}");
        }
        assert_eq!(
            credential_target("postgres://u:pw@db.example:6432/x").map(|(o, _)| o),
            Some("postgres://db.example:6432".to_string())
        );
        assert!(credential_target("https://x.example/u").is_none());
    }
}
