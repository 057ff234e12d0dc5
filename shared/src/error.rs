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
                StoreError::Conflict { field: conflicting_field(db.constraint(), db.message()) }
            }
            sqlx::Error::Database(db) if db.code().as_deref() == Some("22021") => StoreError::InvalidText,
            sqlx::Error::Encode(e) if e.to_string().contains("nul") => StoreError::InvalidText,
            _ => StoreError::Other(anyhow::Error::new(err)),
        }
    }
}

/// The unique constraints a client can run into, each with the field it names: its
/// PostgreSQL name, and SQLite's `table.column` (SQLite reports no constraint name).
const UNIQUE_CONSTRAINTS: &[(&str, &str, &str)] = &[
    ("users_email_lower_key", "users.email_lower", "email"),
    ("users_username_lower_key", "users.username_lower", "username"),
    ("llm_configs_name_key", "llm_configs.name", "name"),
];

/// The field a unique violation is about, by constraint; `id` for any other (a primary key).
fn conflicting_field(constraint: Option<&str>, message: &str) -> &'static str {
    let sqlite_target = message.strip_prefix("UNIQUE constraint failed: ");
    UNIQUE_CONSTRAINTS
        .iter()
        .find(|(name, target, _)| constraint == Some(*name) || sqlite_target == Some(*target))
        .map_or("id", |(_, _, field)| field)
}

#[cfg(test)]
mod tests {
    use super::conflicting_field;

    #[test]
    fn unique_violations_name_their_field_by_constraint_on_either_database() {
        assert_eq!(conflicting_field(Some("users_email_lower_key"), "duplicate key value"), "email");
        assert_eq!(conflicting_field(None, "UNIQUE constraint failed: users.username_lower"), "username");
        assert_eq!(conflicting_field(None, "UNIQUE constraint failed: llm_configs.name"), "name");
        // A message that merely mentions a column is not a constraint.
        assert_eq!(conflicting_field(Some("sessions_pkey"), "Key (email)=(x) already exists"), "id");
        assert_eq!(conflicting_field(None, "UNIQUE constraint failed: job_events.job_id, job_events.seq"), "id");
    }
}
