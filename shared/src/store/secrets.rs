//! Server secrets generated on first start and kept in the database.

use super::Exec;
use crate::time::now_ms;

/// The secret named `name`, created with `generate()` if there is none yet. Safe under
/// concurrent first starts: the first insert wins and everyone reads it back.
pub async fn get_or_create<'e, E: Exec<'e> + Copy>(
    ex: E,
    name: &str,
    generate: impl FnOnce() -> String,
) -> Result<String, sqlx::Error> {
    let now = now_ms();
    sqlx::query(
        "insert into server_secrets (name, value, created_at, updated_at) values ($1, $2, $3, $3)
         on conflict (name) do nothing",
    )
    .bind(name)
    .bind(generate())
    .bind(now)
    .execute(ex)
    .await?;
    sqlx::query_scalar("select value from server_secrets where name = $1").bind(name).fetch_one(ex).await
}
