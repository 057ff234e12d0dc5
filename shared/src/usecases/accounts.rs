//! Account life-cycle steps that touch more than one store.

use crate::Db;
use crate::error::StoreError;
use crate::media::MediaStore;
use crate::store::users::{self, User};

/// Deletes an account (its sessions, chats, jobs, share links and export rows go with it),
/// then its avatar and export files (a failure there only leaves orphaned files).
pub async fn delete(
    db: &Db,
    media: &dyn MediaStore,
    exports: &dyn crate::exports::ExportStore,
    user: &User,
) -> Result<(), StoreError> {
    let export_files = crate::store::exports::keys_of(&db.pool, user.id).await?;
    users::delete(&db.writer, user.id).await?;
    for key in export_files {
        if let Err(e) = exports.delete(&key).await {
            tracing::warn!(error = %e, "removing a deleted account's export failed");
        }
    }
    if let Some(key) = &user.avatar_key {
        for file in crate::avatar::avatar_files(key) {
            if let Err(e) = media.delete(&file).await {
                tracing::warn!(error = %e, "removing a deleted account's avatar failed");
            }
        }
    }
    Ok(())
}
