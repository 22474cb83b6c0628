//! Leader election: of two `cloudoptim run --leader-elect` replicas exactly one leads (acts) while both
//! are Ready; when the leader dies (SIGKILL: no release), the other takes over once the Lease expires.
//! The chart-faithful install, rolling restart and frozen leader are in `e2e/ha.rs`.

mod support;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use support::operator::{Operator, eventually};
use support::{ControlPlane, Moto};

async fn lease_holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get("cloudoptim-leader")
        .await
        .expect("lease")
        .spec
        .and_then(|s| s.holder_identity)
}

fn leads(operator: &Operator) -> bool {
    operator.metric("cloudoptim_leader") == 1.0
}

#[tokio::test]
async fn exactly_one_replica_leads_and_a_standby_takes_over_when_it_dies() {
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    let Some(moto) = Moto::start() else { return };
    let client = cp.client().await;
    let namespace = support::create_namespace(&client, "lease").await;

    let args = |id: &str| {
        vec![
            "--leader-elect".to_string(),
            format!("--lease-namespace={namespace}"),
            format!("--identity={id}"),
        ]
    };
    let first_args = args("replica-a");
    let mut first = Operator::start(
        cp,
        &moto,
        "e2e",
        &first_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let second_args = args("replica-b");
    let second = Operator::start(
        cp,
        &moto,
        "e2e",
        &second_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );

    eventually(
        Duration::from_secs(30),
        "the first replica to lead",
        || async { leads(&first).then_some(()) },
    )
    .await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &namespace);
    let holder = lease_holder(&leases).await;
    assert_eq!(holder.as_deref(), Some("replica-a"));
    // The standby is Ready too (readiness does not wait for the lease) but does not lead while the
    // leader renews.
    for _ in 0..10 {
        assert!(
            second.is_ready() && first.is_ready(),
            "both replicas are Ready"
        );
        assert!(!leads(&second), "two replicas must never both act");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    first.kill();
    eventually(
        Duration::from_secs(60),
        "the standby to take over",
        || async { leads(&second).then_some(()) },
    )
    .await;
    let holder = lease_holder(&leases).await;
    assert_eq!(holder.as_deref(), Some("replica-b"));
}
