//! Write fencing: a replica may change the world (Kubernetes objects, AWS resources) only while it holds
//! the leader Lease, and "holds" is decided by the clock, not by a task remembering to stop.
//!
//! The election ([`crate::controllers::leader`]) opens the fence until `round start + renew deadline`
//! after each successful renewal. The renew deadline is shorter than the lease duration, so the fence
//! closes on this replica before any other replica can see the lease expire and take over. Every
//! mutating request goes through the fence at the last moment before it is sent:
//! - Kubernetes: a tower layer on the operator's clients ([`fenced_client`]) refuses every verb but
//!   GET/HEAD/OPTIONS (reads and watches pass);
//! - AWS: an SDK interceptor ([`AwsFence`]) refuses, on every attempt (retries included), every
//!   operation that is not a `Describe*`/`Get*`/`List*` read.
//!
//! A replica frozen (SIGSTOP, a stalled VM, a hung renewal) and resumed after another took over finds
//! its fence closed: whatever its controllers were about to write is refused, then the election
//! notices the loss and the process exits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use prometheus::IntCounterVec;

/// The error of a refused write.
#[derive(Debug, thiserror::Error)]
#[error(
    "{target} write {what} refused: this replica does not hold the leader lease (fenced after a lost or expired renewal)"
)]
pub struct Fenced {
    /// `kubernetes` or `aws`.
    pub target: &'static str,
    /// The request (method and path, or the AWS operation).
    pub what: String,
}

/// Whether writes are allowed now. Cheap to clone; all clones share one state.
#[derive(Clone, Debug)]
pub struct Fence {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    origin: Instant,
    /// Writes are allowed while `origin.elapsed()` (ms) is below this; 0 = closed.
    valid_until_ms: AtomicU64,
    refused: Option<IntCounterVec>,
}

impl Fence {
    /// A fence that always allows writes (no leader election: this process is the only writer).
    pub fn open() -> Fence {
        Fence { inner: None }
    }

    /// A closed fence for a leader-elected replica; refusals are counted in `refused{target}`.
    pub fn closed(refused: Option<IntCounterVec>) -> Fence {
        Fence {
            inner: Some(Arc::new(Inner {
                origin: Instant::now(),
                valid_until_ms: AtomicU64::new(0),
                refused,
            })),
        }
    }

    /// Allow writes until `until` (a successful renewal that started at `until - renew deadline`).
    pub fn open_until(&self, until: Instant) {
        if let Some(inner) = &self.inner {
            let ms = until.saturating_duration_since(inner.origin).as_millis();
            let ms = u64::try_from(ms).unwrap_or(u64::MAX);
            inner.valid_until_ms.store(ms, Ordering::SeqCst);
        }
    }

    /// Refuse writes from now on (leadership lost or released).
    pub fn close(&self) {
        if let Some(inner) = &self.inner {
            inner.valid_until_ms.store(0, Ordering::SeqCst);
        }
    }

    /// Whether a write may be sent now.
    pub fn allows_writes(&self) -> bool {
        match &self.inner {
            None => true,
            Some(inner) => {
                let now = u64::try_from(inner.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
                now < inner.valid_until_ms.load(Ordering::SeqCst)
            }
        }
    }

    /// When the fence closes by itself (`None`: always open, or already closed).
    pub fn expires_at(&self) -> Option<Instant> {
        let inner = self.inner.as_ref()?;
        let ms = inner.valid_until_ms.load(Ordering::SeqCst);
        let at = inner.origin + std::time::Duration::from_millis(ms);
        (ms > 0 && at > Instant::now()).then_some(at)
    }

    /// `Ok` when a write may be sent now, else the error to return (counted and logged).
    pub fn check(&self, target: &'static str, what: impl FnOnce() -> String) -> Result<(), Fenced> {
        if self.allows_writes() {
            return Ok(());
        }
        let what = what();
        if let Some(counter) = self.inner.as_ref().and_then(|i| i.refused.as_ref()) {
            counter.with_label_values(&[target]).inc();
        }
        tracing::warn!(target_system = target, request = %what, "write refused: not the leader");
        Err(Fenced { target, what })
    }
}

/// A Kubernetes client for `config` whose writes pass through `fence`.
pub fn fenced_client(config: kube::Config, fence: Fence) -> Result<kube::Client, kube::Error> {
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&FenceLayer(fence))
        .build())
}

/// A tower layer refusing mutating Kubernetes requests while the fence is closed.
#[derive(Clone, Debug)]
pub struct FenceLayer(pub Fence);

impl<S> tower::Layer<S> for FenceLayer {
    type Service = FenceService<S>;

    fn layer(&self, inner: S) -> FenceService<S> {
        FenceService {
            inner,
            fence: self.0.clone(),
        }
    }
}

/// The service of [`FenceLayer`].
#[derive(Clone, Debug)]
pub struct FenceService<S> {
    inner: S,
    fence: Fence,
}

fn is_read(method: &hyper::Method) -> bool {
    matches!(
        *method,
        hyper::Method::GET | hyper::Method::HEAD | hyper::Method::OPTIONS
    )
}

impl<S, B> tower::Service<hyper::Request<B>> for FenceService<S>
where
    S: tower::Service<hyper::Request<B>>,
    S::Error: Into<tower::BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = tower::BoxError;
    type Future = BoxFuture<'static, Result<S::Response, tower::BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: hyper::Request<B>) -> Self::Future {
        if !is_read(request.method()) {
            let checked = self.fence.check("kubernetes", || {
                format!("{} {}", request.method(), request.uri().path())
            });
            if let Err(fenced) = checked {
                return Box::pin(async move { Err(Box::new(fenced) as tower::BoxError) });
            }
        }
        let future = self.inner.call(request);
        Box::pin(async move { future.await.map_err(Into::into) })
    }
}

/// An AWS SDK interceptor refusing every operation but reads while the fence is closed.
#[derive(Clone, Debug)]
pub struct AwsFence(pub Fence);

/// Operations that change nothing: `Describe*`, `Get*`, `List*`, and STS's credential calls.
pub fn is_read_only_operation(name: &str) -> bool {
    ["Describe", "Get", "List", "AssumeRole"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

#[cfg(feature = "aws")]
impl aws_smithy_runtime_api::client::interceptors::Intercept for AwsFence {
    fn name(&self) -> &'static str {
        "CloudOptimLeaderFence"
    }

    fn read_before_transmit(
        &self,
        _context: &aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef<'_>,
        _components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let operation = cfg
            .load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
            .map(|m| m.name().to_string())
            .unwrap_or_default();
        if is_read_only_operation(&operation) {
            return Ok(());
        }
        self.0.check("aws", || operation)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_closed_fence_opens_until_the_deadline_and_closes_on_demand() {
        let fence = Fence::closed(None);
        assert!(!fence.allows_writes(), "closed until the first renewal");
        fence.open_until(Instant::now() + Duration::from_secs(60));
        assert!(fence.allows_writes());
        assert!(fence.clone().allows_writes(), "clones share the state");
        fence.close();
        assert!(!fence.allows_writes());
        fence.open_until(Instant::now());
        assert!(
            !fence.allows_writes(),
            "a deadline in the past allows nothing"
        );
        assert!(Fence::open().allows_writes());
    }

    #[test]
    fn only_reads_pass_a_closed_fence() {
        for read in [
            "DescribeInstances",
            "DescribeAutoScalingGroups",
            "GetQueueUrl",
            "ListTagsForResource",
            "AssumeRole",
            "GetCallerIdentity",
        ] {
            assert!(is_read_only_operation(read), "{read}");
        }
        for write in [
            "UpdateAutoScalingGroup",
            "TerminateInstanceInAutoScalingGroup",
            "DeleteVolume",
            "TerminateInstances",
            "CreateTags",
            "DeleteMessage",
            "ReceiveMessage",
            "SetDesiredCapacity",
        ] {
            assert!(!is_read_only_operation(write), "{write}");
        }
        assert!(is_read(&hyper::Method::GET));
        assert!(!is_read(&hyper::Method::PATCH));
        assert!(!is_read(&hyper::Method::POST));
    }
}
