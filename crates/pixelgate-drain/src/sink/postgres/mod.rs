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
    sql::{COLUMNS, Dialect, Statement, TABLE, Value, column_names, migrate},
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
            migrate::<sqlx::Postgres>(&mut tx, &DIALECT).await?;
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

/// How PostgreSQL writes migrations.
const DIALECT: Dialect = Dialect {
    name: "postgres",
    column_type: |c| c.postgres,
    table_options: "",
    add_column: "ADD COLUMN IF NOT EXISTS",
    index: |name, columns| {
        Statement::Run(format!(
            "CREATE INDEX IF NOT EXISTS {name} ON {TABLE} ({})",
            columns.join(", ")
        ))
    },
    record: |version, at| {
        format!(
            "INSERT INTO pixelgate_schema (version, applied_at) VALUES ({version}, '{at}') \
             ON CONFLICT (version) DO NOTHING"
        )
    },
};

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
