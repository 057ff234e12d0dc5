//! The `accounts` scenario: how close sign-in gets to the machine's argon2 limit, and what
//! sign-in load costs cheap authenticated reads.
//!
//! 1. One argon2id hash with the default (OWASP) parameters, timed in-process (median, after
//!    a warm-up); the limit is cores / hash time sign-ins per second. The rate of `cores`
//!    hashes at once is shown too: cores that share caches or memory bandwidth reach less.
//! 2. Sign-ins from many clients, alone: rate and share of that limit.
//! 3. `GET /api/users/me/` while sign-ins saturate the hashers: rate, p50, p99.
//! 4. `GET /api/users/me/` alone against `GET /healthz` alone (a bare handler), same clients.

use crate::cli::{Common, Flags};
use crate::client::{PASSWORD, success};
use crate::load::{self, Outcome, Request};
use crate::server::{self, Server};
use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use parley_shared::auth::PasswordHasher;
use parley_shared::config::Argon2Params;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long argon2 is warmed up, and how long its parallel rate is measured.
const HASH_WARM_UP: Duration = Duration::from_secs(1);

/// A rate that never limits the benchmark.
const UNLIMITED_PER_MINUTE: &str = "1000000";

/// Settings of the `accounts` scenario.
#[derive(Debug)]
pub struct Options {
    users: usize,
    login_clients: usize,
    read_clients: usize,
    hash_samples: usize,
}

impl Options {
    pub fn from_flags(flags: &mut Flags) -> anyhow::Result<Self> {
        Ok(Self {
            users: flags.take_count("users", "PARLEY_BENCH_USERS", 50)?,
            login_clients: flags.take_count("login-clients", "PARLEY_BENCH_LOGIN_CLIENTS", 2 * cores())?,
            read_clients: flags.take_count("read-clients", "PARLEY_BENCH_READ_CLIENTS", 16)?,
            hash_samples: flags.take_count("hash-samples", "PARLEY_BENCH_HASH_SAMPLES", 10)?,
        })
    }
}

pub async fn run(common: &Common, options: &Options) -> anyhow::Result<()> {
    let binary = server::locate_binary(common.server.clone())?;
    let cores = cores();

    let limit = measure_argon2(cores, options.hash_samples).await?;

    eprintln!("starting {} ({cores} cores)", binary.display());
    let server = Server::start(
        &binary,
        &[
            ("PARLEY_LOGIN_IP_PER_MINUTE", UNLIMITED_PER_MINUTE),
            ("PARLEY_LOGIN_ACCOUNT_PER_MINUTE", UNLIMITED_PER_MINUTE),
            // Outlives any phase, so the tokens from registration stay valid.
            ("PARLEY_ACCESS_TOKEN_TTL_SECS", "86400"),
            ("PARLEY_SECRET_KEY", "parley-bench-secret-key-for-this-run-only"),
        ],
    )
    .await?;
    let api = Api::new(server.base_url())?;
    eprintln!("registering {} users", options.users);
    let accounts = Arc::new(register_users(&api, options.users, cores).await?);
    let phase = common.phase;

    eprintln!("phase: sign-ins alone, {} clients, {phase:?}", options.login_clients);
    let logins = load::run(options.login_clients, phase, sign_in(&api, &accounts)).await?;
    logins.check("sign-in")?;
    let pct = 100.0 * logins.per_sec() / limit;
    println!("accounts login_per_s={:.1} login_pct_of_argon2_limit={pct:.0}", logins.per_sec());

    eprintln!("phase: /me under sign-ins, {} + {} clients, {phase:?}", options.read_clients, options.login_clients);
    let (logins, reads) = tokio::join!(
        load::run(options.login_clients, phase, sign_in(&api, &accounts)),
        load::run(options.read_clients, phase, read_me(&api, &accounts)),
    );
    let (logins, reads) = (logins?, reads?);
    logins.check("sign-in under /me")?;
    reads.check("/me under sign-in")?;
    eprintln!("(sign-ins during that phase: {:.1}/s)", logins.per_sec());
    println!(
        "accounts me_per_s_under_login={:.1} me_p50_ms={:.2} me_p99_ms={:.2}",
        reads.per_sec(),
        reads.percentile_ms(50.0),
        reads.percentile_ms(99.0)
    );

    eprintln!("phase: /me alone, then /healthz alone, {} clients, {phase:?} each", options.read_clients);
    let reads = load::run(options.read_clients, phase, read_me(&api, &accounts)).await?;
    reads.check("/me")?;
    let bare = load::run(options.read_clients, phase, health(&api)).await?;
    bare.check("/healthz")?;
    print_read_comparison(&reads, &bare);

    server.stop().await
}

fn print_read_comparison(me: &Outcome, bare: &Outcome) {
    let pct = 100.0 * me.per_sec() / bare.per_sec();
    println!("accounts me_per_s={:.1} bare_per_s={:.1} me_pct_of_bare={pct:.0}", me.per_sec(), bare.per_sec());
}

/// Times default-cost argon2id hashes in this process and prints the limit they imply,
/// cores / one hash, with the rate `cores` hashes at once actually reach. Returns the limit.
async fn measure_argon2(cores: usize, samples: usize) -> anyhow::Result<f64> {
    let hasher = PasswordHasher::new(Argon2Params::default(), cores)?;
    // The first hashes of a process are markedly slower (about 9 of them, here), so the
    // steady state that a loaded server sees is measured after a warm-up.
    let warm_up = load::run(1, HASH_WARM_UP, hash_once(&hasher)).await?;
    warm_up.check("argon2 warm-up")?;
    let hash = median_hash_time(&hasher, samples).await?;
    let parallel = load::run(cores, HASH_WARM_UP, hash_once(&hasher)).await?;
    parallel.check("argon2 in parallel")?;
    let limit = cores as f64 / hash.as_secs_f64();
    println!(
        "accounts argon2_hash_ms={:.1} argon2_limit_per_s={limit:.1} argon2_parallel_per_s={:.1}",
        ms(hash),
        parallel.per_sec()
    );
    Ok(limit)
}

/// The median time of one hash, one at a time.
async fn median_hash_time(hasher: &PasswordHasher, samples: usize) -> anyhow::Result<Duration> {
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        hasher.hash(PASSWORD).await?;
        times.push(start.elapsed());
    }
    times.sort_unstable();
    Ok(times[times.len() / 2])
}

fn hash_once(hasher: &PasswordHasher) -> impl Fn(usize, u64) -> Request + Clone + Send + 'static {
    let hasher = hasher.clone();
    move |_, _| {
        let hasher = hasher.clone();
        Box::pin(async move { hasher.hash(PASSWORD).await.map(drop) })
    }
}

/// Registers `count` accounts, a few at a time, and returns them with their access tokens.
async fn register_users(api: &Api, count: usize, concurrency: usize) -> anyhow::Result<Vec<Account>> {
    futures::stream::iter(0..count)
        .map(|i| api.register(format!("bench-{i}@example.com")))
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await
}

/// Client `c` signs in as accounts c, c + 1, ... in turn, so concurrent sign-ins are of
/// different accounts.
fn sign_in(api: &Api, accounts: &Arc<Vec<Account>>) -> impl Fn(usize, u64) -> Request + Clone + Send + 'static {
    let (api, accounts) = (api.clone(), accounts.clone());
    move |client, iteration| {
        let (api, accounts) = (api.clone(), accounts.clone());
        Box::pin(async move {
            let account = &accounts[(client + iteration as usize) % accounts.len()];
            api.login(&account.email).await
        })
    }
}

/// Client `c` reads the profile of account `c` (modulo the number of accounts).
fn read_me(api: &Api, accounts: &Arc<Vec<Account>>) -> impl Fn(usize, u64) -> Request + Clone + Send + 'static {
    let (api, accounts) = (api.clone(), accounts.clone());
    move |client, _| {
        let (api, accounts) = (api.clone(), accounts.clone());
        Box::pin(async move { api.me(&accounts[client % accounts.len()].access_token).await })
    }
}

fn health(api: &Api) -> impl Fn(usize, u64) -> Request + Clone + Send + 'static {
    let api = api.clone();
    move |_, _| {
        let api = api.clone();
        Box::pin(async move { api.healthz().await })
    }
}

/// A registered account.
#[derive(Debug)]
struct Account {
    email: String,
    access_token: String,
}

/// The endpoints the scenario calls, over one pooled keep-alive client.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base_url: Arc<str>,
}

impl Api {
    fn new(base_url: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()
            .context("building the HTTP client")?;
        Ok(Self { http, base_url: base_url.into() })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    async fn register(&self, email: String) -> anyhow::Result<Account> {
        #[derive(Deserialize)]
        struct Registered {
            access_token: String,
        }
        let body = json!({"email": email, "password": PASSWORD});
        let response = self.http.post(self.url("/api/auth/register/")).json(&body).send().await?;
        let registered: Registered =
            success(response).await.with_context(|| format!("registering {email}"))?.json().await?;
        Ok(Account { email, access_token: registered.access_token })
    }

    async fn login(&self, email: &str) -> anyhow::Result<()> {
        let body = json!({"email": email, "password": PASSWORD});
        let response = self.http.post(self.url("/api/auth/login/")).json(&body).send().await?;
        success(response).await?.bytes().await?;
        Ok(())
    }

    async fn me(&self, access_token: &str) -> anyhow::Result<()> {
        let response = self.http.get(self.url("/api/users/me/")).bearer_auth(access_token).send().await?;
        success(response).await?.bytes().await?;
        Ok(())
    }

    async fn healthz(&self) -> anyhow::Result<()> {
        let response = self.http.get(self.url("/healthz")).send().await?;
        success(response).await?.bytes().await?;
        Ok(())
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
