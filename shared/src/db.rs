//! The app database over sqlx's `Any` driver, so every store runs the same portable SQL on
//! SQLite and PostgreSQL. Placeholders are `$1`-style, which both accept.
//!
//! On SQLite, writes go through [`Db::writer`], a pool of one connection: writers queue for
//! it in the process instead of meeting at the file's write lock, where SQLite's busy
//! handler sleeps a millisecond or more. Readers use [`Db::pool`] (WAL: they never wait for
//! the writer). On PostgreSQL both are the same pool.

use anyhow::Context;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, migrate::Migrator};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// A statement with its binds, on either engine.
pub type SqlQuery = sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments>;

/// Which engine the app database runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A handle on the app database (cheap to clone).
#[derive(Clone, Debug)]
pub struct Db {
    /// Reads (and, on PostgreSQL, everything).
    pub pool: AnyPool,
    /// Writes and transactions that write.
    pub writer: AnyPool,
    pub backend: Backend,
}

impl Db {
    /// Connects to `url` (`sqlite://path` or `postgres://...`), creating a SQLite file and its
    /// directory if missing.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            anyhow::bail!("PARLEY_DATABASE_URL must start with sqlite:// or postgres://");
        };
        let url = match backend {
            Backend::Sqlite => prepare_sqlite(url)?,
            Backend::Postgres => url.to_owned(),
        };
        let options = |max: u32| {
            AnyPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(Duration::from_secs(10))
                // An event per connection handed out, with the time it waited: the
                // `parley_db_pool_acquire_wait_seconds` histogram (`telemetry::init`).
                .acquire_time_level(log::LevelFilter::Trace)
                // sqlx pings every connection it hands out, a round trip per query; a
                // connection in steady use is known good, so only one idle for a while (the
                // server may have restarted meanwhile) is checked. A SQLite file has no
                // server to lose: its connections are never checked.
                .test_before_acquire(false)
                .before_acquire(move |conn, meta| {
                    Box::pin(async move {
                        if backend == Backend::Postgres && meta.idle_for >= Duration::from_secs(1) {
                            use sqlx::Connection;
                            conn.ping().await?;
                        }
                        Ok(true)
                    })
                })
                .after_connect(
                move |conn, _| {
                    Box::pin(async move {
                        if backend == Backend::Sqlite {
                            use sqlx::Executor;
                            conn.execute("pragma journal_mode = wal; pragma foreign_keys = on; pragma busy_timeout = 10000; pragma synchronous = normal;")
                                .await?;
                        }
                        Ok(())
                    })
                },
            )
        };
        let pool = options(max_connections).connect(&url).await.context("connecting to the app database")?;
        let writer = match backend {
            Backend::Sqlite => options(1).connect(&url).await.context("connecting to the app database")?,
            Backend::Postgres => pool.clone(),
        };
        Ok(Self { pool, writer, backend })
    }

    /// A transaction on the writer. On SQLite it takes the write lock at once (`BEGIN
    /// IMMEDIATE`): a deferred transaction that reads first cannot take it later if another
    /// process (a `parley-worker` on the same file) wrote meanwhile, and fails at once.
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.writer.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.writer.begin().await,
        }
    }

    /// Runs `statements` (several, `;`-separated; `bind` binds `$N` across all of them) as
    /// one transaction on the SQLite writer, in one trip to SQLite's thread rather than one
    /// per statement. If a statement fails, the transaction is rolled back. It runs in a
    /// task of its own: SQLite's thread stops a script whose caller went away (a client that
    /// hung up drops its request) after the statement it is on, which would leave the writer
    /// inside the transaction. Returns the rows its statements return (a `select` at its end
    /// can tell what it wrote).
    pub async fn write_script(
        &self,
        statements: &str,
        bind: impl FnOnce(SqlQuery) -> SqlQuery,
    ) -> Result<Vec<sqlx::any::AnyRow>, crate::error::StoreError> {
        let query = bind(sqlx::query(sqlx::AssertSqlSafe(format!("begin immediate; {statements}; commit"))));
        let writer = self.writer.clone();
        let written = tokio::spawn(async move {
            let mut conn = writer.acquire().await?;
            match query.fetch_all(&mut *conn).await {
                Ok(rows) => Ok(rows),
                Err(e) => {
                    // An error here means no transaction was open.
                    let _ = sqlx::query("rollback").execute(&mut *conn).await;
                    Err(e)
                }
            }
        })
        .await
        .map_err(|e| crate::error::StoreError::Other(anyhow::anyhow!("a write script stopped: {e}")))?;
        Ok(written?)
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let mut migrator: Migrator = match self.backend {
            Backend::Sqlite => sqlx::migrate!("../migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("../migrations/postgres"),
        };
        // Files made before the jobs table became the queue also record apalis-sqlite's
        // migrations in this table; those versions are not ours to find.
        migrator.set_ignore_missing(true);
        migrator.run(&self.writer).await.context("running database migrations")
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        sqlx::query("select 1").execute(&self.pool).await.is_ok()
    }
}

/// Makes sure the SQLite file's directory exists and the file is created, in WAL mode.
fn prepare_sqlite(url: &str) -> anyhow::Result<String> {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let dir = Path::new(path).parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir.filter(|_| path != ":memory:") {
        std::fs::create_dir_all(dir).with_context(|| format!("creating the database directory {}", dir.display()))?;
    }
    let mut params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    if !params.iter().any(|p| p.starts_with("mode=")) {
        params.push("mode=rwc");
    }
    // Validate early so a bad path gets a clear error.
    sqlx::sqlite::SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
        .context("PARLEY_DATABASE_URL is not a valid SQLite URL")?;
    Ok(format!("sqlite://{path}?{}", params.join("&")))
}

/// A boolean column: `boolean` on PostgreSQL, `integer` 0/1 on SQLite (sqlx's `Any` driver
/// cannot map SQLite's `boolean` affinity). Decode into it with
/// `#[sqlx(try_from = "DbBool")]`.
#[derive(Debug, Clone, Copy)]
pub struct DbBool(pub bool);

impl From<DbBool> for bool {
    fn from(b: DbBool) -> Self {
        b.0
    }
}

impl sqlx::Type<sqlx::Any> for DbBool {
    fn type_info() -> sqlx::any::AnyTypeInfo {
        <bool as sqlx::Type<sqlx::Any>>::type_info()
    }

    fn compatible(ty: &sqlx::any::AnyTypeInfo) -> bool {
        <bool as sqlx::Type<sqlx::Any>>::compatible(ty) || <i64 as sqlx::Type<sqlx::Any>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Any> for DbBool {
    fn decode(value: sqlx::any::AnyValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        match <bool as sqlx::Decode<sqlx::Any>>::decode(value.clone()) {
            Ok(b) => Ok(DbBool(b)),
            Err(_) => Ok(DbBool(<i64 as sqlx::Decode<sqlx::Any>>::decode(value)? != 0)),
        }
    }
}
