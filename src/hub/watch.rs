//! `GET /v1/flags/watch`: the server-sent-events stream of the flags a member is shown.
//!
//! The stream sends the active set, `synced`, then every change; a subscriber that fell behind gets
//! the set again. It holds one of the member's watch slots for as long as it lives, and ends as soon
//! as the token it was opened with no longer names the member (removed or rotated in the tokens
//! Secret), so a revoked member keeps no open view of the fleet.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::response::sse::Event;
use futures::Stream;
use serde_json::json;
use tokio::sync::{broadcast, watch};

use super::limits::Slot;
use super::report::FlagView;
use super::state::{Change, HubState};
use super::store::Flag;

/// Who opened a watch, with what.
pub struct Watcher {
    /// The member.
    pub member: String,
    /// The token it presented (checked again when the tokens change; never logged).
    pub token: Vec<u8>,
    /// Its watch slot, given back when the stream is dropped.
    pub slot: Slot,
}

/// Counts a watch subscriber for as long as its stream lives.
struct Subscriber(HubState);

impl Subscriber {
    fn new(hub: HubState) -> Subscriber {
        hub.metrics().hub_watch_subscribers.inc();
        Subscriber(hub)
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.0.metrics().hub_watch_subscribers.dec();
    }
}

struct Watch {
    subscriber: Subscriber,
    watcher: Watcher,
    region: Option<String>,
    pending: VecDeque<Event>,
    changes: broadcast::Receiver<Change>,
    tokens: watch::Receiver<u64>,
}

impl Watch {
    fn hub(&self) -> &HubState {
        &self.subscriber.0
    }

    fn queue_snapshot(&mut self, flags: &[Flag]) {
        self.pending.extend(flags.iter().map(|f| event("flag", f)));
        self.pending.push_back(
            Event::default()
                .event("synced")
                .data(json!({"count": flags.len()}).to_string()),
        );
    }

    fn wants(&self, change: &Change) -> bool {
        let flag = change.flag();
        self.region.as_deref().is_none_or(|r| flag.key.region == r)
            && flag.visible_to(&self.watcher.member, self.hub().confirmations())
    }

    /// Whether the token this watch was opened with still names its member.
    fn still_authorised(&self) -> bool {
        self.hub().member(&self.watcher.token).as_deref() == Some(self.watcher.member.as_str())
    }
}

fn event(kind: &str, flag: &Flag) -> Event {
    let data = serde_json::to_string(&FlagView::from(flag)).unwrap_or_default();
    Event::default().event(kind).data(data)
}

/// What woke a watch up.
enum Wake {
    Change(Result<Change, broadcast::error::RecvError>),
    TokensChanged,
}

/// The stream of `watcher`'s view of the flags of `region` (all regions when `None`).
pub fn stream(
    hub: HubState,
    watcher: Watcher,
    region: Option<String>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let (flags, changes) = hub.subscribe(&watcher.member, region.as_deref());
    let mut tokens = hub.tokens_changed();
    tokens.mark_unchanged();
    let mut watch = Watch {
        subscriber: Subscriber::new(hub),
        watcher,
        region,
        pending: VecDeque::new(),
        changes,
        tokens,
    };
    watch.queue_snapshot(&flags);
    futures::stream::unfold(watch, |mut watch| async move {
        loop {
            if let Some(event) = watch.pending.pop_front() {
                return Some((Ok(event), watch));
            }
            // Tokens first: a change broadcast after a revocation is never sent to the revoked.
            let wake = tokio::select! {
                biased;
                Ok(()) = watch.tokens.changed() => Wake::TokensChanged,
                change = watch.changes.recv() => Wake::Change(change),
            };
            match wake {
                Wake::TokensChanged => {
                    if !watch.still_authorised() {
                        watch.hub().metrics().hub_watches_revoked.inc();
                        tracing::info!(member = %watch.watcher.member, "token revoked: ending its watch");
                        return None;
                    }
                }
                Wake::Change(Ok(change)) if watch.wants(&change) => {
                    let event = match &change {
                        Change::Upsert(flag) => event("flag", flag),
                        Change::Expired(flag) => event("expired", flag),
                    };
                    return Some((Ok(event), watch));
                }
                Wake::Change(Ok(_)) => {}
                Wake::Change(Err(broadcast::error::RecvError::Lagged(_))) => {
                    let flags = watch
                        .hub()
                        .active_for(&watch.watcher.member, watch.region.as_deref());
                    watch.queue_snapshot(&flags);
                }
                Wake::Change(Err(broadcast::error::RecvError::Closed)) => return None,
            }
        }
    })
}
