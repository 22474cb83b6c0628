//! An in-memory `Cloud` for fast tests of decisions: it holds groups, instances, volumes, prices and
//! queue messages, records every mutating call, and can be told to fail the next call. It is never the
//! only test of anything: `aws.rs` is tested against a moto server.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::{
    AutoScalingGroup, Cloud, CloudError, CloudResult, GroupSelector, GroupUpdate, Instance, Launch,
    LifecycleAction, LifecycleResult, LiveInstanceType, OnDemandPrices, QueueMessage, SpotPrice,
    SpotPricePoint, Volume,
};

/// State of the fake cloud; tests arrange it directly.
#[derive(Debug, Default)]
pub struct FakeState {
    /// Instance types.
    pub instance_types: Vec<LiveInstanceType>,
    /// Spot prices.
    pub spot_prices: Vec<SpotPrice>,
    /// Spot price history records (DescribeSpotPriceHistory with a start time).
    pub spot_history: Vec<SpotPricePoint>,
    /// The instance types each Spot price history call asked for (failed calls included).
    pub spot_history_requests: Vec<Vec<String>>,
    /// When set, each Spot price history call waits for a permit of this before it answers (tests
    /// of callers running during a slow fetch; the test decides when the answer comes).
    pub spot_history_gate: Option<Arc<tokio::sync::Notify>>,
    /// On-demand prices by region (the Price List API).
    pub on_demand: BTreeMap<String, OnDemandPrices>,
    /// How long each Price List call takes before it answers (tests of deadlines, with paused time).
    pub on_demand_delay: Option<Duration>,
    /// How many Price List calls were made (failed ones included).
    pub on_demand_fetches: usize,
    /// Zones.
    pub zones: Vec<String>,
    /// Instances.
    pub instances: Vec<Instance>,
    /// Volumes.
    pub volumes: Vec<Volume>,
    /// Auto Scaling groups by name.
    pub groups: BTreeMap<String, AutoScalingGroup>,
    /// Queue messages by queue URL.
    pub queues: BTreeMap<String, VecDeque<QueueMessage>>,
    /// Every mutating call, e.g. `UpdateAutoScalingGroup asg-a`.
    pub calls: Vec<String>,
    /// The error the next call returns.
    pub fail_next: Option<CloudError>,
}

/// The fake cloud (cheap to clone; clones share state).
#[derive(Debug, Clone, Default)]
pub struct FakeCloud {
    state: Arc<Mutex<FakeState>>,
}

impl FakeCloud {
    /// Lock the state to arrange or inspect it.
    pub fn state(&self) -> MutexGuard<'_, FakeState> {
        // A poisoned lock only happens after a panicking test; the state is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn call<T>(
        &self,
        record: Option<String>,
        f: impl FnOnce(&mut FakeState) -> CloudResult<T>,
    ) -> CloudResult<T> {
        let mut state = self.state();
        if let Some(err) = state.fail_next.take() {
            return Err(err);
        }
        if let Some(record) = record {
            state.calls.push(record);
        }
        f(&mut state)
    }
}

impl Cloud for FakeCloud {
    async fn instance_types(&self) -> CloudResult<Vec<LiveInstanceType>> {
        self.call(None, |s| Ok(s.instance_types.clone()))
    }

    async fn spot_prices(&self, instance_types: &[String]) -> CloudResult<Vec<SpotPrice>> {
        self.call(None, |s| {
            Ok(s.spot_prices
                .iter()
                .filter(|p| instance_types.is_empty() || instance_types.contains(&p.instance_type))
                .cloned()
                .collect())
        })
    }

    async fn spot_price_history(
        &self,
        instance_types: &[String],
        since: i64,
    ) -> CloudResult<Vec<SpotPricePoint>> {
        if instance_types.is_empty() {
            return Ok(Vec::new());
        }
        let gate = {
            let mut state = self.state();
            state.spot_history_requests.push(instance_types.to_vec());
            state.spot_history_gate.clone()
        };
        if let Some(gate) = gate {
            gate.notified().await;
        }
        self.call(None, |s| {
            // Like EC2: the records from `since` on, and the latest one before it (in effect at `since`).
            let mut records: Vec<SpotPricePoint> = Vec::new();
            for p in s
                .spot_history
                .iter()
                .filter(|p| instance_types.contains(&p.instance_type))
            {
                let in_effect = p.at < since
                    && !s.spot_history.iter().any(|q| {
                        q.zone == p.zone
                            && q.instance_type == p.instance_type
                            && q.at > p.at
                            && q.at <= since
                    });
                if p.at >= since || in_effect {
                    records.push(p.clone());
                }
            }
            Ok(records)
        })
    }

    async fn on_demand_prices(&self, region: &str) -> CloudResult<OnDemandPrices> {
        let delay = {
            let mut state = self.state();
            state.on_demand_fetches += 1;
            state.on_demand_delay
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        self.call(None, |s| {
            Ok(s.on_demand.get(region).cloned().unwrap_or_default())
        })
    }

    async fn zones(&self) -> CloudResult<Vec<String>> {
        self.call(None, |s| Ok(s.zones.clone()))
    }

    async fn instances(&self, tag_key: &str, tag_value: &str) -> CloudResult<Vec<Instance>> {
        self.call(None, |s| {
            Ok(s.instances
                .iter()
                .filter(|i| i.tags.get(tag_key).is_some_and(|v| v == tag_value))
                .cloned()
                .collect())
        })
    }

    async fn available_volumes(
        &self,
        _tag_key: &str,
        _tag_value: &str,
    ) -> CloudResult<Vec<Volume>> {
        self.call(None, |s| Ok(s.volumes.clone()))
    }

    async fn terminate_instances(&self, ids: &[String]) -> CloudResult<()> {
        self.call(Some(format!("TerminateInstances {}", ids.join(","))), |s| {
            s.instances.retain(|i| !ids.contains(&i.id));
            Ok(())
        })
    }

    async fn delete_volume(&self, id: &str) -> CloudResult<()> {
        self.call(Some(format!("DeleteVolume {id}")), |s| {
            s.volumes.retain(|v| v.id != id);
            Ok(())
        })
    }

    async fn create_snapshot(
        &self,
        volume_id: &str,
        _description: &str,
        _tags: &BTreeMap<String, String>,
    ) -> CloudResult<String> {
        self.call(Some(format!("CreateSnapshot {volume_id}")), |_| {
            Ok(format!("snap-{volume_id}"))
        })
    }

    async fn groups(&self, selector: &GroupSelector) -> CloudResult<Vec<AutoScalingGroup>> {
        self.call(None, |s| {
            Ok(s.groups
                .values()
                .filter(|g| match selector {
                    GroupSelector::Names(names) => names.contains(&g.name),
                    GroupSelector::Tags(tags) => tags.iter().all(|(k, v)| g.tags.get(k) == Some(v)),
                })
                .cloned()
                .collect())
        })
    }

    async fn update_group(&self, update: &GroupUpdate) -> CloudResult<()> {
        self.call(
            Some(format!("UpdateAutoScalingGroup {}", update.name)),
            |s| {
                let group = s
                    .groups
                    .get_mut(&update.name)
                    .ok_or_else(|| CloudError::NotFound {
                        op: "UpdateAutoScalingGroup",
                        what: update.name.clone(),
                        request_id: None,
                    })?;
                if let Some(mixed) = &update.mixed {
                    group.mixed = Some(mixed.clone());
                }
                group.min = update.min.unwrap_or(group.min);
                group.max = update.max.unwrap_or(group.max);
                group.desired = update.desired.unwrap_or(group.desired);
                Ok(())
            },
        )
    }

    async fn tag_group(
        &self,
        name: &str,
        tags: &BTreeMap<String, Option<String>>,
    ) -> CloudResult<()> {
        self.call(Some(format!("TagGroup {name}")), |s| {
            let group = s.groups.get_mut(name).ok_or_else(|| CloudError::NotFound {
                op: "CreateOrUpdateTags",
                what: name.to_string(),
                request_id: None,
            })?;
            for (key, value) in tags {
                match value {
                    Some(value) => {
                        group.tags.insert(key.clone(), value.clone());
                    }
                    None => {
                        group.tags.remove(key);
                    }
                }
            }
            Ok(())
        })
    }

    async fn launch(&self, launch: &Launch) -> CloudResult<String> {
        self.call(
            Some(format!(
                "RunInstances {} {}",
                launch.instance_type, launch.zone
            )),
            |s| {
                let id = format!("i-fake{:04}", s.instances.len() + s.calls.len());
                s.instances.push(Instance {
                    id: id.clone(),
                    instance_type: launch.instance_type.clone(),
                    zone: launch.zone.clone(),
                    state: "pending".into(),
                    spot: launch.spot,
                    launched_at: None,
                    tags: launch.tags.clone(),
                });
                Ok(id)
            },
        )
    }

    async fn attach_to_group(&self, group: &str, instance_id: &str) -> CloudResult<()> {
        self.call(
            Some(format!("AttachInstances {group} {instance_id}")),
            |s| {
                let g = s
                    .groups
                    .get_mut(group)
                    .ok_or_else(|| CloudError::NotFound {
                        op: "AttachInstances",
                        what: group.to_string(),
                        request_id: None,
                    })?;
                if !g.instances.iter().any(|i| i == instance_id) {
                    g.instances.push(instance_id.to_string());
                    g.desired += 1;
                }
                Ok(())
            },
        )
    }

    async fn untag_instance(&self, instance_id: &str, keys: &[String]) -> CloudResult<()> {
        self.call(Some(format!("DeleteTags {instance_id}")), |s| {
            for i in s.instances.iter_mut().filter(|i| i.id == instance_id) {
                i.tags.retain(|k, _| !keys.contains(k));
            }
            Ok(())
        })
    }

    async fn terminate_in_group(
        &self,
        instance_id: &str,
        decrement_desired: bool,
    ) -> CloudResult<()> {
        self.call(
            Some(format!("TerminateInstanceInAutoScalingGroup {instance_id}")),
            |s| {
                for group in s.groups.values_mut() {
                    if group.instances.iter().any(|i| i == instance_id) {
                        group.instances.retain(|i| i != instance_id);
                        if decrement_desired {
                            group.desired -= 1;
                        }
                    }
                }
                s.instances.retain(|i| i.id != instance_id);
                Ok(())
            },
        )
    }

    async fn complete_lifecycle_action(
        &self,
        action: &LifecycleAction,
        result: LifecycleResult,
    ) -> CloudResult<()> {
        self.call(
            Some(format!(
                "CompleteLifecycleAction {} {} {} {}",
                action.group,
                action.hook,
                action.token,
                result.as_str()
            )),
            |_| Ok(()),
        )
    }

    async fn record_lifecycle_action_heartbeat(&self, action: &LifecycleAction) -> CloudResult<()> {
        self.call(
            Some(format!(
                "RecordLifecycleActionHeartbeat {} {} {}",
                action.group, action.hook, action.token
            )),
            |_| Ok(()),
        )
    }

    async fn receive(
        &self,
        queue_url: &str,
        max: i32,
        _wait_seconds: i32,
    ) -> CloudResult<Vec<QueueMessage>> {
        self.call(None, |s| {
            let queue = s.queues.entry(queue_url.to_string()).or_default();
            Ok(queue.iter().take(max.max(1) as usize).cloned().collect())
        })
    }

    async fn change_message_visibility(
        &self,
        _queue_url: &str,
        receipt: &str,
        seconds: i32,
    ) -> CloudResult<()> {
        self.call(
            Some(format!("ChangeMessageVisibility {receipt} {seconds}")),
            |_| Ok(()),
        )
    }

    async fn delete_message(&self, queue_url: &str, receipt: &str) -> CloudResult<()> {
        self.call(Some(format!("DeleteMessage {receipt}")), |s| {
            if let Some(queue) = s.queues.get_mut(queue_url) {
                queue.retain(|m| m.receipt != receipt);
            }
            Ok(())
        })
    }
}
