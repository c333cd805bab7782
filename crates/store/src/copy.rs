//! Copying a whole store into an empty PostgreSQL one (`stratus admin move-store`).
//!
//! Generic over the schema: every table of the source (but `_sqlx_migrations`) is copied into
//! the table of the same name in the target, column by column by name, in foreign-key order, in
//! one transaction. The target's column types decide how each value is read and bound. Rows keep
//! their identities; the target's identity sequences are then advanced past the copied ids.
//! Ledger rows go in `(account_id, seq)` order so the target's chain trigger accepts them.

use std::collections::{BTreeMap, BTreeSet};

use futures::TryStreamExt;
use sqlx::{Arguments, Row as _};

use crate::{Backend, Database, StoreError};

/// Rows copied per table.
pub type Counts = BTreeMap<String, u64>;

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn err(msg: String) -> StoreError {
    StoreError::Protocol(msg)
}

/// Tables of a database, without sqlx's bookkeeping.
pub async fn tables(db: &Database) -> Result<Vec<String>, StoreError> {
    let sql = match db.backend() {
        Backend::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
             ORDER BY name"
        }
        Backend::Postgres => {
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' \
             ORDER BY table_name"
        }
    };
    let rows = sqlx::query(sql).fetch_all(db.r()).await?;
    Ok(rows
        .iter()
        .map(|r| r.get::<String, _>(0))
        .filter(|t| t != "_sqlx_migrations")
        .collect())
}

/// Rows per table.
pub async fn count_rows(db: &Database) -> Result<Counts, StoreError> {
    let mut out = Counts::new();
    for t in tables(db).await? {
        let n: i64 = sqlx::query(&format!("SELECT COUNT(*) FROM {}", quote(&t)))
            .fetch_one(db.r())
            .await?
            .get(0);
        out.insert(t, n as u64);
    }
    Ok(out)
}

/// Columns of a source table, in order.
async fn sqlite_columns(db: &Database, table: &str) -> Result<Vec<String>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT name FROM pragma_table_info({})",
        sql_str(table)
    ))
    .fetch_all(db.r())
    .await?;
    Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
}

fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Column name → PostgreSQL data type of a target table.
async fn pg_columns(db: &Database, table: &str) -> Result<BTreeMap<String, String>, StoreError> {
    let rows = sqlx::query(
        "SELECT column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1",
    )
    .bind(table)
    .fetch_all(db.r())
    .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1)))
        .collect())
}

/// Tables ordered so that every table comes after the tables its foreign keys name.
async fn fk_order(db: &Database, tables: &[String]) -> Result<Vec<String>, StoreError> {
    let rows = sqlx::query(
        "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text FROM pg_constraint c \
         JOIN pg_namespace n ON n.oid = c.connamespace \
         WHERE c.contype = 'f' AND n.nspname = current_schema()",
    )
    .fetch_all(db.r())
    .await?;
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in &rows {
        let (from, to): (String, String) = (r.get(0), r.get(1));
        let (from, to) = (
            from.trim_matches('"').to_string(),
            to.trim_matches('"').to_string(),
        );
        if from != to {
            deps.entry(from).or_default().insert(to);
        }
    }
    let mut done: Vec<String> = Vec::new();
    let mut left: Vec<String> = tables.to_vec();
    while !left.is_empty() {
        let before = left.len();
        left.retain(|t| {
            let ready = deps
                .get(t)
                .is_none_or(|d| d.iter().all(|x| done.contains(x) || !tables.contains(x)));
            if ready {
                done.push(t.clone());
            }
            !ready
        });
        if left.len() == before {
            return Err(err(format!("foreign keys form a cycle among {left:?}")));
        }
    }
    Ok(done)
}

/// Fails unless every table of `target` is empty.
pub async fn ensure_empty(target: &Database) -> Result<(), StoreError> {
    let full: Vec<String> = count_rows(target)
        .await?
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(t, n)| format!("{t} ({n} rows)"))
        .collect();
    if !full.is_empty() {
        return Err(err(format!(
            "the target database is not empty: {}",
            full.join(", ")
        )));
    }
    Ok(())
}

/// Copies every table of `source` into the empty PostgreSQL `target` in one transaction.
/// `rewrite(table, column, value)` may replace a text value on its way (backend names).
/// Returns the rows copied per table.
pub async fn copy_all(
    source: &Database,
    target: &Database,
    rewrite: &(dyn Fn(&str, &str, String) -> String + Sync),
) -> Result<Counts, StoreError> {
    if target.backend() != Backend::Postgres {
        return Err(err("the target of a copy must be PostgreSQL".into()));
    }
    ensure_empty(target).await?;
    let src_tables = tables(source).await?;
    let dst_tables = tables(target).await?;
    if let Some(t) = src_tables.iter().find(|t| !dst_tables.contains(t)) {
        return Err(err(format!(
            "table {t} of the source does not exist in the target (is the target's schema older?)"
        )));
    }
    let order = fk_order(target, &src_tables).await?;
    let mut tx = target.begin().await?;
    let mut counts = Counts::new();
    for table in &order {
        let cols = sqlite_columns(source, table).await?;
        let types = pg_columns(target, table).await?;
        let mut kinds = Vec::with_capacity(cols.len());
        for c in &cols {
            let ty = types.get(c).ok_or_else(|| {
                err(format!(
                    "column {table}.{c} of the source does not exist in the target"
                ))
            })?;
            kinds.push(ty.as_str());
        }
        let list = cols.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ");
        let marks = (1..=cols.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let insert = format!("INSERT INTO {} ({list}) VALUES ({marks})", quote(table));
        // The ledger is a chain per account: its trigger wants each account's entries in order.
        let order_by = if cols.iter().any(|c| c == "seq") && cols.iter().any(|c| c == "account_id")
        {
            " ORDER BY account_id, seq"
        } else {
            " ORDER BY rowid"
        };
        let select = format!("SELECT {list} FROM {}{order_by}", quote(table));
        let mut rows = sqlx::query(&select).fetch(source.r());
        let mut n = 0u64;
        while let Some(row) = rows.try_next().await? {
            let mut args = sqlx::any::AnyArguments::default();
            for (i, (col, kind)) in cols.iter().zip(&kinds).enumerate() {
                let bound = match *kind {
                    "bigint" | "integer" | "smallint" => {
                        args.add(row.try_get::<Option<i64>, _>(i)?)
                    }
                    "boolean" => args.add(row.try_get::<Option<i64>, _>(i)?.map(|v| v != 0)),
                    "bytea" => args.add(row.try_get::<Option<Vec<u8>>, _>(i)?),
                    "double precision" | "real" => args.add(row.try_get::<Option<f64>, _>(i)?),
                    "text" | "character varying" => args.add(
                        row.try_get::<Option<String>, _>(i)?
                            .map(|v| rewrite(table, col, v)),
                    ),
                    other => {
                        return Err(err(format!(
                            "column {table}.{col} has type {other}, which the copy does not know"
                        )))
                    }
                };
                bound.map_err(StoreError::Encode)?;
            }
            sqlx::query_with(&insert, args).execute(&mut *tx).await?;
            n += 1;
        }
        counts.insert(table.clone(), n);
        // Identity columns continue after the copied ids.
        for c in &cols {
            let seq: Option<String> = sqlx::query("SELECT pg_get_serial_sequence($1, $2)")
                .bind(quote(table))
                .bind(c.as_str())
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
            if let Some(seq) = seq {
                sqlx::query(&format!(
                    "SELECT setval($1::regclass, (SELECT MAX({col}) FROM {t})) \
                     WHERE EXISTS (SELECT 1 FROM {t})",
                    col = quote(c),
                    t = quote(table)
                ))
                .bind(seq)
                .execute(&mut *tx)
                .await?;
            }
        }
    }
    tx.commit().await?;
    Ok(counts)
}
