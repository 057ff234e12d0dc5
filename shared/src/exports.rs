//! Export files: where they are kept (a storage behind a trait: a local directory, with room
//! for object storage), how a conversation reads as Markdown and JSON, and the escaping that
//! keeps a CSV cell from running as a spreadsheet formula.

use crate::media::validate_key;
use crate::store::chat::{Message, Session};
use anyhow::Context;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::AsyncRead;

/// A stored file being read, and its length in bytes.
pub type ExportReader = (Pin<Box<dyn AsyncRead + Send>>, u64);

/// Where export files live. Object-safe: hold it as `Arc<dyn ExportStore>`. A job writes a
/// file in [`ExportStore::scratch_dir`] (flat memory, whatever its size), then hands it over
/// with [`ExportStore::put_file`].
pub trait ExportStore: Send + Sync {
    /// A local directory for files being written.
    fn scratch_dir(&self) -> PathBuf;

    /// Stores the finished file at `path` under `key` (the file is moved or uploaded, then
    /// gone from `path`).
    fn put_file<'a>(&'a self, key: &'a str, path: &'a Path) -> BoxFuture<'a, anyhow::Result<()>>;

    /// The file stored under `key`, or `None`.
    fn open<'a>(&'a self, key: &'a str) -> BoxFuture<'a, anyhow::Result<Option<ExportReader>>>;

    /// Removes `key`; removing a missing key succeeds.
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, anyhow::Result<()>>;
}

/// Files in a local directory (`PARLEY_EXPORT_DIR`).
#[derive(Debug, Clone)]
pub struct LocalExportStore {
    root: PathBuf,
}

impl LocalExportStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, key: &str) -> anyhow::Result<PathBuf> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }
}

/// The store the configuration names.
pub fn store(config: &crate::Config) -> Arc<dyn ExportStore> {
    Arc::new(LocalExportStore::new(&config.export_dir))
}

impl ExportStore for LocalExportStore {
    fn scratch_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn put_file<'a>(&'a self, key: &'a str, path: &'a Path) -> BoxFuture<'a, anyhow::Result<()>> {
        async move {
            let target = self.path(key)?;
            if let Some(parent) = target.parent() {
                tokio::fs::create_dir_all(parent).await.context("creating the export directory")?;
            }
            // The scratch directory is inside the root: a rename, on the same file system.
            tokio::fs::rename(path, &target).await.context("moving the export file into place")
        }
        .boxed()
    }

    fn open<'a>(&'a self, key: &'a str) -> BoxFuture<'a, anyhow::Result<Option<ExportReader>>> {
        async move {
            let path = self.path(key)?;
            match tokio::fs::File::open(&path).await {
                Ok(file) => {
                    let len = file.metadata().await?.len();
                    Ok(Some((Box::pin(file) as Pin<Box<dyn AsyncRead + Send>>, len)))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e).context("opening an export file"),
            }
        }
        .boxed()
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        async move {
            match tokio::fs::remove_file(self.path(key)?).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).context("deleting an export file"),
                _ => Ok(()),
            }
        }
        .boxed()
    }
}

/// A CSV cell that a spreadsheet would not run as a formula: text starting with `=`, `+`,
/// `-`, `@`, a tab or a carriage return gets a leading `'` (OWASP's advice).
pub fn csv_cell(text: &str) -> std::borrow::Cow<'_, str> {
    match text.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{text}").into(),
        _ => text.into(),
    }
}

/// A session's head in JSON (its messages follow with [`message_json`]).
pub fn session_json(session: &Session) -> serde_json::Value {
    json!({
        "id": session.id,
        "title": session.title,
        "tags": session.tags(),
        "created_at": session.created_at,
        "updated_at": session.updated_at,
    })
}

/// One message in JSON: role, model, text and time.
pub fn message_json(m: &Message) -> serde_json::Value {
    json!({
        "id": m.id,
        "role": m.role.as_str(),
        "status": m.status.as_str(),
        "model": m.model,
        "content": m.content,
        "created_at": m.created_at,
    })
}

/// A session's head in Markdown.
pub fn session_markdown(session: &Session) -> String {
    let tags = session.tags();
    let mut out = format!("# {}\n\n", session.title.replace('\n', " "));
    if !tags.is_empty() {
        out.push_str(&format!("Tags: {}\n\n", tags.join(", ")));
    }
    out.push_str(&format!("Started {}\n\n", session.created_at.to_rfc3339()));
    out
}

/// One message in Markdown.
pub fn message_markdown(m: &Message) -> String {
    let who = match (m.role.as_str(), &m.model) {
        ("assistant", Some(model)) => format!("assistant ({model})"),
        (role, _) => role.to_owned(),
    };
    format!("## {who}, {}\n\n{}\n\n", m.created_at.to_rfc3339(), m.content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_that_a_spreadsheet_would_run_are_escaped() {
        for formula in ["=1+1", "+1", "-2", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(csv_cell(formula), format!("'{formula}"));
        }
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell(""), "");
        assert_eq!(csv_cell("a=b"), "a=b");
    }
}

/// The filters of an admin export: those of the matching admin list. Filters that do not
/// apply to the export's kind are ignored.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportFilters {
    /// `users`: part of the email, username or display name.
    #[schema(max_length = 200)]
    pub search: Option<String>,
    /// `users`: only active (or only deactivated) accounts.
    pub is_active: Option<bool>,
    /// `users`: only admins (or only non-admins).
    pub is_admin: Option<bool>,
    /// `usage`: one account's usage.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub user_id: Option<crate::ids::UserId>,
    /// `usage`: one model's usage.
    #[schema(min_length = 1, max_length = 200)]
    pub model: Option<String>,
    /// `usage`: `day` (default) or `month`.
    #[schema(value_type = Option<String>, pattern = "^(day|month)$")]
    pub group_by: Option<String>,
    /// `audit`: events done by this account (`actor`, as in the audit list, is accepted too).
    #[schema(value_type = Option<String>, format = Uuid)]
    #[serde(alias = "actor")]
    pub actor_id: Option<crate::ids::UserId>,
    /// `audit`: events done to this account (`target`, as in the audit list, is accepted too).
    #[schema(value_type = Option<String>, format = Uuid)]
    #[serde(alias = "target")]
    pub target_id: Option<crate::ids::UserId>,
    /// `audit`: one action, e.g. `auth.login` (an action that does not exist matches nothing).
    #[schema(min_length = 1, max_length = 100)]
    pub action: Option<String>,
    /// `audit`: `success` or `failure`.
    #[schema(value_type = Option<String>, pattern = "^(success|failure)$")]
    pub result: Option<String>,
    /// `usage` and `audit`: the first UTC day.
    #[schema(value_type = Option<String>, format = Date)]
    pub from: Option<chrono::NaiveDate>,
    /// `usage` and `audit`: the last UTC day, included.
    #[schema(value_type = Option<String>, format = Date)]
    pub to: Option<chrono::NaiveDate>,
    /// `audit`: events at or after this time, as the audit list's `since` (with `from`, the
    /// later of the two applies).
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// `audit`: events before this time, as the audit list's `until` (with `to`, the earlier
    /// of the two applies).
    pub until: Option<chrono::DateTime<chrono::Utc>>,
}

impl ExportFilters {
    /// The filters' problems, as field errors (what the schema states, checked on the raw
    /// input).
    pub fn check(&self) -> crate::domain::FieldErrors {
        let mut errors = crate::domain::FieldErrors::default();
        if self.search.as_deref().is_some_and(|s| s.chars().count() > 200) {
            errors.add("filters.search", "must be at most 200 characters");
        }
        if self.model.as_deref().is_some_and(|m| m.is_empty() || m.chars().count() > 200) {
            errors.add("filters.model", "must be 1 to 200 characters");
        }
        if self.group_by.as_deref().is_some_and(|g| g != "day" && g != "month") {
            errors.add("filters.group_by", "must be day or month");
        }
        if self.action.as_deref().is_some_and(|a| a.is_empty() || a.chars().count() > 100) {
            errors.add("filters.action", "must be 1 to 100 characters");
        }
        if self.result.as_deref().is_some_and(|r| r != "success" && r != "failure") {
            errors.add("filters.result", "must be success or failure");
        }
        errors
    }
}
