//! Argon2id password hashing, off the async threads and behind a semaphore so a burst of
//! logins cannot starve request handling or exhaust memory.

use crate::config::Argon2Params;
use argon2::password_hash::{SaltString, rand_core::OsRng};
use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordVerifier, Version};
use std::sync::Arc;
use tokio::sync::Semaphore;
use tracing::Instrument;

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verification {
    pub valid: bool,
    /// The hash used other parameters than the current ones; store a new one.
    pub needs_rehash: bool,
}

/// Hashes and verifies passwords with a bounded number of concurrent hashes.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    permits: Arc<Semaphore>,
    /// A hash of a random password: verified against when the account does not exist, so an
    /// unknown email costs the same time as a wrong password.
    dummy_hash: Arc<str>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher").field("params", &self.params).finish_non_exhaustive()
    }
}

impl PasswordHasher {
    pub fn new(params: Argon2Params, concurrency: usize) -> anyhow::Result<Self> {
        let params = Params::new(params.memory_kib, params.iterations, params.parallelism, None)
            .map_err(|e| anyhow::anyhow!("invalid argon2 parameters: {e}"))?;
        let dummy_hash = hash_blocking(&params, &crate::auth::random_token())?;
        Ok(Self { params, permits: Arc::new(Semaphore::new(concurrency.max(1))), dummy_hash: dummy_hash.into() })
    }

    /// A new PHC-format hash of `password`.
    pub async fn hash(&self, password: &str) -> anyhow::Result<String> {
        let params = self.params.clone();
        let password = password.to_owned();
        self.run(move || hash_blocking(&params, &password)).await?
    }

    /// Verifies `password` against `hash` (whatever parameters it was made with).
    pub async fn verify(&self, password: &str, hash: &str) -> anyhow::Result<Verification> {
        // An account made through an identity provider has no password: it spends a
        // verification's time like any other, and never matches.
        let no_password = hash.is_empty();
        let hash = if no_password { self.dummy_hash.to_string() } else { hash.to_owned() };
        let params = self.params.clone();
        let password = password.to_owned();
        let verification = self.run(move || verify_blocking(&params, &password, &hash)).await??;
        Ok(if no_password { Verification { valid: false, needs_rehash: false } } else { verification })
    }

    /// Spends the time of one verification, for a look-up that found no account.
    pub async fn verify_dummy(&self, password: &str) {
        let hash = self.dummy_hash.clone();
        let _ = self.verify(password, &hash).await;
    }

    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
        let _permit = self.permits.acquire().await?;
        let span = tracing::Span::current();
        Ok(tokio::task::spawn_blocking(move || span.in_scope(f)).in_current_span().await?)
    }
}

fn argon(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

fn hash_blocking(params: &Params, password: &str) -> anyhow::Result<String> {
    use argon2::PasswordHasher as _;
    let salt = SaltString::generate(&mut OsRng);
    argon(params)
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
}

fn verify_blocking(params: &Params, password: &str, hash: &str) -> anyhow::Result<Verification> {
    let parsed = PasswordHash::new(hash).map_err(|e| anyhow::anyhow!("stored hash is malformed: {e}"))?;
    // Verification uses the algorithm and parameters recorded in the hash itself.
    let valid = argon(params).verify_password(password.as_bytes(), &parsed).is_ok();
    let current = parsed.algorithm.as_str() == "argon2id"
        && Params::try_from(&parsed).is_ok_and(|p| {
            p.m_cost() == params.m_cost() && p.t_cost() == params.t_cost() && p.p_cost() == params.p_cost()
        });
    Ok(Verification { valid, needs_rehash: valid && !current })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Argon2Params {
        Argon2Params { memory_kib: 1024, iterations: 1, parallelism: 1 }
    }

    #[tokio::test]
    async fn hashes_with_owasp_parameters_by_default() {
        let hasher = PasswordHasher::new(Argon2Params::default(), 1).unwrap();
        let hash = hasher.hash("a long passphrase").await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        let v = hasher.verify("a long passphrase", &hash).await.unwrap();
        assert_eq!(v, Verification { valid: true, needs_rehash: false });
        assert!(!hasher.verify("a wrong passphrase", &hash).await.unwrap().valid);
    }

    /// On a single-threaded runtime: if hashing ran on the async thread, the ticker below
    /// could not tick while it runs, and more than `concurrency` hashes would overlap.
    #[tokio::test(flavor = "current_thread")]
    async fn hashes_run_off_the_async_thread_at_most_concurrency_at_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let hasher = PasswordHasher::new(cheap(), 2).unwrap();
        let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let ticks = Arc::new(AtomicUsize::new(0));
        let ticker = {
            let ticks = ticks.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    ticks.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        let work = (0..6).map(|_| {
            let (now, peak) = (now.clone(), peak.clone());
            let hasher = hasher.clone();
            async move {
                hasher
                    .run(move || {
                        let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(running, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(40));
                        now.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
                    .unwrap();
            }
        });
        futures::future::join_all(work).await;
        ticker.abort();
        // Never more than the permits (two at once when the threads overlap, as they do
        // unless the machine is very busy).
        assert!((1..=2).contains(&peak.load(Ordering::SeqCst)), "{}", peak.load(Ordering::SeqCst));
        assert!(ticks.load(Ordering::SeqCst) >= 5, "the runtime was blocked: {} ticks", ticks.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_hash_with_other_parameters_verifies_and_asks_for_a_rehash() {
        let old = PasswordHasher::new(cheap(), 1).unwrap();
        let hash = old.hash("a long passphrase").await.unwrap();
        let current = PasswordHasher::new(Argon2Params::default(), 1).unwrap();
        let v = current.verify("a long passphrase", &hash).await.unwrap();
        assert_eq!(v, Verification { valid: true, needs_rehash: true });
        let wrong = current.verify("nope nope nope", &hash).await.unwrap();
        assert_eq!(wrong, Verification { valid: false, needs_rehash: false });
    }
}
