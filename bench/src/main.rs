//! `parley-bench`: load benchmarks of Parley's release `parley-api` binary, started as a
//! child process on a free local port with a throw-away SQLite database (or, for
//! `--backend redis`, a fresh PostgreSQL database, a Redis queue and a worker process).
//!
//! ```sh
//! cargo build --release --bin parley-api && cargo run --release -p parley-bench -- accounts
//! cargo run --release -p parley-bench -- queue --backend sqlite
//! cargo run --release -p parley-bench -- chat --backend redis
//! ```
//!
//! Results go to stdout as `<scenario> key=value ...` lines; progress and warnings to stderr.

mod accounts;
mod backend;
mod chat;
mod cli;
mod client;
mod load;
mod provider;
mod queue;
mod server;
mod sse;
mod stats;

use anyhow::bail;
use cli::{Common, Flags};
use std::process::ExitCode;

const USAGE: &str = "\
usage: parley-bench <scenario> [flags]

scenarios:
  accounts   argon2 limit, sign-in rate, /api/users/me/ under sign-in load, /me against /healthz
  queue      no-op jobs: enqueue rate, end-to-end rate, POST-to-`done` round trip
  chat       against a fake provider: added time to first token, added inter-token delay
  stats      GET /api/admin/stats/ over a million messages written straight into the database

flags (each also read from the environment variable shown):
  --secs S               length of each measured phase, seconds [PARLEY_BENCH_SECS, 5]
  --server PATH          parley-api binary [PARLEY_BENCH_SERVER,
                         $CARGO_TARGET_DIR or target/ + release/parley-api]
accounts:
  --users N              accounts registered [PARLEY_BENCH_USERS, 50]
  --login-clients N      concurrent sign-in clients [PARLEY_BENCH_LOGIN_CLIENTS, 2 x cores]
  --read-clients N       concurrent /me and /healthz clients [PARLEY_BENCH_READ_CLIENTS, 16]
  --hash-samples N       argon2 hashes timed for the median [PARLEY_BENCH_HASH_SAMPLES, 10]
queue, chat and stats:
  --backend B            sqlite (one process) or redis (PostgreSQL + Redis + one worker
                         process) [PARLEY_BENCH_BACKEND, required]
  --database-url URL     PostgreSQL server where a fresh database is created (redis)
                         [PARLEY_BENCH_DATABASE_URL, postgres://postgres@127.0.0.1:5432/test?sslmode=disable]
  --queue-url URL        Redis (redis) [PARLEY_BENCH_QUEUE_URL, redis://127.0.0.1:6379]
queue:
  --jobs N               no-op jobs enqueued [PARLEY_BENCH_JOBS, 2000]
  --clients N            concurrent enqueuing clients [PARLEY_BENCH_CLIENTS, 32]
  --roundtrips N         sequential round trips timed [PARLEY_BENCH_ROUNDTRIPS, 200]
  --worker-concurrency N PARLEY_WORKER_CONCURRENCY of the server [PARLEY_BENCH_WORKER_CONCURRENCY, 64]
chat:
  --first-token-ms MS    the fake provider's first-token delay [PARLEY_BENCH_FIRST_TOKEN_MS, 200]
  --tokens-per-s R       its token rate [PARLEY_BENCH_TOKENS_PER_S, 20]
  --chats N              chats one at a time for the first-token delay [PARLEY_BENCH_CHATS, 50]
  --concurrency N        concurrent clients (one user each) for it [PARLEY_BENCH_CONCURRENCY, 50]
  --rounds N             chats per concurrent client [PARLEY_BENCH_ROUNDS, 4]
  --ttft-tokens N        tokens per reply in those phases [PARLEY_BENCH_TTFT_TOKENS, 10]
  --streams N            concurrent replies for the inter-token delay [PARLEY_BENCH_STREAMS, 200]
  --tokens N             tokens per reply in that phase [PARLEY_BENCH_TOKENS, 40]
stats:
  --messages N           messages written, over 30 days [PARLEY_BENCH_MESSAGES, 1000000]
  --users N              accounts they belong to [PARLEY_BENCH_USERS, 1000]
  --requests N           sequential requests timed per range [PARLEY_BENCH_REQUESTS, 20]

Build the server first: cargo build --release --bin parley-api
";

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().is_none_or(|a| matches!(a.as_str(), "-h" | "--help" | "help")) {
        print!("{USAGE}");
        return Ok(());
    }
    let scenario = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    if rest.iter().any(|a| a == "-h" || a == "--help") {
        print!("{USAGE}");
        return Ok(());
    }
    let mut flags = Flags::parse(rest)?;
    let common = Common::from_flags(&mut flags)?;
    match scenario.as_str() {
        "accounts" => {
            let options = accounts::Options::from_flags(&mut flags)?;
            flags.finish()?;
            accounts::run(&common, &options).await
        }
        "queue" => {
            let options = queue::Options::from_flags(&mut flags)?;
            flags.finish()?;
            queue::run(&common, &options).await
        }
        "chat" => {
            let options = chat::Options::from_flags(&mut flags)?;
            flags.finish()?;
            chat::run(&common, &options).await
        }
        "stats" => {
            let options = stats::Options::from_flags(&mut flags)?;
            flags.finish()?;
            stats::run(&common, &options).await
        }
        other => bail!("unknown scenario {other:?}\n\n{USAGE}"),
    }
}
