//! Account lockout (S40): failed sign-ins are counted per account in raft state, so every node
//! holds an account once it reaches the limit, and the count survives a restart.
//!
//! A wrong password costs no raft write of its own: failures are tallied here and written for
//! every account at once, at most every `lockout_flush_ms` (at once when an account reaches
//! its limit). A node admits an attempt only while those it has in flight, tallied and being
//! written stay under its share of what the stored count leaves, that remainder divided by the
//! number of voters (rounded up), and writes its tally as soon as the share is spent. On one node
//! parallel attempts never pass the limit; a burst spread over a cluster can pass it by at most
//! `(voters - 1) × ceil(limit / voters)`, since a node's share counts only what is written.
//! An attempt that finds the share spent while the count is still under the limit waits (up to
//! `limit` of them per account, each a few flush windows at most) for the tally to land and is
//! admitted again, so a burst always reaches the hold instead of ending on early refusals.
//! Memory is bounded by `max_tracked_keys` accounts with attempts in flight or tallied; past
//! that, new accounts get 503 until the next write empties the tally.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse_storage::model::LockoutPolicy;
use gatehouse_storage::{Command, LoginFailures, Proposal, Store, StoreError};

use crate::app::limits::RetryAfter;
use crate::app::AppState;
use crate::config::RateLimitConfig;

/// Accounts per raft entry at most.
const ACCOUNTS_PER_COMMAND: usize = 1024;
/// What to wait when only attempts still in flight fill the budget: they end within an
/// argon2 verify.
const IN_FLIGHT_RETRY: Duration = Duration::from_secs(1);
/// How often a waiting attempt looks at the store again for other nodes' writes.
const RECHECK: Duration = Duration::from_millis(100);

/// An account: its tenant and the SHA-256 of its normalized name.
type Account = (String, String);

#[derive(Debug, Default, Clone, Copy)]
struct Slot {
    in_flight: u32,
    tallied: u32,
    being_written: u32,
    /// Attempts waiting for the share to free (see [`Lockout::admit_waiting`]).
    waiting: u32,
    last_ms: i64,
}

impl Slot {
    fn pending(&self) -> u32 {
        self.in_flight + self.tallied + self.being_written
    }

    fn idle(&self) -> bool {
        self.pending() == 0 && self.waiting == 0
    }
}

/// Why an attempt is not admitted.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("the account is held; retry after {} s", .0.secs())]
    Held(RetryAfter),
    /// This node's share is spent (or checks are in flight) while the count is under the limit:
    /// the next write frees it.
    #[error("this node's share of the account's budget is in use")]
    ShareInUse,
    #[error("too many accounts are being counted at once")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Lockout {
    enabled: bool,
    policy: LockoutPolicy,
    flush_every: Duration,
    max_accounts: usize,
    slots: Mutex<HashMap<Account, Slot>>,
    due: tokio::sync::Notify,
    /// Signalled whenever an attempt ends or a tally lands, for attempts waiting on a share.
    changed: tokio::sync::Notify,
}

/// The SHA-256 an account name is counted under.
pub fn account_digest(name: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, name.as_bytes()))
}

impl Lockout {
    pub fn new(config: &RateLimitConfig) -> Lockout {
        let secs = |s: u64| i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX);
        Lockout {
            enabled: config.enabled,
            policy: LockoutPolicy {
                limit: config.lockout_after_failures,
                window_ms: secs(config.lockout_window_secs),
                first_hold_ms: secs(config.lockout_first_hold_secs),
                max_hold_ms: secs(config.lockout_max_hold_secs),
                forget_after_ms: secs(config.lockout_forget_after_secs),
            },
            flush_every: Duration::from_millis(config.lockout_flush_ms),
            max_accounts: config.max_tracked_keys,
            slots: Mutex::new(HashMap::new()),
            due: tokio::sync::Notify::new(),
            changed: tokio::sync::Notify::new(),
        }
    }

    pub fn policy(&self) -> LockoutPolicy {
        self.policy
    }

    /// Admits one password check for `account_sha256` of `tenant`, or says how long to wait.
    /// While only this node's share stands in the way, waits (a bounded time, a bounded number
    /// of waiters per account) for it to free, so a burst is counted up to the limit.
    pub async fn admit_waiting(
        &self,
        store: &Store,
        tenant: &str,
        account_sha256: &str,
        clock: &(dyn Fn() -> i64 + Sync),
        voters: &(dyn Fn() -> usize + Sync),
    ) -> Result<Attempt<'_>, Refusal> {
        let deadline = tokio::time::Instant::now() + 2 * (IN_FLIGHT_RETRY + self.flush_every);
        let mut waiter = Waiter { lockout: self, key: None };
        loop {
            // Registered before the check, so a change between the two is not missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.admit(store, tenant, account_sha256, clock(), voters()) {
                Err(Refusal::ShareInUse) if tokio::time::Instant::now() < deadline => {}
                Err(Refusal::ShareInUse) => return Err(Refusal::Held(RetryAfter(IN_FLIGHT_RETRY))),
                other => return other,
            }
            if waiter.key.is_none() && !waiter.join(tenant, account_sha256) {
                return Err(Refusal::Held(RetryAfter(IN_FLIGHT_RETRY)));
            }
            // Other nodes' writes land without a local signal: look again now and then.
            let _ = tokio::time::timeout_at(deadline.min(tokio::time::Instant::now() + RECHECK), changed).await;
        }
    }

    /// Admits one password check at once, or says why not.
    pub fn admit(
        &self,
        store: &Store,
        tenant: &str,
        account_sha256: &str,
        now_ms: i64,
        voters: usize,
    ) -> Result<Attempt<'_>, Refusal> {
        let key = (tenant.to_string(), account_sha256.to_string());
        if !self.enabled {
            return Ok(Attempt { lockout: self, key, stored: 0, share: u32::MAX, had_record: false, done: true });
        }
        // The read and the slot are taken under one lock, so a write that lands in between
        // cannot be missed by both.
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let record = store.read()?.lockout(tenant, account_sha256)?;
        if let Some(r) = record.as_ref().filter(|r| r.held_until_ms > now_ms) {
            let wait = Duration::from_millis(u64::try_from(r.held_until_ms - now_ms).unwrap_or(0));
            return Err(Refusal::Held(RetryAfter(wait)));
        }
        let stored = record.as_ref().map_or(0, |r| r.failures_at(now_ms, &self.policy));
        if !slots.contains_key(&key) && slots.len() >= self.max_accounts {
            self.due.notify_one();
            return Err(Refusal::Busy);
        }
        let slot = slots.entry(key.clone()).or_default();
        let left = self.policy.limit.saturating_sub(stored);
        let voters = u32::try_from(voters.max(1)).unwrap_or(u32::MAX);
        let share = left.div_ceil(voters);
        if slot.pending() >= share {
            // Only this node's share spent, or attempts still in flight: the next write (within
            // a flush window) frees it. Otherwise the limit is reached and the hold is coming.
            let refusal = if slot.in_flight > 0 || stored + slot.pending() < self.policy.limit {
                Refusal::ShareInUse
            } else {
                let lockouts = record.as_ref().map_or(0, |r| r.lockouts);
                let hold = Duration::from_millis(u64::try_from(self.policy.hold_ms(lockouts)).unwrap_or(0));
                Refusal::Held(RetryAfter(hold))
            };
            if slot.idle() {
                slots.remove(&key);
            }
            return Err(refusal);
        }
        slot.in_flight += 1;
        Ok(Attempt { lockout: self, key, stored, share, had_record: record.is_some(), done: false })
    }

    /// The failures tallied so far, now counted as being written.
    fn take(&self) -> Vec<LoginFailures> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for ((tenant, account_sha256), slot) in slots.iter_mut().filter(|(_, s)| s.tallied > 0) {
            out.push(LoginFailures {
                tenant: tenant.clone(),
                account_sha256: account_sha256.clone(),
                count: slot.tallied,
                last_ms: slot.last_ms,
            });
            slot.being_written += slot.tallied;
            slot.tallied = 0;
        }
        // A stable order, so the entry reads the same in every run.
        out.sort_by(|a, b| (&a.tenant, &a.account_sha256).cmp(&(&b.tenant, &b.account_sha256)));
        out
    }

    /// The written failures are in the store now (or, when `written` is false, tallied again).
    fn landed(&self, failures: &[LoginFailures], written: bool) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        for f in failures {
            let key = (f.tenant.clone(), f.account_sha256.clone());
            if let Some(slot) = slots.get_mut(&key) {
                slot.being_written = slot.being_written.saturating_sub(f.count);
                if !written {
                    slot.tallied += f.count;
                }
                if slot.idle() {
                    slots.remove(&key);
                }
            }
        }
        self.changed.notify_waiters();
    }

    /// Writes what has been tallied through raft.
    pub async fn flush(&self, app: &AppState) {
        let failures = self.take();
        for chunk in failures.chunks(ACCOUNTS_PER_COMMAND) {
            let command = Command::RecordLoginFailures { policy: self.policy, failures: chunk.to_vec() };
            let proposal = Proposal { origin: None, at_ms: app.clock.now_ms(), actor: "anonymous".into(), command };
            let written = match app.write(proposal).await {
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!("failed sign-ins of {} accounts were not counted yet: {e}", chunk.len());
                    false
                }
            };
            self.landed(chunk, written);
        }
    }
}

/// An admitted password check: say how it went, or drop it (it then counts for nothing).
pub struct Attempt<'a> {
    lockout: &'a Lockout,
    key: Account,
    stored: u32,
    /// This node's share of the budget when the attempt was admitted.
    share: u32,
    had_record: bool,
    done: bool,
}

impl Attempt<'_> {
    /// The password was wrong (or named nobody).
    pub fn failed(mut self, now_ms: i64) {
        if self.done {
            return;
        }
        self.done = true;
        let lockout = self.lockout;
        let mut slots = lockout.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = slots.get_mut(&self.key) {
            slot.in_flight = slot.in_flight.saturating_sub(1);
            slot.tallied += 1;
            slot.last_ms = slot.last_ms.max(now_ms);
            // The limit reached, or this node's share spent: written at once, so the hold (or
            // the other nodes' view of the count) does not wait for the next window.
            if self.stored + slot.tallied + slot.being_written >= lockout.policy.limit || slot.pending() >= self.share {
                lockout.due.notify_one();
            }
        }
        lockout.changed.notify_waiters();
    }

    /// The password was right: whether the account has failures stored to clear.
    pub fn succeeded(mut self) -> bool {
        if self.done {
            return false;
        }
        self.done = true;
        let mut slots = self.lockout.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = slots.get_mut(&self.key) {
            slot.in_flight = slot.in_flight.saturating_sub(1);
            slot.tallied = 0;
            if slot.idle() {
                slots.remove(&self.key);
            }
        }
        self.lockout.changed.notify_waiters();
        self.had_record
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut slots = self.lockout.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = slots.get_mut(&self.key) {
            slot.in_flight = slot.in_flight.saturating_sub(1);
            if slot.idle() {
                slots.remove(&self.key);
            }
        }
        self.lockout.changed.notify_waiters();
    }
}

/// An attempt waiting for this node's share to free: counted on its account's slot so the
/// waiters stay bounded, and uncounted however the wait ends.
struct Waiter<'a> {
    lockout: &'a Lockout,
    key: Option<Account>,
}

impl Waiter<'_> {
    /// Joins the account's waiters: false when `limit` of them already wait (as many as can
    /// still be counted). A slot emptied meanwhile is not joined; the next look admits.
    fn join(&mut self, tenant: &str, account_sha256: &str) -> bool {
        let key = (tenant.to_string(), account_sha256.to_string());
        let mut slots = self.lockout.slots.lock().unwrap_or_else(|p| p.into_inner());
        let Some(slot) = slots.get_mut(&key) else { return true };
        if slot.waiting >= self.lockout.policy.limit {
            return false;
        }
        slot.waiting += 1;
        self.key = Some(key);
        true
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let mut slots = self.lockout.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = slots.get_mut(&key) {
            slot.waiting = slot.waiting.saturating_sub(1);
            if slot.idle() {
                slots.remove(&key);
            }
        }
    }
}

/// Writes the tally every `lockout_flush_ms`, at once when an account reaches its limit, and
/// once more when `stop` turns true.
pub async fn flush_job(app: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let every = app.lockout.flush_every;
    loop {
        let stopping = tokio::select! {
            _ = stop.wait_for(|s| *s) => true,
            _ = tokio::time::sleep(every) => false,
            _ = app.lockout.due.notified() => false,
        };
        app.lockout.flush(&app).await;
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_attempts_never_pass_the_limit_and_a_success_frees_the_account() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        let config = RateLimitConfig { lockout_after_failures: 3, ..RateLimitConfig::default() };
        let lockout = Lockout::new(&config);
        let attempts: Vec<_> = (0..10).filter_map(|_| lockout.admit(&store, "t", "a", 1_000, 1).ok()).collect();
        assert_eq!(attempts.len(), 3, "three checks in flight at most");
        assert!(matches!(lockout.admit(&store, "t", "a", 1_000, 1), Err(Refusal::ShareInUse)));
        assert!(lockout.admit(&store, "t", "b", 1_000, 1).is_ok(), "another account is not held");
        let mut attempts = attempts.into_iter();
        attempts.next().unwrap().failed(1_001);
        drop(attempts.next());
        assert!(!attempts.next().unwrap().succeeded(), "nothing stored to clear");
        let again: Vec<_> = (0..10).filter_map(|_| lockout.admit(&store, "t", "a", 1_002, 1).ok()).collect();
        assert_eq!(again.len(), 3, "a success forgets what was tallied; a dropped attempt counts for nothing");
        for a in again {
            a.failed(1_003);
        }
        let taken = lockout.take();
        assert_eq!(taken.iter().map(|f| f.count).sum::<u32>(), 3);
        assert!(lockout.admit(&store, "t", "a", 1_004, 1).is_err(), "being written still counts");
        lockout.landed(&taken, false);
        assert!(lockout.admit(&store, "t", "a", 1_004, 1).is_err(), "a failed write is tallied again");
        assert_eq!(lockout.take().iter().map(|f| f.count).sum::<u32>(), 3);

        // In a cluster of three, a node checks at most its share of what is left: ceil(3/3).
        let shared: Vec<_> = (0..10).filter_map(|_| lockout.admit(&store, "t", "c", 1_005, 3).ok()).collect();
        assert_eq!(shared.len(), 1);
    }

    #[tokio::test]
    async fn an_attempt_refused_only_for_the_share_waits_and_is_counted_up_to_the_hold() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        let config = RateLimitConfig { lockout_after_failures: 2, ..RateLimitConfig::default() };
        let lockout = Lockout::new(&config);
        let (now, one) = (|| 1_000, || 1);
        let first = lockout.admit(&store, "t", "a", 1_000, 1).unwrap();
        let second = lockout.admit(&store, "t", "a", 1_000, 1).unwrap();
        // Both checks in flight: a third waits rather than being refused ...
        let third = lockout.admit_waiting(&store, "t", "a", &now, &one);
        tokio::pin!(third);
        assert!(tokio::time::timeout(Duration::from_millis(50), third.as_mut()).await.is_err(), "it waits");
        // ... and is admitted when one of them ends without counting.
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(1), third).await.expect("admitted").unwrap();
        // When the in-flight checks fail and reach the limit, a waiter gets the hold itself.
        let fourth = lockout.admit_waiting(&store, "t", "a", &now, &one);
        tokio::pin!(fourth);
        assert!(tokio::time::timeout(Duration::from_millis(50), fourth.as_mut()).await.is_err());
        second.failed(1_001);
        third.failed(1_001);
        let refused = tokio::time::timeout(Duration::from_secs(1), fourth).await.expect("answered");
        let refused = refused.err();
        assert!(matches!(refused, Some(Refusal::Held(RetryAfter(w))) if w == Duration::from_secs(60)), "{refused:?}");
        assert_eq!(lockout.slots.lock().unwrap()[&("t".to_string(), "a".to_string())].waiting, 0);
    }

    #[tokio::test]
    async fn waiters_per_account_are_bounded_by_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        let config = RateLimitConfig { lockout_after_failures: 2, ..RateLimitConfig::default() };
        let lockout = Lockout::new(&config);
        let (now, one) = (|| 1_000, || 1);
        let _in_flight: Vec<_> = (0..2).map(|_| lockout.admit(&store, "t", "a", 1_000, 1).unwrap()).collect();
        let waiters: Vec<_> = (0..2).map(|_| Box::pin(lockout.admit_waiting(&store, "t", "a", &now, &one))).collect();
        let mut waiters = waiters;
        for w in &mut waiters {
            assert!(tokio::time::timeout(Duration::from_millis(20), w.as_mut()).await.is_err());
        }
        let third =
            tokio::time::timeout(Duration::from_millis(500), lockout.admit_waiting(&store, "t", "a", &now, &one))
                .await
                .expect("refused at once");
        let third = third.err();
        assert!(matches!(third, Some(Refusal::Held(RetryAfter(w))) if w == IN_FLIGHT_RETRY), "{third:?}");
        drop(waiters);
        assert_eq!(lockout.slots.lock().unwrap()[&("t".to_string(), "a".to_string())].waiting, 0);
    }
}
