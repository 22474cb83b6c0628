//! The hub on a real network (issue #13 item 6), against the real binary: TLS verified against the
//! test's CA and nothing for a plain-HTTP client, wrong and revoked tokens refused (a revoked
//! member's open watch ends), a flooding member throttled and capped while another member goes on,
//! a single member's flag held from the others until a second member confirms it, and no start
//! without TLS unless asked for by name.

use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use super::support::hub::{Hub, HubOptions, TOKEN_A, TOKEN_B};
use super::support::{ControlPlane, unique};
use super::{WAIT, region, report};

/// Poll `check` until it holds or [`WAIT`] passes.
fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn over_tls_the_right_token_works_a_wrong_one_gets_401_and_plain_http_gets_no_answer() {
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    let hub = Hub::start(cp, 1800);
    assert!(hub.url().starts_with("https://"));
    let region = region();
    let body = report("member-a", &region, "m5.large", Timestamp::now());
    assert_eq!(
        hub.post(Some(TOKEN_A), &body).0,
        202,
        "verified TLS, right token"
    );
    assert_eq!(hub.list(&region).len(), 1);
    let (status, answer) = hub.post(Some("token-of-nobody"), &body);
    assert_eq!(status, 401, "{answer}");

    let (status, raw) = hub.plain_request("/v1/flags");
    assert_eq!(
        status, 0,
        "a plain-HTTP client gets no HTTP answer: {raw:?}"
    );

    // The member client refuses the hub's certificate when it does not trust the CA.
    let untrusted = hub
        .client(TOKEN_A)
        .list(&region)
        .await
        .map(|flags| flags.len());
    assert!(untrusted.is_ok(), "trusting the test CA: {untrusted:?}");
    let system_roots = cloudoptim::hub::client::HubClient::new(&hub.url(), TOKEN_A)
        .expect("client")
        .list(&region)
        .await;
    assert!(
        system_roots.is_err(),
        "a certificate of a private CA is not trusted through the system roots"
    );
}

#[tokio::test]
async fn a_revoked_token_is_refused_and_its_open_watch_ends() {
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    let hub = Hub::start(cp, 1800);
    let region = region();
    let watch_b = hub.watch(TOKEN_B, &region);
    let watch_a = hub.watch(TOKEN_A, &region);
    assert_eq!(watch_b.recv_timeout(WAIT).expect("synced").event, "synced");
    assert_eq!(watch_a.recv_timeout(WAIT).expect("synced").event, "synced");

    // member-b's token is removed from the Secret, member-a's rotated.
    std::fs::remove_file(hub.tokens.join("member-b")).expect("token removed");
    std::fs::write(hub.tokens.join("member-a"), "rotated-token-of-a").expect("token rotated");
    until("the removed token refused", || {
        hub.request("GET", "/v1/flags", Some(TOKEN_B), None).0 == 401
    });
    until("the old token of a rotated member refused", || {
        hub.request("GET", "/v1/flags", Some(TOKEN_A), None).0 == 401
    });
    let body = report("member-a", &region, "m5.large", Timestamp::now());
    assert_eq!(hub.post(Some("rotated-token-of-a"), &body).0, 202);

    for (member, watch) in [("b", watch_b), ("a", watch_a)] {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match watch.recv_timeout(left) {
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!("member {member}'s watch still open"),
                Ok(event) => assert_ne!(
                    event.event, "flag",
                    "a revoked watch is sent no flag: {event:?}"
                ),
            }
        }
    }
    let (_, metrics) = hub.request("GET", "/metrics", None, None);
    assert!(
        metrics.contains("cloudoptim_hub_watches_revoked_total 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_flooding_member_is_throttled_and_capped_while_another_member_is_unaffected() {
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    // Members of their own: the hub counts flags of every hub sharing the API server, and the
    // other tests' flags list member-a and member-b.
    let (flooder, bystander) = (unique("flooder"), unique("bystander"));
    let hub = Hub::start_with(
        cp,
        HubOptions {
            ttl: 1800,
            members: &[(&flooder, TOKEN_A), (&bystander, TOKEN_B)],
            tls: true,
            args: &[
                "--reports-per-second=1",
                "--report-burst=6",
                "--max-flags-per-member=3",
            ],
        },
    );
    let region = region();
    let now = Timestamp::now();
    for instance_type in ["m5.large", "c5.large", "r5.large"] {
        let body = report(&flooder, &region, instance_type, now);
        assert_eq!(hub.post(Some(TOKEN_A), &body).0, 202, "{instance_type}");
    }
    let (status, answer) = hub.post(Some(TOKEN_A), &report(&flooder, &region, "t3.large", now));
    assert_eq!(status, 422, "a fourth distinct flag: {answer}");
    assert!(answer.contains("--max-flags-per-member"), "{answer}");

    // Reports of the flags it holds still count, until the bucket is empty.
    let mut throttled = None;
    for i in 0..20 {
        let at = Timestamp::from_second(now.as_second() - i - 1).expect("time");
        let body = report(&flooder, &region, "m5.large", at).to_string();
        let (status, head, body) = hub.exchange("POST", "/v1/flags", Some(TOKEN_A), Some(&body));
        if status == 429 {
            throttled = Some((head, body));
            break;
        }
        assert_eq!(status, 202, "{body}");
    }
    let (head, body) = throttled.expect("member-a throttled within 20 reports");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: "),
        "{head}"
    );
    assert!(body.contains("rate limit"), "{body}");

    // member-b is unaffected: its own bucket and cap.
    for instance_type in ["m5.large", "t3.large"] {
        let body = report(&bystander, &region, instance_type, now);
        assert_eq!(hub.post(Some(TOKEN_B), &body).0, 202, "{instance_type}");
    }
    let flags = hub.list_as(TOKEN_B, &region);
    let names: Vec<&str> = flags
        .iter()
        .filter_map(|f| f["instanceType"].as_str())
        .collect();
    assert!(names.contains(&"t3.large"), "{names:?}");
    let (_, metrics) = hub.request("GET", "/metrics", None, None);
    assert!(
        metrics.contains("cloudoptim_hub_limited_total{limit=\"report_rate\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cloudoptim_hub_limited_total{limit=\"flags\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_single_members_flag_reaches_the_others_only_once_a_second_member_confirms_it() {
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    let hub = Hub::start_with_tokens(
        cp,
        1800,
        &[
            ("member-a", TOKEN_A),
            ("member-b", TOKEN_B),
            ("member-c", "token-of-member-c"),
        ],
    );
    let region = region();
    let watch_c = hub.watch("token-of-member-c", &region);
    assert_eq!(watch_c.recv_timeout(WAIT).expect("synced").event, "synced");

    let at = Timestamp::now();
    assert_eq!(
        hub.post(Some(TOKEN_A), &report("member-a", &region, "m5.large", at))
            .0,
        202
    );
    assert_eq!(
        hub.list_as(TOKEN_A, &region).len(),
        1,
        "the reporter sees its flag"
    );
    assert!(
        hub.list_as("token-of-member-c", &region).is_empty(),
        "another member does not, yet"
    );

    assert_eq!(
        hub.post(Some(TOKEN_B), &report("member-b", &region, "m5.large", at))
            .0,
        202
    );
    let event = watch_c.recv_timeout(WAIT).expect("the confirmed flag");
    assert_eq!(event.event, "flag", "{event:?}");
    let flag: serde_json::Value = serde_json::from_str(&event.data).expect("flag JSON");
    assert_eq!(flag["clusters"], json!(["member-a", "member-b"]));
    assert_eq!(hub.list_as("token-of-member-c", &region).len(), 1);
}

#[tokio::test]
async fn the_hub_refuses_to_start_without_tls_unless_insecure_plain_http_is_given() {
    let Some(cp) = ControlPlane::shared() else {
        return;
    };
    let options = HubOptions {
        ttl: 1800,
        members: &[("member-a", TOKEN_A)],
        tls: false,
        args: &[],
    };
    let plain = Hub::prepare(cp, &options);
    let without: Vec<String> = plain
        .args()
        .iter()
        .filter(|a| *a != "--insecure-plain-http")
        .cloned()
        .collect();
    let output = plain.command(&without).output().expect("hub runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "started without TLS: {stderr}");
    assert!(stderr.contains("--insecure-plain-http"), "{stderr}");
    assert!(stderr.contains("--tls-cert-file"), "{stderr}");

    let plain = Hub::start_with(cp, options);
    assert!(plain.url().starts_with("http://"));
    assert_eq!(
        plain.list(&region()).len(),
        0,
        "served over plain HTTP when asked"
    );
}
