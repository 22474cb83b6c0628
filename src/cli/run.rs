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
    /// Address of the /metrics, /healthz and /readyz server.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Elect a leader through a coordination.k8s.io Lease so only one replica acts.
    #[arg(long)]
    pub leader_elect: bool,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "cloudoptim")]
    pub lease_namespace: String,
    /// Identity in the leader election (defaults to the pod name, else the host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Plan, record Events and metrics, and change nothing (overrides every policy's dryRun).
    #[arg(long)]
    pub dry_run: bool,
    /// AWS endpoint override (private endpoints, tests against moto).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,
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
            Catalog::from_dir(dir).map_err(|e| CliError::BadInput(format!("--catalog: {e}")))?
        }
        None => Catalog::embedded().clone(),
    };
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| CliError::Failed(format!("starting tokio: {e}")))?;
    let config = RunConfig {
        cluster_name,
        region,
        dry_run: args.dry_run,
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
            crate::hub::client::HubClient::from_token_file(url, file)
                .map_err(|e| CliError::BadInput(format!("--hub-url/--hub-token-file: {e}")))?,
        ),
    };
    let kube_config = kube::Config::infer().await.map_err(|e| {
        CliError::Failed(format!(
            "connecting to Kubernetes (kubeconfig or in-cluster): {e}"
        ))
    })?;
    let client = kube::Client::try_from(kube_config.clone())
        .map_err(|e| CliError::Failed(format!("building the Kubernetes client: {e}")))?;
    // Evictions get a client without kube's built-in 429 retry: the drain backs off itself, within
    // its deadline, when a PodDisruptionBudget refuses.
    let eviction_client = crate::drain::eviction_client(kube_config)
        .map_err(|e| CliError::Failed(format!("building the eviction client: {e}")))?;
    let aws = AwsOptions {
        region: config.region.clone(),
        endpoint_url: args.aws_endpoint_url.clone(),
        assume_role: args.role_arn.clone().map(|role_arn| AssumeRole {
            role_arn,
            external_id: args.external_id.clone(),
        }),
        static_credentials: None,
    };
    let cloud = AwsCloud::connect(&aws, metrics.clone()).await;
    let advisor = AdvisorCache::new(args.spot_advisor_url.clone(), metrics.clone());
    let catalog = LiveCatalog::new(Arc::new(base), config.region.clone(), advisor);
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server = crate::http::serve_probes(args.metrics_addr, metrics.clone(), ready.clone())
        .await
        .map_err(|e| CliError::Failed(format!("--metrics-addr {}: {e}", args.metrics_addr)))?;
    tracing::info!(addr = %args.metrics_addr, cluster = %config.cluster_name, region = %config.region, dry_run = config.dry_run, "cloudoptim operator starting");

    let mut leading = if args.leader_elect {
        let identity = args.identity.clone().unwrap_or_else(hostname);
        let lease = leader::LeaseConfig {
            name: "cloudoptim-leader".into(),
            namespace: args.lease_namespace.clone(),
            identity,
            duration: std::time::Duration::from_secs(15),
            renew: std::time::Duration::from_secs(2),
        };
        Some(leader::spawn(client.clone(), lease))
    } else {
        None
    };
    if let Some(rx) = leading.as_mut() {
        tracing::info!("waiting to become leader");
        rx.wait_for(|l| *l)
            .await
            .map_err(|_| CliError::Failed("leader election stopped".into()))?;
        tracing::info!("elected leader");
    }
    ready.store(true, std::sync::atomic::Ordering::Relaxed);

    let ctx = Context::new(client, cloud, metrics, config, catalog);
    let lost = {
        let leading = leading.clone();
        async move {
            match leading {
                Some(mut rx) => {
                    let _ = rx.wait_for(|l| !*l).await;
                }
                None => std::future::pending::<()>().await,
            }
        }
    };
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
        .with_recorder(ctx.recorder.clone());
    let controllers = futures::future::join4(
        node_template::run(ctx.clone(), stopped()),
        hibernation::run(ctx.clone(), stopped()),
        policy::run(ctx.clone(), drainer.clone(), nodes.clone(), stopped()),
        interruptions::run(ctx, drainer, hub.clone(), nodes, stopped()),
    );
    let controller = tokio::spawn(controllers);
    if let Some(hub) = hub {
        // Mirror the fleet's flags into local SpotRiskFlags (the NodeTemplate ranking excludes them).
        tokio::spawn(crate::hub::client::run_member(
            ctx_client,
            hub,
            ctx_cluster,
            ctx_region,
            ctx_metrics,
            stopped(),
        ));
    }
    let reason = tokio::select! {
        _ = shutdown_signal() => "signal",
        _ = lost => "leadership lost",
    };
    tracing::info!(reason, "shutting down");
    let _ = stop_tx.send(true);
    // In-flight reconciles get a few seconds to finish; a watch stuck in backoff is not waited for.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), controller).await;
    server.abort();
    if reason == "leadership lost" {
        return Err(CliError::Failed(
            "leadership lost; exiting so a new leader can act alone".into(),
        ));
    }
    Ok(())
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
