//! The application state every handler shares (cheap to clone).

use crate::ratelimit::{ApiKeyLimiter, LoginLimiter};
use parley_shared::auth::{JwtKeys, Keys, PasswordHasher};
use parley_shared::events::EventBus;
use parley_shared::queue::Queue;
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
    pub api_key_limiter: Arc<ApiKeyLimiter>,
    pub queue: Queue,
    pub bus: EventBus,
    /// Used only by in-process workers; handlers never send mail themselves.
    pub mailer: parley_shared::mail::Mailer,
    pub templates: Arc<parley_shared::mail::Templates>,
    pub media: Arc<dyn parley_shared::media::MediaStore>,
    /// Used only by in-process workers.
    pub llm: parley_shared::llm::LlmClient,
    /// The liveness of the in-process queue workers, for `/healthz`.
    pub worker_health: Arc<parley_worker::Health>,
}

impl AppState {
    /// The worker-side view of the same resources (for in-process workers).
    /// What job transitions touch.
    pub fn job_env(&self) -> parley_shared::jobs::lifecycle::JobEnv {
        parley_shared::jobs::lifecycle::JobEnv {
            db: self.db.clone(),
            bus: self.bus.clone(),
            media: self.media.clone(),
            successes: Default::default(),
        }
    }

    pub fn worker_context(&self) -> parley_worker::WorkerContext {
        parley_worker::WorkerContext {
            config: self.config.clone(),
            db: self.db.clone(),
            queue: self.queue.clone(),
            bus: self.bus.clone(),
            mailer: self.mailer.clone(),
            templates: self.templates.clone(),
            media: self.media.clone(),
            keys: self.keys.clone(),
            llm: self.llm.clone(),
            running: Default::default(),
            health: self.worker_health.clone(),
            successes: Default::default(),
            events: Default::default(),
        }
    }
}
