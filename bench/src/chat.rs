//! The `chat` scenario: what Parley adds to a provider's latency, against a fake provider
//! ([`crate::provider`]) with a fixed first-token delay and token rate.
//!
//! Each chat is `POST /api/llm/chat/` with `Accept: text/event-stream` (the answer is the
//! reply's event stream), read until `done`. Every user first sends one warm-up chat, and
//! the measured chats continue that session, so no `generate_title` job runs meanwhile.
//!
//! 1. Added time-to-first-token: from sending the POST to the first `delta` event, minus the
//!    provider's first-token delay; `--chats` chats one at a time, then `--rounds` chats on
//!    each of `--concurrency` concurrent clients (one user each); p50 and p99.
//! 2. Added inter-token delay: `--streams` concurrent replies of `--tokens` tokens (started
//!    over one provider gap, so their tokens interleave); over every pair of consecutive
//!    `delta` events, the gap the client saw minus the provider's gap; p99. A stream is
//!    complete if it ended with `done`, every token and no restart.

use crate::backend::{self, Deployment};
use crate::cli::{Common, Flags};
use crate::client::{ADMIN_EMAIL, Client, success};
use crate::load::percentile;
use crate::provider::{FakeProvider, Pace};
use crate::server;
use crate::sse::EventReader;
use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use reqwest::Method;
use reqwest::header::ACCEPT;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

#[derive(Debug)]
pub struct Options {
    backend: backend::Options,
    pace: Pace,
    chats: usize,
    concurrency: usize,
    rounds: usize,
    ttft_tokens: usize,
    streams: usize,
    tokens: usize,
}

impl Options {
    pub fn from_flags(flags: &mut Flags) -> anyhow::Result<Self> {
        let first_token_ms: u64 = flags.take("first-token-ms", "PARLEY_BENCH_FIRST_TOKEN_MS", 200)?;
        let rate: f64 = flags.take("tokens-per-s", "PARLEY_BENCH_TOKENS_PER_S", 20.0)?;
        if !(rate.is_finite() && rate > 0.0) {
            bail!("--tokens-per-s must be a positive number");
        }
        let tokens = flags.take_count("tokens", "PARLEY_BENCH_TOKENS", 40)?;
        Ok(Self {
            backend: backend::Options::from_flags(flags)?,
            pace: Pace { first_token: Duration::from_millis(first_token_ms), rate, default_tokens: tokens },
            chats: flags.take_count("chats", "PARLEY_BENCH_CHATS", 50)?,
            concurrency: flags.take_count("concurrency", "PARLEY_BENCH_CONCURRENCY", 50)?,
            rounds: flags.take_count("rounds", "PARLEY_BENCH_ROUNDS", 4)?,
            ttft_tokens: flags.take_count("ttft-tokens", "PARLEY_BENCH_TTFT_TOKENS", 10)?,
            streams: flags.take_count("streams", "PARLEY_BENCH_STREAMS", 200)?,
            tokens,
        })
    }
}

/// A benchmark user with the session its chats continue.
struct User {
    token: String,
    session: String,
}

/// What a client saw of one reply.
struct Trace {
    /// The `mark=` of its message (the fake provider's name for the reply).
    mark: String,
    sent: Instant,
    deltas: Vec<Instant>,
    restarted: bool,
}

pub async fn run(common: &Common, options: &Options) -> anyhow::Result<()> {
    let binary = server::locate_binary(common.server.clone())?;
    let provider = FakeProvider::start(options.pace).await?;
    let backend = options.backend.backend.as_str();
    eprintln!("starting {} ({backend} backend)", binary.display());
    // Every stream at once in one worker, with room to spare.
    let concurrency = (options.streams.max(options.concurrency) + 64).to_string();
    let mut deployment =
        Deployment::start(&binary, &options.backend, &[("PARLEY_WORKER_CONCURRENCY", &concurrency)]).await?;
    let result = measure(&mut deployment, &provider, options).await;
    if result.is_err()
        && let Err(dead) = deployment.server.check_running()
    {
        eprintln!("{dead:#}");
    }
    let stopped = deployment.stop().await;
    result?;
    stopped?;
    eprintln!("(the fake provider answered {} requests)", provider.requests());
    Ok(())
}

async fn measure(deployment: &mut Deployment, provider: &FakeProvider, options: &Options) -> anyhow::Result<()> {
    let backend = options.backend.backend.as_str();
    let client = Client::new(deployment.server.base_url())?;
    let admin = client.login(ADMIN_EMAIL).await?;
    let config = json!({
        "name": "bench", "provider": "openai_compatible", "model": "m",
        "base_url": provider.base_url(), "is_default": true,
    });
    client.post::<serde_json::Value>("/api/llm/configs/", &admin, &config).await.context("creating the config")?;

    let count = options.streams.max(options.concurrency);
    eprintln!("registering {count} users, each with a warm-up chat");
    let users = setup_users(&client, count).await?;
    client.wait_idle(&admin, Duration::from_secs(120)).await.context("waiting for the warm-up replies and titles")?;
    deployment.server.check_running()?;

    let ttft_concurrency = [(1, options.chats), (options.concurrency, options.rounds)];
    for (clients, rounds) in ttft_concurrency {
        eprintln!("phase: time to first token, {clients} concurrent clients × {rounds} chats");
        provider.take_lateness();
        let traces = run_chats(&client, &users[..clients], rounds, options.ttft_tokens, Duration::ZERO).await?;
        let first_token = ms(options.pace.first_token);
        // Against the provider's own first chunk of that reply (its timer and this busy
        // process make it late by a millisecond or more), and against the nominal delay.
        let (mut added, mut nominal) = (Vec::new(), Vec::new());
        for trace in &traces {
            let Some(first) = trace.deltas.first() else { continue };
            let seen = ms(*first - trace.sent);
            let provider_took = provider.take_first_chunk(&trace.mark).map_or(first_token, ms);
            added.push(seen - provider_took);
            nominal.push(seen - first_token);
        }
        added.sort_by(f64::total_cmp);
        nominal.sort_by(f64::total_cmp);
        if added.is_empty() {
            bail!("no chat got a first token");
        }
        println!(
            "chat backend={backend} concurrency={clients} ttft_added_ms_p50={:.1} ttft_added_ms_p99={:.1} \
             ttft_over_nominal_ms_p50={:.1} ttft_over_nominal_ms_p99={:.1}",
            percentile(&added, 50.0),
            percentile(&added, 99.0),
            percentile(&nominal, 50.0),
            percentile(&nominal, 99.0)
        );
        let late = provider.take_lateness();
        eprintln!("(the fake provider's own lateness: p99 {:.1} ms)", percentile(&late, 99.0));
        client.wait_idle(&admin, Duration::from_secs(60)).await?;
    }

    let streams = options.streams;
    eprintln!("phase: {streams} concurrent streams of {} tokens at {} tokens/s", options.tokens, options.pace.rate);
    provider.take_lateness();
    let traces = run_chats(&client, &users[..streams], 1, options.tokens, options.pace.gap()).await?;
    let gap = ms(options.pace.gap());
    let mut added: Vec<f64> = traces.iter().flat_map(|t| t.deltas.windows(2).map(|w| ms(w[1] - w[0]) - gap)).collect();
    added.sort_by(f64::total_cmp);
    let completed = traces.iter().filter(|t| !t.restarted && t.deltas.len() == options.tokens).count();
    let late = provider.take_lateness();
    eprintln!(
        "(inter-token added: p50 {:.1} ms, max {:.1} ms, over {} gaps; the fake provider's own \
         lateness: p99 {:.1} ms, max {:.1} ms)",
        percentile(&added, 50.0),
        added.last().copied().unwrap_or(f64::NAN),
        added.len(),
        percentile(&late, 99.0),
        late.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "chat backend={backend} streams={streams} tokens_per_s={} intertoken_added_ms_p99={:.1} completed={completed}/{streams}",
        options.pace.rate,
        percentile(&added, 99.0)
    );
    Ok(())
}

/// Registers `count` users, each sending one chat that starts its session.
async fn setup_users(client: &Client, count: usize) -> anyhow::Result<Vec<User>> {
    #[derive(Deserialize)]
    struct Accepted {
        session_id: String,
    }
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    futures::stream::iter(0..count)
        .map(|i| async move {
            let token = client.register(&format!("bench-{nanos}-{i}@example.com")).await?;
            let body = json!({"message": "warm-up tokens=1"});
            let accepted: Accepted = client.post("/api/llm/chat/", &token, &body).await.context("a warm-up chat")?;
            Ok::<_, anyhow::Error>(User { token, session: accepted.session_id })
        })
        .buffered(16)
        .try_collect()
        .await
}

/// Each user in `users` sends `rounds` chats one after another (user `i` starts after
/// `i / users × spread`); returns every successful chat's trace, failures on stderr.
async fn run_chats(
    client: &Client,
    users: &[User],
    rounds: usize,
    tokens: usize,
    spread: Duration,
) -> anyhow::Result<Vec<Trace>> {
    let mut tasks = JoinSet::new();
    let start = tokio::time::Instant::now();
    for (i, user) in users.iter().enumerate() {
        let client = client.clone();
        let (token, session): (Arc<str>, Arc<str>) = (user.token.as_str().into(), user.session.as_str().into());
        let delay = spread.mul_f64(i as f64 / users.len() as f64);
        tasks.spawn(async move {
            tokio::time::sleep_until(start + delay).await;
            let mut results = Vec::with_capacity(rounds);
            for _ in 0..rounds {
                results.push(chat(&client, &token, &session, tokens).await);
            }
            results
        });
    }
    let (mut traces, mut failed, mut first_error) = (Vec::new(), 0, None);
    while let Some(results) = tasks.join_next().await {
        for result in results? {
            match result {
                Ok(trace) => traces.push(trace),
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert_with(|| format!("{e:#}"));
                }
            }
        }
    }
    if let Some(e) = first_error {
        eprintln!("warning: {failed} of {} chats failed; first: {e}", users.len() * rounds);
    }
    Ok(traces)
}

/// One chat, read from its POST until `done`.
async fn chat(client: &Client, token: &str, session: &str, tokens: usize) -> anyhow::Result<Trace> {
    static MARKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mark = MARKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed).to_string();
    let body = json!({"message": format!("bench tokens={tokens} mark={mark}"), "session_id": session});
    let sent = Instant::now();
    let response = client
        .request(Method::POST, "/api/llm/chat/", token)
        .header(ACCEPT, "text/event-stream")
        .json(&body)
        .send()
        .await?;
    let headers = sent.elapsed();
    let mut events = EventReader::new(success(response).await?);
    let mut trace = Trace { mark, sent, deltas: Vec::with_capacity(tokens), restarted: false };
    let mut running = None;
    while let Some(event) = events.next().await? {
        match event.event.as_str() {
            "delta" => {
                if trace.deltas.is_empty() && std::env::var_os("PARLEY_BENCH_TRACE").is_some() {
                    let running = running.map_or(0.0, |r: Instant| ms(r - sent));
                    eprintln!("trace headers {:.2} running {running:.2} first {:.2}", ms(headers), ms(event.at - sent));
                }
                trace.deltas.push(event.at);
            }
            "status" if running.is_none() && event.data.contains("running") => running = Some(event.at),
            // The client drops what it has of a failed attempt.
            "status" if event.data.contains("restarted") => {
                trace.restarted = true;
                trace.deltas.clear();
            }
            "done" => return Ok(trace),
            "error" => bail!("the reply failed: {}", event.data),
            _ => {}
        }
    }
    bail!("the reply's stream ended without `done`")
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
