//! `process_avatar`: crops the uploaded image to a centred square, makes 256 px and 64 px
//! PNGs (re-encoded, so no metadata survives), stores them under server-made names, and
//! points the profile at them.

use super::{CancelSignal, JobError, Outcome, RunJob};
use crate::WorkerContext;
use parley_shared::avatar::{self, avatar_files};
use parley_shared::jobs::ProcessAvatar;
use parley_shared::store::jobs::Job;
use parley_shared::store::users;
use serde_json::json;

impl RunJob for ProcessAvatar {
    async fn run(self, ctx: &WorkerContext, _job: &Job, _cancel: CancelSignal) -> Outcome {
        process(self, ctx).await.into()
    }
}

async fn process(p: ProcessAvatar, ctx: &WorkerContext) -> Result<serde_json::Value, JobError> {
    let Some(upload) = ctx.media.get(&p.upload_key).await? else {
        return Err(JobError::fatal("the uploaded file is gone"));
    };
    let max_pixels = ctx.config.max_avatar_pixels;
    let processed =
        tokio::task::spawn_blocking(move || avatar::process(&upload, max_pixels)).await.map_err(anyhow::Error::from)?;
    let processed = match processed {
        Ok(processed) => processed,
        Err(e) => {
            // It will never process: keep nothing of it.
            ctx.media.delete(&p.upload_key).await?;
            return Err(JobError::fatal(e));
        }
    };
    let key =
        parley_shared::auth::random_token().chars().filter(char::is_ascii_alphanumeric).take(32).collect::<String>();
    let [large, small] = avatar_files(&key);
    ctx.media.put(&large, processed.large).await?;
    ctx.media.put(&small, processed.small).await?;
    let previous = match users::set_avatar(&ctx.db.writer, p.user_id, Some(&key)).await {
        Ok(previous) => previous,
        Err(parley_shared::StoreError::NotFound) => {
            // The account is gone: keep nothing of it.
            for file in [large, small, p.upload_key] {
                ctx.media.delete(&file).await?;
            }
            return Ok(json!({"skipped": "the user no longer exists"}));
        }
        Err(e) => return Err(e.into()),
    };
    for old in previous.iter().flat_map(|k| avatar_files(k)) {
        ctx.media.delete(&old).await?;
    }
    ctx.media.delete(&p.upload_key).await?;
    tracing::info!(user.id = %p.user_id, "avatar processed");
    Ok(json!({"avatar_key": key}))
}
