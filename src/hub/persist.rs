//! The hub's flags as SpotRiskFlag objects in its own cluster: loaded at start, written behind (at most
//! once per [`FLUSH_INTERVAL`] per changed flag, server-side apply), watched so replicas learn each
//! other's writes, and deleted by the sweeper once expired. The API server is never on the request
//! path.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};

use super::state::HubState;
use super::store::{Flag, FlagKey};
use crate::api::risk_flag::{FlagSource, SpotRiskFlag, SpotRiskFlagSpec};
use crate::controllers::FIELD_MANAGER;

/// How often changed flags are written and expired ones deleted.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Label on every object the hub writes; the hub loads and watches only these.
pub use crate::names::HUB_LABEL;
/// Concurrent writes per flush.
const WRITERS: usize = 16;

/// A failed API call of the hub's persistence.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// Listing the flags at start failed.
    #[error("listing SpotRiskFlags: {0}")]
    List(#[source] kube::Error),
    /// Writing one flag failed.
    #[error("applying SpotRiskFlag {name}: {source}")]
    Apply {
        /// Object name.
        name: String,
        /// Why.
        source: kube::Error,
    },
    /// Deleting one flag failed.
    #[error("deleting SpotRiskFlag {name}: {source}")]
    Delete {
        /// Object name.
        name: String,
        /// Why.
        source: kube::Error,
    },
}

/// The flag an object holds, or `None` for an object that is not a hub flag.
pub fn flag_of(object: &SpotRiskFlag) -> Option<Flag> {
    let spec = &object.spec;
    Some(Flag {
        key: FlagKey {
            region: spec.region.clone(),
            zone: spec.zone.clone(),
            instance_type: spec.instance_type.clone(),
        },
        reason: spec.reason,
        first_seen: spec.first_seen.0.as_second(),
        last_seen: spec.last_seen.0.as_second(),
        count: spec.count.max(1),
        clusters: spec.clusters.iter().cloned().collect(),
        expires_at: spec.expires_at.0.as_second(),
    })
    .filter(|flag| object.metadata.name.as_deref() == Some(flag.key.name().as_str()))
}

fn time(seconds: i64) -> Time {
    Time(Timestamp::from_second(seconds).unwrap_or(Timestamp::MAX))
}

/// The object for `flag` with the given `source` and labels (what is applied).
pub fn object_of(
    flag: &Flag,
    source: FlagSource,
    labels: BTreeMap<String, String>,
) -> SpotRiskFlag {
    let spec = SpotRiskFlagSpec {
        region: flag.key.region.clone(),
        zone: flag.key.zone.clone(),
        instance_type: flag.key.instance_type.clone(),
        reason: flag.reason,
        first_seen: time(flag.first_seen),
        last_seen: time(flag.last_seen),
        count: flag.count,
        clusters: flag.clusters.iter().cloned().collect(),
        expires_at: time(flag.expires_at),
        source,
    };
    let mut object = SpotRiskFlag::new(&flag.key.name(), spec);
    object.metadata.labels = Some(labels);
    object
}

fn hub_labels() -> BTreeMap<String, String> {
    BTreeMap::from([(HUB_LABEL.to_string(), "true".to_string())])
}

/// Apply one flag (server-side apply, field manager `cloudoptim`, forced).
pub async fn apply(
    api: &Api<SpotRiskFlag>,
    flag: &Flag,
    source: FlagSource,
    labels: BTreeMap<String, String>,
) -> Result<(), PersistError> {
    let name = flag.key.name();
    let object = object_of(flag, source, labels);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&object),
    )
    .await
    .map(|_| ())
    .map_err(|source| PersistError::Apply { name, source })
}

/// Delete one flag; an object already gone is fine.
pub async fn delete(api: &Api<SpotRiskFlag>, name: &str) -> Result<(), PersistError> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(PersistError::Delete {
            name: name.to_string(),
            source,
        }),
    }
}

fn selector() -> String {
    format!("{HUB_LABEL}=true")
}

/// Load every hub flag into the state (at start, before serving).
pub async fn load(api: &Api<SpotRiskFlag>, hub: &HubState) -> Result<usize, PersistError> {
    let list = api
        .list(&ListParams::default().labels(&selector()))
        .await
        .map_err(PersistError::List)?;
    let now = super::state::now();
    let mut loaded = 0;
    for flag in list.items.iter().filter_map(flag_of) {
        if flag.is_active(now) {
            hub.join(flag);
            loaded += 1;
        } else if let Err(e) = delete(api, &flag.key.name()).await {
            // Left expired objects never apply (expiry is checked on read); a later start retries.
            tracing::warn!(error = %e, "expired flag not deleted");
        }
    }
    Ok(loaded)
}

/// Write every changed flag and delete every expired one, once.
pub async fn flush(api: &Api<SpotRiskFlag>, hub: &HubState) {
    let expired = hub.sweep();
    let dirty = hub.take_dirty();
    let writes = dirty.into_iter().map(|flag| async move {
        let result = apply(api, &flag, FlagSource::Hub, hub_labels()).await;
        (flag, result)
    });
    let mut writes = futures::stream::iter(writes).buffer_unordered(WRITERS);
    while let Some((flag, result)) = writes.next().await {
        record(hub, "apply", &result);
        if let Err(e) = result {
            tracing::warn!(error = %e, "flag write failed; retrying next flush");
            hub.mark_dirty(&flag.key);
        }
    }
    let deletes = expired.into_iter().map(|flag| async move {
        let name = flag.key.name();
        delete(api, &name).await
    });
    let mut deletes = futures::stream::iter(deletes).buffer_unordered(WRITERS);
    while let Some(result) = deletes.next().await {
        record(hub, "delete", &result);
        // The store has forgotten it: the next start's load deletes what is left.
        if let Err(e) = result {
            tracing::warn!(error = %e, "expired flag not deleted");
        }
    }
}

fn record(hub: &HubState, op: &str, result: &Result<(), PersistError>) {
    let label = if result.is_ok() { "ok" } else { "error" };
    hub.metrics()
        .hub_flag_writes
        .with_label_values(&[op, label])
        .inc();
}

/// Flush every [`FLUSH_INTERVAL`] until `shutdown`, then once more.
pub async fn flusher(
    api: Api<SpotRiskFlag>,
    hub: HubState,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut tick = tokio::time::interval(FLUSH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = tick.tick() => flush(&api, &hub).await,
            _ = &mut shutdown => break,
        }
    }
    flush(&api, &hub).await;
}

/// Follow every replica's writes (including our own, which join as no-ops) until the stream ends.
pub async fn watch(api: Api<SpotRiskFlag>, hub: HubState) {
    let config = watcher::Config::default().labels(&selector());
    let events = watcher(api, config).default_backoff();
    let result = events
        .try_for_each(|event| {
            match event {
                watcher::Event::Apply(object) | watcher::Event::InitApply(object) => {
                    if let Some(flag) = flag_of(&object) {
                        hub.join(flag);
                    }
                }
                watcher::Event::Delete(object) => {
                    if let Some(flag) = flag_of(&object) {
                        hub.remote_deleted(&flag.key);
                    }
                }
                watcher::Event::Init | watcher::Event::InitDone => {}
            }
            futures::future::ready(Ok(()))
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "SpotRiskFlag watch stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::risk_flag::RiskReason;

    #[test]
    fn an_object_round_trips_to_the_same_flag() {
        let flag = Flag {
            key: FlagKey {
                region: "us-east-1".into(),
                zone: "us-east-1a".into(),
                instance_type: "m5.large".into(),
            },
            reason: RiskReason::CapacityError,
            first_seen: 1_800_000_000,
            last_seen: 1_800_000_060,
            count: 7,
            clusters: ["a".to_string(), "b".to_string()].into(),
            expires_at: 1_800_001_860,
        };
        let object = object_of(&flag, FlagSource::Hub, hub_labels());
        assert_eq!(
            object.metadata.name.as_deref(),
            Some("us-east-1.us-east-1a.m5.large")
        );
        assert_eq!(object.spec.source, FlagSource::Hub);
        assert_eq!(flag_of(&object), Some(flag));
    }

    #[test]
    fn an_object_whose_name_does_not_match_its_spec_is_not_a_hub_flag() {
        let flag = Flag {
            key: FlagKey {
                region: "us-east-1".into(),
                zone: "us-east-1a".into(),
                instance_type: "m5.large".into(),
            },
            reason: RiskReason::Rebalance,
            first_seen: 0,
            last_seen: 0,
            count: 1,
            clusters: Default::default(),
            expires_at: 1800,
        };
        let mut object = object_of(&flag, FlagSource::Hub, hub_labels());
        object.metadata.name = Some("something-else".into());
        assert_eq!(flag_of(&object), None);
    }
}
