use super::*;

fn schedule(spec: serde_json::Value) -> HibernationSchedule {
    serde_json::from_value(json!({
        "apiVersion": "cloudoptim.io/v1alpha1",
        "kind": "HibernationSchedule",
        "metadata": {"name": "nights"},
        "spec": spec,
    }))
    .expect("valid schedule")
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("rfc3339")
        .with_timezone(&Utc)
}

#[test]
fn the_timetable_decides_unless_suspended_or_overridden() {
    // Awake Mon-Fri 08:00-18:00 Berlin, pre-warm 30 min. Monday 2026-11-23 is in CET (+01:00).
    let base = json!({"timeZone": "Europe/Berlin", "awake": ["Mon-Fri 08:00-18:00"], "prewarmMinutes": 30});
    let s = schedule(base.clone());
    let c = compile(&s).expect("compiles");
    let night = wanted(&s, &c, at("2026-11-23T05:00:00Z"));
    assert_eq!(night.state, HibernationState::Hibernating);
    assert!(night.workloads_asleep && night.nodes_asleep);
    assert_eq!(
        night.next,
        Some((at("2026-11-23T06:30:00Z"), HibernationState::WakingUp))
    );
    let prewarm = wanted(&s, &c, at("2026-11-23T06:45:00Z"));
    assert_eq!(prewarm.state, HibernationState::WakingUp);
    assert!(prewarm.workloads_asleep && !prewarm.nodes_asleep);
    let day = wanted(&s, &c, at("2026-11-23T10:00:00Z"));
    assert!(!day.workloads_asleep && !day.nodes_asleep);

    let mut suspended = base.clone();
    suspended["suspend"] = json!(true);
    let s = schedule(suspended);
    let w = wanted(&s, &c, at("2026-11-23T05:00:00Z"));
    assert_eq!(w.state, HibernationState::Suspended);
    assert!(!w.workloads_asleep && !w.nodes_asleep && w.next.is_none());

    let mut overridden = base.clone();
    overridden["override"] = json!({"state": "Awake", "until": "2026-11-23T06:00:00Z"});
    let s = schedule(overridden);
    let w = wanted(&s, &c, at("2026-11-23T05:00:00Z"));
    assert_eq!(w.state, HibernationState::Awake);
    assert_eq!(
        w.next,
        Some((at("2026-11-23T06:00:00Z"), HibernationState::Hibernating))
    );
    // An expired override is ignored.
    let w = wanted(&s, &c, at("2026-11-23T06:00:01Z"));
    assert_eq!(w.state, HibernationState::Hibernating);
}

#[test]
fn requeue_is_just_after_the_next_transition_and_never_longer_than_the_resync() {
    let now = at("2026-11-23T05:00:00Z");
    assert_eq!(
        requeue_after(Some(at("2026-11-23T05:00:10Z")), now),
        Duration::from_millis(10_200)
    );
    assert_eq!(requeue_after(Some(at("2026-11-24T05:00:00Z")), now), RESYNC);
    assert_eq!(requeue_after(None, now), RESYNC);
}

fn config(own: Option<&str>) -> crate::controllers::RunConfig {
    crate::controllers::RunConfig {
        cluster_name: "c".into(),
        region: "us-east-1".into(),
        dry_run: false,
        zombie_grace_floors: (600, 3600),
        interruption_hold_floor: Duration::from_secs(180),
        own_namespace: own.map(String::from),
        own_pod: None,
        protected_namespaces: vec!["kube-system".into()],
        rightsizing_apply: false,
        prometheus: Default::default(),
    }
}

#[test]
fn a_schedule_naming_the_operator_or_a_protected_namespace_is_refused_before_anything_is_done() {
    let targets = |ns: &[&str]| {
        schedule(json!({"timeZone": "UTC", "awake": ["Mon-Fri 08:00-18:00"],
                        "targets": {"namespaces": ns}}))
    };
    let cfg = config(Some("cloudoptim"));
    assert!(status::validate(&targets(&["dev", "qa"]), &cfg).is_ok());
    match status::validate(&targets(&["dev", "cloudoptim"]), &cfg) {
        Err(Error::TargetsOperator(ns)) => assert_eq!(ns, "cloudoptim"),
        other => panic!("{other:?}"),
    }
    match status::validate(&targets(&["kube-system"]), &cfg) {
        Err(Error::TargetsProtected(ns)) => assert_eq!(ns, "kube-system"),
        other => panic!("{other:?}"),
    }
    let mut long = targets(&["dev"]);
    long.metadata.name = Some("n".repeat(64));
    assert!(matches!(
        status::validate(&long, &cfg),
        Err(Error::NameTooLong(_))
    ));
}

#[test]
fn the_ready_message_says_what_stays_awake_and_why() {
    let s = schedule(json!({"timeZone": "UTC", "awake": ["Mon-Fri 08:00-18:00"],
                            "targets": {"namespaceSelector": {"matchLabels": {"team": "a"}}}}));
    let compiled = compile(&s).expect("valid");
    let wanted = wanted(&s, &compiled, at("2026-11-28T12:00:00Z"));
    let done = Done {
        hosting_operator: vec!["ops-group".into()],
        ..Done::default()
    };
    let message = status::ready_message(&s, &config(Some("cloudoptim")), &wanted, &done);
    assert!(message.starts_with("Hibernating until"), "{message}");
    assert!(
        message.contains("Auto Scaling group ops-group runs CloudOptim itself and never sleeps"),
        "{message}"
    );
    assert!(
        message.contains("namespace cloudoptim (CloudOptim itself) never sleeps"),
        "{message}"
    );
}
