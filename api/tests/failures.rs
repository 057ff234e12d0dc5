//! Failure tests with real processes: `parley-api` and `parley-api worker` processes on a
//! PostgreSQL database of the test's own and a `redis-server` of its own, under a steady
//! stream of job-creating requests, while Redis is stopped, PostgreSQL's connections are
//! cut, a worker is SIGKILLed, or the workers are restarted one after the other. Each test
//! counts jobs accepted, finished, duplicated and lost, and prints the figures (the README
//! quotes them). The scenarios run one at a time: each starts several processes, and the
//! machine has two cores.

mod common;

use common::sse::parse_frames;
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One scenario at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const ADMIN_EMAIL: &str = "root@example.com";
const ADMIN_PASSWORD: &str = "admin passphrase 1";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process killed (SIGKILL) when dropped.
struct Proc(Child);

impl Proc {
    fn signal(&self, sig: &str) {
        let status = Command::new("kill").arg(format!("-{sig}")).arg(self.0.id().to_string()).status().unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; whether it exited cleanly.
    async fn wait_exit(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status.success();
            }
            assert!(Instant::now() < deadline, "the process did not exit within {within:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `redis-server` of the test's own, on a free port, without persistence (Redis carries
/// only wake-ups, events and cancel requests: nothing that must survive it).
struct Redis {
    port: u16,
    proc: Option<Proc>,
}

impl Redis {
    async fn start() -> Self {
        let mut redis = Self { port: free_port(), proc: None };
        redis.restart().await;
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.proc = Some(Proc(child));
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis::Client::open(self.url()).unwrap().get_multiplexed_async_connection().await.is_err() {
            assert!(Instant::now() < deadline, "the test's Redis never answered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn signal(&self, sig: &str) {
        self.proc.as_ref().expect("Redis runs").signal(sig);
    }

    fn kill(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.signal("KILL");
            let _ = proc.0.wait();
        }
    }
}

/// The processes of one scenario and what they share.
struct Cluster {
    vars: HashMap<String, String>,
    dir: tempfile::TempDir,
    db: sqlx::PgPool,
    db_name: String,
    base: String,
    client: reqwest::Client,
    token: String,
    api: Mutex<Proc>,
    port: u16,
    logs: std::sync::atomic::AtomicUsize,
}

impl Cluster {
    /// A database, an API process (without in-process workers) and an admin signed in.
    async fn start(redis: &Redis, extra: &[(&str, &str)]) -> Option<Self> {
        common::postgres_url()?;
        let dir = tempfile::tempdir().unwrap();
        let mut vars = common::base_vars(dir.path());
        let url = common::fresh_database(common::Backend::Postgres, dir.path()).await;
        let db_name = url.rsplit('/').next().unwrap().to_owned();
        vars.insert("PARLEY_DATABASE_URL".into(), url.clone());
        vars.insert("PARLEY_QUEUE_URL".into(), redis.url());
        vars.insert("PARLEY_WORKERS".into(), "0".into());
        vars.insert("PARLEY_ADMIN_EMAIL".into(), ADMIN_EMAIL.into());
        vars.insert("PARLEY_ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into());
        vars.insert("PARLEY_DATABASE_MAX_CONNECTIONS".into(), "8".into());
        vars.insert("PARLEY_SECRET_KEY".into(), "failure-tests-secret-key-0123456789abcdef".into());
        for (k, v) in extra {
            vars.insert((*k).into(), (*v).into());
        }
        let db = sqlx::PgPool::connect(&url).await.unwrap();
        let port = free_port();
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        let mut cluster = Self {
            api: Mutex::new(Proc(Command::new("true").spawn().unwrap())),
            port,
            vars,
            dir,
            db,
            db_name,
            base: format!("http://127.0.0.1:{port}"),
            client,
            token: String::new(),
            logs: Default::default(),
        };
        *cluster.api.lock().unwrap() = cluster.spawn_api();
        cluster.wait_healthy().await;
        let res = cluster
            .client
            .post(format!("{}/api/auth/login/", cluster.base))
            .json(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        cluster.token = res.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
        Some(cluster)
    }

    /// Starts `parley-api <args>` on the cluster's settings, logging to a file of its own.
    fn spawn(&self, args: &[&str], extra: &[(&str, &str)]) -> Proc {
        let n = self.logs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = std::fs::File::create(self.dir.path().join(format!("process-{n}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_parley-api"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .envs(&self.vars)
            .envs(extra.iter().map(|(k, v)| (*k, *v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("parley-api starts");
        Proc(child)
    }

    fn spawn_api(&self) -> Proc {
        self.spawn(&["serve"], &[("PARLEY_BIND", &format!("127.0.0.1:{}", self.port))])
    }

    /// SIGKILLs the API process and starts another on the same address.
    async fn kill_and_replace_api(&self) {
        {
            let mut api = self.api.lock().unwrap();
            api.signal("KILL");
            let _ = api.0.wait();
            *api = self.spawn_api();
        }
        self.wait_healthy().await;
    }

    fn spawn_worker(&self) -> Proc {
        self.spawn(&["worker"], &[])
    }

    async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(res) = self.client.get(format!("{}/healthz", self.base)).send().await
                && res.status() == StatusCode::OK
            {
                return;
            }
            assert!(Instant::now() < deadline, "the API process never answered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `POST /api/admin/jobs/noop/`.
    async fn post_noop(&self, sleep_ms: u64) -> Answer {
        let sent = self
            .client
            .post(format!("{}/api/admin/jobs/noop/", self.base))
            .bearer_auth(&self.token)
            .json(&json!({"sleep_ms": sleep_ms}))
            .send()
            .await;
        match sent {
            Err(e) if e.is_timeout() => Answer::Hung,
            Err(_) => Answer::Refused,
            Ok(res) => {
                let status = res.status();
                let retry_after = res.headers().contains_key("retry-after");
                match status {
                    StatusCode::ACCEPTED => {
                        let body: Value = res.json().await.unwrap();
                        Answer::Accepted(body["job_id"].as_str().unwrap().to_owned())
                    }
                    StatusCode::SERVICE_UNAVAILABLE if retry_after => Answer::Unavailable,
                    other => Answer::Other(other.as_u16()),
                }
            }
        }
    }

    /// Posts no-op jobs at `per_second` for `length`, each request on its own task.
    fn load(self: &Arc<Self>, per_second: u32, length: Duration, sleep_ms: u64) -> tokio::task::JoinHandle<Load> {
        let this = self.clone();
        tokio::spawn(async move {
            let answers = Arc::new(Mutex::new(Vec::new()));
            let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second);
            let end = Instant::now() + length;
            let mut requests = Vec::new();
            while Instant::now() < end {
                tick.tick().await;
                let (this, answers) = (this.clone(), answers.clone());
                requests.push(tokio::spawn(async move {
                    let sent = Instant::now();
                    let answer = this.post_noop(sleep_ms).await;
                    answers.lock().unwrap().push((answer, sent.elapsed()));
                }));
            }
            for r in requests {
                r.await.unwrap();
            }
            let answers = std::mem::take(&mut *answers.lock().unwrap());
            Load::from(answers)
        })
    }

    /// Waits until every job in `ids` has ended (45 s at most); returns the counts.
    async fn settle(&self, ids: &[String]) -> Tally {
        let deadline = Instant::now() + Duration::from_secs(45);
        loop {
            let tally = self.tally(ids).await;
            if tally.finished + tally.failed == ids.len() || Instant::now() > deadline {
                return tally;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// What became of the jobs `ids`: finished (succeeded), failed, duplicated (more than
    /// one `done` event, or a success recorded twice), lost (not ended).
    async fn tally(&self, ids: &[String]) -> Tally {
        let rows: Vec<(String, String)> =
            sqlx::query_as("select id, status from parley_jobs").fetch_all(&self.db).await.unwrap();
        let status: HashMap<String, String> = rows.into_iter().collect();
        let done: Vec<(String, i64)> =
            sqlx::query_as("select job_id, count(*) from job_events where event = 'done' group by job_id")
                .fetch_all(&self.db)
                .await
                .unwrap();
        let done: HashMap<String, i64> = done.into_iter().collect();
        let mut tally = Tally::default();
        for id in ids {
            match status.get(id).map(String::as_str) {
                Some("succeeded") => tally.finished += 1,
                Some("failed" | "cancelled") => tally.failed += 1,
                _ => tally.lost += 1,
            }
            if done.get(id).copied().unwrap_or(0) > 1 {
                tally.duplicated += 1;
            }
        }
        tally
    }

    async fn ready_status(&self) -> Option<u16> {
        self.client.get(format!("{}/readyz", self.base)).send().await.ok().map(|r| r.status().as_u16())
    }

    /// Every event of a job's SSE stream, resuming with `Last-Event-ID` whenever the
    /// connection drops or answers an error, until the final event.
    async fn follow(&self, job: &str) -> Vec<common::sse::SseEvent> {
        let mut events: Vec<common::sse::SseEvent> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = reqwest::Client::new();
        while Instant::now() < deadline {
            let mut req = client.get(format!("{}/api/jobs/{job}/events/", self.base)).bearer_auth(&self.token);
            if let Some(last) = events.last() {
                req = req.header("Last-Event-ID", last.id.to_string());
            }
            let Ok(res) = req.send().await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            if res.status() != StatusCode::OK {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            let mut body = res.bytes_stream();
            let mut buffer = String::new();
            while let Ok(Some(Ok(chunk))) = tokio::time::timeout(Duration::from_secs(20), body.next()).await {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                for event in parse_frames(&mut buffer) {
                    let end = event.event == "done" || event.event == "error";
                    events.push(event);
                    if end {
                        return events;
                    }
                }
            }
        }
        panic!("the stream of {job} never ended: {events:?}");
    }

    /// Cuts every connection to the database and refuses new ones until [`Self::restore_database`].
    async fn cut_database(&self) {
        let mut admin = self.admin_connection().await;
        for sql in [
            format!("alter database {} allow_connections false", self.db_name),
            format!("select pg_terminate_backend(pid) from pg_stat_activity where datname = '{}'", self.db_name),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await.unwrap();
        }
    }

    async fn restore_database(&self) {
        let mut admin = self.admin_connection().await;
        let sql = format!("alter database {} allow_connections true", self.db_name);
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await.unwrap();
    }

    async fn admin_connection(&self) -> sqlx::PgConnection {
        let base = common::postgres_url().unwrap();
        <sqlx::PgConnection as sqlx::Connection>::connect(&base).await.unwrap()
    }
}

#[derive(Debug)]
enum Answer {
    Accepted(String),
    /// 503 with `Retry-After`.
    Unavailable,
    Other(u16),
    Hung,
    Refused,
}

/// The answers of a load run.
#[derive(Debug, Default)]
struct Load {
    accepted: Vec<String>,
    unavailable: usize,
    other: Vec<u16>,
    hung: usize,
    refused: usize,
    /// The longest a request took to be answered.
    slowest: Duration,
}

impl From<Vec<(Answer, Duration)>> for Load {
    fn from(answers: Vec<(Answer, Duration)>) -> Self {
        let mut load = Load::default();
        for (answer, took) in answers {
            load.slowest = load.slowest.max(took);
            match answer {
                Answer::Accepted(id) => load.accepted.push(id),
                Answer::Unavailable => load.unavailable += 1,
                Answer::Other(status) => load.other.push(status),
                Answer::Hung => load.hung += 1,
                Answer::Refused => load.refused += 1,
            }
        }
        load
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    finished: usize,
    failed: usize,
    duplicated: usize,
    lost: usize,
}

fn report(scenario: &str, load: &Load, tally: &Tally) {
    println!(
        "failure scenario {scenario}: accepted {}, answered 503 {}, connection refused or cut {}, slowest answer {} ms, finished {}, failed {}, duplicated {}, lost {}",
        load.accepted.len(),
        load.unavailable,
        load.refused,
        load.slowest.as_millis(),
        tally.finished,
        tally.failed,
        tally.duplicated,
        tally.lost
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_frozen_then_killed_for_five_seconds_each_under_load_loses_and_duplicates_nothing() {
    let _serial = SERIAL.lock().await;
    let mut redis = Redis::start().await;
    let Some(cluster) = Cluster::start(&redis, &[]).await else {
        eprintln!("PARLEY_TEST_DATABASE_URL is not set; skipping the failure tests");
        return;
    };
    let _workers = [cluster.spawn_worker(), cluster.spawn_worker()];
    let cluster = Arc::new(cluster);
    // A job that runs across the outage, watched over SSE from before it to its end.
    let long = match cluster.post_noop(15_000).await {
        Answer::Accepted(id) => id,
        other => panic!("the long job was refused: {other:?}"),
    };
    let watcher = {
        let cluster = cluster.clone();
        let long = long.clone();
        tokio::spawn(async move { cluster.follow(&long).await })
    };
    let load = cluster.load(40, Duration::from_secs(20), 0);
    // Frozen for 5 s (SIGSTOP: connections stay open, nothing answers), then killed for 5 s.
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.signal("STOP");
    tokio::time::sleep(Duration::from_secs(5)).await;
    redis.signal("CONT");
    tokio::time::sleep(Duration::from_secs(3)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_secs(5)).await;
    redis.restart().await;
    let load = load.await.unwrap();
    assert!(load.other.is_empty() && load.hung == 0 && load.refused == 0, "{load:?}");
    let tally = cluster.settle(&load.accepted).await;
    report("redis frozen 5 s, then killed 5 s", &load, &tally);
    assert!(load.accepted.len() >= 600, "{load:?}");
    assert_eq!(tally, Tally { finished: load.accepted.len(), ..Tally::default() });
    // The watcher's stream resumed across the outage: every event once, in order, to `done`.
    let events = watcher.await.unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e.id).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "{events:?}");
    assert_eq!(events.last().unwrap().event, "done");
    // The worker processes are still healthy, and so the last jobs ran on them.
    assert_eq!(cluster.tally(&[long]).await.finished, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_cut_make_readyz_fail_and_the_pools_recover_without_a_restart() {
    let _serial = SERIAL.lock().await;
    let redis = Redis::start().await;
    let Some(cluster) = Cluster::start(&redis, &[]).await else {
        eprintln!("PARLEY_TEST_DATABASE_URL is not set; skipping the failure tests");
        return;
    };
    let _worker = cluster.spawn_worker();
    let cluster = Arc::new(cluster);
    let load = cluster.load(20, Duration::from_secs(10), 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.cut_database().await;
    // While the database is away, readiness says so.
    let down_until = Instant::now() + Duration::from_secs(4);
    let mut ready_while_down = Vec::new();
    while Instant::now() < down_until {
        ready_while_down.push(cluster.ready_status().await);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    cluster.restore_database().await;
    let load = load.await.unwrap();
    assert!(ready_while_down.iter().skip(2).all(|s| *s == Some(503)), "{ready_while_down:?}");
    // Requests failed cleanly (503 with Retry-After), never a 500 or a hang.
    assert!(load.other.is_empty() && load.hung == 0 && load.refused == 0, "{load:?}");
    assert!(load.unavailable > 0, "no request met the outage: {load:?}");
    // The same processes serve again.
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster.ready_status().await != Some(200) {
        assert!(Instant::now() < deadline, "/readyz never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = match cluster.post_noop(0).await {
        Answer::Accepted(id) => id,
        other => panic!("a job after the outage was refused: {other:?}"),
    };
    let mut accepted = load.accepted.clone();
    accepted.push(after);
    let tally = cluster.settle(&accepted).await;
    report("postgres connections cut 4 s", &load, &tally);
    assert_eq!(tally, Tally { finished: accepted.len(), ..Tally::default() });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_during_a_hundred_running_jobs_leaves_them_to_another_within_the_lease() {
    let _serial = SERIAL.lock().await;
    let redis = Redis::start().await;
    let extra = [("PARLEY_JOB_LEASE_SECS", "3"), ("PARLEY_WORKER_CONCURRENCY", "128")];
    let Some(cluster) = Cluster::start(&redis, &extra).await else {
        eprintln!("PARLEY_TEST_DATABASE_URL is not set; skipping the failure tests");
        return;
    };
    let first = cluster.spawn_worker();
    let cluster = Arc::new(cluster);
    // 80 no-ops of 4 s, and 20 sign-ups whose verification emails go out meanwhile.
    let mut ids = Vec::new();
    for _ in 0..80 {
        match cluster.post_noop(4_000).await {
            Answer::Accepted(id) => ids.push(id),
            other => panic!("{other:?}"),
        }
    }
    let signups = (0..20).map(|i| {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let body = json!({"email": format!("member{i}@example.com"), "password": common::PASSWORD});
            let res = cluster.client.post(format!("{}/api/auth/register/", cluster.base)).json(&body).send().await;
            assert_eq!(res.unwrap().status(), StatusCode::CREATED);
        })
    });
    futures::future::join_all(signups).await.into_iter().for_each(|r| r.unwrap());
    let email_jobs: Vec<(String,)> =
        sqlx::query_as("select id from parley_jobs where kind = 'send_email'").fetch_all(&cluster.db).await.unwrap();
    assert_eq!(email_jobs.len(), 20);
    ids.extend(email_jobs.into_iter().map(|(id,)| id));
    // Wait until the no-ops run, then kill their worker.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (running,): (i64,) =
            sqlx::query_as("select count(*) from parley_jobs where kind = 'noop' and status = 'running'")
                .fetch_one(&cluster.db)
                .await
                .unwrap();
        if running == 80 {
            break;
        }
        assert!(Instant::now() < deadline, "only {running} no-ops ever ran at once");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.signal("KILL");
    drop(first);
    let killed_at = Instant::now();
    let second = cluster.spawn_worker();
    let tally = cluster.settle(&ids).await;
    let load = Load { accepted: ids.clone(), ..Load::default() };
    report("worker SIGKILLed during 100 jobs", &load, &tally);
    assert_eq!(tally, Tally { finished: ids.len(), ..Tally::default() });
    // Within the lease (3 s), the claim of an expired job (1 s) and a run (4 s), with slack.
    assert!(killed_at.elapsed() < Duration::from_secs(20), "took {:?}", killed_at.elapsed());
    // Every verification email went out exactly once (the one sent before the kill is
    // recorded, and not sent again).
    let mut per_recipient: HashMap<String, usize> = HashMap::new();
    for entry in std::fs::read_dir(cluster.dir.path().join("mail")).unwrap() {
        let raw = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        *per_recipient.entry(common::mail::parse(&raw).to).or_default() += 1;
    }
    assert_eq!(per_recipient.len(), 20, "{per_recipient:?}");
    assert!(per_recipient.values().all(|n| *n == 1), "{per_recipient:?}");
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_two_workers_under_load_fails_no_job_and_repeats_no_event() {
    let _serial = SERIAL.lock().await;
    let redis = Redis::start().await;
    let Some(cluster) = Cluster::start(&redis, &[("PARLEY_SHUTDOWN_GRACE_SECS", "10")]).await else {
        eprintln!("PARLEY_TEST_DATABASE_URL is not set; skipping the failure tests");
        return;
    };
    let mut workers = vec![cluster.spawn_worker(), cluster.spawn_worker()];
    let cluster = Arc::new(cluster);
    let watched = match cluster.post_noop(6_000).await {
        Answer::Accepted(id) => id,
        other => panic!("{other:?}"),
    };
    let watcher = {
        let (cluster, watched) = (cluster.clone(), watched.clone());
        tokio::spawn(async move { cluster.follow(&watched).await })
    };
    let load = cluster.load(20, Duration::from_secs(12), 300);
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut old = workers.remove(0);
        old.signal("TERM");
        assert!(old.wait_exit(Duration::from_secs(15)).await, "a worker did not stop cleanly");
        workers.push(cluster.spawn_worker());
    }
    let load = load.await.unwrap();
    assert!(load.other.is_empty() && load.hung == 0 && load.refused == 0 && load.unavailable == 0, "{load:?}");
    let mut accepted = load.accepted.clone();
    accepted.push(watched);
    let tally = cluster.settle(&accepted).await;
    report("rolling restart of 2 workers", &load, &tally);
    assert_eq!(tally, Tally { finished: accepted.len(), ..Tally::default() });
    let events = watcher.await.unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e.id).collect();
    let unique: HashSet<i64> = seqs.iter().copied().collect();
    assert_eq!(unique.len(), seqs.len(), "an event came twice: {events:?}");
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "{events:?}");
    assert_eq!(events.iter().filter(|e| e.event == "done").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_process_killed_under_load_loses_no_accepted_job() {
    let _serial = SERIAL.lock().await;
    let redis = Redis::start().await;
    let Some(cluster) = Cluster::start(&redis, &[]).await else {
        eprintln!("PARLEY_TEST_DATABASE_URL is not set; skipping the failure tests");
        return;
    };
    let _worker = cluster.spawn_worker();
    let cluster = Arc::new(cluster);
    let load = cluster.load(30, Duration::from_secs(8), 0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Requests in flight die with the process (their clients see the connection drop);
    // a job whose request was answered 202 was committed, and so runs.
    cluster.kill_and_replace_api().await;
    let load = load.await.unwrap();
    assert!(load.other.is_empty() && load.hung == 0, "{load:?}");
    let tally = cluster.settle(&load.accepted).await;
    report("API process SIGKILLed", &load, &tally);
    assert!(load.accepted.len() >= 150, "{load:?}");
    assert_eq!(tally, Tally { finished: load.accepted.len(), ..Tally::default() });
}

/// How a misbehaving provider answers its first request (later ones get a good reply).
#[derive(Debug, Clone, Copy)]
enum Misbehaviour {
    /// Reads the request and never answers.
    Hang,
    /// Resets the connection without answering.
    Reset,
    /// Starts a 200 event stream, sends a delta, then a frame that is not JSON, and closes.
    Malformed,
}

/// An OpenAI-compatible provider on a raw socket that misbehaves on its first request.
async fn misbehaving_provider(first: Misbehaviour) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut served = 0;
        while let Ok((mut socket, _)) = listener.accept().await {
            let behaviour = (served == 0).then_some(first);
            served += 1;
            tokio::spawn(async move {
                // The request: headers, then `content-length` bytes of body.
                let mut request = Vec::new();
                let mut buf = [0_u8; 4096];
                loop {
                    let Ok(n) = socket.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request).to_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let chunk = |delta: Value, finish: Value| {
                    let chunk = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                        "model": "fake-model", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
                    format!("data: {chunk}\n\n")
                };
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
                let hello = chunk(json!({"role": "assistant", "content": "Hello"}), Value::Null);
                match behaviour {
                    Some(Misbehaviour::Hang) => tokio::time::sleep(Duration::from_secs(60)).await,
                    Some(Misbehaviour::Reset) => {
                        let _ = socket.set_zero_linger();
                    }
                    Some(Misbehaviour::Malformed) => {
                        let body = format!("{head}{hello}data: {{\"choices\": [{{\"delta\": oops\n\n");
                        let _ = socket.write_all(body.as_bytes()).await;
                    }
                    None => {
                        let stop = chunk(json!({}), json!("stop"));
                        let body = format!("{head}{hello}{stop}data: [DONE]\n\n");
                        let _ = socket.write_all(body.as_bytes()).await;
                    }
                }
                let _ = socket.shutdown().await;
            });
        }
    });
    format!("http://{address}/v1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_hangs_resets_or_sends_garbage_costs_one_retry_and_is_counted() {
    use common::{Backend, spawn_app_with};
    let app = spawn_app_with(
        Backend::Sqlite,
        &[
            ("PARLEY_ADMIN_EMAIL", ADMIN_EMAIL),
            ("PARLEY_ADMIN_PASSWORD", ADMIN_PASSWORD),
            ("PARLEY_LLM_STALL_SECS", "1"),
            ("PARLEY_LLM_MAX_CONCURRENT_PER_USER", "5"),
        ],
    )
    .await;
    let admin = app.signin(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let errors = |page: &str, class: &str| -> f64 {
        page.lines()
            .filter(|l| l.starts_with("parley_llm_provider_errors_total{") && l.contains(&format!("class=\"{class}\"")))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    let scrape = || async { app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap() };
    let before = scrape().await;
    let mut chats = Vec::new();
    for (name, behaviour) in
        [("hangs", Misbehaviour::Hang), ("resets", Misbehaviour::Reset), ("garbles", Misbehaviour::Malformed)]
    {
        let body = json!({"name": name, "provider": "openai_compatible", "model": "fake-model",
            "base_url": misbehaving_provider(behaviour).await, "api_key": "sk-test"});
        let res = app.post_json("/api/llm/configs/", &body, Some(&admin.access)).await;
        assert_eq!(res.status(), StatusCode::CREATED, "{}", res.text().await.unwrap());
        let config: Value = res.json().await.unwrap();
        let res = app
            .post_json("/api/llm/chat/", &json!({"message": "Hi", "config_id": config["id"]}), Some(&admin.access))
            .await;
        assert_eq!(res.status(), StatusCode::ACCEPTED, "{}", res.text().await.unwrap());
        chats.push((name, res.json::<Value>().await.unwrap()["job_id"].as_str().unwrap().to_owned()));
    }
    // Each costs one failed attempt, retried after the backoff: nothing hangs a worker.
    for (name, job) in &chats {
        let job = app.wait_for_status(&admin.access, job, "succeeded").await;
        assert_eq!(job["attempts"], 2, "{name}: {job}");
    }
    let after = scrape().await;
    assert!(errors(&after, "stalled") - errors(&before, "stalled") >= 1.0, "{after}");
    assert!(errors(&after, "connection") - errors(&before, "connection") >= 1.0, "{after}");
    assert!(errors(&after, "protocol") - errors(&before, "protocol") >= 1.0, "{after}");
}
