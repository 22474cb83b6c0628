//! Leader election through a `coordination.k8s.io/v1` Lease, so that of several replicas exactly one
//! acts. Writes use the lease's resourceVersion, so two candidates can never both win a round.
//!
//! Timing (client-go's model): every round is bounded by `round_timeout`; a successful renewal that
//! started at `t` opens this replica's write [`Fence`] until `t + renew_deadline`, and
//! `renew_deadline < duration`, so this replica stops writing before another one can consider the
//! lease expired. On graceful shutdown the lease is released (holder cleared) so a standby takes over
//! at its next round instead of waiting for the lease to expire.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

use crate::fence::Fence;

/// Lease settings.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// Namespace of the lease.
    pub namespace: String,
    /// This candidate's identity (pod name).
    pub identity: String,
    /// How long a lease holds without renewal (what other candidates wait for).
    pub duration: Duration,
    /// How long after the start of its last successful renewal the holder may still write; below
    /// `duration`, so the holder stops before anyone else can take over.
    pub renew_deadline: Duration,
    /// How often the holder renews (and others retry).
    pub retry: Duration,
    /// The longest one round (read + write of the Lease) may take.
    pub round_timeout: Duration,
}

impl LeaseConfig {
    /// A Lease API error, naming the lease.
    fn error(&self, source: kube::Error) -> LeaderError {
        LeaderError::Api {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source,
        }
    }

    /// The operator's settings: 15 s lease, 10 s renew deadline, a round every 2 s, 4 s per round.
    pub fn new(namespace: String, identity: String) -> LeaseConfig {
        LeaseConfig {
            name: "cloudoptim-leader".into(),
            namespace,
            identity,
            duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry: Duration::from_secs(2),
            round_timeout: Duration::from_secs(4),
        }
    }
}

/// Errors of the election loop.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The Lease API call failed.
    #[error("lease {namespace}/{name}: {source}")]
    Api {
        /// Namespace.
        namespace: String,
        /// Lease name.
        name: String,
        /// Cause.
        source: kube::Error,
    },
}

fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let (Some(renewed), Some(seconds)) = (&spec.renew_time, spec.lease_duration_seconds) else {
        return true;
    };
    renewed.0.as_second() + i64::from(seconds) < now.as_second()
}

/// Try once to acquire or renew the lease; returns whether this candidate holds it now.
pub async fn try_acquire(api: &Api<Lease>, config: &LeaseConfig) -> Result<bool, LeaderError> {
    let wrap = |source| config.error(source);
    let now = Timestamp::now();
    let seconds = i32::try_from(config.duration.as_secs()).unwrap_or(i32::MAX);
    let mine = |transitions: i32, acquired: Option<MicroTime>| LeaseSpec {
        holder_identity: Some(config.identity.clone()),
        lease_duration_seconds: Some(seconds),
        acquire_time: acquired.or(Some(MicroTime(now))),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    };
    match api.get_opt(&config.name).await.map_err(wrap)? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(config.name.clone()),
                    namespace: Some(config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(mine(0, None)),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(wrap(e)),
            }
        }
        Some(mut lease) => {
            let spec = lease.spec.clone().unwrap_or_default();
            let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
            let ours = holder == Some(config.identity.as_str());
            // A released lease (no holder) is free at once; another holder's only once expired.
            if !ours && holder.is_some() && !expired(&spec, now) {
                return Ok(false);
            }
            let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
            let acquired = if ours {
                spec.acquire_time.clone()
            } else {
                None
            };
            lease.spec = Some(mine(transitions, acquired));
            replace(api, config, &lease).await
        }
    }
}

/// Write `lease` back with the resourceVersion it was read at: `false` when a concurrent writer got
/// there first (409).
async fn replace(
    api: &Api<Lease>,
    config: &LeaseConfig,
    lease: &Lease,
) -> Result<bool, LeaderError> {
    match api
        .replace(&config.name, &PostParams::default(), lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(config.error(e)),
    }
}

/// Give the lease up if this candidate holds it: clear the holder so a standby takes over at its next
/// round. Returns whether a release was written.
pub async fn release(api: &Api<Lease>, config: &LeaseConfig) -> Result<bool, LeaderError> {
    let Some(mut lease) = api
        .get_opt(&config.name)
        .await
        .map_err(|e| config.error(e))?
    else {
        return Ok(false);
    };
    let mut spec = lease.spec.clone().unwrap_or_default();
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return Ok(false);
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(MicroTime(Timestamp::now()));
    lease.spec = Some(spec);
    replace(api, config, &lease).await
}

/// Sleep until `at`, or forever without one.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A running election.
pub struct Election {
    /// Whether this candidate leads (its fence may still close earlier, by the clock).
    pub leading: watch::Receiver<bool>,
    /// Becomes true after the first round that reached the API server (this replica can work).
    pub reached: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Election {
    /// Stop campaigning and release the lease if held, within `timeout`.
    pub async fn release(self, timeout: Duration) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(timeout, self.task).await.is_err() {
            tracing::warn!(
                "releasing the leader lease timed out; the standby waits for it to expire"
            );
        }
    }
}

/// Run the election until released, publishing whether this candidate leads and opening `fence`
/// after each successful renewal. `client` should be one without the fence (the Lease write must
/// pass while the fence is closed).
pub fn spawn(client: Client, config: LeaseConfig, fence: Fence) -> Election {
    let (leading_tx, leading) = watch::channel(false);
    let (reached_tx, reached) = watch::channel(false);
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &config.namespace);
        loop {
            let started = tokio::time::Instant::now();
            let round = tokio::time::timeout(config.round_timeout, try_acquire(&api, &config));
            // A leader whose renewal hangs steps down when its fence closes, not when the round ends.
            let expiry = fence.expires_at().map(tokio::time::Instant::from_std);
            // (whether this replica leads now, whether the API server answered)
            let (leads, answered) = tokio::select! {
                round = round => match round {
                    Ok(Ok(true)) => {
                        fence.open_until((started + config.renew_deadline).into_std());
                        (true, true)
                    }
                    Ok(Ok(false)) => (false, true),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "leader election round failed");
                        (fence.allows_writes(), false)
                    }
                    Err(_) => {
                        tracing::warn!(timeout = ?config.round_timeout, "leader election round timed out");
                        (fence.allows_writes(), false)
                    }
                },
                _ = sleep_until_some(expiry) => {
                    tracing::warn!("leader lease not renewed within the renew deadline; stepping down");
                    (false, false)
                }
            };
            if answered {
                // Ready as a standby (or leader) once the API server answered a round.
                reached_tx.send_if_modified(|r| !std::mem::replace(r, true));
            }
            if !leads {
                fence.close();
            }
            leading_tx.send_if_modified(|current| std::mem::replace(current, leads) != leads);
            tokio::select! {
                _ = tokio::time::sleep_until(started + config.retry) => {}
                _ = stopped.wait_for(|s| *s) => break,
            }
        }
        fence.close();
        if *leading_tx.borrow() {
            leading_tx.send_replace(false);
            match tokio::time::timeout(config.round_timeout, release(&api, &config)).await {
                Ok(Ok(true)) => tracing::info!("leader lease released"),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "releasing the leader lease"),
                Err(_) => tracing::warn!("releasing the leader lease timed out"),
            }
        }
    });
    Election {
        leading,
        reached,
        stop,
        task,
    }
}
