//! The hub process's shared state: the [`Store`] behind a lock, the member tokens, the broadcast of
//! changes to watch subscribers, readiness and metrics. The HTTP handlers and the persistence tasks
//! go through here; the lock is held only for in-memory work, never across an await.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use tokio::sync::broadcast;

use super::auth::Tokens;
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
    /// State for flags living `ttl_seconds` after they were last seen.
    pub fn new(ttl_seconds: i64, tokens: Tokens, metrics: Metrics) -> HubState {
        let (changes, _) = broadcast::channel(CHANGES_BUFFER);
        HubState {
            inner: Arc::new(Inner {
                store: Mutex::new(Store::new(ttl_seconds)),
                tokens: RwLock::new(tokens),
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

    /// Replace the tokens (the Secret changed).
    pub fn set_tokens(&self, tokens: Tokens) {
        *self
            .inner
            .tokens
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = tokens;
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

    /// Active flags and a receiver of every later change, taken together so no change is missed.
    pub fn subscribe(&self, region: Option<&str>) -> (Vec<Flag>, broadcast::Receiver<Change>) {
        let store = self.store();
        (store.active(region, now()), self.inner.changes.subscribe())
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
