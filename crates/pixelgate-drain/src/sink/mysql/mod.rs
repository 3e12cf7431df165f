//! MariaDB and MySQL (`mysql://`, `mariadb://`) through sqlx: the table from the column list,
//! and one idempotent multi-row `INSERT IGNORE` per chunk, a transaction per batch.

use std::time::Duration;

use pixelgate_core::Event;
use sqlx::{
    Connection as _, MySql, MySqlPool,
    mysql::{MySqlConnectOptions, MySqlPoolOptions},
};

use super::{
    Sink, SinkError, SinkFuture,
    sql::{COLUMNS, Dialect, Statement, TABLE, Value, column_names, migrate},
};
use crate::sink::{SinkOptions, SinkUrl};

/// A pool to one MariaDB or MySQL server.
#[derive(Debug)]
pub(crate) struct Mysql {
    pool: MySqlPool,
}

/// Opens the pool (lazily: no connection yet).
pub(crate) fn open(url: &SinkUrl, options: &SinkOptions) -> Result<Box<dyn Sink>, SinkError> {
    let mut url = url.url().clone();
    // sqlx knows the scheme as mysql:// only.
    let _ = url.set_scheme("mysql");
    let connect: MySqlConnectOptions = url.as_str().parse()?;
    let pool = MySqlPoolOptions::new()
        .max_connections(super::sql::pool_size(options))
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(connect.charset("utf8mb4"));
    Ok(Box::new(Mysql { pool }))
}

impl Sink for Mysql {
    fn name(&self) -> &'static str {
        "mysql"
    }

    /// Applies the migrations not yet recorded in `pixelgate_schema`, in order.
    fn migrate(&self) -> SinkFuture<'_> {
        Box::pin(async move {
            let mut conn = self.pool.acquire().await?;
            migrate::<MySql>(&mut conn, &DIALECT).await?;
            Ok(())
        })
    }

    /// One transaction; one text-protocol statement per chunk of 5,000 events.
    fn write<'a>(&'a self, events: &'a [Event]) -> SinkFuture<'a> {
        Box::pin(async move {
            // Every string a hex literal: no placeholders to prepare (tens of thousands per
            // batch otherwise), and no escaping to get wrong, whatever bytes a client put in
            // its User-Agent.
            let mut tx = self.pool.begin().await?;
            for chunk in events.chunks(5000) {
                sqlx::raw_sql(sqlx::AssertSqlSafe(insert(chunk)))
                    .execute(&mut *tx)
                    .await?;
            }
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

/// How MariaDB and MySQL write migrations.
const DIALECT: Dialect = Dialect {
    name: "mysql",
    column_type: |c| c.mysql,
    table_options: " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    add_column: "ADD COLUMN",
    // No CREATE INDEX IF NOT EXISTS: look first. A table the first release made has its
    // index already, created inline.
    index: |name, columns| Statement::Unless {
        probe: format!(
            "SELECT 1 FROM information_schema.statistics WHERE table_schema = DATABASE() \
             AND table_name = '{TABLE}' AND index_name = '{name}'"
        ),
        create: format!("CREATE INDEX {name} ON {TABLE} ({})", columns.join(", ")),
    },
    record: |version, at| {
        format!(
            "INSERT IGNORE INTO pixelgate_schema (version, applied_at) VALUES ({version}, '{at}')"
        )
    },
};

/// `INSERT IGNORE … VALUES (…), …` with every value a literal that cannot break out of its
/// place: hex literals for ids and strings, `NULL`, digits for the rest.
fn insert(events: &[Event]) -> String {
    let mut sql = String::with_capacity(80 + events.len() * 900);
    sql.push_str("INSERT IGNORE INTO ");
    sql.push_str(TABLE);
    sql.push_str(" (");
    sql.push_str(&column_names());
    sql.push_str(") VALUES ");
    for (i, e) in events.iter().enumerate() {
        sql.push_str(if i == 0 { "(" } else { ",(" });
        for (j, column) in COLUMNS.iter().enumerate() {
            if j > 0 {
                sql.push(',');
            }
            literal(&mut sql, &(column.value)(e));
        }
        sql.push(')');
    }
    sql
}

fn literal(sql: &mut String, value: &Value<'_>) {
    match value {
        Value::Uuid(id) => hex(sql, id.as_bytes()),
        Value::Text(text) => hex(sql, text.as_bytes()),
        Value::Null => sql.push_str("NULL"),
        Value::Time(ts) => hex(sql, datetime(ts).as_bytes()),
        Value::Ip(ip) => hex(sql, ip.to_string().as_bytes()),
        Value::Bool(b) => sql.push(if *b { '1' } else { '0' }),
    }
}

fn hex(sql: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    sql.push_str("X'");
    for &b in bytes {
        sql.push(char::from(DIGITS[usize::from(b >> 4)]));
        sql.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    sql.push('\'');
}

/// `2026-11-23 07:00:00.123`: a UTC `DATETIME(3)` literal.
fn datetime(ts: &pixelgate_core::Timestamp) -> String {
    let rfc = ts.to_string();
    rfc.trim_end_matches('Z').replacen('T', " ", 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::sql::{Change, FIRST, migrate::statements};

    #[test]
    fn the_first_table_is_the_one_the_first_release_made() {
        let [Statement::Run(create)] =
            <[Statement; 1]>::try_from(statements(&DIALECT, FIRST, Change::Columns))
                .ok()
                .unwrap()
        else {
            panic!("one CREATE TABLE");
        };
        for line in [
            "id BINARY(16) NOT NULL PRIMARY KEY",
            "kind VARCHAR(8) NOT NULL",
            "ts DATETIME(3) NOT NULL",
            "url VARCHAR(2048) NULL",
            "ip VARCHAR(45) NOT NULL",
            "ua VARCHAR(512) NOT NULL",
            "limited BOOLEAN NOT NULL DEFAULT FALSE",
        ] {
            assert!(create.contains(line), "{line} in {create}");
        }
    }
}
