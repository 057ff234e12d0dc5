//! Timestamps are stored as Unix milliseconds (`BIGINT`), the one representation that reads
//! the same on SQLite and PostgreSQL through sqlx's `Any` driver.

use chrono::{DateTime, TimeZone, Utc};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// A stored millisecond timestamp as a UTC date-time.
pub fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}
