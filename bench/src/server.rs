//! The server under test: the release `parley-api` binary as a child process, with its own
//! scratch directory (SQLite database, mail, media, logs) and a free local port, and any
//! `parley-api worker` processes beside it.

use anyhow::{Context, bail};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::process::{Child, Command};

/// How long the server may take to answer `/healthz` after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The workspace's release build of `parley-api` (under `CARGO_TARGET_DIR` if set), or
/// `explicit`; fails with the build command if the file is missing.
pub fn locate_binary(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let path = explicit.unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target"));
        target.join("release").join(format!("parley-api{}", std::env::consts::EXE_SUFFIX))
    });
    if !path.is_file() {
        bail!(
            "the server binary {} is missing: build it first with \
             `cargo build --release --bin parley-api` (or pass --server PATH)",
            path.display()
        );
    }
    Ok(path)
}

/// A running server, with any worker processes started beside it. Dropping it kills the
/// processes and removes their scratch directory.
pub struct Server {
    // Declared before `dir`, so the processes are killed before their files are removed.
    child: Child,
    workers: Vec<Child>,
    base_url: String,
    dir: ScratchDir,
}

impl Server {
    /// Starts `binary` with a fresh SQLite database and `env` (over a cleared `PARLEY_*`
    /// environment), and waits until `/healthz` answers.
    pub async fn start(binary: &Path, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start_with_workers(binary, env, 0).await
    }

    /// Like [`Server::start`] (`env` may name another database), then starts `workers`
    /// `parley-api worker` processes with the same environment.
    pub async fn start_with_workers(binary: &Path, env: &[(&str, &str)], workers: usize) -> anyhow::Result<Self> {
        let dir = ScratchDir::create()?;
        let port = free_port()?;
        let base_url = format!("http://127.0.0.1:{port}");
        let mut command = dir.command(binary, port, env, "server.log")?;
        let child = command.spawn().with_context(|| format!("starting {}", binary.display()))?;
        let mut server = Self { child, workers: Vec::new(), base_url, dir };
        server.wait_until_healthy().await?;
        // After the server is up, so the database is migrated before a worker connects.
        for i in 0..workers {
            let mut command = server.dir.command(binary, port, env, &format!("worker-{i}.log"))?;
            let worker =
                command.arg("worker").spawn().with_context(|| format!("starting {} worker", binary.display()))?;
            server.workers.push(worker);
        }
        Ok(server)
    }

    /// The SQLite database the server was given (unless `env` named another).
    pub fn sqlite_url(&self) -> String {
        format!("sqlite://{}", self.dir.path.join("p.db").display())
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Fails, with the end of its log, if the server or a worker has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the server exited ({status}); its log ends:\n{}", self.dir.log_tail("server.log"));
        }
        for (i, worker) in self.workers.iter_mut().enumerate() {
            if let Some(status) = worker.try_wait()? {
                bail!("worker {i} exited ({status}); its log ends:\n{}", self.dir.log_tail(&format!("worker-{i}.log")));
            }
        }
        Ok(())
    }

    /// Kills the workers and the server, and waits for them to exit.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        for worker in &mut self.workers {
            worker.start_kill().context("stopping a worker")?;
            worker.wait().await.context("waiting for a worker to exit")?;
        }
        self.child.start_kill().context("stopping the server")?;
        self.child.wait().await.context("waiting for the server to exit")?;
        Ok(())
    }

    async fn wait_until_healthy(&mut self) -> anyhow::Result<()> {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(1)).build()?;
        let url = format!("{}/healthz", self.base_url);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the server exited during start-up ({status}); its log ends:\n{}",
                    self.dir.log_tail("server.log")
                );
            }
            if client.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the server did not answer {url} within {START_TIMEOUT:?}; its log ends:\n{}",
                    self.dir.log_tail("server.log")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A port that was free a moment ago (the server binds it right after).
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// A uniquely named directory under the system temporary directory, removed on drop.
struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    fn create() -> anyhow::Result<Self> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
        let path = std::env::temp_dir().join(format!("parley-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }

    /// A command that runs `binary` on `port` with its files here and `env` (over a cleared
    /// `PARLEY_*` environment), its output going to the file `log` here.
    fn command(&self, binary: &Path, port: u16, env: &[(&str, &str)], log: &str) -> anyhow::Result<Command> {
        let log = File::create(self.path.join(log)).with_context(|| format!("creating {log}"))?;
        let mut command = Command::new(binary);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PARLEY_") {
                command.env_remove(key);
            }
        }
        command
            .env("PARLEY_BIND", format!("127.0.0.1:{port}"))
            .env("PARLEY_PUBLIC_URL", format!("http://127.0.0.1:{port}"))
            .env("PARLEY_DATABASE_URL", format!("sqlite://{}", self.path.join("p.db").display()))
            .env("PARLEY_EMAIL_DIR", self.path.join("mail"))
            .env("PARLEY_MEDIA_DIR", self.path.join("media"))
            // Per-request log lines would load the server with the benchmark's own traffic.
            .env("RUST_LOG", std::env::var("PARLEY_BENCH_LOG").unwrap_or_else(|_| "warn".into()))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        Ok(command)
    }

    /// The last lines of the log file `name`, for error messages.
    fn log_tail(&self, name: &str) -> String {
        let log = std::fs::read_to_string(self.path.join(name)).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
