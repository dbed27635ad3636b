//! Rate limits of the OAuth and admin endpoints (on by default; `rate_limits` in the config).
//!
//! - A general ceiling per source address, high enough that one healthy client can use the
//!   node's full speed.
//! - A strict budget of failed authentications per source address and per client id. A source
//!   or client that spent it is answered 429 before any credential is checked, until the
//!   budget refills.
//!
//! The rate arithmetic is governor's (GCRA). Memory is bounded by `max_tracked_keys`: past
//! it, keys are first pruned of those whose budget is full again; if that is not enough, new
//! sources share one general budget until old keys are forgotten, and new failures are not
//! counted (holding everyone new at once would let a flood lock every client out). IPv6
//! sources count per /64, the block one subscriber usually holds.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::RateLimitConfig;

/// The key every source shares once the general limiter tracks as many keys as it may.
const OVERFLOW_SOURCE: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

/// The key a source address counts under: itself for IPv4, its /64 for IPv6.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

/// A keyed governor limiter whose key count stays bounded.
struct Bounded<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    max_keys: usize,
    /// The key new traffic shares when full, or `None` to let it through uncounted.
    overflow: Option<K>,
    /// When keys were last pruned: a full limiter prunes at most once a second, so a flood
    /// of new sources costs no scan per request.
    pruned: Mutex<Option<Instant>>,
}

impl<K: Hash + Eq + Clone> Bounded<K> {
    fn new(quota: Quota, max_keys: usize, overflow: Option<K>) -> Self {
        Bounded { limiter: DefaultKeyedRateLimiter::keyed(quota), max_keys, overflow, pruned: Mutex::new(None) }
    }

    /// Takes one cell for `key`; on refusal, how long until one is free.
    fn take(&self, key: &K) -> Result<(), Duration> {
        let key = if self.limiter.len() >= self.max_keys {
            let mut pruned = self.pruned.lock().unwrap_or_else(|p| p.into_inner());
            if pruned.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                self.limiter.retain_recent();
                *pruned = Some(Instant::now());
            }
            if self.limiter.len() >= self.max_keys {
                match &self.overflow {
                    Some(shared) => shared,
                    None => return Ok(()),
                }
            } else {
                key
            }
        } else {
            key
        };
        self.limiter.check_key(key).map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// Sources and clients that spent their failure budget, and until when. Bounded like the
/// limiters: when full, expired entries go first, and failing that the hold that ends
/// soonest makes room. Nobody is ever held for another's failures.
struct Penalties<K: Hash + Eq + Clone> {
    until: Mutex<HashMap<K, Instant>>,
    max_keys: usize,
}

impl<K: Hash + Eq + Clone> Penalties<K> {
    fn new(max_keys: usize) -> Self {
        Penalties { until: Mutex::new(HashMap::new()), max_keys }
    }

    fn hold(&self, key: &K, wait: Duration) {
        let until = Instant::now() + wait;
        let mut map = self.until.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= self.max_keys && !map.contains_key(key) {
            let now = Instant::now();
            map.retain(|_, t| *t > now);
            if map.len() >= self.max_keys {
                let soonest = map.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone());
                if let Some(k) = soonest {
                    map.remove(&k);
                }
            }
        }
        map.insert(key.clone(), until);
    }

    /// How long `key` is still held, if it is.
    fn held(&self, key: &K) -> Option<Duration> {
        let map = self.until.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        map.get(key).copied().filter(|t| *t > now).map(|t| t - now)
    }

    fn forget_expired(&self) {
        let now = Instant::now();
        self.until.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, t| *t > now);
    }
}

/// A refusal: try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Whole seconds for `Retry-After`, at least 1.
    pub fn secs(self) -> u64 {
        self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0)
    }
}

/// The node's rate limits.
pub struct RateLimits {
    enabled: bool,
    per_source: Bounded<IpAddr>,
    failures_by_source: Bounded<IpAddr>,
    failures_by_client: Bounded<String>,
    registrations_by_source: Bounded<IpAddr>,
    email_requests_by_source: Bounded<IpAddr>,
    emails_by_account: Bounded<String>,
    held_sources: Penalties<IpAddr>,
    held_clients: Penalties<String>,
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

impl RateLimits {
    pub fn new(config: &RateLimitConfig) -> RateLimits {
        let max = config.max_tracked_keys;
        let general =
            Quota::per_second(nonzero(config.per_source_per_sec)).allow_burst(nonzero(config.per_source_burst));
        let by_source = Quota::per_minute(nonzero(config.failures_per_source_per_min));
        let by_client = Quota::per_minute(nonzero(config.failures_per_client_per_min));
        let registrations = Quota::per_minute(nonzero(config.registrations_per_source_per_min));
        RateLimits {
            enabled: config.enabled,
            per_source: Bounded::new(general, max, Some(OVERFLOW_SOURCE)),
            failures_by_source: Bounded::new(by_source, max, None),
            failures_by_client: Bounded::new(by_client, max, None),
            registrations_by_source: Bounded::new(registrations, max, Some(OVERFLOW_SOURCE)),
            email_requests_by_source: Bounded::new(
                Quota::per_minute(nonzero(config.email_requests_per_source_per_min)),
                max,
                Some(OVERFLOW_SOURCE),
            ),
            emails_by_account: Bounded::new(
                Quota::per_hour(nonzero(config.emails_per_account_per_hour)),
                max,
                Some(String::new()),
            ),
            held_sources: Penalties::new(max),
            held_clients: Penalties::new(max),
        }
    }

    /// Admits one request from `source`: within the general ceiling and not held for failures.
    pub fn admit(&self, source: IpAddr) -> Result<(), RetryAfter> {
        if !self.enabled {
            return Ok(());
        }
        let source = source_key(source);
        if let Some(wait) = self.held_sources.held(&source) {
            return Err(RetryAfter(wait));
        }
        self.per_source.take(&source).map_err(RetryAfter)
    }

    /// Takes one self-registration from `source`'s budget: every attempt counts, since each
    /// that succeeds is a durable user.
    pub fn admit_registration(&self, source: Option<IpAddr>) -> Result<(), RetryAfter> {
        if !self.enabled {
            return Ok(());
        }
        self.registrations_by_source.take(&source_key(source.unwrap_or(OVERFLOW_SOURCE))).map_err(RetryAfter)
    }

    /// Takes one email request (code, link, reset) from `source`'s budget: each may send a
    /// message, known address or not, so every attempt counts.
    pub fn admit_email_request(&self, source: Option<IpAddr>) -> Result<(), RetryAfter> {
        if !self.enabled {
            return Ok(());
        }
        self.email_requests_by_source.take(&source_key(source.unwrap_or(OVERFLOW_SOURCE))).map_err(RetryAfter)
    }

    /// Takes one message from `account`'s hourly budget (`tenant/email`): whether it may be sent.
    pub fn admit_email_to(&self, account: &str) -> bool {
        !self.enabled || self.emails_by_account.take(&account.to_string()).is_ok()
    }

    /// Whether `client` (`tenant/client_id`) may try to authenticate now.
    pub fn admit_client(&self, client: &str) -> Result<(), RetryAfter> {
        if !self.enabled {
            return Ok(());
        }
        match self.held_clients.held(&client.to_string()) {
            Some(wait) => Err(RetryAfter(wait)),
            None => Ok(()),
        }
    }

    /// Counts a failed authentication against the source and, for a client that exists, the
    /// client; one that spent its budget is held until the budget has a cell again.
    pub fn failed(&self, source: Option<IpAddr>, client: Option<&str>) {
        if !self.enabled {
            return;
        }
        if let Some(source) = source.map(source_key) {
            if let Err(wait) = self.failures_by_source.take(&source) {
                self.held_sources.hold(&source, wait);
            }
        }
        if let Some(client) = client {
            let client = client.to_string();
            if let Err(wait) = self.failures_by_client.take(&client) {
                self.held_clients.hold(&client, wait);
            }
        }
    }

    /// Forgets keys whose budgets are full again (run now and then, so memory returns).
    pub fn forget_idle(&self) {
        self.per_source.forget_idle();
        self.failures_by_source.forget_idle();
        self.failures_by_client.forget_idle();
        self.registrations_by_source.forget_idle();
        self.email_requests_by_source.forget_idle();
        self.emails_by_account.forget_idle();
        self.held_sources.forget_expired();
        self.held_clients.forget_expired();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RateLimitConfig {
        RateLimitConfig {
            failures_per_source_per_min: 3,
            failures_per_client_per_min: 2,
            max_tracked_keys: 16,
            ..RateLimitConfig::default()
        }
    }

    #[test]
    fn a_source_that_spends_its_failure_budget_is_held_and_others_are_not() {
        let limits = RateLimits::new(&config());
        let bad: IpAddr = "192.0.2.1".parse().unwrap();
        let good: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..4 {
            assert!(limits.admit(bad).is_ok());
            limits.failed(Some(bad), None);
        }
        let wait = limits.admit(bad).expect_err("held after its budget");
        assert!(wait.secs() >= 1 && wait.secs() <= 60, "{wait:?}");
        assert!(limits.admit(good).is_ok(), "another source is not held");
    }

    #[test]
    fn a_client_id_that_spends_its_failure_budget_is_held_from_every_source() {
        let limits = RateLimits::new(&config());
        for i in 0..3u8 {
            limits.failed(Some(IpAddr::from([192, 0, 2, i])), Some("acme/c-1"));
        }
        assert!(limits.admit_client("acme/c-1").is_err());
        assert!(limits.admit_client("acme/c-2").is_ok());
    }

    #[test]
    fn the_limiter_tracks_no_more_keys_than_configured() {
        let limits = RateLimits::new(&config());
        for i in 0..10_000u32 {
            let source = IpAddr::from(i.to_be_bytes());
            let _ = limits.admit(source);
            limits.failed(Some(source), Some(&format!("t/c-{i}")));
        }
        assert!(limits.per_source.limiter.len() <= 17);
        assert!(limits.failures_by_source.limiter.len() <= 17);
        assert!(limits.failures_by_client.limiter.len() <= 17);
        assert!(limits.held_sources.until.lock().unwrap().len() <= 17);
    }

    #[test]
    fn a_full_limiter_holds_nobody_for_others_failures() {
        let limits = RateLimits::new(&config());
        for i in 0..10_000u32 {
            let source = IpAddr::from(i.to_be_bytes());
            for _ in 0..5 {
                limits.failed(Some(source), None);
            }
        }
        assert!(limits.admit("198.51.100.1".parse().unwrap()).is_ok(), "a new source is not held");
    }

    #[test]
    fn ipv6_sources_count_per_64() {
        let limits = RateLimits::new(&config());
        for i in 0..4u16 {
            limits.failed(Some(IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, i])), None);
        }
        assert!(limits.admit(IpAddr::from([0x2001, 0xdb8, 0, 1, 9, 9, 9, 9])).is_err(), "the same /64");
        assert!(limits.admit(IpAddr::from([0x2001, 0xdb8, 0, 2, 0, 0, 0, 1])).is_ok(), "another /64");
    }

    #[test]
    fn turned_off_nothing_is_limited() {
        let limits = RateLimits::new(&RateLimitConfig { enabled: false, ..config() });
        let source: IpAddr = "192.0.2.9".parse().unwrap();
        for _ in 0..100 {
            limits.failed(Some(source), Some("t/c"));
        }
        assert!(limits.admit(source).is_ok() && limits.admit_client("t/c").is_ok());
    }
}
