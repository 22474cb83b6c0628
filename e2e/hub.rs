//! The real `cloudoptim hub` binary against the real API server, over TLS with a CA made for each
//! test: authentication and validation refusals, flags stored as SpotRiskFlag objects, the list and
//! watch endpoints, restarts that lose nothing, expiry, a member mirroring the hub's flags into its
//! own (second) API server; and the network hardening (`hub_security` below): plain HTTP refused,
//! revoked tokens, a flooding member throttled, the confirmation rule, no start without TLS.

mod hub_security;
mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cloudoptim::api::SpotRiskFlag;
use cloudoptim::api::risk_flag::{FlagSource, RiskReason};
use cloudoptim::hub::client::{LocalReport, run_member};
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use serde_json::{Value, json};
use support::hub::{Hub, HubOptions, TOKEN_A, TOKEN_B};
use support::operator::eventually;
use support::{ControlPlane, repo_root, unique};

const WAIT: Duration = Duration::from_secs(30);
/// A region of its own for each test (the API server is shared by the tests of this binary).
fn region() -> String {
    unique("zz-hub")
}

fn report(cluster: &str, region: &str, instance_type: &str, observed_at: Timestamp) -> Value {
    json!({"clusterId": cluster, "region": region, "zone": format!("{region}a"),
           "instanceType": instance_type, "reason": "SpotInterruption",
           "observedAt": observed_at.to_string()})
}

fn flag_name(region: &str, instance_type: &str) -> String {
    format!("{region}.{region}a.{instance_type}")
}

#[tokio::test]
async fn a_missing_or_unknown_token_is_refused_with_401() {
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    let hub = Hub::start(cp, 1800);
    let body = report("member-a", &region(), "m5.large", Timestamp::now());
    let (status, answer) = hub.post(None, &body);
    assert_eq!(status, 401, "{answer}");
    assert!(answer.contains("\"error\""), "{answer}");
    assert_eq!(hub.post(Some("not-a-member-token"), &body).0, 401);
    assert_eq!(hub.request("GET", "/v1/flags", Some("nope"), None).0, 401);
}

#[tokio::test]
async fn a_member_reporting_as_another_cluster_is_refused_with_403() {
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    let hub = Hub::start(cp, 1800);
    let body = report("member-a", &region(), "m5.large", Timestamp::now());
    let (status, answer) = hub.post(Some(TOKEN_B), &body);
    assert_eq!(status, 403, "{answer}");
}

#[tokio::test]
async fn a_body_over_64_kib_is_refused_with_413() {
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    let hub = Hub::start(cp, 1800);
    // Headers only: the declared length alone is refused, before any body is read.
    let (status, answer) = hub.send_raw(&format!(
        "POST /v1/flags HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer {TOKEN_A}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{{\"pad\": \"",
        70 * 1024
    ));
    assert_eq!(status, 413, "{answer}");
    assert!(answer.contains("larger than 65536 bytes"), "{answer}");
}

#[tokio::test]
async fn an_invalid_report_is_refused_with_400_naming_the_field() {
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    let hub = Hub::start(cp, 1800);
    let region = region();
    let mut body = report("member-a", &region, "m5.large", Timestamp::now());
    body["zone"] = json!("eu-west-1a");
    let (status, answer) = hub.post(Some(TOKEN_A), &body);
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("zone: "), "{answer}");
    let mut body = report("member-a", &region, "m5.large", Timestamp::now());
    body["reason"] = json!("Meteor");
    let (status, answer) = hub.post(Some(TOKEN_A), &body);
    assert_eq!(status, 400);
    assert!(answer.contains("reason: "), "{answer}");
    let (status, answer) = hub.request("POST", "/v1/flags", Some(TOKEN_A), Some("{not json"));
    assert_eq!(status, 400);
    assert!(answer.contains("not valid JSON"), "{answer}");
}

#[tokio::test]
async fn a_report_becomes_a_spot_risk_flag_object_and_is_listed_once_per_report() {
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    let hub = Hub::start(cp, 1800);
    let region = region();
    let at = Timestamp::now();
    let body = report("member-a", &region, "m5.large", at);
    assert_eq!(hub.post(Some(TOKEN_A), &body).0, 202);
    assert_eq!(
        hub.post(Some(TOKEN_A), &body).0,
        202,
        "a retried report is accepted"
    );
    let (status, _) = hub.post(Some(TOKEN_B), &report("member-b", &region, "m5.large", at));
    assert_eq!(status, 202);

    let flags = hub.list(&region);
    assert_eq!(flags.len(), 1, "{flags:?}");
    assert_eq!(flags[0]["count"], 2, "the retry counted once: {flags:?}");
    assert_eq!(flags[0]["clusters"], json!(["member-a", "member-b"]));
    assert!(
        hub.list("zz-other-1").is_empty(),
        "the region filter applies"
    );

    let api: Api<SpotRiskFlag> = Api::all(cp.client().await);
    let name = flag_name(&region, "m5.large");
    let stored = eventually(WAIT, "the SpotRiskFlag object with both reports", || {
        let api = api.clone();
        let name = name.clone();
        async move {
            api.get_opt(&name)
                .await
                .ok()
                .flatten()
                .filter(|f| f.spec.count == 2)
        }
    })
    .await;
    assert_eq!(stored.spec.source, FlagSource::Hub);
    assert_eq!(stored.spec.reason, RiskReason::SpotInterruption);
    assert_eq!(stored.spec.clusters, ["member-a", "member-b"]);
    assert_eq!(
        stored.spec.expires_at.0.as_second(),
        stored.spec.last_seen.0.as_second() + 1800
    );
}

#[tokio::test]
async fn the_watch_sends_the_active_set_then_a_flag_posted_afterwards() {
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    let hub = Hub::start(cp, 1800);
    let region = region();
    assert_eq!(
        hub.post(
            Some(TOKEN_A),
            &report("member-a", &region, "m5.large", Timestamp::now())
        )
        .0,
        202
    );
    let events = hub.watch(TOKEN_A, &region);
    let first = events.recv_timeout(WAIT).expect("the active flag");
    assert_eq!(first.event, "flag");
    assert!(first.data.contains("m5.large"), "{first:?}");
    assert_eq!(events.recv_timeout(WAIT).expect("synced").event, "synced");

    let posted = Instant::now();
    assert_eq!(
        hub.post(
            Some(TOKEN_A),
            &report("member-a", &region, "c5.xlarge", Timestamp::now())
        )
        .0,
        202
    );
    let change = events.recv_timeout(WAIT).expect("the new flag");
    println!("hub watch propagation: {:?}", posted.elapsed());
    assert_eq!(change.event, "flag");
    let view: Value = serde_json::from_str(&change.data).expect("flag JSON");
    assert_eq!(view["name"], flag_name(&region, "c5.xlarge"));
    assert_eq!(view["clusters"], json!(["member-a"]));
}

#[tokio::test]
async fn a_crashed_hub_restarts_with_its_flags() {
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    let mut hub = Hub::start(cp, 1800);
    let region = region();
    assert_eq!(
        hub.post(
            Some(TOKEN_A),
            &report("member-a", &region, "m5.large", Timestamp::now())
        )
        .0,
        202
    );
    let api: Api<SpotRiskFlag> = Api::all(cp.client().await);
    let name = flag_name(&region, "m5.large");
    eventually(WAIT, "the flag written behind", || {
        let api = api.clone();
        let name = name.clone();
        async move { api.get_opt(&name).await.ok().flatten() }
    })
    .await;

    hub.crash_and_restart();

    let flags = hub.list(&region);
    assert_eq!(flags.len(), 1, "{flags:?}");
    assert_eq!(flags[0]["name"], name);
    assert_eq!(flags[0]["clusters"], json!(["member-a"]));
}

#[tokio::test]
async fn a_flag_expires_after_the_ttl_and_its_object_is_deleted() {
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    let hub = Hub::start(cp, 3);
    let region = region();
    assert_eq!(
        hub.post(
            Some(TOKEN_A),
            &report("member-a", &region, "m5.large", Timestamp::now())
        )
        .0,
        202
    );
    let api: Api<SpotRiskFlag> = Api::all(cp.client().await);
    let name = flag_name(&region, "m5.large");
    eventually(WAIT, "the flag written behind", || {
        let api = api.clone();
        let name = name.clone();
        async move { api.get_opt(&name).await.ok().flatten() }
    })
    .await;

    eventually(WAIT, "the flag gone from the list", || {
        let empty = hub.list(&region).is_empty();
        async move { empty.then_some(()) }
    })
    .await;
    eventually(WAIT, "the expired SpotRiskFlag object deleted", || {
        let api = api.clone();
        let name = name.clone();
        async move { matches!(api.get_opt(&name).await, Ok(None)).then_some(()) }
    })
    .await;
}

/// A second API server (etcd + kube-apiserver only) for a member cluster, with the CRDs installed.
async fn member_cluster() -> Option<ControlPlane> {
    support::api_only_cluster("member").await
}

fn stop(dir: &Path) {
    let _ = Command::new(repo_root().join("e2e/tools/control-plane.sh"))
        .arg("stop")
        .arg(dir)
        .output();
}

#[tokio::test]
async fn a_member_pushes_its_flags_and_mirrors_the_hubs_until_they_expire() {
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    let Some(member) = member_cluster().await else {
        return;
    };
    // Member A's flag alone reaches member B here (--confirmations=1); the default confirmation
    // rule is tested in hub_security.
    let a = format!("{TOKEN_A}\n");
    let hub = Hub::start_with(
        cp,
        HubOptions {
            ttl: 6,
            members: &[("member-a", &a), ("member-b", TOKEN_B)],
            tls: true,
            args: &["--confirmations=1"],
        },
    );
    let region = region();
    let client = hub.client(TOKEN_B);
    let metrics = cloudoptim::metrics::Metrics::new().expect("metrics");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(run_member(
        member.client().await,
        client.clone(),
        "member-b".into(),
        region.clone(),
        metrics,
        async move {
            let _ = stop_rx.await;
        },
    ));

    // Member A raises a flag; member B's cluster gets it with source Hub.
    let posted = Instant::now();
    assert_eq!(
        hub.post(
            Some(TOKEN_A),
            &report("member-a", &region, "m5.large", Timestamp::now())
        )
        .0,
        202
    );
    let local: Api<SpotRiskFlag> = Api::all(member.client().await);
    let name = flag_name(&region, "m5.large");
    let mirrored = eventually(
        WAIT,
        "the hub's flag mirrored into the member cluster",
        || {
            let local = local.clone();
            let name = name.clone();
            async move { local.get_opt(&name).await.ok().flatten() }
        },
    )
    .await;
    println!(
        "member propagation (post at A -> SpotRiskFlag at B): {:?}",
        posted.elapsed()
    );
    assert_eq!(mirrored.spec.source, FlagSource::Hub);
    assert_eq!(mirrored.spec.clusters, ["member-a"]);

    // Member B's own report reaches the hub through the queue.
    client.report(LocalReport {
        region: region.clone(),
        zone: format!("{region}a"),
        instance_type: "c5.large".into(),
        reason: RiskReason::Rebalance,
        observed_at: Timestamp::now(),
    });
    eventually(WAIT, "member B's report at the hub", || {
        let found = hub
            .list(&region)
            .iter()
            .any(|f| f["instanceType"] == "c5.large" && f["clusters"] == json!(["member-b"]));
        async move { found.then_some(()) }
    })
    .await;

    // After the TTL the mirrored flags go away.
    eventually(WAIT, "the mirrored flag deleted after expiry", || {
        let local = local.clone();
        let name = name.clone();
        async move { matches!(local.get_opt(&name).await, Ok(None)).then_some(()) }
    })
    .await;
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), running).await;
    stop(&member.dir);
}
