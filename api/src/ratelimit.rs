//! Login throttling per client address and per account (governor's GCRA limiters). Quotas
//! refill continuously, so a throttled user waits seconds, not a lock-out period.
//!
//! The per-account quota counts the attempts on an account from one address; a ceiling ten
//! times higher counts them from every address. So someone guessing from one address cannot
//! keep the real user, signing in from another, out of the account.

use crate::error::ApiError;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;

pub struct LoginLimiter {
    by_ip: DefaultKeyedRateLimiter<IpAddr>,
    by_account: DefaultKeyedRateLimiter<(String, IpAddr)>,
    by_account_anywhere: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl std::fmt::Debug for LoginLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoginLimiter")
    }
}

impl LoginLimiter {
    pub fn new(ip_per_minute: u32, account_per_minute: u32) -> Self {
        let quota = |n: u32| Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN));
        Self {
            by_ip: RateLimiter::keyed(quota(ip_per_minute)),
            by_account: RateLimiter::keyed(quota(account_per_minute)),
            by_account_anywhere: RateLimiter::keyed(quota(account_per_minute.saturating_mul(10))),
            clock: DefaultClock::default(),
        }
    }

    /// Counts one sign-in attempt from `ip` on `account` (a normalized email); `Err` with the
    /// wait when either has used its quota.
    pub fn check(&self, ip: IpAddr, account: &str) -> Result<(), ApiError> {
        let ip = client_key(ip);
        let wait = |not_until: governor::NotUntil<_>| ApiError::RateLimited {
            retry_after_secs: not_until.wait_time_from(self.clock.now()).as_secs_f64().ceil() as u64,
        };
        self.by_ip.check_key(&ip).map_err(wait)?;
        self.by_account.check_key(&(account.to_owned(), ip)).map_err(wait)?;
        self.by_account_anywhere.check_key(&account.to_owned()).map_err(wait)?;
        Ok(())
    }

    /// Counts one costly unauthenticated request (a password hash) from `ip`.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), ApiError> {
        let ip = client_key(ip);
        self.by_ip.check_key(&ip).map_err(|not_until| ApiError::RateLimited {
            retry_after_secs: not_until.wait_time_from(self.clock.now()).as_secs_f64().ceil() as u64,
        })
    }

    /// Forgets keys whose quota is full again (called periodically to bound memory).
    pub fn sweep(&self) {
        self.by_ip.retain_recent();
        self.by_account.retain_recent();
        self.by_account_anywhere.retain_recent();
    }
}

/// Requests per minute per personal API key (`PARLEY_API_KEY_RPM`), with governor's GCRA:
/// a full minute's quota may come at once, then requests are let through as it refills.
pub struct ApiKeyLimiter {
    by_key: DefaultKeyedRateLimiter<parley_shared::ids::ApiKeyId>,
    clock: DefaultClock,
}

impl std::fmt::Debug for ApiKeyLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKeyLimiter")
    }
}

impl ApiKeyLimiter {
    pub fn new(per_minute: u32) -> Self {
        let quota = Quota::per_minute(NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN));
        Self { by_key: RateLimiter::keyed(quota), clock: DefaultClock::default() }
    }

    /// Counts one request with `key`; `Err` with the seconds to wait when its quota is used.
    pub fn check(&self, key: parley_shared::ids::ApiKeyId) -> Result<(), u64> {
        self.by_key
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()).as_secs_f64().ceil().max(1.0) as u64)
    }

    /// Forgets keys whose quota is full again.
    pub fn sweep(&self) {
        self.by_key.retain_recent();
    }
}

/// The key of a client address: IPv4 as it is, IPv6 by its /64 (one host or site usually
/// holds a whole /64, and could otherwise take fresh quotas by changing address).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_api_key_has_its_own_quota() {
        let limiter = ApiKeyLimiter::new(2);
        let (a, b) = (parley_shared::ids::ApiKeyId::new(), parley_shared::ids::ApiKeyId::new());
        assert!(limiter.check(a).is_ok() && limiter.check(a).is_ok());
        let wait = limiter.check(a).unwrap_err();
        assert!((1..=30).contains(&wait), "{wait}");
        assert!(limiter.check(b).is_ok());
    }

    #[test]
    fn ipv6_clients_share_the_quota_of_their_64() {
        let limiter = LoginLimiter::new(2, 100);
        for ip in ["2001:db8:1:2::1", "2001:db8:1:2:ffff::9"] {
            assert!(limiter.check_ip(ip.parse().unwrap()).is_ok());
        }
        assert!(limiter.check_ip("2001:db8:1:2:abcd::1".parse().unwrap()).is_err());
        assert!(limiter.check_ip("2001:db8:1:3::1".parse().unwrap()).is_ok());
        assert_eq!(client_key("::ffff:192.0.2.1".parse().unwrap()), "192.0.2.1".parse::<IpAddr>().unwrap());
    }
}
