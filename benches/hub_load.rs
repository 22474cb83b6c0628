//! Hub load generator (DESIGN.md section 11: >= 20,000 reports/s on 2 cores).
//!
//! Serves the hub's real HTTP API (`cloudoptim::hub::server::router`: authentication, body limit,
//! validation, merge, change broadcast) on loopback in this process and drives it with keep-alive
//! HTTP/1.1 connections posting distinct reports (300 flags: 50 types x 6 zones, 20 members) for a fixed time; the
//! generator shares the machine's cores with the hub, so the figure is a lower bound. The write-behind
//! to the API server is left out on purpose: it writes each changed flag at most once a second,
//! whatever the report rate, so it is not on the hot path. Prints measured numbers, asserts nothing:
//!
//! `HUB_LOAD_SECONDS=5 HUB_LOAD_CONNECTIONS=64 cargo bench --bench hub_load`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cloudoptim::hub::auth::Tokens;
use cloudoptim::hub::limits::Limits;
use cloudoptim::hub::server::router;
use cloudoptim::hub::state::HubState;
use cloudoptim::metrics::Metrics;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

const MEMBERS: usize = 20;
const TARGET: f64 = 20_000.0;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo test --benches` runs this with `--bench` absent: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let seconds = env_or("HUB_LOAD_SECONDS", 5);
    let connections = env_or("HUB_LOAD_CONNECTIONS", 64);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(run(Duration::from_secs(seconds), connections as usize));
}

async fn run(duration: Duration, connections: usize) {
    let tokens =
        Tokens::from_pairs((0..MEMBERS).map(|i| (format!("member-{i}"), format!("token-{i}"))));
    // Throughput of the API itself: the per-member limits would turn most reports into 429s.
    let metrics = Metrics::new().expect("metrics");
    let hub = HubState::with_limits(1800, tokens, metrics, Limits::unlimited());
    hub.set_ready();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let server_hub = hub.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router(server_hub)).await;
    });

    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let start = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|c| {
            let (sent, failed) = (sent.clone(), failed.clone());
            tokio::spawn(async move { connection(addr, c, deadline, &sent, &failed).await })
        })
        .collect();
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.unwrap_or_default());
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map(|d: &Duration| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    let ok = sent.load(Ordering::Relaxed);
    let rate = ok as f64 / elapsed;
    let flags = hub.active(None);
    println!(
        "hub load: {ok} reports in {elapsed:.1} s over {connections} connections on {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "hub load: {rate:.0} reports/s (target >= {TARGET:.0}; ratio {:.2}), latency p50 {:.2} ms p99 {:.2} ms, {} failed, {} flags, {} reports merged",
        rate / TARGET,
        pct(0.50),
        pct(0.99),
        failed.load(Ordering::Relaxed),
        flags.len(),
        flags.iter().map(|f| u64::from(f.count)).sum::<u64>(),
    );
    println!("measured hub_reports_per_s {rate:.0}");
    println!(
        "ratio hub_reports_per_second {:.2} (>= 1 meets the target)",
        rate / TARGET
    );
}

/// One keep-alive connection posting distinct reports until `deadline`; returns the latencies.
async fn connection(
    addr: std::net::SocketAddr,
    index: usize,
    deadline: Instant,
    sent: &AtomicU64,
    failed: &AtomicU64,
) -> Vec<Duration> {
    let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
        failed.fetch_add(1, Ordering::Relaxed);
        return Vec::new();
    };
    let _ = stream.set_nodelay(true);
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        failed.fetch_add(1, Ordering::Relaxed);
        return Vec::new();
    };
    tokio::spawn(conn);
    let member = index % MEMBERS;
    let token = format!("Bearer token-{member}");
    let base = k8s_openapi::jiff::Timestamp::now().as_millisecond() - 60_000;
    let zones = ["a", "b", "c", "d", "e", "f"];
    let mut latencies = Vec::new();
    let mut n: i64 = 0;
    while Instant::now() < deadline {
        n += 1;
        let observed = k8s_openapi::jiff::Timestamp::from_millisecond(base + n)
            .expect("time")
            .to_string();
        let body = format!(
            r#"{{"clusterId":"member-{member}","region":"us-east-1","zone":"us-east-1{}","instanceType":"m{}.large","reason":"SpotInterruption","observedAt":"{observed}"}}"#,
            zones[(n as usize + index) % zones.len()],
            (n as usize / zones.len() + index) % 50,
        );
        let request = hyper::Request::post("/v1/flags")
            .header("host", "hub")
            .header("authorization", &token)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        let started = Instant::now();
        match sender.send_request(request).await {
            Ok(response) if response.status() == 202 => {
                let _ = response.into_body().collect().await;
                latencies.push(started.elapsed());
                sent.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                failed.fetch_add(1, Ordering::Relaxed);
                return latencies;
            }
        }
    }
    latencies
}
