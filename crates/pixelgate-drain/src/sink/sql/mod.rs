//! What the SQL sinks share: the table's columns ([`columns::COLUMNS`]) and its migrations,
//! from which each dialect renders its DDL, its insert and its binds.
//!
//! A new field of the event is a new row of `COLUMNS` with the migration that adds it, here;
//! MariaDB/MySQL and PostgreSQL both follow. Migrations are applied in order, each recorded in
//! `pixelgate_schema`, and a shipped one is never edited, only followed by another.

pub(crate) mod columns;
pub(crate) mod migrate;

pub(crate) use columns::{COLUMNS, Column, Value};
pub(crate) use migrate::{Dialect, Statement, migrate};

/// The table every SQL sink writes.
pub(crate) const TABLE: &str = "pixelgate_events";

/// The table migrations are recorded in.
pub(crate) const SCHEMA_TABLE: &str = "CREATE TABLE IF NOT EXISTS pixelgate_schema (
    version BIGINT NOT NULL PRIMARY KEY,
    applied_at VARCHAR(40) NOT NULL
)";

/// One schema change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// The columns whose `since` is this version: the first version creates the table with
    /// them, a later one adds them to it.
    Columns,
    /// An index over `columns`, unless one named `name` exists.
    Index {
        name: &'static str,
        columns: &'static [&'static str],
    },
}

/// Ordered schema changes: append only.
pub(crate) const MIGRATIONS: &[(i64, Change)] = &[
    (FIRST, Change::Columns),
    (
        2,
        Change::Index {
            name: "pixelgate_events_account_campaign_ts",
            columns: &["account", "campaign", "ts"],
        },
    ),
];

/// The version that creates the table.
pub(crate) const FIRST: i64 = 1;

/// A dialect's way of writing one column in DDL.
pub(crate) fn column_ddl(column: &Column, sql_type: &str, null: &str) -> String {
    let mut ddl = format!("{} {sql_type}", column.name);
    if column.key {
        ddl.push_str(" NOT NULL PRIMARY KEY");
    } else if column.nullable {
        ddl.push(' ');
        ddl.push_str(null);
    } else {
        ddl.push_str(" NOT NULL");
    }
    if let Some(default) = column.default {
        ddl.push_str(" DEFAULT ");
        ddl.push_str(default);
    }
    ddl
}

/// The columns `version` adds.
pub(crate) fn columns_added(version: i64) -> impl Iterator<Item = &'static Column> {
    COLUMNS.iter().filter(move |c| c.since == version)
}

/// `id, kind, ts, …`: every column, in table order.
pub(crate) fn column_names() -> String {
    COLUMNS
        .iter()
        .map(|c| c.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Connections a SQL sink's pool keeps: one per worker, and one for `/readyz`.
pub(crate) fn pool_size(options: &super::SinkOptions) -> u32 {
    u32::try_from(options.concurrency + 1).unwrap_or(u32::MAX)
}

/// Now, as the text `pixelgate_schema.applied_at` keeps.
pub(crate) fn applied_at() -> String {
    pixelgate_core::Timestamp::from_system_time(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_column_is_added_by_a_migration_and_names_are_unique() {
        let versions: Vec<i64> = MIGRATIONS.iter().map(|(v, _)| *v).collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
        for c in COLUMNS {
            let adds = MIGRATIONS.iter().any(|(v, change)| match change {
                Change::Columns => c.since == *v,
                Change::Index { .. } => false,
            });
            assert!(adds, "no migration adds {}", c.name);
        }
        let mut names: Vec<&str> = COLUMNS.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), COLUMNS.len());
        assert_eq!(COLUMNS[0].name, "id");
        assert!(COLUMNS[0].key);
    }
}
