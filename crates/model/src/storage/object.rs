//! Object records: who stored what, under which name, when.

use serde::Serialize;

use super::Storage;
use crate::{Error, Result};

/// One owner's record of a stored file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Object {
    pub id: i64,
    pub target: String,
    pub cid: String,
    pub name: String,
    pub size: u64,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// An `objects` row (`id, target, cid, name, size, created_at`).
#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    target: String,
    cid: String,
    name: String,
    size: i64,
    created_at: i64,
}

fn from_row(r: Row) -> Object {
    Object {
        id: r.id,
        target: r.target,
        cid: r.cid,
        name: r.name,
        size: r.size as u64,
        created_at: r.created_at,
    }
}

/// A page of a listing.
#[derive(Debug, Clone)]
pub struct Page {
    pub objects: Vec<Object>,
    /// What to pass as `after` for the next page, when there is one.
    pub next: Option<String>,
}

/// What an account stores in a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// The sum of the sizes of the account's records (the file list).
    pub used: u64,
    /// How many records the file list shows.
    pub files: u64,
}

/// Largest page of a listing.
pub const MAX_PAGE: u32 = 10_000;

impl Storage {
    /// The account's objects in `target`, in upload order, a page at a time. `after` is the
    /// `next` of the previous page (a record's position), or a CID (after that CID's last record).
    pub async fn list(
        &self,
        account_id: &str,
        target: &str,
        limit: Option<u32>,
        after: Option<&str>,
    ) -> Result<Page> {
        let after_id = match after {
            None | Some("") => 0,
            Some(pos) if pos.bytes().all(|b| b.is_ascii_digit()) => pos
                .parse::<i64>()
                .map_err(|_| Error::invalid(crate::Field::ListAfter, "position out of range"))?,
            Some(cid) => {
                let row: Option<(Option<i64>,)> = sqlx::query_as(
                    "SELECT MAX(id) FROM objects WHERE account_id = $1 AND target = $2 AND cid = $3",
                )
                .bind(account_id)
                .bind(target)
                .bind(cid)
                .fetch_optional(self.db.r())
                .await?;
                row.and_then(|r| r.0).ok_or_else(|| {
                    Error::invalid(
                        crate::Field::ListAfter,
                        format!("no object {cid} to list after"),
                    )
                })?
            }
        };
        let default = match self.cfg.list_default_limit {
            0 => 1000,
            n => n,
        };
        let limit = limit.filter(|n| *n > 0).unwrap_or(default).min(MAX_PAGE) as i64;
        let mut rows: Vec<Row> = sqlx::query_as(
            "SELECT id, target, cid, name, size, created_at FROM objects \
             WHERE account_id = $1 AND target = $2 AND id > $3 ORDER BY id LIMIT $4",
        )
        .bind(account_id)
        .bind(target)
        .bind(after_id)
        .bind(limit.saturating_add(1))
        .fetch_all(self.db.r())
        .await?;
        let more = rows.len() as i64 > limit;
        if more {
            rows.truncate(limit as usize);
        }
        let objects: Vec<Object> = rows.into_iter().map(from_row).collect();
        let next = if more {
            objects.last().map(|o| o.id.to_string())
        } else {
            None
        };
        Ok(Page { objects, next })
    }

    /// Bytes and files the account stores in `target`.
    pub async fn usage(&self, account_id: &str, target: &str) -> Result<Usage> {
        let (used, files): (i64, i64) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT), COUNT(*) FROM objects WHERE account_id = $1 AND target = $2",
        )
        .bind(account_id)
        .bind(target)
        .fetch_one(self.db.r())
        .await?;
        Ok(Usage {
            used: used as u64,
            files: files as u64,
        })
    }

    /// The account's first record of `cid` in `target`.
    pub async fn object(
        &self,
        account_id: &str,
        target: &str,
        cid: &str,
    ) -> Result<Option<Object>> {
        let row: Option<Row> = sqlx::query_as(
            "SELECT id, target, cid, name, size, created_at FROM objects \
             WHERE account_id = $1 AND target = $2 AND cid = $3 ORDER BY id LIMIT 1",
        )
        .bind(account_id)
        .bind(target)
        .bind(cid)
        .fetch_optional(self.db.r())
        .await?;
        Ok(row.map(from_row))
    }
}
