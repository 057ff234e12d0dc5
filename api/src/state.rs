//! The application state every handler shares (cheap to clone).

use crate::ratelimit::LoginLimiter;
use parley_shared::auth::{JwtKeys, Keys, PasswordHasher};
use parley_shared::{Config, Db};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: Db,
    pub hasher: PasswordHasher,
    pub jwt: JwtKeys,
    pub keys: Arc<Keys>,
    pub login_limiter: Arc<LoginLimiter>,
}
