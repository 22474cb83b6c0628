//! The hub process's shared state: the [`Store`] behind a lock, the member tokens (and a signal when
//! they change, so watches of a revoked token end), the per-member limits, the broadcast of changes
//! to watch subscribers, readiness and metrics. The HTTP handlers and the persistence tasks
//! go through here; the lock is held only for in-memory work, never across an await.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use tokio::sync::{broadcast, watch};

use super::auth::Tokens;
use super::limits::{Limits, MemberGates};
use super::store::{Flag, FlagKey, Outcome, Report, Store};
use crate::metrics::Metrics;

/// Buffered changes per watch subscriber; one that falls further behind is sent the whole set again.
const CHANGES_BUFFER: usize = 4096;

/// A change of the active set, as watch subscribers hear it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A flag was raised or changed.
    Upsert(Flag),
    /// A flag expired.
    Expired(Flag),
}

impl Change {
    /// The flag concerned.
    pub fn flag(&self) -> &Flag {
        match self {
            Change::Upsert(flag) | Change::Expired(flag) => flag,
        }
    }
}

/// Shared hub state (cheap to clone).
#[derive(Clone)]
pub struct HubState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Mutex<Store>,
    tokens: RwLock<Tokens>,
    tokens_changed: watch::Sender<u64>,
    gates: MemberGates,
    changes: broadcast::Sender<Change>,
    ready: Arc<AtomicBool>,
    metrics: Metrics,
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Now, in Unix seconds.
pub fn now() -> i64 {
    now_ms().div_euclid(1000)
}

impl HubState {
    /// State for flags living `ttl_seconds` after they were last seen, with the default limits.
    pub fn new(ttl_seconds: i64, tokens: Tokens, metrics: Metrics) -> HubState {
        HubState::with_limits(ttl_seconds, tokens, metrics, Limits::default())
    }

    /// State enforcing `limits`.
    pub fn with_limits(
        ttl_seconds: i64,
        tokens: Tokens,
        metrics: Metrics,
        limits: Limits,
    ) -> HubState {
        let (changes, _) = broadcast::channel(CHANGES_BUFFER);
        let store = Store::with_flag_limit(ttl_seconds, limits.max_flags_per_member);
        HubState {
            inner: Arc::new(Inner {
                store: Mutex::new(store),
                tokens: RwLock::new(tokens),
                tokens_changed: watch::Sender::new(0),
                gates: MemberGates::new(limits),
                changes,
                ready: Arc::new(AtomicBool::new(false)),
                metrics,
            }),
        }
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock leaves plain data that is still consistent enough to serve.
        self.inner
            .store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The readiness flag (shared with the probes server).
    pub fn ready_flag(&self) -> Arc<AtomicBool> {
        self.inner.ready.clone()
    }

    /// Whether the flags were loaded and the API serves.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Relaxed)
    }

    /// Mark the hub ready (after the first load).
    pub fn set_ready(&self) {
        self.inner.ready.store(true, Ordering::Relaxed);
    }

    /// The member owning `token`, if any.
    pub fn member(&self, token: &[u8]) -> Option<String> {
        let tokens = self
            .inner
            .tokens
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        tokens.member(token).map(str::to_string)
    }

    /// Replace the tokens (the Secret changed); open watches check theirs again.
    pub fn set_tokens(&self, tokens: Tokens) {
        let mut current = self
            .inner
            .tokens
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *current == tokens {
            return;
        }
        *current = tokens;
        drop(current);
        self.inner
            .tokens_changed
            .send_modify(|generation| *generation += 1);
    }

    /// Fires each time the tokens change.
    pub fn tokens_changed(&self) -> watch::Receiver<u64> {
        self.inner.tokens_changed.subscribe()
    }

    /// The per-member limits and usage.
    pub fn gates(&self) -> &MemberGates {
        &self.inner.gates
    }

    /// Distinct reporters a flag needs before every member sees it.
    pub fn confirmations(&self) -> usize {
        self.inner.gates.limits().confirmations
    }

    /// Merge a member's report and tell subscribers when it changed the flag.
    pub fn accept(&self, report: Report) -> Outcome {
        let mut store = self.store();
        let (outcome, flag) = store.report(report, now());
        if let Some(flag) = flag {
            // Sent under the lock so subscribers see changes in the order they were made.
            let _ = self.inner.changes.send(Change::Upsert(flag));
        }
        outcome
    }

    /// Merge a copy of a flag read from the API server; returns whether it must be written back.
    pub fn join(&self, flag: Flag) -> bool {
        let mut store = self.store();
        let key = flag.key.clone();
        let joined = store.join(flag, now());
        if joined.changed
            && let Some(current) = store.get(&key, now())
        {
            let _ = self.inner.changes.send(Change::Upsert(current));
        }
        joined.ahead
    }

    /// The object of `key` was deleted (by a replica's sweeper).
    pub fn remote_deleted(&self, key: &FlagKey) {
        self.store().remote_deleted(key, now());
    }

    /// Active flags, optionally of one region.
    pub fn active(&self, region: Option<&str>) -> Vec<Flag> {
        self.store().active(region, now())
    }

    /// Active flags `member` is shown (see [`Flag::visible_to`]), optionally of one region.
    pub fn active_for(&self, member: &str, region: Option<&str>) -> Vec<Flag> {
        let confirmations = self.confirmations();
        let mut flags = self.active(region);
        flags.retain(|f| f.visible_to(member, confirmations));
        flags
    }

    /// Active flags shown to `member` and a receiver of every later change, taken together so no
    /// change is missed.
    pub fn subscribe(
        &self,
        member: &str,
        region: Option<&str>,
    ) -> (Vec<Flag>, broadcast::Receiver<Change>) {
        let confirmations = self.confirmations();
        let store = self.store();
        let mut flags = store.active(region, now());
        flags.retain(|f| f.visible_to(member, confirmations));
        (flags, self.inner.changes.subscribe())
    }

    /// Changed flags to write.
    pub fn take_dirty(&self) -> Vec<Flag> {
        self.store().take_dirty(now())
    }

    /// A write failed: retry it next time.
    pub fn mark_dirty(&self, key: &FlagKey) {
        self.store().mark_dirty(key);
    }

    /// Forget expired flags, tell subscribers, update the gauge; returns them for deletion.
    pub fn sweep(&self) -> Vec<Flag> {
        let mut store = self.store();
        let now = now();
        let expired = store.remove_expired(now);
        for flag in &expired {
            let _ = self.inner.changes.send(Change::Expired(flag.clone()));
        }
        let active = i64::try_from(store.active_count(now)).unwrap_or(i64::MAX);
        self.inner
            .metrics
            .risk_flags
            .with_label_values(&["hub"])
            .set(active);
        expired
    }
}
