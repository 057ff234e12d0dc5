//! `parley-bench`: load benchmarks of Parley's release `parley-api` binary, started as a
//! child process on a free local port with a throw-away SQLite database.
//!
//! ```sh
//! cargo build --release --bin parley-api && cargo run --release -p parley-bench -- accounts
//! ```
//!
//! Results go to stdout as `<scenario> key=value ...` lines; progress and warnings to stderr.

mod accounts;
mod cli;
mod load;
mod server;

use anyhow::bail;
use cli::{Common, Flags};
use std::process::ExitCode;

const USAGE: &str = "\
usage: parley-bench <scenario> [flags]

scenarios:
  accounts   argon2 limit, sign-in rate, /api/users/me/ under sign-in load, /me against /healthz

flags (each also read from the environment variable shown):
  --secs S               length of each measured phase, seconds [PARLEY_BENCH_SECS, 5]
  --server PATH          parley-api binary [PARLEY_BENCH_SERVER,
                         $CARGO_TARGET_DIR or target/ + release/parley-api]
accounts:
  --users N              accounts registered [PARLEY_BENCH_USERS, 50]
  --login-clients N      concurrent sign-in clients [PARLEY_BENCH_LOGIN_CLIENTS, 2 x cores]
  --read-clients N       concurrent /me and /healthz clients [PARLEY_BENCH_READ_CLIENTS, 16]
  --hash-samples N       argon2 hashes timed for the median [PARLEY_BENCH_HASH_SAMPLES, 10]

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
        other => bail!("unknown scenario {other:?}\n\n{USAGE}"),
    }
}
