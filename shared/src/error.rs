//! Errors of the store layer.

/// What can go wrong in a store call, in terms callers can act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A unique constraint failed; the field names what was taken.
    #[error("{field} is already taken")]
    Conflict { field: &'static str },
    /// Text the database cannot store (PostgreSQL refuses NUL characters).
    #[error("text must not contain NUL characters")]
    InvalidText,
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                let msg = db.message().to_ascii_lowercase();
                let constraint = db.constraint().unwrap_or_default().to_ascii_lowercase();
                let field = if msg.contains("username") || constraint.contains("username") {
                    "username"
                } else if msg.contains("email") || constraint.contains("email") {
                    "email"
                } else {
                    "id"
                };
                StoreError::Conflict { field }
            }
            sqlx::Error::Database(db) if db.code().as_deref() == Some("22021") => StoreError::InvalidText,
            sqlx::Error::Encode(e) if e.to_string().contains("nul") => StoreError::InvalidText,
            _ => StoreError::Other(anyhow::Error::new(err)),
        }
    }
}
