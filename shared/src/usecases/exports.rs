//! Exports: starting one (its row and its job, in one transaction) and deleting the files
//! of those that expired.

use crate::db::Db;
use crate::error::StoreError;
use crate::exports::{ExportFilters, ExportStore};
use crate::ids::{ExportId, JobId, UserId};
use crate::jobs::ExportData;
use crate::store::exports::{self, ExportFormat, ExportKind};
use crate::store::jobs;
use sqlx::AnyConnection;

/// Writes the export's row and its job in `tx` (the caller commits, then wakes the bulk
/// queue).
pub async fn start(
    tx: &mut AnyConnection,
    user: UserId,
    kind: ExportKind,
    format: ExportFormat,
    filters: &ExportFilters,
) -> Result<(ExportId, JobId), StoreError> {
    let filters = serde_json::to_value(filters).map_err(anyhow::Error::from)?;
    let id = exports::insert(&mut *tx, user, kind, format, &filters).await?;
    let job = jobs::enqueue(&mut *tx, Some(user), &ExportData { export_id: id }).await?;
    exports::set_job(&mut *tx, id, job).await?;
    Ok((id, job))
}

/// Deletes the files of exports that expired, and forgets them; how many.
pub async fn prune_expired(db: &Db, store: &dyn ExportStore) -> Result<u64, StoreError> {
    let mut pruned = 0;
    loop {
        let expired = exports::expired(&db.pool, crate::time::now_ms(), 100).await?;
        if expired.is_empty() {
            return Ok(pruned);
        }
        for export in expired {
            forget(db, store, &export).await?;
            pruned += 1;
        }
    }
}

/// Deletes an export's file and clears its key.
pub async fn forget(db: &Db, store: &dyn ExportStore, export: &exports::Export) -> Result<(), StoreError> {
    if let Some(key) = &export.storage_key {
        store.delete(key).await?;
    }
    exports::clear_file(&db.writer, export.id).await
}
