//! `cloudoptim run`: the operator (controller mode).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use super::CliError;
use crate::cloud::aws::{AssumeRole, AwsCloud, AwsOptions};
use crate::cloud::spot_advisor::{AdvisorCache, DEFAULT_URL};
use crate::controllers::catalog::LiveCatalog;
use crate::controllers::{
    Context, RunConfig, hibernation, interruptions, leader, node_template, policy,
};
use crate::engine::catalog::Catalog;
use crate::fence::{Fence, fenced_client};
use crate::metrics::Metrics;

/// Arguments of `cloudoptim run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Name of this cluster; instances and volumes are acted on only when they carry its cluster tag.
    #[arg(long, env = "CLOUDOPTIM_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// AWS region of the cluster.
    #[arg(long, env = "AWS_REGION")]
    pub region: Option<String>,
    /// URL of the CloudOptim hub to share Spot risk flags with (optional).
    #[arg(long, env = "CLOUDOPTIM_HUB_URL")]
    pub hub_url: Option<String>,
    /// File holding this cluster's bearer token for the hub.
    #[arg(long, env = "CLOUDOPTIM_HUB_TOKEN_FILE")]
    pub hub_token_file: Option<PathBuf>,
    /// PEM bundle of the CA that signed the hub's certificate (a private CA); without it the
    /// system's roots are trusted.
    #[arg(long, env = "CLOUDOPTIM_HUB_CA_FILE")]
    pub hub_ca_file: Option<PathBuf>,
    /// Allow a plain http:// --hub-url (the token then crosses the network in clear; only behind
    /// something that encrypts).
    #[arg(long, env = "CLOUDOPTIM_HUB_INSECURE")]
    pub hub_insecure: bool,
    /// Address of the /metrics, /healthz and /readyz server.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Elect a leader through a coordination.k8s.io Lease so only one replica acts.
    #[arg(long)]
    pub leader_elect: bool,
    /// The namespace the operator runs in: it holds the leader-election Lease and is never hibernated
    /// (the chart sets POD_NAMESPACE from the downward API; without it, the service account's namespace
    /// file is read).
    #[arg(long, alias = "namespace", env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// The file naming the pod's namespace, read when neither --lease-namespace nor POD_NAMESPACE is set.
    #[arg(long, default_value = SERVICE_ACCOUNT_NAMESPACE_FILE, hide = true)]
    pub namespace_file: PathBuf,
    /// Identity in the leader election (defaults to the pod name, else the host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// The least time an instance without a Node waits before it is a zombie, whatever a policy's
    /// zombies.gracePeriod says. Do not lower it in production (tests do).
    #[arg(long, default_value = "10m")]
    pub zombie_grace_floor_instances: String,
    /// The least time an unattached, unreferenced volume waits before it is a zombie, whatever a
    /// policy's zombies.gracePeriod says. Do not lower it in production (tests do).
    #[arg(long, default_value = "1h")]
    pub zombie_grace_floor_volumes: String,
    /// The least time a node cordoned for an interruption notice stays cordoned before it can be
    /// released, whatever a policy's interruptions.releaseAfter says. Do not lower it in production
    /// (tests do).
    #[arg(long, default_value = "3m")]
    pub interruption_hold_floor: String,
    /// Namespaces hibernation never puts to sleep, whatever a schedule selects (comma-separated; the
    /// chart passes workloadGuard.protectedNamespaces, which its admission policies also enforce).
    #[arg(long, value_delimiter = ',', default_value = "kube-system")]
    pub protected_namespaces: Vec<String>,
    /// Let `rightsizing.mode: Apply` patch workloads' container requests (off: a policy asking for
    /// Apply is Ready=False saying so). The chart sets it with `rightsizing.apply.enabled`, which also
    /// lets its workload guard accept changes to container resources.
    #[arg(long, env = "CLOUDOPTIM_RIGHTSIZING_APPLY")]
    pub rightsizing_apply: bool,
    /// Bearer token file sent to every policy's Prometheus (read again each pass).
    #[arg(long)]
    pub prometheus_bearer_token_file: Option<PathBuf>,
    /// CA bundle (PEM) that signs the Prometheus certificate, instead of the system roots.
    #[arg(long)]
    pub prometheus_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS to Prometheus; needs --prometheus-client-key-file.
    #[arg(long, requires = "prometheus_client_key_file")]
    pub prometheus_client_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM); needs --prometheus-client-cert-file.
    #[arg(long, requires = "prometheus_client_cert_file")]
    pub prometheus_client_key_file: Option<PathBuf>,
    /// Drains running at once in this process, consolidation and interruptions together.
    #[arg(long, default_value_t = crate::drain::DEFAULT_MAX_CONCURRENT_DRAINS)]
    pub max_concurrent_drains: usize,
    /// Plan, record Events and metrics, and change nothing (overrides every policy's dryRun).
    #[arg(long)]
    pub dry_run: bool,
    /// AWS endpoint override (private endpoints, tests against moto).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,
    /// Price List API endpoint override (on-demand prices; the API answers from us-east-1).
    #[arg(long, env = "CLOUDOPTIM_PRICING_ENDPOINT_URL")]
    pub pricing_endpoint_url: Option<String>,
    /// Assume this IAM role for every AWS call.
    #[arg(long, env = "CLOUDOPTIM_ROLE_ARN")]
    pub role_arn: Option<String>,
    /// External id required by the role's trust policy.
    #[arg(long, env = "CLOUDOPTIM_EXTERNAL_ID", requires = "role_arn")]
    pub external_id: Option<String>,
    /// Catalog directory with on-demand prices (default: the bundled catalog).
    #[arg(long)]
    pub catalog: Option<PathBuf>,
    /// Spot Advisor feed URL (https://, http:// or file:// for an air-gapped mirror).
    #[arg(long, env = "CLOUDOPTIM_SPOT_ADVISOR_URL", default_value = DEFAULT_URL)]
    pub spot_advisor_url: String,
}

/// Where the kubelet mounts the pod's namespace with its service account token.
pub const SERVICE_ACCOUNT_NAMESPACE_FILE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// The Lease namespace: the flag (or POD_NAMESPACE), else the namespace file's content.
pub fn lease_namespace(flag: Option<&str>, file: &std::path::Path) -> Result<String, CliError> {
    if let Some(namespace) = flag.map(str::trim).filter(|n| !n.is_empty()) {
        return Ok(namespace.to_string());
    }
    match std::fs::read_to_string(file) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_string()),
        _ => Err(CliError::BadInput(format!(
            "--leader-elect needs the Lease namespace: set POD_NAMESPACE (the chart does, from the \
             downward API) or --lease-namespace; {} is not readable",
            file.display()
        ))),
    }
}

fn required(value: &Option<String>, flag: &str) -> Result<String, CliError> {
    value.clone().filter(|v| !v.is_empty()).ok_or_else(|| {
        CliError::BadInput(format!("{flag} is required (or its environment variable)"))
    })
}

/// Start the operator and run until SIGTERM / Ctrl-C, or until leadership is lost.
pub fn run(args: &RunArgs) -> Result<(), CliError> {
    let cluster_name = required(&args.cluster_name, "--cluster-name")?;
    let region = required(&args.region, "--region")?;
    let base = match &args.catalog {
        Some(dir) => {
            super::load_catalog(dir).map_err(|e| CliError::BadInput(format!("--catalog: {e}")))?
        }
        None => Catalog::embedded().clone(),
    };
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| CliError::Failed(format!("starting tokio: {e}")))?;
    let floor = |flag: &str, text: &str| {
        crate::engine::duration::parse(text)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .map_err(|e| CliError::BadInput(format!("{flag}: {e}")))
    };
    let config = RunConfig {
        cluster_name,
        region,
        dry_run: args.dry_run,
        own_namespace: lease_namespace(args.lease_namespace.as_deref(), &args.namespace_file).ok(),
        zombie_grace_floors: (
            floor(
                "--zombie-grace-floor-instances",
                &args.zombie_grace_floor_instances,
            )?,
            floor(
                "--zombie-grace-floor-volumes",
                &args.zombie_grace_floor_volumes,
            )?,
        ),
        own_pod: args.identity.clone(),
        protected_namespaces: args
            .protected_namespaces
            .iter()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect(),
        interruption_hold_floor: crate::engine::duration::parse(&args.interruption_hold_floor)
            .map_err(|e| CliError::BadInput(format!("--interruption-hold-floor: {e}")))?,
        rightsizing_apply: args.rightsizing_apply,
        prometheus: crate::prometheus::PrometheusAccess {
            bearer_token_file: args.prometheus_bearer_token_file.clone(),
            ca_file: args.prometheus_ca_file.clone(),
            identity: args
                .prometheus_client_cert_file
                .clone()
                .zip(args.prometheus_client_key_file.clone()),
        },
    };
    let result = runtime.block_on(operator(args, config, base));
    // Whatever is still running (watch retries, lease renewals) is abandoned, not awaited.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    result
}

async fn operator(args: &RunArgs, config: RunConfig, base: Catalog) -> Result<(), CliError> {
    let metrics = Metrics::new().map_err(|e| CliError::Failed(e.to_string()))?;
    // The hub is optional; a bad URL or token file is a usage error found before anything starts.
    let hub = match (&args.hub_url, &args.hub_token_file) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(CliError::BadInput(
                "--hub-url needs --hub-token-file (this cluster's bearer token)".into(),
            ));
        }
        (Some(url), Some(file)) => Some(
            crate::hub::client::HubClient::from_token_file(
                url,
                file,
                &crate::hub::client::HubTls {
                    ca_file: args.hub_ca_file.clone(),
                    insecure: args.hub_insecure,
                },
            )
            .map_err(|e| CliError::BadInput(format!("--hub-url/--hub-token-file: {e}")))?,
        ),
    };
    let identity = args.identity.clone().unwrap_or_else(hostname);
    let lease = if args.leader_elect {
        let namespace = lease_namespace(args.lease_namespace.as_deref(), &args.namespace_file)?;
        Some(leader::LeaseConfig::new(namespace, identity.clone()))
    } else {
        None
    };
    // Without an election this process is the only writer; with one, writes wait for the lease.
    let fence = if lease.is_some() {
        Fence::closed(Some(metrics.fenced_writes.clone()))
    } else {
        Fence::open()
    };
    let mut kube_config = kube::Config::infer().await.map_err(|e| {
        CliError::Failed(format!(
            "connecting to Kubernetes (kubeconfig or in-cluster): {e}"
        ))
    })?;
    // Audit logs tell the replicas apart.
    if let Ok(agent) = hyper::header::HeaderValue::from_str(&format!(
        "cloudoptim/{} ({identity})",
        env!("CARGO_PKG_VERSION")
    )) {
        kube_config.headers.push((hyper::header::USER_AGENT, agent));
    }
    let client = fenced_client(kube_config.clone(), fence.clone())
        .map_err(|e| CliError::Failed(format!("building the Kubernetes client: {e}")))?;
    // Evictions get a client without kube's built-in 429 retry: the drain backs off itself, within
    // its deadline, when a PodDisruptionBudget refuses.
    let eviction_client = crate::drain::eviction_client(kube_config.clone(), fence.clone())
        .map_err(|e| CliError::Failed(format!("building the eviction client: {e}")))?;
    let aws = AwsOptions {
        region: config.region.clone(),
        endpoint_url: args.aws_endpoint_url.clone(),
        pricing_endpoint_url: args.pricing_endpoint_url.clone(),
        assume_role: args.role_arn.clone().map(|role_arn| AssumeRole {
            role_arn,
            external_id: args.external_id.clone(),
        }),
        static_credentials: None,
    };
    let cloud =
        AwsCloud::connect_fenced(&aws, metrics.clone(), fence.clone(), Some(&identity)).await;
    let advisor = AdvisorCache::new(args.spot_advisor_url.clone(), metrics.clone());
    let catalog = LiveCatalog::new(
        Arc::new(base),
        config.region.clone(),
        advisor,
        metrics.clone(),
    );
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server = crate::http::serve_probes(args.metrics_addr, metrics.clone(), ready.clone())
        .await
        .map_err(|e| CliError::Failed(format!("--metrics-addr {}: {e}", args.metrics_addr)))?;
    tracing::info!(addr = %args.metrics_addr, cluster = %config.cluster_name, region = %config.region, dry_run = config.dry_run, identity = %identity, "cloudoptim operator starting");

    // The election's own client is not fenced (its Lease writes open the fence).
    let election = match lease {
        Some(lease) => {
            let election_client = kube::Client::try_from(kube_config)
                .map_err(|e| CliError::Failed(format!("building the Kubernetes client: {e}")))?;
            tracing::info!(namespace = %lease.namespace, "leader election: waiting to lead");
            Some(leader::spawn(election_client, lease, fence.clone()))
        }
        None => None,
    };
    // Ready once the API server answered: every replica, leader or standby, so `helm --wait`, Argo CD
    // and rolling updates see the Deployment healthy.
    if let Some(election) = &election {
        let mut reached = election.reached.clone();
        tokio::select! {
            r = reached.wait_for(|r| *r) => { r.map_err(|_| CliError::Failed("leader election stopped".into()))?; }
            _ = shutdown_signal() => { server.abort(); return Ok(()); }
        }
    }
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(election) = &election {
        let mut leading = election.leading.clone();
        tokio::select! {
            r = leading.wait_for(|l| *l) => { r.map_err(|_| CliError::Failed("leader election stopped".into()))?; }
            _ = shutdown_signal() => { server.abort(); return Ok(()); }
        }
        tracing::info!("elected leader");
    }
    metrics.leader.set(1);

    let ctx = Context::new(client, cloud, metrics.clone(), config, catalog);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut stop_rx = stop_rx.clone();
        async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        }
    };
    let (ctx_client, ctx_cluster, ctx_region, ctx_metrics) = (
        ctx.client.clone(),
        ctx.config.cluster_name.clone(),
        ctx.config.region.clone(),
        ctx.metrics.clone(),
    );
    let nodes = policy::node_store(&ctx.client);
    let drainer = crate::drain::Drainer::new(eviction_client, ctx.metrics.clone())
        .with_recorder(ctx.recorder.clone())
        .with_max_concurrent(args.max_concurrent_drains);
    let controllers = futures::future::join4(
        node_template::run(ctx.clone(), stopped()),
        hibernation::run(ctx.clone(), stopped()),
        policy::run(ctx.clone(), drainer.clone(), nodes.clone(), stopped()),
        interruptions::run(ctx, drainer, hub.clone(), nodes, stopped()),
    );
    let mut controller = tokio::spawn(controllers);
    let member = hub.map(|hub| {
        // Mirror the fleet's flags into local SpotRiskFlags (the NodeTemplate ranking excludes them).
        tokio::spawn(crate::hub::client::run_member(
            ctx_client,
            hub,
            ctx_cluster,
            ctx_region,
            ctx_metrics,
            stopped(),
        ))
    });
    let lost = async {
        match &election {
            Some(election) => {
                let mut leading = election.leading.clone();
                let _ = leading.wait_for(|l| !*l).await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    let outcome = wait_for_stop(shutdown_signal(), lost, &mut controller).await;
    ready.store(false, std::sync::atomic::Ordering::Relaxed);
    metrics.leader.set(0);
    match outcome {
        Stop::Signal => {
            tracing::info!("shutting down");
            let _ = stop_tx.send(true);
            // In-flight reconciles get a few seconds to finish (still under the lease); a watch stuck in
            // backoff is not waited for. Then the lease is released so a standby takes over at once.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), &mut controller).await;
            controller.abort();
            if let Some(member) = member {
                member.abort();
            }
            if let Some(election) = election {
                election.release(std::time::Duration::from_secs(5)).await;
            }
            server.abort();
            Ok(())
        }
        Stop::LeadershipLost => {
            // The fence already refuses every write; stop at once so nothing else is attempted.
            fence.close();
            tracing::error!("leadership lost; exiting so the new leader acts alone");
            server.abort();
            Err(CliError::Failed(
                "leadership lost; exiting so a new leader can act alone".into(),
            ))
        }
        Stop::ControllersEnded(how) => {
            fence.close();
            tracing::error!(how = %how, "the controllers stopped; exiting so the kubelet restarts the operator");
            if let Some(election) = election {
                election.release(std::time::Duration::from_secs(5)).await;
            }
            server.abort();
            Err(CliError::Failed(format!(
                "the controllers stopped unexpectedly ({how}); exiting so the operator is restarted"
            )))
        }
    }
}

/// Wait for the first reason to stop: a signal, the loss of the lease, or the end of the controllers'
/// task (which must never end on its own: a return or a panic there is a failure).
async fn wait_for_stop<T>(
    signal: impl std::future::Future<Output = ()>,
    lost: impl std::future::Future<Output = ()>,
    controllers: &mut tokio::task::JoinHandle<T>,
) -> Stop {
    tokio::select! {
        _ = signal => Stop::Signal,
        _ = lost => Stop::LeadershipLost,
        ended = controllers => Stop::ControllersEnded(match ended {
            Ok(_) => "returned".to_string(),
            Err(e) if e.is_panic() => "panicked".to_string(),
            Err(e) => e.to_string(),
        }),
    }
}

/// Why the operator stops.
#[derive(Debug, PartialEq)]
enum Stop {
    /// SIGTERM or Ctrl-C.
    Signal,
    /// Another replica holds the lease now.
    LeadershipLost,
    /// The controllers' task ended (a panic or an unexpected return).
    ControllersEnded(String),
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| format!("cloudoptim-{}", std::process::id()))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_namespace_comes_from_the_flag_or_env_then_the_service_account_file() {
        let dir = std::env::temp_dir().join(format!("cloudoptim-ns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("namespace");
        std::fs::write(&file, "team-ops\n").expect("written");
        assert_eq!(
            lease_namespace(Some("platform"), &file).expect("flag"),
            "platform"
        );
        assert_eq!(lease_namespace(None, &file).expect("file"), "team-ops");
        assert_eq!(lease_namespace(Some(" "), &file).expect("file"), "team-ops");
        let missing = dir.join("absent");
        let error = lease_namespace(None, &missing).expect_err("nothing to go on");
        assert!(error.to_string().contains("POD_NAMESPACE"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_panicking_or_returning_controller_task_stops_the_operator() {
        let never = || std::future::pending::<()>();
        let mut panics = tokio::spawn(async {
            panic!("a reconcile overflowed");
        });
        assert_eq!(
            wait_for_stop(never(), never(), &mut panics).await,
            Stop::ControllersEnded("panicked".into())
        );
        let mut returns = tokio::spawn(async {});
        assert_eq!(
            wait_for_stop(never(), never(), &mut returns).await,
            Stop::ControllersEnded("returned".into())
        );
        let mut runs = tokio::spawn(never());
        assert_eq!(
            wait_for_stop(async {}, never(), &mut runs).await,
            Stop::Signal
        );
        assert_eq!(
            wait_for_stop(never(), async {}, &mut runs).await,
            Stop::LeadershipLost
        );
        runs.abort();
    }
}
