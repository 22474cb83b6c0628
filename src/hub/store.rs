//! The hub's memory: one merged flag per (region, zone, instance type), kept as plain data so every
//! rule here is unit-tested without Kubernetes.
//!
//! Merge rule for a member's report (see [`Store::report`]):
//! - A report counts once: `(clusterId, observedAt)` seen before for the same flag is a duplicate and
//!   changes nothing (members retry a report whose answer they did not get). The memory of seen reports
//!   is per hub process and bounded ([`SEEN_PER_FLAG`]); after a restart a retried report counts again.
//!   `count` is informational; ranking only uses the flag's existence until `expiresAt`.
//! - `count` + 1 per distinct report; `clusters` is the sorted set of reporters; `firstSeen` = min,
//!   `lastSeen` = max of the observed times; `expiresAt` = `lastSeen` + TTL (never moved earlier).
//! - `reason` is the reason of the latest report; on a tie the more severe one wins
//!   (SpotInterruption > CapacityError > Rebalance).
//! - A report already older than the TTL (`observedAt + ttl <= now`) is stale and ignored; a report
//!   for an expired flag starts a new flag.
//!
//! - A member may be a reporter of at most `max_flags_per_member` active flags: a report that would
//!   add it to one more (a new flag, or a flag it has not reported yet) is refused
//!   ([`Outcome::OverFlagLimit`]) and changes nothing; reports of flags it already reports still count.
//! - Confirmation: [`Flag::visible_to`] shows a flag to a member that reported it, and to every other
//!   member only once `confirmations` distinct members reported it (see `hub::limits`).
//!
//! Replicas share flags through the SpotRiskFlag objects and [`Store::join`] them: min / max / union
//! and `count` = max. The join is commutative, associative and idempotent, so replicas converge
//! whatever order they see each other's writes in; with several replicas, reports of one flag accepted
//! at the same moment by different replicas may be counted once.

use std::collections::{BTreeSet, HashMap};

use crate::api::risk_flag::RiskReason;

/// How many `(observedAt, clusterId)` pairs each flag remembers for deduplication.
pub const SEEN_PER_FLAG: usize = 1024;

/// Identity of a flag: one per (region, zone, instance type).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlagKey {
    /// AWS region, e.g. `us-east-1`.
    pub region: String,
    /// Availability zone, e.g. `us-east-1a`.
    pub zone: String,
    /// EC2 instance type, e.g. `m5.large`.
    pub instance_type: String,
}

impl FlagKey {
    /// The SpotRiskFlag object name: `<region>.<zone>.<instance-type>`.
    pub fn name(&self) -> String {
        format!("{}.{}.{}", self.region, self.zone, self.instance_type)
    }
}

/// A merged flag. Times are Unix seconds (what a SpotRiskFlag object keeps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    /// Which (region, zone, instance type).
    pub key: FlagKey,
    /// Reason of the latest report.
    pub reason: RiskReason,
    /// Earliest observed time.
    pub first_seen: i64,
    /// Latest observed time.
    pub last_seen: i64,
    /// Distinct reports merged.
    pub count: u32,
    /// Sorted ids of the reporting clusters.
    pub clusters: BTreeSet<String>,
    /// When the flag stops applying.
    pub expires_at: i64,
}

impl Flag {
    /// Whether the flag still applies at `now` (Unix seconds).
    pub fn is_active(&self, now: i64) -> bool {
        self.expires_at > now
    }

    /// Whether `confirmations` distinct members reported it.
    pub fn is_confirmed(&self, confirmations: usize) -> bool {
        self.clusters.len() >= confirmations
    }

    /// Whether `member` is shown this flag: it reported it, or enough members did.
    pub fn visible_to(&self, member: &str, confirmations: usize) -> bool {
        self.is_confirmed(confirmations) || self.clusters.contains(member)
    }
}

/// One report from a member cluster, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The reporting cluster (the token's owner).
    pub cluster: String,
    /// Which flag.
    pub key: FlagKey,
    /// What was seen.
    pub reason: RiskReason,
    /// When it was seen, Unix milliseconds (the deduplication key keeps sub-second precision).
    pub observed_ms: i64,
}

/// What a report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new flag was raised.
    Created,
    /// Merged into an active flag.
    Merged,
    /// Seen before: nothing changed.
    Duplicate,
    /// Older than the TTL: ignored.
    Stale,
    /// It would make the member a reporter of more active flags than allowed: refused.
    OverFlagLimit,
}

impl Outcome {
    /// Short label for metrics and the API answer.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Merged => "merged",
            Outcome::Duplicate => "duplicate",
            Outcome::Stale => "stale",
            Outcome::OverFlagLimit => "too_many_flags",
        }
    }
}

/// What a [`Store::join`] of another replica's flag did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Joined {
    /// The local flag changed (subscribers must hear of it).
    pub changed: bool,
    /// The local flag now knows more than the remote copy (it must be written back).
    pub ahead: bool,
}

#[derive(Debug, Clone)]
struct Entry {
    flag: Flag,
    seen: BTreeSet<(i64, String)>,
    dirty: bool,
}

/// All flags the hub knows, with the set of flags changed since the last write.
#[derive(Debug, Clone)]
pub struct Store {
    ttl: i64,
    max_flags_per_member: usize,
    entries: HashMap<FlagKey, Entry>,
}

impl Store {
    /// An empty store whose flags expire `ttl_seconds` after they were last seen.
    pub fn new(ttl_seconds: i64) -> Store {
        Store::with_flag_limit(ttl_seconds, usize::MAX)
    }

    /// An empty store where a member may report at most `max_flags_per_member` active flags.
    pub fn with_flag_limit(ttl_seconds: i64, max_flags_per_member: usize) -> Store {
        Store {
            ttl: ttl_seconds,
            max_flags_per_member,
            entries: HashMap::new(),
        }
    }

    /// Whether a report of `key` by `cluster` would make it a reporter of one flag too many.
    /// Only such reports pay for the scan over the flags.
    fn over_flag_limit(&self, cluster: &str, key: &FlagKey, now: i64) -> bool {
        if self.max_flags_per_member == usize::MAX {
            return false;
        }
        let reports_it = |e: &Entry| e.flag.is_active(now) && e.flag.clusters.contains(cluster);
        if self.entries.get(key).is_some_and(reports_it) {
            return false;
        }
        let held = self.entries.values().filter(|e| reports_it(e)).count();
        held >= self.max_flags_per_member
    }

    /// Merge one report at `now` (Unix seconds); returns what it did and, unless it changed nothing,
    /// the flag as it now is.
    pub fn report(&mut self, report: Report, now: i64) -> (Outcome, Option<Flag>) {
        let observed = report.observed_ms.div_euclid(1000);
        if observed + self.ttl <= now {
            return (Outcome::Stale, None);
        }
        if self.over_flag_limit(&report.cluster, &report.key, now) {
            return (Outcome::OverFlagLimit, None);
        }
        let dedup = (report.observed_ms, report.cluster.clone());
        let fresh = Flag {
            key: report.key.clone(),
            reason: report.reason,
            first_seen: observed,
            last_seen: observed,
            count: 1,
            clusters: BTreeSet::from([report.cluster]),
            expires_at: observed + self.ttl,
        };
        let outcome = match self.entries.get_mut(&report.key) {
            Some(entry) if entry.flag.is_active(now) => {
                if entry.seen.contains(&dedup) {
                    return (Outcome::Duplicate, None);
                }
                let count = entry.flag.count.saturating_add(1);
                entry.flag = join(&entry.flag, &fresh);
                entry.flag.count = count;
                Outcome::Merged
            }
            _ => {
                let entry = Entry {
                    flag: fresh,
                    seen: BTreeSet::new(),
                    dirty: false,
                };
                self.entries.insert(report.key.clone(), entry);
                Outcome::Created
            }
        };
        let entry = self.entries.get_mut(&report.key).map(|entry| {
            remember(&mut entry.seen, dedup);
            entry.dirty = true;
            entry.flag.clone()
        });
        (outcome, entry)
    }

    /// Merge a copy of a flag written by any replica (including this one) or loaded at start.
    pub fn join(&mut self, remote: Flag, now: i64) -> Joined {
        match self.entries.get_mut(&remote.key) {
            Some(entry) if entry.flag.is_active(now) => {
                let merged = join(&entry.flag, &remote);
                let changed = merged != entry.flag;
                let ahead = merged != remote;
                entry.flag = merged;
                entry.dirty |= ahead;
                Joined { changed, ahead }
            }
            _ if !remote.is_active(now) => Joined {
                changed: false,
                ahead: false,
            },
            _ => {
                let entry = Entry {
                    flag: remote.clone(),
                    seen: BTreeSet::new(),
                    dirty: false,
                };
                self.entries.insert(remote.key, entry);
                Joined {
                    changed: true,
                    ahead: false,
                }
            }
        }
    }

    /// Another replica deleted the object of `key`: keep the flag (and write it again) only if it is
    /// still active here.
    pub fn remote_deleted(&mut self, key: &FlagKey, now: i64) {
        if let Some(entry) = self.entries.get_mut(key) {
            if entry.flag.is_active(now) {
                entry.dirty = true;
            } else {
                self.entries.remove(key);
            }
        }
    }

    /// The active flag of `key`.
    pub fn get(&self, key: &FlagKey, now: i64) -> Option<Flag> {
        self.entries
            .get(key)
            .filter(|e| e.flag.is_active(now))
            .map(|e| e.flag.clone())
    }

    /// Active flags, optionally of one region, sorted by name.
    pub fn active(&self, region: Option<&str>, now: i64) -> Vec<Flag> {
        let mut flags: Vec<Flag> = self
            .entries
            .values()
            .filter(|e| e.flag.is_active(now) && region.is_none_or(|r| e.flag.key.region == r))
            .map(|e| e.flag.clone())
            .collect();
        flags.sort_by(|a, b| a.key.cmp(&b.key));
        flags
    }

    /// Number of active flags.
    pub fn active_count(&self, now: i64) -> usize {
        self.entries
            .values()
            .filter(|e| e.flag.is_active(now))
            .count()
    }

    /// Changed, still active flags to write, marking them clean. Write failures hand them back with
    /// [`Store::mark_dirty`].
    pub fn take_dirty(&mut self, now: i64) -> Vec<Flag> {
        let mut flags = Vec::new();
        for entry in self.entries.values_mut() {
            if entry.dirty && entry.flag.is_active(now) {
                entry.dirty = false;
                flags.push(entry.flag.clone());
            }
        }
        flags.sort_by(|a, b| a.key.cmp(&b.key));
        flags
    }

    /// A write of `key` failed: write it again next time.
    pub fn mark_dirty(&mut self, key: &FlagKey) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.dirty = true;
        }
    }

    /// Forget every flag expired at `now` and return them (their objects are to be deleted).
    pub fn remove_expired(&mut self, now: i64) -> Vec<Flag> {
        let expired: Vec<FlagKey> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.flag.is_active(now))
            .map(|(k, _)| k.clone())
            .collect();
        let mut flags: Vec<Flag> = expired
            .iter()
            .filter_map(|k| self.entries.remove(k).map(|e| e.flag))
            .collect();
        flags.sort_by(|a, b| a.key.cmp(&b.key));
        flags
    }
}

/// Severity for ties between reasons observed at the same second.
fn severity(reason: RiskReason) -> u8 {
    match reason {
        RiskReason::SpotInterruption => 2,
        RiskReason::CapacityError => 1,
        RiskReason::Rebalance => 0,
    }
}

/// The join of two copies of one flag (see the module docs).
fn join(a: &Flag, b: &Flag) -> Flag {
    let reason = match a.last_seen.cmp(&b.last_seen) {
        std::cmp::Ordering::Greater => a.reason,
        std::cmp::Ordering::Less => b.reason,
        std::cmp::Ordering::Equal => std::cmp::max_by_key(a.reason, b.reason, |r| severity(*r)),
    };
    Flag {
        key: a.key.clone(),
        reason,
        first_seen: a.first_seen.min(b.first_seen),
        last_seen: a.last_seen.max(b.last_seen),
        count: a.count.max(b.count),
        clusters: a.clusters.union(&b.clusters).cloned().collect(),
        expires_at: a.expires_at.max(b.expires_at),
    }
}

/// Remember a report, forgetting the oldest beyond [`SEEN_PER_FLAG`].
fn remember(seen: &mut BTreeSet<(i64, String)>, report: (i64, String)) {
    seen.insert(report);
    while seen.len() > SEEN_PER_FLAG {
        seen.pop_first();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: i64 = 1800;
    const T0: i64 = 1_800_000_000;

    fn key() -> FlagKey {
        FlagKey {
            region: "us-east-1".into(),
            zone: "us-east-1a".into(),
            instance_type: "m5.large".into(),
        }
    }

    fn report(cluster: &str, at: i64, reason: RiskReason) -> Report {
        Report {
            cluster: cluster.into(),
            key: key(),
            reason,
            observed_ms: at * 1000,
        }
    }

    fn only(store: &Store, now: i64) -> Flag {
        let flags = store.active(None, now);
        assert_eq!(flags.len(), 1, "{flags:?}");
        flags[0].clone()
    }

    #[test]
    fn first_report_raises_a_flag_expiring_a_ttl_after_it_was_seen() {
        let mut store = Store::new(TTL);
        let (outcome, flag) = store.report(report("a", T0, RiskReason::Rebalance), T0 + 5);
        assert_eq!(outcome, Outcome::Created);
        let flag = flag.expect("flag");
        assert_eq!((flag.first_seen, flag.last_seen, flag.count), (T0, T0, 1));
        assert_eq!(flag.expires_at, T0 + TTL);
        assert_eq!(flag.key.name(), "us-east-1.us-east-1a.m5.large");
    }

    #[test]
    fn the_same_report_twice_counts_once() {
        let mut store = Store::new(TTL);
        store.report(report("a", T0, RiskReason::SpotInterruption), T0);
        let (outcome, flag) = store.report(report("a", T0, RiskReason::SpotInterruption), T0);
        assert_eq!((outcome, flag), (Outcome::Duplicate, None));
        assert_eq!(only(&store, T0).count, 1);
    }

    #[test]
    fn distinct_reports_merge_min_max_union_and_count() {
        let mut store = Store::new(TTL);
        store.report(report("b", T0 + 10, RiskReason::SpotInterruption), T0 + 10);
        store.report(report("a", T0, RiskReason::SpotInterruption), T0 + 10);
        let (outcome, _) = store.report(report("a", T0 + 20, RiskReason::Rebalance), T0 + 20);
        assert_eq!(outcome, Outcome::Merged);
        let flag = only(&store, T0 + 20);
        assert_eq!(flag.count, 3);
        assert_eq!((flag.first_seen, flag.last_seen), (T0, T0 + 20));
        assert_eq!(flag.clusters.iter().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(flag.expires_at, T0 + 20 + TTL);
        assert_eq!(flag.reason, RiskReason::Rebalance, "latest report's reason");
    }

    #[test]
    fn an_older_report_does_not_move_expiry_or_reason_back() {
        let mut store = Store::new(TTL);
        store.report(report("a", T0 + 100, RiskReason::Rebalance), T0 + 100);
        store.report(report("b", T0, RiskReason::SpotInterruption), T0 + 100);
        let flag = only(&store, T0 + 100);
        assert_eq!(flag.expires_at, T0 + 100 + TTL);
        assert_eq!(flag.reason, RiskReason::Rebalance);
        assert_eq!(flag.first_seen, T0);
    }

    #[test]
    fn reports_at_the_same_second_keep_the_most_severe_reason() {
        let mut store = Store::new(TTL);
        store.report(report("a", T0, RiskReason::SpotInterruption), T0);
        store.report(report("b", T0, RiskReason::Rebalance), T0);
        assert_eq!(only(&store, T0).reason, RiskReason::SpotInterruption);
    }

    #[test]
    fn a_report_older_than_the_ttl_is_stale() {
        let mut store = Store::new(TTL);
        let (outcome, _) = store.report(report("a", T0, RiskReason::Rebalance), T0 + TTL);
        assert_eq!(outcome, Outcome::Stale);
        assert!(store.active(None, T0 + TTL).is_empty());
    }

    #[test]
    fn an_expired_flag_is_not_listed_and_a_new_report_starts_over() {
        let mut store = Store::new(TTL);
        store.report(report("a", T0, RiskReason::Rebalance), T0);
        store.report(report("b", T0 + 1, RiskReason::Rebalance), T0 + 1);
        assert!(store.active(None, T0 + 1 + TTL).is_empty());
        let (outcome, flag) = store.report(
            report("c", T0 + 2 * TTL, RiskReason::CapacityError),
            T0 + 2 * TTL,
        );
        assert_eq!(outcome, Outcome::Created);
        let flag = flag.expect("flag");
        assert_eq!((flag.count, flag.first_seen), (1, T0 + 2 * TTL));
        assert_eq!(flag.clusters.len(), 1);
    }

    #[test]
    fn the_sweeper_removes_exactly_the_expired_flags() {
        let mut store = Store::new(TTL);
        store.report(report("a", T0, RiskReason::Rebalance), T0);
        let mut other = report("a", T0 + 60, RiskReason::Rebalance);
        other.key.instance_type = "c5.xlarge".into();
        store.report(other, T0 + 60);
        let expired = store.remove_expired(T0 + TTL);
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].key, key());
        assert_eq!(store.active_count(T0 + TTL), 1);
    }

    #[test]
    fn changed_flags_are_written_once_until_they_change_again() {
        let mut store = Store::new(TTL);
        store.report(report("a", T0, RiskReason::Rebalance), T0);
        store.report(report("b", T0, RiskReason::Rebalance), T0);
        assert_eq!(store.take_dirty(T0).len(), 1);
        assert!(store.take_dirty(T0).is_empty());
        store.mark_dirty(&key());
        assert_eq!(store.take_dirty(T0).len(), 1);
    }

    #[test]
    fn region_filter_lists_only_that_region() {
        let mut store = Store::new(TTL);
        store.report(report("a", T0, RiskReason::Rebalance), T0);
        assert_eq!(store.active(Some("us-east-1"), T0).len(), 1);
        assert!(store.active(Some("eu-west-1"), T0).is_empty());
    }

    fn flag(count: u32, first: i64, last: i64, clusters: &[&str], reason: RiskReason) -> Flag {
        Flag {
            key: key(),
            reason,
            first_seen: first,
            last_seen: last,
            count,
            clusters: clusters.iter().map(|c| c.to_string()).collect(),
            expires_at: last + TTL,
        }
    }

    #[test]
    fn join_is_commutative_and_idempotent() {
        let a = flag(3, T0, T0 + 5, &["a"], RiskReason::Rebalance);
        let b = flag(2, T0 - 5, T0 + 9, &["b"], RiskReason::CapacityError);
        assert_eq!(join(&a, &b), join(&b, &a));
        let ab = join(&a, &b);
        assert_eq!(join(&ab, &a), ab);
        assert_eq!(ab.count, 3);
        assert_eq!((ab.first_seen, ab.last_seen), (T0 - 5, T0 + 9));
        assert_eq!(ab.reason, RiskReason::CapacityError);
        assert_eq!(ab.clusters.len(), 2);
    }

    #[test]
    fn joining_our_own_write_back_changes_nothing_and_needs_no_write() {
        let mut store = Store::new(TTL);
        let (_, written) = store.report(report("a", T0, RiskReason::Rebalance), T0);
        store.take_dirty(T0);
        let joined = store.join(written.expect("flag"), T0);
        assert_eq!(
            joined,
            Joined {
                changed: false,
                ahead: false
            }
        );
        assert!(store.take_dirty(T0).is_empty());
    }

    #[test]
    fn joining_an_older_remote_copy_marks_the_flag_for_writing() {
        let mut store = Store::new(TTL);
        store.report(report("a", T0, RiskReason::Rebalance), T0);
        store.report(report("b", T0 + 1, RiskReason::Rebalance), T0 + 1);
        store.take_dirty(T0 + 1);
        let joined = store.join(flag(1, T0, T0, &["a"], RiskReason::Rebalance), T0 + 1);
        assert!(joined.ahead && !joined.changed);
        assert_eq!(store.take_dirty(T0 + 1).len(), 1);
    }

    #[test]
    fn an_expired_remote_copy_is_ignored() {
        let mut store = Store::new(TTL);
        let joined = store.join(flag(1, T0, T0, &["a"], RiskReason::Rebalance), T0 + TTL);
        assert!(!joined.changed);
        assert!(store.active(None, T0 + TTL).is_empty());
    }

    #[test]
    fn a_remote_delete_of_an_active_flag_is_undone_by_writing_it_again() {
        let mut store = Store::new(TTL);
        store.report(report("a", T0, RiskReason::Rebalance), T0);
        store.take_dirty(T0);
        store.remote_deleted(&key(), T0 + 1);
        assert_eq!(store.take_dirty(T0 + 1).len(), 1);
        store.remote_deleted(&key(), T0 + TTL);
        assert_eq!(store.active_count(T0), 0);
    }

    fn report_of(cluster: &str, instance_type: &str) -> Report {
        let mut r = report(cluster, T0, RiskReason::SpotInterruption);
        r.key.instance_type = instance_type.into();
        r
    }

    #[test]
    fn a_member_over_its_flag_limit_is_refused_but_may_confirm_its_own_flags() {
        let mut store = Store::with_flag_limit(TTL, 2);
        assert_eq!(
            store.report(report_of("a", "m5.large"), T0).0,
            Outcome::Created
        );
        assert_eq!(
            store.report(report_of("a", "c5.large"), T0).0,
            Outcome::Created
        );
        let (outcome, flag) = store.report(report_of("a", "r5.large"), T0);
        assert_eq!((outcome, flag), (Outcome::OverFlagLimit, None));
        assert_eq!(
            store.active_count(T0),
            2,
            "the refused report raised nothing"
        );
        let mut again = report_of("a", "m5.large");
        again.observed_ms += 1;
        assert_eq!(
            store.report(again, T0).0,
            Outcome::Merged,
            "a flag it holds"
        );
        assert_eq!(
            store.report(report_of("b", "r5.large"), T0).0,
            Outcome::Created,
            "another member is unaffected"
        );
        assert_eq!(
            store.report(report_of("a", "r5.large"), T0).0,
            Outcome::OverFlagLimit,
            "joining another member's flag also counts"
        );
    }

    #[test]
    fn expired_flags_no_longer_count_against_the_limit() {
        let mut store = Store::with_flag_limit(TTL, 1);
        store.report(report_of("a", "m5.large"), T0);
        let mut later = report_of("a", "c5.large");
        later.observed_ms = (T0 + TTL) * 1000;
        assert_eq!(store.report(later, T0 + TTL).0, Outcome::Created);
    }

    #[test]
    fn a_single_members_flag_is_shown_to_it_alone_until_a_second_member_confirms() {
        let mut store = Store::new(TTL);
        let (_, flag) = store.report(report("a", T0, RiskReason::SpotInterruption), T0);
        let flag = flag.expect("flag");
        assert!(flag.visible_to("a", 2));
        assert!(!flag.visible_to("b", 2) && !flag.visible_to("c", 2));
        assert!(flag.visible_to("b", 1), "confirmations 1 shows every flag");
        let (_, flag) = store.report(report("b", T0, RiskReason::SpotInterruption), T0);
        assert!(flag.expect("flag").visible_to("c", 2));
    }

    #[test]
    fn dedup_memory_is_bounded() {
        let mut store = Store::new(TTL);
        for i in 0..(SEEN_PER_FLAG as i64 + 10) {
            let mut r = report("a", T0, RiskReason::Rebalance);
            r.observed_ms += i;
            store.report(r, T0);
        }
        let entry = store.entries.get(&key()).expect("entry");
        assert_eq!(entry.seen.len(), SEEN_PER_FLAG);
        assert_eq!(entry.flag.count, SEEN_PER_FLAG as u32 + 10);
    }
}
