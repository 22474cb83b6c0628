//! Leader election through a `coordination.k8s.io/v1` Lease, so that of several replicas exactly one
//! acts. The leader renews the lease every `renew`; a lease not renewed for `duration` may be taken
//! over. Writes use the lease's resourceVersion, so two candidates can never both win a round.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

/// Lease settings.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// Namespace of the lease.
    pub namespace: String,
    /// This candidate's identity (pod name).
    pub identity: String,
    /// How long a lease holds without renewal.
    pub duration: Duration,
    /// How often the holder renews (and others retry).
    pub renew: Duration,
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
    let wrap = |source| LeaderError::Api {
        namespace: config.namespace.clone(),
        name: config.name.clone(),
        source,
    };
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
            let holder = spec.holder_identity.as_deref();
            let ours = holder == Some(config.identity.as_str());
            if !ours && !expired(&spec, now) {
                return Ok(false);
            }
            let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
            let acquired = if ours {
                spec.acquire_time.clone()
            } else {
                None
            };
            lease.spec = Some(mine(transitions, acquired));
            // replace() sends the resourceVersion we read: a concurrent writer makes this a 409.
            match api
                .replace(&config.name, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(wrap(e)),
            }
        }
    }
}

/// Run the election forever, publishing whether this candidate leads. A leader that fails to renew
/// within the lease duration steps down (publishes `false`) before anyone else can take over.
pub fn spawn(client: Client, config: LeaseConfig) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &config.namespace);
        let mut last_success = tokio::time::Instant::now();
        loop {
            match try_acquire(&api, &config).await {
                Ok(leading) => {
                    if leading {
                        last_success = tokio::time::Instant::now();
                    }
                    tx.send_if_modified(|current| std::mem::replace(current, leading) != leading);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "leader election round failed");
                    if last_success.elapsed() >= config.duration {
                        tx.send_if_modified(|current| std::mem::replace(current, false));
                    }
                }
            }
            tokio::time::sleep(config.renew).await;
        }
    });
    rx
}
