//! The `queue` scenario: how fast no-op jobs go in and through, and one job's round trip.
//!
//! 1. `--jobs` N `POST /api/admin/jobs/noop/` from `--clients` concurrent clients: the
//!    enqueue rate is N / the time until the last one answered.
//! 2. Meanwhile `GET /api/admin/queues/` every 100 ms, then every 20 ms once three quarters
//!    finished: the end-to-end rate is N / the time from the first POST until all N jobs
//!    succeeded.
//! 3. `--roundtrips` sequential jobs, each timed from sending its POST to receiving the
//!    `done` event of `GET /api/jobs/{id}/events/`: p50 and p99.
//! 4. As many again, each one request: the POST with `Accept: text/event-stream`, whose
//!    answer is the job's stream, read until `done` (what a client that waits for the
//!    outcome does, as Celery's `delay().get()` does).
//!
//! On the distributed deployment, the transactions that wrote to PostgreSQL during phase 1
//! (the server's transaction ids taken), per job, are the app-database writes per job.

use crate::backend::{self, Deployment};
use crate::cli::{Common, Flags};
use crate::client::{ADMIN_EMAIL, Client};
use crate::load::percentile;
use crate::server;
use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// How often the queue counts are read once three quarters of the jobs finished (the end
/// is timed to this)...
const POLL: Duration = Duration::from_millis(20);

/// ...and before: reading them is itself load on the server and its database.
const POLL_EARLY: Duration = Duration::from_millis(100);

/// The end-to-end phase fails if no job finishes for this long.
const STALL: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct Options {
    backend: backend::Options,
    jobs: usize,
    clients: usize,
    roundtrips: usize,
    concurrency: usize,
}

impl Options {
    pub fn from_flags(flags: &mut Flags) -> anyhow::Result<Self> {
        Ok(Self {
            backend: backend::Options::from_flags(flags)?,
            jobs: flags.take_count("jobs", "PARLEY_BENCH_JOBS", 2000)?,
            clients: flags.take_count("clients", "PARLEY_BENCH_CLIENTS", 32)?,
            roundtrips: flags.take_count("roundtrips", "PARLEY_BENCH_ROUNDTRIPS", 200)?,
            concurrency: flags.take_count("worker-concurrency", "PARLEY_BENCH_WORKER_CONCURRENCY", 64)?,
        })
    }
}

pub async fn run(common: &Common, options: &Options) -> anyhow::Result<()> {
    let binary = server::locate_binary(common.server.clone())?;
    let backend = options.backend.backend;
    eprintln!("starting {} ({} backend)", binary.display(), backend.as_str());
    let concurrency = options.concurrency.to_string();
    let mut deployment =
        Deployment::start(&binary, &options.backend, &[("PARLEY_WORKER_CONCURRENCY", &concurrency)]).await?;
    let result = measure(&deployment, options).await;
    if result.is_err()
        && let Err(dead) = deployment.server.check_running()
    {
        eprintln!("{dead:#}");
    }
    let stopped = deployment.stop().await;
    let (enqueue, end_to_end, writes, roundtrips, streamed) = result?;
    stopped?;
    let writes = writes.map_or_else(|| "n/a".to_owned(), |w| format!("{w:.2}"));
    println!(
        "queue backend={} jobs={} enqueue_per_s={enqueue:.1} end_to_end_per_s={end_to_end:.1} \
         roundtrip_ms_p50={:.2} roundtrip_ms_p99={:.2} streamed_roundtrip_ms_p50={:.2} \
         streamed_roundtrip_ms_p99={:.2} db_write_txns_per_job={writes}",
        backend.as_str(),
        options.jobs,
        percentile(&roundtrips, 50.0),
        percentile(&roundtrips, 99.0),
        percentile(&streamed, 50.0),
        percentile(&streamed, 99.0)
    );
    Ok(())
}

/// What [`measure`] finds.
type Figures = (f64, f64, Option<f64>, Vec<f64>, Vec<f64>);

/// The enqueue rate, the end-to-end rate, the write transactions per job (where they can be
/// counted), and the sorted round trips in milliseconds (two requests, then one).
async fn measure(deployment: &Deployment, options: &Options) -> anyhow::Result<Figures> {
    let client = Client::new(deployment.server.base_url())?;
    let admin: Arc<str> = client.login(ADMIN_EMAIL).await?.into();
    eprintln!("warm-up: one job through");
    let warm_up = Instant::now();
    roundtrip(&client, &admin).await.context("the warm-up job")?;
    eprintln!("(warm-up job took {:.0} ms)", ms(warm_up.elapsed()));
    client.wait_idle(&admin, Duration::from_secs(30)).await?;

    eprintln!("phase: {} jobs from {} clients, until all succeeded", options.jobs, options.clients);
    let writes_before = deployment.write_transactions().await?;
    let (enqueue, end_to_end) = throughput(&client, &admin, options).await?;
    client.wait_idle(&admin, Duration::from_secs(60)).await?;
    let writes_after = deployment.write_transactions().await?;
    let writes = writes_before.zip(writes_after).map(|(a, b)| (b - a) as f64 / options.jobs as f64);

    eprintln!("phase: {} sequential round trips", options.roundtrips);
    let mut roundtrips = Vec::with_capacity(options.roundtrips);
    for _ in 0..options.roundtrips {
        roundtrips.push(ms(roundtrip(&client, &admin).await?));
    }
    roundtrips.sort_by(f64::total_cmp);
    eprintln!("phase: {} sequential round trips in one request each", options.roundtrips);
    let mut streamed = Vec::with_capacity(options.roundtrips);
    for _ in 0..options.roundtrips {
        streamed.push(ms(streamed_roundtrip(&client, &admin).await?));
    }
    streamed.sort_by(f64::total_cmp);
    Ok((enqueue, end_to_end, writes, roundtrips, streamed))
}

#[derive(Deserialize)]
struct Accepted {
    job_id: String,
}

/// Enqueues the jobs while watching them finish; returns both rates.
async fn throughput(client: &Client, admin: &Arc<str>, options: &Options) -> anyhow::Result<(f64, f64)> {
    let baseline = client.queue_stats(admin).await?;
    let already = baseline.count("succeeded") + baseline.count("failed");
    let next = Arc::new(AtomicUsize::new(0));
    let rejected = Arc::new(AtomicUsize::new(0));
    let all_sent = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut senders = JoinSet::new();
    for _ in 0..options.clients {
        let (client, admin, next, rejected, jobs) =
            (client.clone(), admin.clone(), next.clone(), rejected.clone(), options.jobs);
        senders.spawn(async move {
            let mut first_error = None;
            while next.fetch_add(1, Ordering::Relaxed) < jobs {
                if let Err(e) = client.post::<Accepted>("/api/admin/jobs/noop/", &admin, &json!({})).await {
                    rejected.fetch_add(1, Ordering::Relaxed);
                    first_error.get_or_insert_with(|| format!("{e:#}"));
                }
            }
            first_error
        });
    }
    let watcher = {
        let (client, admin, rejected, all_sent, jobs) =
            (client.clone(), admin.clone(), rejected.clone(), all_sent.clone(), options.jobs as i64);
        tokio::spawn(async move {
            let mut last_progress = (Instant::now(), 0);
            loop {
                let stats = client.queue_stats(&admin).await?;
                let finished = stats.count("succeeded") + stats.count("failed") - already;
                let target = jobs - rejected.load(Ordering::Relaxed) as i64;
                if all_sent.load(Ordering::Relaxed) && finished >= target {
                    return Ok::<_, anyhow::Error>((start.elapsed(), stats));
                }
                if finished > last_progress.1 {
                    last_progress = (Instant::now(), finished);
                } else if last_progress.0.elapsed() > STALL {
                    bail!("{finished} of {target} jobs finished, none in the last {STALL:?}: {:?}", stats.jobs);
                }
                tokio::time::sleep(if finished * 4 < target * 3 { POLL_EARLY } else { POLL }).await;
            }
        })
    };
    let mut first_error = None;
    while let Some(sender) = senders.join_next().await {
        first_error = first_error.or(sender?);
    }
    let enqueue_elapsed = start.elapsed();
    all_sent.store(true, Ordering::Relaxed);
    let rejected = rejected.load(Ordering::Relaxed);
    let accepted = options.jobs - rejected;
    if let Some(e) = first_error {
        if accepted == 0 {
            watcher.abort();
            bail!("every enqueue failed; first: {e}");
        }
        eprintln!("warning: {rejected} of {} enqueues failed; first: {e}", options.jobs);
    }
    let (end_to_end_elapsed, stats) = watcher.await??;
    let failed = stats.count("failed") - baseline.count("failed");
    if failed > 0 {
        eprintln!("warning: {failed} jobs failed");
    }
    let succeeded = (stats.count("succeeded") - baseline.count("succeeded")) as f64;
    Ok((accepted as f64 / secs(enqueue_elapsed), succeeded / secs(end_to_end_elapsed)))
}

/// One job from its POST to its `done` event.
async fn roundtrip(client: &Client, admin: &str) -> anyhow::Result<Duration> {
    let sent = Instant::now();
    let accepted: Accepted = client.post("/api/admin/jobs/noop/", admin, &json!({})).await?;
    let posted = sent.elapsed();
    let events = client.job_events(&accepted.job_id, admin).await?;
    let opened = sent.elapsed();
    let (first, done) = until_done(events, sent).await.with_context(|| format!("job {}", accepted.job_id))?;
    trace(&format!("post {:.2} open {:.2}", ms(posted), ms(opened)), first, done);
    Ok(done)
}

/// One job from its POST to its `done` event, in one request: the POST answers with the
/// job's stream.
async fn streamed_roundtrip(client: &Client, admin: &str) -> anyhow::Result<Duration> {
    let sent = Instant::now();
    let response = client
        .request(reqwest::Method::POST, "/api/admin/jobs/noop/", admin)
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .json(&json!({}))
        .send()
        .await?;
    let headers = sent.elapsed();
    let events = crate::sse::EventReader::new(crate::client::success(response).await?);
    let (first, done) = until_done(events, sent).await.context("a streamed no-op job")?;
    trace(&format!("streamed headers {:.2}", ms(headers)), first, done);
    Ok(done)
}

/// Reads a job's events until `done`: when the first and the last came, from `sent`.
async fn until_done(mut events: crate::sse::EventReader, sent: Instant) -> anyhow::Result<(Duration, Duration)> {
    let mut first = None;
    while let Some(event) = events.next().await? {
        let at = event.at - sent;
        first.get_or_insert(at);
        match event.event.as_str() {
            "done" => return Ok((first.unwrap_or(at), at)),
            "error" => bail!("the job failed: {}", event.data),
            _ => {}
        }
    }
    bail!("the event stream ended without `done`")
}

/// With `PARLEY_BENCH_TRACE`, where a round trip's time went, on stderr.
fn trace(head: &str, first: Duration, done: Duration) {
    if std::env::var_os("PARLEY_BENCH_TRACE").is_some() {
        eprintln!("{head} first {:.2} done {:.2}", ms(first), ms(done));
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn secs(duration: Duration) -> f64 {
    duration.as_secs_f64().max(f64::EPSILON)
}
