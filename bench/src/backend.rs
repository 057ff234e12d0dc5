//! The two deployments that the `queue` and `chat` scenarios compare:
//!
//! - `sqlite`: one `parley-api` with a throw-away SQLite file as database and queue and its
//!   workers in-process (`PARLEY_WORKERS=1`);
//! - `redis`: a fresh PostgreSQL database (created here, dropped at the end) and a Redis
//!   queue under a prefix of its own (its keys deleted at the end), one `parley-api` that
//!   runs no jobs (`PARLEY_WORKERS=0`) and one `parley-api worker` process.
//!
//! Both get the admin from `PARLEY_ADMIN_EMAIL`, limits out of the way, and a cheap argon2
//! cost (no scenario here measures sign-ins; registering hundreds of users stays quick).

use crate::cli::Flags;
use crate::client::{ADMIN_EMAIL, PASSWORD};
use crate::server::Server;
use anyhow::{Context, bail};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use std::path::Path;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

/// A rate that never limits the benchmark.
const UNLIMITED_PER_MINUTE: &str = "1000000";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Redis,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Redis => "redis",
        }
    }
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sqlite" => Ok(Backend::Sqlite),
            "redis" => Ok(Backend::Redis),
            _ => Err("expected sqlite or redis".into()),
        }
    }
}

/// Which deployment, and where the distributed one's PostgreSQL and Redis are.
#[derive(Debug)]
pub struct Options {
    pub backend: Backend,
    /// A PostgreSQL URL; its database is only used to create (and drop) a fresh one.
    database_url: String,
    queue_url: String,
}

impl Options {
    pub fn from_flags(flags: &mut Flags) -> anyhow::Result<Self> {
        let backend = flags.take_optional("backend", "PARLEY_BENCH_BACKEND")?;
        Ok(Self {
            backend: backend.context("--backend sqlite|redis is required")?,
            database_url: flags.take(
                "database-url",
                "PARLEY_BENCH_DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/test?sslmode=disable".to_owned(),
            )?,
            queue_url: flags.take("queue-url", "PARLEY_BENCH_QUEUE_URL", "redis://127.0.0.1:6379".to_owned())?,
        })
    }
}

/// A running deployment; [`Deployment::stop`] removes what it created.
pub struct Deployment {
    pub server: Server,
    /// For `redis`: the base URL, the database created, the queue URL and the key prefix.
    distributed: Option<Distributed>,
}

struct Distributed {
    database_url: String,
    database: String,
    queue_url: String,
    prefix: String,
}

impl Deployment {
    /// Starts the deployment with `env` added (or overriding) to the common settings.
    pub async fn start(binary: &Path, options: &Options, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut all: Vec<(&str, String)> = [
            ("PARLEY_ADMIN_EMAIL", ADMIN_EMAIL),
            ("PARLEY_ADMIN_PASSWORD", PASSWORD),
            ("PARLEY_LOGIN_IP_PER_MINUTE", UNLIMITED_PER_MINUTE),
            ("PARLEY_LOGIN_ACCOUNT_PER_MINUTE", UNLIMITED_PER_MINUTE),
            ("PARLEY_ACCESS_TOKEN_TTL_SECS", "86400"),
            ("PARLEY_SECRET_KEY", "parley-bench-secret-key-for-this-run-only"),
            ("PARLEY_ARGON2_MEMORY_KIB", "1024"),
            ("PARLEY_ARGON2_ITERATIONS", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.to_owned()))
        .collect();
        let distributed = match options.backend {
            Backend::Sqlite => {
                all.push(("PARLEY_WORKERS", "1".into()));
                None
            }
            Backend::Redis => {
                let d = Distributed::create(options).await?;
                all.push(("PARLEY_DATABASE_URL", d.app_database_url()?));
                all.push(("PARLEY_QUEUE_URL", d.queue_url.clone()));
                all.push(("PARLEY_REDIS_PREFIX", d.prefix.clone()));
                all.push(("PARLEY_WORKERS", "0".into()));
                Some(d)
            }
        };
        all.extend(env.iter().map(|(k, v)| (*k, (*v).to_owned())));
        let env: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let workers = usize::from(distributed.is_some());
        match Server::start_with_workers(binary, &env, workers).await {
            Ok(server) => Ok(Self { server, distributed }),
            Err(e) => {
                if let Some(d) = distributed {
                    d.remove().await;
                }
                Err(e)
            }
        }
    }

    /// Transactions that wrote, so far, on the PostgreSQL server of the distributed
    /// deployment (the next transaction id: read-only transactions take none). `None` for
    /// SQLite, which keeps no such count.
    pub async fn write_transactions(&self) -> anyhow::Result<Option<i64>> {
        let Some(d) = &self.distributed else { return Ok(None) };
        let mut conn = PgConnection::connect(&d.app_database_url()?).await?;
        let next: i64 = sqlx::query_scalar("select pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
            .fetch_one(&mut conn)
            .await
            .context("reading the next transaction id")?;
        let _ = conn.close().await;
        Ok(Some(next))
    }

    /// The app database's URL (`sqlite://...` or `postgres://...`), for a scenario that
    /// fills it directly.
    pub fn database_url(&self) -> anyhow::Result<String> {
        match &self.distributed {
            Some(d) => d.app_database_url(),
            None => Ok(self.server.sqlite_url()),
        }
    }

    /// Stops the processes, then drops the database and deletes the Redis keys.
    pub async fn stop(self) -> anyhow::Result<()> {
        let stopped = self.server.stop().await;
        if let Some(d) = self.distributed {
            d.remove().await;
        }
        stopped
    }
}

impl Distributed {
    async fn create(options: &Options) -> anyhow::Result<Self> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
        let id = format!("{}_{nanos}", std::process::id());
        let d = Self {
            database_url: options.database_url.clone(),
            database: format!("parley_bench_{id}"),
            queue_url: options.queue_url.clone(),
            prefix: format!("parley-bench-{id}"),
        };
        let mut conn = PgConnection::connect(&d.database_url)
            .await
            .with_context(|| format!("connecting to PostgreSQL at {} (--database-url)", d.database_url))?;
        let create = format!("CREATE DATABASE \"{}\"", d.database);
        sqlx::raw_sql(AssertSqlSafe(create)).execute(&mut conn).await.context("creating the benchmark database")?;
        let _ = conn.close().await;
        Ok(d)
    }

    /// The base URL with the fresh database's name in its path.
    fn app_database_url(&self) -> anyhow::Result<String> {
        let mut url = reqwest::Url::parse(&self.database_url).context("--database-url is not a URL")?;
        if !url.scheme().starts_with("postgres") {
            bail!("--database-url must be a postgres:// URL");
        }
        url.set_path(&self.database);
        Ok(url.into())
    }

    /// Best effort: a failure is reported, not returned.
    async fn remove(self) {
        if let Err(e) = self.drop_database().await {
            eprintln!("warning: dropping the database {}: {e:#}", self.database);
        }
        if let Err(e) = self.delete_keys().await {
            eprintln!("warning: deleting the Redis keys {}*: {e:#}", self.prefix);
        }
    }

    async fn drop_database(&self) -> anyhow::Result<()> {
        let mut conn = PgConnection::connect(&self.database_url).await?;
        let drop = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.database);
        sqlx::raw_sql(AssertSqlSafe(drop)).execute(&mut conn).await?;
        let _ = conn.close().await;
        Ok(())
    }

    async fn delete_keys(&self) -> anyhow::Result<()> {
        let client = redis::Client::open(self.queue_url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}*", self.prefix))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}
