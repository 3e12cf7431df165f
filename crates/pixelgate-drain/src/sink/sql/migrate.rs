//! Applying the migrations: one loop for every dialect. Each version not yet recorded in
//! `pixelgate_schema` has its statements run, then is recorded; a dialect only says how it
//! writes a change.
//!
//! Every statement is our own text: table, column and index names and versions come from the
//! constants of this module's parent, never from input.

use sqlx::{AssertSqlSafe, Database, Executor, raw_sql};

use super::{
    Change, Column, FIRST, MIGRATIONS, SCHEMA_TABLE, TABLE, applied_at, column_ddl, columns_added,
};

/// One statement of a migration.
pub(crate) enum Statement {
    Run(String),
    /// `create`, unless `probe` finds a row (MySQL has no `CREATE INDEX IF NOT EXISTS`).
    Unless {
        probe: String,
        create: String,
    },
}

/// How a dialect writes migrations: the words that differ, and the two statements that do.
#[derive(Debug)]
pub(crate) struct Dialect {
    pub(crate) name: &'static str,
    /// A column's type in this dialect.
    pub(crate) column_type: fn(&Column) -> &'static str,
    /// What follows `CREATE TABLE … (…)`.
    pub(crate) table_options: &'static str,
    /// `ALTER TABLE … ADD COLUMN`, with the guard the dialect has.
    pub(crate) add_column: &'static str,
    /// An index named `name` over `columns`, unless one exists.
    pub(crate) index: fn(&'static str, &'static [&'static str]) -> Statement,
    /// The statement that records a version, unless another migrator did already.
    pub(crate) record: fn(i64, &str) -> String,
}

/// The statements of one migration, as `dialect` writes them.
pub(crate) fn statements(dialect: &Dialect, version: i64, change: Change) -> Vec<Statement> {
    let ddl = |c: &Column| column_ddl(c, (dialect.column_type)(c), "NULL");
    match change {
        Change::Columns if version == FIRST => {
            let columns: Vec<String> = columns_added(version).map(ddl).collect();
            vec![Statement::Run(format!(
                "CREATE TABLE IF NOT EXISTS {TABLE} (\n    {}\n){}",
                columns.join(",\n    "),
                dialect.table_options
            ))]
        }
        Change::Columns => columns_added(version)
            .map(|c| {
                Statement::Run(format!(
                    "ALTER TABLE {TABLE} {} {}",
                    dialect.add_column,
                    ddl(c)
                ))
            })
            .collect(),
        Change::Index { name, columns } => vec![(dialect.index)(name, columns)],
    }
}

/// Applies every migration not yet recorded, in order, on `conn` (a transaction's, where the
/// dialect has transactional DDL).
pub(crate) async fn migrate<DB>(
    conn: &mut DB::Connection,
    dialect: &Dialect,
) -> Result<(), sqlx::Error>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: Executor<'e, Database = DB>,
{
    raw_sql(SCHEMA_TABLE).execute(&mut *conn).await?;
    for &(version, change) in MIGRATIONS {
        let done = raw_sql(AssertSqlSafe(format!(
            "SELECT version FROM pixelgate_schema WHERE version = {version}"
        )))
        .fetch_optional(&mut *conn)
        .await?;
        if done.is_some() {
            continue;
        }
        for statement in statements(dialect, version, change) {
            let sql = match statement {
                Statement::Run(sql) => sql,
                Statement::Unless { probe, create } => {
                    let found = raw_sql(AssertSqlSafe(probe))
                        .fetch_optional(&mut *conn)
                        .await?;
                    if found.is_some() {
                        continue;
                    }
                    create
                }
            };
            raw_sql(AssertSqlSafe(sql)).execute(&mut *conn).await?;
        }
        let record = (dialect.record)(version, &applied_at());
        raw_sql(AssertSqlSafe(record)).execute(&mut *conn).await?;
        tracing::info!(version, sink = dialect.name, "migration applied");
    }
    Ok(())
}
