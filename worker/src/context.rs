//! What every job handler can reach (cheap to clone).

use crate::running::Running;
use parley_shared::auth::Keys;
use parley_shared::events::{EventBus, EventQueue, StreamWriter};
use parley_shared::jobs::lifecycle::{JobEnv, SuccessQueue};
use parley_shared::llm::LlmClient;
use parley_shared::mail::{Mailer, Templates};
use parley_shared::media::{LocalMediaStore, MediaStore};
use parley_shared::queue::Queue;
use parley_shared::{Config, Db};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct WorkerContext {
    pub config: Arc<Config>,
    pub db: Db,
    pub queue: Queue,
    pub bus: EventBus,
    pub mailer: Mailer,
    pub templates: Arc<Templates>,
    pub media: Arc<dyn MediaStore>,
    pub keys: Arc<Keys>,
    pub llm: LlmClient,
    /// Attempts this worker set holds.
    pub running: Arc<Running>,
    /// The liveness of the process's queue workers (shared by its worker sets).
    pub health: Arc<crate::Health>,
    /// Successes waiting to be written together (one queue per worker set).
    pub successes: Arc<SuccessQueue>,
    /// Stream events waiting to be stored together (one queue per worker set).
    pub events: Arc<EventQueue>,
}

impl WorkerContext {
    /// What job transitions touch.
    pub fn job_env(&self) -> JobEnv {
        JobEnv {
            db: self.db.clone(),
            bus: self.bus.clone(),
            media: self.media.clone(),
            successes: self.successes.clone(),
        }
    }

    /// The event stream of an attempt of `job`, which owns the job's stream until it ends.
    pub async fn open_stream(&self, job: parley_shared::ids::JobId) -> anyhow::Result<StreamWriter> {
        StreamWriter::open(&self.db, &self.bus, &self.events, job).await
    }

    /// Connects to the database (migrating it), the queue and the event bus named in `config`.
    pub async fn connect(config: Config) -> anyhow::Result<Self> {
        let db = Db::connect(config.database_url.expose(), config.database_max_connections).await?;
        db.migrate().await?;
        let queue = Queue::connect(&config).await?;
        let bus = EventBus::connect(&config).await?;
        let mailer = Mailer::from_config(&config)?;
        let media: Arc<dyn MediaStore> = Arc::new(LocalMediaStore::new(&config.media_dir));
        let keys = Arc::new(Keys::load(&config, &db).await?);
        let llm = LlmClient::new(
            std::time::Duration::from_secs(config.llm_stall_secs),
            parley_shared::llm::HostPolicy { allow_private: config.llm_allow_private_hosts },
        );
        let templates = Arc::new(Templates::new()?);
        let (running, health) = (Arc::default(), Arc::default());
        let (successes, events) = (Arc::default(), Arc::default());
        Ok(Self {
            config: Arc::new(config),
            db,
            queue,
            bus,
            mailer,
            templates,
            media,
            keys,
            llm,
            running,
            health,
            successes,
            events,
        })
    }
}
