//! MariaDB/MySQL and PostgreSQL through sqlx: versioned migrations and idempotent multi-row
//! inserts (`INSERT IGNORE`, `ON CONFLICT (id) DO NOTHING`), one transaction per batch.

use std::time::Duration;

use pixelgate_core::Event;
use sqlx::{
    Connection as _, MySqlPool, PgPool,
    mysql::{MySqlConnectOptions, MySqlPoolOptions},
    postgres::{PgConnectOptions, PgPoolOptions},
};
use url::Url;

use super::SinkError;
use crate::config::DrainConfig;

/// A pool to one SQL server.
#[derive(Debug)]
pub enum Sql {
    Mysql(MySqlPool),
    Postgres(PgPool),
}

/// Ordered schema changes: never edit a shipped one, only append.
const MYSQL_MIGRATIONS: &[(i64, &str)] = &[(
    1,
    "CREATE TABLE IF NOT EXISTS pixelgate_events (
        id BINARY(16) NOT NULL PRIMARY KEY,
        kind VARCHAR(8) NOT NULL,
        ts DATETIME(3) NOT NULL,
        account VARCHAR(128) NOT NULL,
        campaign VARCHAR(128) NOT NULL,
        message VARCHAR(128) NOT NULL,
        recipient VARCHAR(128) NOT NULL,
        url VARCHAR(2048) NULL,
        ip VARCHAR(45) NOT NULL,
        ua VARCHAR(512) NOT NULL,
        limited BOOLEAN NOT NULL DEFAULT FALSE,
        KEY pixelgate_events_account_campaign_ts (account, campaign, ts)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
)];

const POSTGRES_MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "CREATE TABLE IF NOT EXISTS pixelgate_events (
            id uuid PRIMARY KEY,
            kind text NOT NULL,
            ts timestamptz NOT NULL,
            account text NOT NULL,
            campaign text NOT NULL,
            message text NOT NULL,
            recipient text NOT NULL,
            url text,
            ip inet NOT NULL,
            ua text NOT NULL,
            limited boolean NOT NULL DEFAULT false
        )",
    ),
    (
        2,
        "CREATE INDEX IF NOT EXISTS pixelgate_events_account_campaign_ts
            ON pixelgate_events (account, campaign, ts)",
    ),
];

const COLUMNS: &str = "id, kind, ts, account, campaign, message, recipient, url, ip, ua, limited";

impl Sql {
    pub fn open(url: &Url, config: &DrainConfig) -> Result<Self, SinkError> {
        let size = u32::try_from(config.concurrency.get() + 1).unwrap_or(u32::MAX);
        let acquire = Duration::from_secs(5);
        Ok(match url.scheme() {
            "mysql" | "mariadb" => {
                let mut mysql_url = url.clone();
                let _ = mysql_url.set_scheme("mysql");
                let options: MySqlConnectOptions = mysql_url.as_str().parse()?;
                let pool = MySqlPoolOptions::new()
                    .max_connections(size)
                    .acquire_timeout(acquire)
                    .connect_lazy_with(options.charset("utf8mb4"));
                Self::Mysql(pool)
            }
            _ => {
                let options: PgConnectOptions = url.as_str().parse()?;
                let pool = PgPoolOptions::new()
                    .max_connections(size)
                    .acquire_timeout(acquire)
                    .connect_lazy_with(options.application_name("pixelgate-drain"));
                Self::Postgres(pool)
            }
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Mysql(_) => "mysql",
            Self::Postgres(_) => "postgres",
        }
    }

    /// Applies the migrations not yet recorded in `pixelgate_schema`, in order.
    pub async fn migrate(&self) -> Result<(), SinkError> {
        const BOOK: &str = "CREATE TABLE IF NOT EXISTS pixelgate_schema (
            version BIGINT NOT NULL PRIMARY KEY,
            applied_at VARCHAR(40) NOT NULL
        )";
        let now =
            pixelgate_core::Timestamp::from_system_time(std::time::SystemTime::now()).to_string();
        match self {
            Self::Mysql(pool) => {
                let mut conn = pool.acquire().await?;
                sqlx::query(BOOK).execute(&mut *conn).await?;
                for (version, sql) in MYSQL_MIGRATIONS {
                    let done: Option<i64> = sqlx::query_scalar(
                        "SELECT version FROM pixelgate_schema WHERE version = ?",
                    )
                    .bind(version)
                    .fetch_optional(&mut *conn)
                    .await?;
                    if done.is_none() {
                        sqlx::query(*sql).execute(&mut *conn).await?;
                        sqlx::query("INSERT IGNORE INTO pixelgate_schema (version, applied_at) VALUES (?, ?)")
                            .bind(version)
                            .bind(&now)
                            .execute(&mut *conn)
                            .await?;
                        tracing::info!(version, "mysql migration applied");
                    }
                }
            }
            Self::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                // One migrating drain at a time; the lock ends with the transaction.
                sqlx::query("SELECT pg_advisory_xact_lock(7078696)")
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(BOOK).execute(&mut *tx).await?;
                for (version, sql) in POSTGRES_MIGRATIONS {
                    let done: Option<i64> = sqlx::query_scalar(
                        "SELECT version FROM pixelgate_schema WHERE version = $1",
                    )
                    .bind(version)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if done.is_none() {
                        sqlx::query(*sql).execute(&mut *tx).await?;
                        sqlx::query(
                            "INSERT INTO pixelgate_schema (version, applied_at) VALUES ($1, $2)",
                        )
                        .bind(version)
                        .bind(&now)
                        .execute(&mut *tx)
                        .await?;
                        tracing::info!(version, "postgres migration applied");
                    }
                }
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// One transaction, one multi-row insert; rows whose `id` exists are skipped.
    pub async fn write(&self, events: &[Event]) -> Result<(), SinkError> {
        match self {
            Self::Mysql(pool) => {
                // One text-protocol statement per chunk, every string as a hex literal: no
                // placeholders to prepare (tens of thousands per batch otherwise), and no
                // escaping to get wrong, whatever bytes a client put in its User-Agent.
                let mut tx = pool.begin().await?;
                for chunk in events.chunks(5000) {
                    let sql = mysql_insert(chunk);
                    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
            Self::Postgres(pool) => {
                let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.id).collect();
                let column =
                    |f: fn(&Event) -> String| events.iter().map(f).collect::<Vec<String>>();
                let urls: Vec<Option<String>> = events.iter().map(|e| e.url.clone()).collect();
                let limited: Vec<bool> = events.iter().map(|e| e.limited).collect();
                let mut tx = pool.begin().await?;
                sqlx::query(
                    "INSERT INTO pixelgate_events (id, kind, ts, account, campaign, message, recipient, url, ip, ua, limited)
                     SELECT u.id, u.kind, u.ts::timestamptz, u.account, u.campaign, u.message, u.recipient, u.url, u.ip::inet, u.ua, u.limited
                     FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::bool[])
                       AS u(id, kind, ts, account, campaign, message, recipient, url, ip, ua, limited)
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(ids)
                .bind(column(|e| e.kind.as_str().to_owned()))
                .bind(column(|e| e.ts.to_string()))
                .bind(column(|e| e.account.clone()))
                .bind(column(|e| e.campaign.clone()))
                .bind(column(|e| e.message.clone()))
                .bind(column(|e| e.recipient.clone()))
                .bind(urls)
                .bind(column(|e| e.ip.to_string()))
                .bind(column(|e| e.ua.clone()))
                .bind(limited)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), SinkError> {
        match self {
            Self::Mysql(pool) => pool.acquire().await?.ping().await?,
            Self::Postgres(pool) => pool.acquire().await?.ping().await?,
        }
        Ok(())
    }
}

/// `INSERT IGNORE … VALUES (…), …` for MariaDB/MySQL with every value a literal that cannot
/// break out of its place: hex literals for ids and strings, `NULL`, digits for the rest.
fn mysql_insert(events: &[Event]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut sql = String::with_capacity(80 + events.len() * 900);
    sql.push_str("INSERT IGNORE INTO pixelgate_events (");
    sql.push_str(COLUMNS);
    sql.push_str(") VALUES ");
    let hex = |sql: &mut String, bytes: &[u8]| {
        sql.push_str("X'");
        for &b in bytes {
            sql.push(char::from(DIGITS[usize::from(b >> 4)]));
            sql.push(char::from(DIGITS[usize::from(b & 15)]));
        }
        sql.push('\'');
    };
    for (i, e) in events.iter().enumerate() {
        sql.push_str(if i == 0 { "(" } else { ",(" });
        hex(&mut sql, e.id.as_bytes());
        sql.push(',');
        hex(&mut sql, e.kind.as_str().as_bytes());
        sql.push(',');
        hex(&mut sql, mysql_datetime(&e.ts).as_bytes());
        for field in [&e.account, &e.campaign, &e.message, &e.recipient] {
            sql.push(',');
            hex(&mut sql, field.as_bytes());
        }
        sql.push(',');
        match &e.url {
            Some(url) => hex(&mut sql, url.as_bytes()),
            None => sql.push_str("NULL"),
        }
        sql.push(',');
        hex(&mut sql, e.ip.to_string().as_bytes());
        sql.push(',');
        hex(&mut sql, e.ua.as_bytes());
        sql.push_str(if e.limited { ",1)" } else { ",0)" });
    }
    sql
}

/// `2026-11-23 07:00:00.123`: a UTC `DATETIME(3)` literal.
fn mysql_datetime(ts: &pixelgate_core::Timestamp) -> String {
    let rfc = ts.to_string();
    rfc.trim_end_matches('Z').replacen('T', " ", 1)
}
