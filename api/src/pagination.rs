//! Cursor pagination: `?limit=&cursor=` → `{"items": [...], "next_cursor": "..." | null}`.
//! Cursors are the last item's id (time-ordered UUIDv7), so pages stay stable under inserts.

use crate::error::ApiError;
use serde::{Deserialize, Serialize};
use std::str::FromStr;
use utoipa::{IntoParams, ToSchema};

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

#[derive(Debug, Default, Deserialize, IntoParams)]
pub struct PageQuery {
    /// 1 to 100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    pub cursor: Option<String>,
}

impl PageQuery {
    /// The limit and the decoded cursor, or a validation error naming the parameter.
    pub fn parse<C: FromStr>(&self) -> Result<(i64, Option<C>), ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::field("limit", format!("must be between 1 and {MAX_LIMIT}")));
        }
        // Cursors are ids in their hyphenated form, as `next_cursor` gives them.
        let cursor = match self.cursor.as_deref() {
            None => None,
            Some(c) if c.len() == 36 && c.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') => {
                Some(c.parse().map_err(|_| ApiError::field("cursor", "is not a valid cursor"))?)
            }
            Some(_) => return Err(ApiError::field("cursor", "is not a valid cursor")),
        };
        Ok((limit, cursor))
    }
}

/// A page of items.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// A list small enough to come whole (bounded by the store), in the page shape.
    pub fn whole(items: Vec<T>) -> Self {
        Self { items, next_cursor: None }
    }

    /// Builds a page from `limit + 1` fetched rows: the extra row only says there is more.
    pub fn from_rows<R>(mut rows: Vec<R>, limit: i64, key: impl Fn(&R) -> String, map: impl Fn(R) -> T) -> Self {
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next_cursor = if more { rows.last().map(&key) } else { None };
        Self { items: rows.into_iter().map(map).collect(), next_cursor }
    }
}
