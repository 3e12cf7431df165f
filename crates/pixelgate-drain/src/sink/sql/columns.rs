//! The columns of `pixelgate_events`, one row each: name, type in each dialect, nullability,
//! default, the migration that adds it, and how its value is read from an [`Event`].

use std::net::IpAddr;

use pixelgate_core::{Event, Timestamp};
use uuid::Uuid;

/// One column of the table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Column {
    pub(crate) name: &'static str,
    pub(crate) mysql: &'static str,
    pub(crate) postgres: &'static str,
    /// The primary key (the event id).
    pub(crate) key: bool,
    pub(crate) nullable: bool,
    pub(crate) default: Option<&'static str>,
    /// The migration version that adds it.
    pub(crate) since: i64,
    pub(crate) value: fn(&Event) -> Value<'_>,
}

/// A column's value for one event, in a form each dialect can write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    Uuid(Uuid),
    Text(&'a str),
    Null,
    Time(Timestamp),
    Ip(IpAddr),
    Bool(bool),
}

const fn text(name: &'static str, since: i64, value: fn(&Event) -> Value<'_>) -> Column {
    Column {
        name,
        mysql: "VARCHAR(128)",
        postgres: "text",
        key: false,
        nullable: false,
        default: None,
        since,
        value,
    }
}

/// Every column, in table order.
pub(crate) const COLUMNS: &[Column] = &[
    Column {
        name: "id",
        mysql: "BINARY(16)",
        postgres: "uuid",
        key: true,
        nullable: false,
        default: None,
        since: 1,
        value: |e| Value::Uuid(e.id),
    },
    Column {
        mysql: "VARCHAR(8)",
        ..text("kind", 1, |e| Value::Text(e.kind.as_str()))
    },
    Column {
        name: "ts",
        mysql: "DATETIME(3)",
        postgres: "timestamptz",
        ..text("ts", 1, |e| Value::Time(e.ts))
    },
    text("account", 1, |e| Value::Text(&e.account)),
    text("campaign", 1, |e| Value::Text(&e.campaign)),
    text("message", 1, |e| Value::Text(&e.message)),
    text("recipient", 1, |e| Value::Text(&e.recipient)),
    Column {
        mysql: "VARCHAR(2048)",
        nullable: true,
        ..text("url", 1, |e| {
            e.url.as_deref().map_or(Value::Null, Value::Text)
        })
    },
    Column {
        mysql: "VARCHAR(45)",
        postgres: "inet",
        ..text("ip", 1, |e| Value::Ip(e.ip))
    },
    Column {
        mysql: "VARCHAR(512)",
        ..text("ua", 1, |e| Value::Text(&e.ua))
    },
    Column {
        mysql: "BOOLEAN",
        postgres: "boolean",
        default: Some("FALSE"),
        ..text("limited", 1, |e| Value::Bool(e.limited))
    },
];
