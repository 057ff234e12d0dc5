//! Timestamps are stored as Unix milliseconds (`BIGINT`), the one representation that reads
//! the same on SQLite and PostgreSQL through sqlx's `Any` driver.

use chrono::{DateTime, TimeZone, Utc};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// A stored point in time as the domain sees it: UTC, to the millisecond. The column holds
/// Unix milliseconds; this type decodes straight from it, so rows carry date-times, not
/// numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub DateTime<Utc>);

impl Timestamp {
    pub fn now() -> Self {
        Self::from_millis(now_ms()).unwrap_or(Self(Utc::now()))
    }

    /// `None` for a value outside chrono's range.
    pub fn from_millis(ms: i64) -> Option<Self> {
        Utc.timestamp_millis_opt(ms).single().map(Self)
    }

    /// The stored form.
    pub fn millis(self) -> i64 {
        self.0.timestamp_millis()
    }
}

impl std::ops::Deref for Timestamp {
    type Target = DateTime<Utc>;
    fn deref(&self) -> &DateTime<Utc> {
        &self.0
    }
}

impl From<Timestamp> for DateTime<Utc> {
    fn from(t: Timestamp) -> Self {
        t.0
    }
}

impl sqlx::Type<sqlx::Any> for Timestamp {
    fn type_info() -> sqlx::any::AnyTypeInfo {
        <i64 as sqlx::Type<sqlx::Any>>::type_info()
    }

    fn compatible(ty: &sqlx::any::AnyTypeInfo) -> bool {
        <i64 as sqlx::Type<sqlx::Any>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Any> for Timestamp {
    fn decode(value: sqlx::any::AnyValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let ms = <i64 as sqlx::Decode<sqlx::Any>>::decode(value)?;
        Self::from_millis(ms).ok_or_else(|| format!("timestamp {ms} ms is out of range").into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timestamp_keeps_its_milliseconds() {
        let t = Timestamp::from_millis(1_764_684_000_123).unwrap();
        assert_eq!(t.millis(), 1_764_684_000_123);
        assert_eq!(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true), "2025-12-02T14:00:00.123Z");
        assert!(Timestamp::from_millis(i64::MAX).is_none());
    }
}
