//! PostgreSQL (`postgres://`, `postgresql://`) through sqlx: the table from the column list, and
//! one `INSERT … SELECT … FROM UNNEST(…) ON CONFLICT (id) DO NOTHING` per batch, every column
//! bound as one text array.

use std::time::Duration;

use pixelgate_core::Event;
use sqlx::{
    Connection as _, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use super::{
    Sink, SinkError, SinkFuture,
    sql::{
        COLUMNS, Change, FIRST, MIGRATIONS, SCHEMA_TABLE, TABLE, Value, applied_at, column_ddl,
        column_names, columns_added,
    },
};
use crate::sink::{SinkOptions, SinkUrl};

/// A pool to one PostgreSQL server.
#[derive(Debug)]
pub(crate) struct Postgres {
    pool: PgPool,
    /// The insert, rendered once from the column list.
    insert: String,
}

/// Opens the pool (lazily: no connection yet).
pub(crate) fn open(url: &SinkUrl, options: &SinkOptions) -> Result<Box<dyn Sink>, SinkError> {
    let connect: PgConnectOptions = url.url().as_str().parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(super::sql::pool_size(options))
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(connect.application_name("pixelgate-drain"));
    Ok(Box::new(Postgres {
        pool,
        insert: insert(),
    }))
}

impl Sink for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }

    /// Applies the migrations not yet recorded in `pixelgate_schema`, in order, in one
    /// transaction under an advisory lock, so only one drain migrates at a time.
    fn migrate(&self) -> SinkFuture<'_> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock(7078696)")
                .execute(&mut *tx)
                .await?;
            sqlx::query(SCHEMA_TABLE).execute(&mut *tx).await?;
            for (version, change) in MIGRATIONS {
                let done: Option<i64> =
                    sqlx::query_scalar("SELECT version FROM pixelgate_schema WHERE version = $1")
                        .bind(version)
                        .fetch_optional(&mut *tx)
                        .await?;
                if done.is_some() {
                    continue;
                }
                for sql in statements(*version, *change) {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query("INSERT INTO pixelgate_schema (version, applied_at) VALUES ($1, $2)")
                    .bind(version)
                    .bind(applied_at())
                    .execute(&mut *tx)
                    .await?;
                tracing::info!(version, "postgres migration applied");
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn write<'a>(&'a self, events: &'a [Event]) -> SinkFuture<'a> {
        Box::pin(async move {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(self.insert.as_str()));
            for column in COLUMNS {
                let values: Vec<Option<String>> =
                    events.iter().map(|e| text((column.value)(e))).collect();
                query = query.bind(values);
            }
            let mut tx = self.pool.begin().await?;
            query.execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn ping(&self) -> SinkFuture<'_> {
        Box::pin(async move {
            self.pool.acquire().await?.ping().await?;
            Ok(())
        })
    }
}

fn statements(version: i64, change: Change) -> Vec<String> {
    match change {
        Change::Columns if version == FIRST => {
            let columns: Vec<String> = columns_added(version)
                .map(|c| column_ddl(c, c.postgres, "NULL"))
                .collect();
            vec![format!(
                "CREATE TABLE IF NOT EXISTS {TABLE} (\n    {}\n)",
                columns.join(",\n    ")
            )]
        }
        Change::Columns => columns_added(version)
            .map(|c| {
                format!(
                    "ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS {}",
                    column_ddl(c, c.postgres, "NULL")
                )
            })
            .collect(),
        Change::Index { name, columns } => vec![format!(
            "CREATE INDEX IF NOT EXISTS {name} ON {TABLE} ({})",
            columns.join(", ")
        )],
    }
}

/// `INSERT INTO pixelgate_events (…) SELECT u.id::uuid, … FROM UNNEST($1::text[], …) AS u(…)
/// ON CONFLICT (id) DO NOTHING`.
fn insert() -> String {
    let names = column_names();
    let casts: Vec<String> = COLUMNS
        .iter()
        .map(|c| format!("u.{}::{}", c.name, c.postgres))
        .collect();
    let arrays: Vec<String> = (1..=COLUMNS.len())
        .map(|i| format!("${i}::text[]"))
        .collect();
    format!(
        "INSERT INTO {TABLE} ({names}) SELECT {} FROM UNNEST({}) AS u({names}) ON CONFLICT (id) DO NOTHING",
        casts.join(", "),
        arrays.join(", ")
    )
}

/// A value as the text PostgreSQL casts to its column's type; `NULL` as `None`.
fn text(value: Value<'_>) -> Option<String> {
    Some(match value {
        Value::Uuid(id) => id.to_string(),
        Value::Text(text) => text.to_owned(),
        Value::Null => return None,
        Value::Time(ts) => ts.to_string(),
        Value::Ip(ip) => ip.to_string(),
        Value::Bool(b) => b.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_insert_casts_every_column_from_text() {
        let sql = insert();
        assert!(
            sql.starts_with("INSERT INTO pixelgate_events (id, kind, ts,"),
            "{sql}"
        );
        assert!(
            sql.contains("u.id::uuid, u.kind::text, u.ts::timestamptz"),
            "{sql}"
        );
        assert!(
            sql.contains("u.ip::inet") && sql.contains("u.limited::boolean"),
            "{sql}"
        );
        assert!(
            sql.contains(&format!("${}::text[])", COLUMNS.len())),
            "{sql}"
        );
        assert!(sql.ends_with("ON CONFLICT (id) DO NOTHING"), "{sql}");
    }
}
