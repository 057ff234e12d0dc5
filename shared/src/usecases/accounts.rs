//! Account life-cycle steps that touch more than one store.

use crate::Db;
use crate::error::StoreError;
use crate::media::MediaStore;
use crate::store::users::{self, User};

/// Deletes an account (its sessions, chats and jobs go with it), then its avatar files (a
/// failure there only leaves orphaned files).
pub async fn delete(db: &Db, media: &dyn MediaStore, user: &User) -> Result<(), StoreError> {
    users::delete(&db.writer, user.id).await?;
    if let Some(key) = &user.avatar_key {
        for file in crate::avatar::avatar_files(key) {
            if let Err(e) = media.delete(&file).await {
                tracing::warn!(error = %e, "removing a deleted account's avatar failed");
            }
        }
    }
    Ok(())
}
